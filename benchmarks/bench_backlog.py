"""Benchmark: the daemon's backlog of 10k finished jobs, end to end, as a real subprocess.

A simulated cluster (``ccsa.sim.slurm``, real ``sacct``/``squeue``/``scontrol`` executables)
holds ``n_jobs`` submissions (arrays and het jobs expand to more records) that ran over the last
36 hours; the daemon has never seen it. ``cc-slurm-adapter -daemon --once -config FILE`` runs one
sync and delivers everything to the stand-in cc-backend (HTTP on loopback, in this process), then
exits. Measured:

* wall time from spawn to exit (start-up, Slurm calls, conversion, every HTTP request);
* Slurm subprocesses per job (the simulator logs every execution in ``calls.log``);
* HTTP requests per job (the stand-in's request log);
* the daemon's own CPU time (``/proc/PID/stat`` utime+stime) and CPU including its Slurm
  subprocesses (``wait4`` rusage), and its peak RSS (``VmHWM``: the process itself, not sacct);
* that every job started and stopped exactly once (``Backend.check_exactly_once``).

Two variants: job scripts only in slurmctld (the daemon may ask ``scontrol`` per job; finished
jobs' scripts are gone), and slurmdbd storing scripts (``AccountingStoreFlags=job_script``:
sacct's ``script`` field, so no per-job call is needed).
Targets: <= 45 s for 10k jobs (a fifth of the Go adapter's 224-240 s), <= 1 Slurm subprocess per
job (<= 0.05 with stored scripts), peak RSS <= 250 MiB.

    python -m benchmarks.bench_backlog [--jobs N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import trio

TARGET_WALL_S_PER_10K = 45.0
TARGET_CALLS_PER_JOB = 1.0
TARGET_CALLS_PER_JOB_SCRIPTS = 0.05
TARGET_RSS_MIB = 250.0
CLUSTER = "bench"
SPAN_H = 36.0
_TICK = os.sysconf("SC_CLK_TCK")


def _proc_sample(pid: int) -> tuple[str, float, int] | None:
    """(state letter, own CPU seconds, VmHWM KiB) of a child, None if unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICK
    hwm = 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return fields[0], cpu, hwm


def build_sim(directory: Path, n_jobs: int, seed: int, store_scripts: bool) -> Any:
    """A cluster of 40 nodes whose ``n_jobs`` submissions all ended before now (wall clock)."""
    from ccsa.sim.slurm import SimCluster

    now = float(int(time.time()))
    sim = SimCluster.create(
        directory, clusters=(CLUSTER,), nodes=40, clock="sim", start=now - SPAN_H * 3600 - 7200,
        seed=seed, store_scripts=store_scripts,
    )  # fmt: skip
    rate = n_jobs / (SPAN_H * 60.0)
    sim.add_workload(n_jobs, rate_per_min=rate, start=now - SPAN_H * 3600 - 3600, max_duration=900)
    sim.set_now(now)  # also pre-renders the sacct cache, as a long-running simulator would have
    return sim


def _config(tmp: Path, url: str, bin_dir: Path) -> Path:
    cfg = {
        "ccRestUrl": url,
        "ccRestJwt": "bench-token",
        "pidFilePath": str(tmp / "daemon.pid"),
        "prepSockListenPath": str(tmp / "daemon.sock"),
        "prepSockConnectPath": str(tmp / "daemon.sock"),
        "lastRunPath": str(tmp / "lastrun"),
        "stateDbPath": str(tmp / "state.sqlite3"),
        "slurmBinDir": str(bin_dir),
        "gpuPciAddrs": {
            r"^bgpu\d+$": [f"0000:{i:02x}:00.0" for i in (7, 11, 72, 76)],
            r"^bhx\d+$": [f"0000:{i:02x}:00.0" for i in (24, 42, 58, 93, 154, 171)],
        },
    }
    path = tmp / "config.json"
    path.write_text(json.dumps(cfg))
    path.chmod(0o600)
    return path


