"""Benchmark: Prolog/Epilog hook latency of the installed command vs a bare interpreter.

slurmctld runs the hook for every job start and end, so its cost is one process start each time.
This runs the installed ``cc-slurm-adapter`` through a link placed as the admin guide places it
(``DIR/cc-slurm-adapter -> DIR/venv/bin/cc-slurm-adapter``, i.e. ``/opt/cc-slurm-adapter``), as
``hooks/hook.sh`` does, against a listening Unix socket that accepts and reads every message,
interleaved with ``python -I -S -c pass`` (**bare**: the interpreter alone) and ``python -c pass``
(**site**: the interpreter with site processing), both with the venv's interpreter. It reports
medians of wall time and of CPU time (user + system of each child, which depends much less on a
loaded machine than wall time does). Target (issue #19): hook median <= 1.3 x bare.

The installed command is ``scripts/cc-slurm-adapter``, a shell/Python polyglot that runs the
hook with ``python -I -S`` (no console-script wrapper, no site). pip copies it unchanged: it only
rewrites a first line starting with ``#!python``, and drops any flags after it
(``fix_script`` in pip/_internal/operations/install/wheel.py, pypa/pip#10661), which is why the
flags cannot be shipped in a ``#!python -IS`` line. The results record whether the installed
file is byte-identical to the checkout's.

What is measured is what production runs. By default the script builds a wheel of the working
tree (``pip wheel --no-deps``) and installs it into a fresh, minimal virtualenv
(``python -m venv --without-pip`` plus ``pip --python VENV install WHEEL``), i.e. NON-editable,
with ccsa's dependencies, as an admin would install it. The ``.pth`` files of the measured
environment and whether ccsa is installed editable are part of the results, so a run against
another environment (``--adapter``) says what it measured. Building the venv takes 10-60 s and
needs the package index or pip's cache (for hatchling and the dependencies).

    python -m benchmarks.bench_hook [RUNS]                 (default 50, fresh minimal venv)
    python -m benchmarks.bench_hook --adapter PATH [RUNS]  (an installed cc-slurm-adapter)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

TARGET_RATIO = 1.3
ROOT = Path(__file__).resolve().parents[1]

# Run with the measured environment's interpreter: what its start-up loads.
PROBE = r"""
import glob, json, os, site, sys
from importlib import metadata
pth = sorted({os.path.basename(p) for d in site.getsitepackages() for p in
              glob.glob(os.path.join(d, "*.pth"))})
dist = metadata.distribution("ccsa")
direct = json.loads(dist.read_text("direct_url.json") or "{}")
print(json.dumps({
    "pth_files": pth,
    "ccsa_editable": bool(direct.get("dir_info", {}).get("editable")),
    "ccsa_version": dist.version,
    "setuptools": any(d.metadata["Name"] == "setuptools" for d in metadata.distributions()),
    "python": sys.version.split()[0],
}))
"""


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "load_avg_1min": os.getloadavg()[0],
    }


def build_venv(where: Path) -> Path:
    """A minimal venv with a wheel of this checkout installed as production has it, and the
    admin guide's link to its command next to the venv; returns the link."""
    venv = where / "venv"
    wheels = where / "wheels"
    steps = [
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        [sys.executable, "-m", "venv", "--without-pip", str(venv)],
    ]
    for argv in steps:
        _must(argv)
    (wheel,) = wheels.glob("ccsa-*.whl")
    _must(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(wheel),
        ]
    )
    adapter = venv / "bin" / "cc-slurm-adapter"
    if not adapter.exists():
        raise RuntimeError(f"pip did not install the command {adapter}")
    link = where / "cc-slurm-adapter"
    link.symlink_to(adapter)
    return link


