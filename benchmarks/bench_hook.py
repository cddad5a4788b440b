"""Benchmark: Prolog/Epilog hook latency of the installed console script vs a bare interpreter.

slurmctld runs the hook for every job start and end. This runs the real ``cc-slurm-adapter``
console script (as slurmctld would, via its absolute path) against a listening Unix socket that
accepts and reads every message, interleaved with ``python3 -I -S -c pass`` and
``python3 -c pass`` (with site, as the console script has it), and reports the medians.
Target: hook median <= 1.5 x the bare ``-I -S`` interpreter start.

    python benchmarks/bench_hook.py [RUNS]      (default 50)
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

TARGET_RATIO = 1.5


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


def _time(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode()}")
    return elapsed


def run(runs: int = 50) -> dict[str, Any]:
    """Measure; returns the results (medians in milliseconds) for the benchmark aggregator."""
    adapter = shutil.which("cc-slurm-adapter", path=os.path.dirname(sys.executable))
    if adapter is None:
        raise RuntimeError("cc-slurm-adapter is not installed next to this python")
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
            "bare": [sys.executable, "-I", "-S", "-c", "pass"],
            "site": [sys.executable, "-c", "pass"],
        }
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for argv in commands.values():  # warm the page cache
            _time(argv, env)
        for _ in range(runs):
            for name, argv in commands.items():
                samples[name].append(_time(argv, env))
        server.close()
    deadline = time.monotonic() + 5
    while len(received) < runs + 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    medians = {name: statistics.median(values) * 1000 for name, values in samples.items()}
    return {
        "benchmark": "hook",
        "runs": runs,
        "delivered": len(received),
        "hook_median_ms": round(medians["hook"], 2),
        "bare_median_ms": round(medians["bare"], 2),
        "site_median_ms": round(medians["site"], 2),
        "ratio_vs_bare": round(medians["hook"] / medians["bare"], 2),
        # what ccsa itself adds on top of the interpreter with site (the console script's start)
        "overhead_vs_site_ms": round(medians["hook"] - medians["site"], 2),
        "target_ratio": TARGET_RATIO,
        "commands": {name: " ".join(argv) for name, argv in commands.items()},
        "machine": machine(),
    }


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    result = run(runs)
    info = result["machine"]
    print(f"hook latency, median of {runs} runs each (interleaved)")
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, "
        f"load {info['load_avg_1min']:.2f}"
    )
    print(f"{'what':<8} {'median ms':>10}  command")
    for name in ("hook", "bare", "site"):
        print(f"{name:<8} {result[name + '_median_ms']:>10.2f}  {result['commands'][name]}")
    verdict = "ok" if result["ratio_vs_bare"] <= TARGET_RATIO else "ABOVE TARGET"
    print(f"hook - site = {result['overhead_vs_site_ms']:.2f} ms (ccsa's own imports and send)")
    print(
        f"hook / bare = {result['ratio_vs_bare']:.2f} (target <= {TARGET_RATIO}): {verdict}; "
        f"{result['delivered']} messages delivered"
    )


if __name__ == "__main__":
    main()