async def _measure(tmp: Path, sim: Any) -> dict[str, Any]:
    from ccsa.sim.ccbackend.clusters import minimal
    from ccsa.sim.ccbackend.server import StandIn
    from ccsa.sim.ccbackend.state import Backend

    backend = Backend({CLUSTER: minimal(CLUSTER)})
    standin = StandIn(backend)
    expected = [(j.cluster, j.job_id) for j in sim.jobs() if j.start is not None]
    calls_before = len(sim.calls())
    async with trio.open_nursery() as nursery:
        await nursery.start(standin.serve)
        cfg = _config(tmp, standin.url, sim.bin_dir)
        argv = [sys.executable, "-m", "ccsa", "-daemon", "--once", "-config", str(cfg)]
        log = (tmp / "daemon.log").open("wb")
        began, cpu_began = time.perf_counter(), time.process_time()
        # Popen + wait4 rather than trio's process API: only wait4 returns the child's rusage,
        # and it is called once the child is already a zombie (it does not block).
        proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)  # noqa: ASYNC220
        log.close()
        own_cpu, hwm_kib = 0.0, 0
        while True:
            sample = _proc_sample(proc.pid)
            if sample is None or sample[0] == "Z":
                break
            own_cpu, hwm_kib = sample[1], max(hwm_kib, sample[2])
            await trio.sleep(0.05)
        _, status, usage = os.wait4(proc.pid, 0)  # noqa: ASYNC222
        wall = time.perf_counter() - began
        standin_cpu = time.process_time() - cpu_began
        proc.returncode = os.waitstatus_to_exitcode(status)
        nursery.cancel_scope.cancel()
    calls = sim.calls()[calls_before:]
    by_command = Counter(str(c["command"]) for c in calls)
    by_endpoint = Counter(r.endpoint or "other" for r in standin.request_log)
    report = backend.check_exactly_once(expected)
    n = max(1, len(expected))
    return {
        "jobs": len(expected),
        "exit_status": proc.returncode,
        "all_delivered_once": report.ok,
        "report": report.summary()[:500],
        "wall_s": round(wall, 2),
        "slurm_calls": len(calls),
        "slurm_calls_per_job": round(len(calls) / n, 4),
        "slurm_calls_by_command": dict(by_command),
        "http_requests": len(standin.request_log),
        "http_requests_per_job": round(len(standin.request_log) / n, 3),
        "http_by_endpoint": dict(by_endpoint),
        "daemon_cpu_s": round(own_cpu, 2),
        "cpu_with_slurm_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mib": round(hwm_kib / 1024, 1),
        "standin_cpu_s": round(standin_cpu, 2),
        "log_tail": (tmp / "daemon.log").read_text(errors="replace")[-600:],
    }


def run(n_jobs: int = 10_000, seed: int = 1) -> dict[str, Any]:
    """Both variants; prints the table and returns the numbers for the aggregator."""
    from benchmarks.machine import machine_info, print_table

    results: dict[str, Any] = {"machine": machine_info(), "n_jobs": n_jobs, "variants": {}}
    rows = []
    for name, scripts in (("scripts in slurmctld", False), ("scripts in slurmdbd", True)):
        tmp = Path(tempfile.mkdtemp(prefix="ccsa-backlog-", dir="/tmp"))
        try:
            t0 = time.perf_counter()
            sim = build_sim(tmp / "sim", n_jobs, seed, scripts)
            setup = time.perf_counter() - t0
            r = trio.run(_measure, tmp, sim)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        r["setup_s"] = round(setup, 1)
        target_calls = TARGET_CALLS_PER_JOB_SCRIPTS if scripts else TARGET_CALLS_PER_JOB
        target_wall = TARGET_WALL_S_PER_10K * max(1.0, n_jobs / 10_000)
        r["targets_met"] = {
            "wall": r["wall_s"] <= target_wall,
            "slurm_calls_per_job": r["slurm_calls_per_job"] <= target_calls,
            "peak_rss": r["peak_rss_mib"] <= TARGET_RSS_MIB,
            "delivered": r["all_delivered_once"] and r["exit_status"] == 0,
        }
        results["variants"][name] = r
        rows.append(
            [
                name,
                r["jobs"],
                f"{r['wall_s']:.1f} (<= {target_wall:.0f})",
                f"{r['slurm_calls']} / {r['slurm_calls_per_job']:.3f} (<= {target_calls:g})",
                f"{r['http_requests']} / {r['http_requests_per_job']:.2f}",
                f"{r['daemon_cpu_s']:.1f} / {r['cpu_with_slurm_s']:.1f}",
                f"{r['standin_cpu_s']:.1f}",
                f"{r['peak_rss_mib']:.0f} (<= {TARGET_RSS_MIB:.0f})",
                "yes" if r["targets_met"]["delivered"] else f"NO: {r['report'][:80]}",
            ]
        )
    command = f"python -m benchmarks.bench_backlog --jobs {n_jobs} --seed {seed}"
    headers = [
        "variant", "job records", "wall s", "Slurm calls / per job", "HTTP req / per job",
        "CPU s daemon / +Slurm", "stand-in CPU s", "peak RSS MiB", "all once",
    ]  # fmt: skip
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"(load average at the end: {load} on {os.cpu_count()} cores; other work competes)")
    print_table(f"daemon backlog: {n_jobs} submissions, --once", headers, rows, command)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description="the daemon's 10k-job backlog end to end")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    result = run(args.jobs, args.seed)
    for name, r in result["variants"].items():
        print(f"{name}: calls {r['slurm_calls_by_command']}, http {r['http_by_endpoint']}")
        if r["exit_status"] != 0:
            print(r["log_tail"])


if __name__ == "__main__":
    main()