def _must(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(
            f"{' '.join(argv)} exited {proc.returncode} (pip >= 22.3 and the package index "
            f"are needed; or measure an installed adapter with --adapter): {' | '.join(tail)}"
        )


def interpreter_of(adapter: str) -> str:
    """The interpreter the installed command runs: ``python`` next to the launcher
    (scripts/cc-slurm-adapter), or the ``#!`` line's of a pip console script."""
    real = os.path.realpath(adapter)
    with open(real, "rb") as fh:
        first = fh.readline().decode("utf-8", "replace").strip()
    if first == "#!/bin/sh":
        return os.path.join(os.path.dirname(real), "python")
    if not first.startswith("#!/"):
        raise RuntimeError(f"{adapter}: neither ccsa's launcher nor a pip console script")
    return first[2:].split()[0]


def shipped_unchanged(adapter: str) -> bool:
    """Is the installed command byte-identical to scripts/cc-slurm-adapter?"""
    with open(os.path.realpath(adapter), "rb") as fh:
        return fh.read() == (ROOT / "scripts" / "cc-slurm-adapter").read_bytes()


def describe(python: str) -> dict[str, Any]:
    proc = subprocess.run([python, "-c", PROBE], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{python} cannot describe its environment: {proc.stderr.strip()}")
    facts: dict[str, Any] = json.loads(proc.stdout)
    return facts


def _serve(sock: socket.socket, received: list[int]) -> None:
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        with conn:
            size = 0
            while data := conn.recv(65536):
                size += len(data)
            received.append(size)


def _time(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one run of ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def measure(adapter: str, runs: int) -> dict[str, Any]:
    python = interpreter_of(adapter)
    with tempfile.TemporaryDirectory() as tmp:
        sock_path = os.path.join(tmp, "daemon.sock")
        config = os.path.join(tmp, "config.json")
        with open(config, "w") as fh:
            json.dump(
                {"ccRestUrl": "http://x", "ccRestJwt": "x", "prepSockConnectPath": sock_path}, fh
            )
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(sock_path)
        server.listen(64)
        received: list[int] = []
        thread = threading.Thread(target=_serve, args=(server, received), daemon=True)
        thread.start()
        env = {
            "PATH": os.defpath,
            "SLURM_SCRIPT_CONTEXT": "prolog_slurmctld",
            "SLURM_JOB_ID": "4711",
            "SLURM_CLUSTER_NAME": "bench",
            "SLURM_JOB_NODELIST": "n[001-128]",
        }
        commands = {
            "hook": [adapter, "-config", config],
            "bare": [python, "-I", "-S", "-c", "pass"],
            "site": [python, "-c", "pass"],
        }
        wall: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        load_before = os.getloadavg()[0]
        for argv in commands.values():  # warm the page cache
            _time(argv, env)
        for _ in range(runs):
            for name, argv in commands.items():
                elapsed, used = _time(argv, env)
                wall[name].append(elapsed)
                cpu[name].append(used)
        deadline = time.monotonic() + 5
        while len(received) < runs + 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.close()
    ms = {name: statistics.median(values) * 1000 for name, values in wall.items()}
    cpu_ms = {name: statistics.median(values) * 1000 for name, values in cpu.items()}
    return {
        "benchmark": "hook",
        "runs": runs,
        "delivered": len(received),
        "hook_median_ms": round(ms["hook"], 2),
        "bare_median_ms": round(ms["bare"], 2),
        "site_median_ms": round(ms["site"], 2),
        "ratio_vs_bare": round(ms["hook"] / ms["bare"], 3),
        "site_ratio_vs_bare": round(ms["site"] / ms["bare"], 3),
        # the hook against an interpreter start with site (what a pip console script pays)
        "overhead_vs_site_ms": round(ms["hook"] - ms["site"], 2),
        "cpu_hook_median_ms": round(cpu_ms["hook"], 2),
        "cpu_bare_median_ms": round(cpu_ms["bare"], 2),
        "cpu_site_median_ms": round(cpu_ms["site"], 2),
        "cpu_ratio_vs_bare": round(cpu_ms["hook"] / cpu_ms["bare"], 3),
        "target_ratio": TARGET_RATIO,
        "commands": {name: " ".join(argv) for name, argv in commands.items()},
        "environment": describe(python),
        "installed_file_identical_to_checkout": shipped_unchanged(adapter),
        "load_avg_1min_before": load_before,
        "machine": machine(),
    }


def run(runs: int = 50, adapter: str | None = None) -> dict[str, Any]:
    """Measure (in a fresh minimal venv unless ``adapter`` is given), print the table, return
    the results (medians in milliseconds) for the benchmark aggregator."""
    if adapter is not None:
        result = measure(adapter, runs)
        result["venv"] = "given (--adapter)"
    else:
        where = Path(tempfile.mkdtemp(prefix="ccsa-bench-hook-"))
        try:
            built = time.perf_counter()
            path = build_venv(where)
            built = time.perf_counter() - built
            result = measure(str(path), runs)
            result["venv"] = f"fresh minimal venv, non-editable install (built in {built:.0f} s)"
        finally:
            shutil.rmtree(where, ignore_errors=True)
    print_table(result)
    return result


def print_table(result: dict[str, Any]) -> None:
    info, envi = result["machine"], result["environment"]
    print(f"hook latency, median of {result['runs']} runs each (interleaved)")
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, Python {envi['python']}, "
        f"load {result['load_avg_1min_before']:.2f} -> {info['load_avg_1min']:.2f}"
    )
    print(
        f"environment: {result['venv']}; ccsa {envi['ccsa_version']} "
        f"{'EDITABLE' if envi['ccsa_editable'] else 'non-editable'}; "
        f"installed command {'==' if result['installed_file_identical_to_checkout'] else '!='} "
        "scripts/cc-slurm-adapter; "
        f"setuptools {'present' if envi['setuptools'] else 'absent'}; "
        f".pth files: {', '.join(envi['pth_files']) or 'none'}"
    )
    print(f"{'what':<6} {'wall ms':>8} {'x bare':>7} {'CPU ms':>7} {'x bare':>7}  command")
    for name in ("hook", "bare", "site"):
        wall, cpu = result[f"{name}_median_ms"], result[f"cpu_{name}_median_ms"]
        print(
            f"{name:<6} {wall:>8.2f} {wall / result['bare_median_ms']:>7.3f} {cpu:>7.2f} "
            f"{cpu / result['cpu_bare_median_ms']:>7.3f}  {result['commands'][name]}"
        )
    verdict = "ok" if result["ratio_vs_bare"] <= TARGET_RATIO else "ABOVE TARGET"
    print(
        f"hook - site = {result['overhead_vs_site_ms']:.2f} ms (negative: cheaper than site alone)"
    )
    print(
        f"hook / bare = {result['ratio_vs_bare']:.2f} (target <= {TARGET_RATIO}): {verdict}; "
        f"{result['delivered']} of {result['runs'] + 1} messages delivered"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="?", type=int, default=50, help="runs of each command")
    parser.add_argument("--adapter", help="an installed cc-slurm-adapter (default: a fresh venv)")
    args = parser.parse_args()
    if args.adapter is not None and not os.access(args.adapter, os.X_OK):
        parser.error(f"--adapter {args.adapter}: not an executable file")
    try:
        result = run(args.runs, args.adapter)
    except RuntimeError as exc:
        sys.exit(f"bench_hook: {exc}")
    if result["delivered"] != args.runs + 1:
        sys.exit(f"only {result['delivered']} of {args.runs + 1} hook messages arrived")


if __name__ == "__main__":
    main()
