"""Benchmark: Prolog/Epilog hook to cc-backend latency under a burst of job events.

The daemon runs as a real subprocess (``cc-slurm-adapter -daemon -config FILE``) against a
simulated cluster on the wall clock (``ccsa.sim.slurm``, real Slurm executables) and the
stand-in cc-backend (HTTP on loopback, in this process). Jobs are submitted so that their starts
and ends make ``events_per_minute`` hook events (default 1,000/min: 500 starts and 500 ends). At
the moment the simulator starts or ends a job, the hook's own send function (``ccsa.hook.send``,
what the ``cc-slurm-adapter`` hook process runs) sends slurmctld's variables to the daemon's
socket from a thread. Latency = the stand-in logging the job's ``start_job`` (for a Prolog) or
``stop_job`` (for an Epilog) request minus the send, both on this process's trio clock. The poll
interval is 600 s, so only the hook path can deliver within the burst.

Scenario ``burst``: an idle daemon. Scenario ``during backlog``: the same burst while the daemon
is syncing a backlog of finished jobs it has never seen (its first sync after start-up); only
the events sent before the last backlog job reached cc-backend count.
Target: p99 <= slurmQueryDelay + 1 s (= 2 s here) in both.

    python -m benchmarks.bench_hooklatency [--rate 1000] [--seconds 30] [--backlog 3000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import trio

CLUSTER = "bench"
QUERY_DELAY = 1.0
JOB_SECONDS = 12.0


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


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
        "slurmPollInterval": 600,
        "slurmQueryDelay": QUERY_DELAY,
        "slurmQueryMaxSpan": 3 * 86400,
        "ccPollInterval": 3600,
    }
    path = tmp / "config.json"
    path.write_text(json.dumps(cfg))
    path.chmod(0o600)
    return path


async def _status(sock: Path) -> dict[str, Any] | None:
    from ccsa.errors import DaemonError
    from ccsa.sockaddr import UnixAddr
    from ccsa.status import fetch

    try:
        return await fetch(UnixAddr(str(sock)), timeout=5.0)
    except DaemonError:
        return None


async def _scenario(
    tmp: Path,
    *,
    rate: float,
    seconds: float,
    backlog: int,
    seed: int,
    store_scripts: bool = False,
) -> dict[str, Any]:
    from ccsa import hook
    from ccsa.sim.ccbackend.clusters import minimal
    from ccsa.sim.ccbackend.server import StandIn
    from ccsa.sim.ccbackend.state import Backend
    from ccsa.sim.slurm import JobSpec, Shape, SimCluster
    from ccsa.sockaddr import parse

    now = time.time()
    sim = SimCluster.create(
        tmp / "sim",
        clusters=(CLUSTER,),
        nodes=40,
        clock="real",
        start=now - 2 * 86400,
        seed=seed,
        store_scripts=store_scripts,
    )
    backlog_ids: list[int] = []
    if backlog:
        sim.add_workload(
            backlog, rate_per_min=backlog / (24 * 60), start=now - 30 * 3600, max_duration=900
        )
        backlog_ids = [j.job_id for j in sim.jobs() if j.start is not None]
        sim.warm()
    backend = Backend({CLUSTER: minimal(CLUSTER)})
    standin = StandIn(backend)
    addr = parse(str(tmp / "daemon.sock"))
    async with trio.open_nursery() as nursery:
        await nursery.start(standin.serve)
        cfg = _config(tmp, standin.url, sim.bin_dir)
        log = (tmp / "daemon.log").open("wb")
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "ccsa", "-daemon", "-config", str(cfg)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        try:
            with trio.fail_after(60):
                while await _status(tmp / "daemon.sock") is None:
                    if proc.returncode is not None:
                        raise RuntimeError((tmp / "daemon.log").read_text()[-2000:])
                    await trio.sleep(0.1)
            calls_before = len(sim.calls())
            # jobs: 1 CPU on the CPU partition, each gives a Prolog and an Epilog event
            n_jobs = max(1, round(rate / 2 * seconds / 60))
            gap = 60.0 / (rate / 2)
            first = time.time() + 1.0
            ids = sim.submit_many(
                [
                    JobSpec(
                        user="alice",
                        partition="main",
                        name=f"burst-{i}",
                        submit=first + i * gap,
                        duration=JOB_SECONDS,
                        time_limit=5,
                        shape=Shape(cpus_per_node=1),
                    )
                    for i in range(n_jobs)
                ]
            )
            wanted = set(ids)
            events: list[tuple[float, str, int]] = []
            for job in sim.records():
                if job.job_id in wanted and job.run is not None:
                    events.append((job.run.start, "prolog_slurmctld", job.job_id))
                    events.append((job.run.end, "epilog_slurmctld", job.job_id))
            events.sort()
            offset = trio.current_time() - time.time()  # wall epoch -> trio clock
            sent: dict[tuple[str, int], float] = {}
            limiter = trio.CapacityLimiter(32)

            async def fire(context: str, job_id: int) -> None:
                payload = hook.encode(
                    hook.collect(
                        {
                            "SLURM_SCRIPT_CONTEXT": context,
                            "SLURM_JOB_ID": str(job_id),
                            "SLURM_CLUSTER_NAME": CLUSTER,
                            "SLURM_JOB_USER": "alice",
                            "SLURM_JOB_PARTITION": "main",
                        }
                    )
                )
                sent[(context, job_id)] = trio.current_time()
                await trio.to_thread.run_sync(hook.send, addr, payload, limiter=limiter)

            async with trio.open_nursery() as senders:
                for when, context, job_id in events:
                    await trio.sleep_until(when + offset + 0.02)
                    senders.start_soon(fire, context, job_id)
            last_sent = trio.current_time()
            first_seen: dict[tuple[str, int], float] = {}
            backlog_set = set(backlog_ids)
            backlog_seen: set[int] = set()
            backlog_done_at = math.inf if backlog_ids else -math.inf
            cursor = 0
            with trio.move_on_after(120 + backlog / 20):
                while True:
                    new = standin.request_log[cursor:]
                    cursor += len(new)
                    for req in new:
                        if req.endpoint not in ("start_job", "stop_job"):
                            continue
                        try:
                            jid = int(json.loads(req.body)["jobId"])
                        except (ValueError, KeyError, TypeError):
                            continue
                        key = (
                            "prolog_slurmctld"
                            if req.endpoint == "start_job"
                            else "epilog_slurmctld",
                            jid,
                        )
                        if jid in wanted:
                            first_seen.setdefault(key, req.time)
                        elif jid in backlog_set and req.endpoint == "start_job":
                            backlog_seen.add(jid)
                            if len(backlog_seen) == len(backlog_set):
                                backlog_done_at = min(backlog_done_at, req.time)
                    if len(first_seen) >= len(sent) and len(backlog_seen) == len(backlog_set):
                        break
                    await trio.sleep(0.5)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            with trio.move_on_after(30):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            nursery.cancel_scope.cancel()
    calls = sim.calls()[calls_before:]
    lat: dict[str, list[float]] = {"prolog_slurmctld": [], "epilog_slurmctld": []}
    early = missing = 0
    during: list[float] = []
    for key, t_sent in sent.items():
        seen = first_seen.get(key)
        if seen is None:
            missing += 1
            continue
        value = max(0.0, seen - t_sent)
        early += seen < t_sent
        lat[key[0]].append(value)
        if t_sent < backlog_done_at:
            during.append(value)
    both = lat["prolog_slurmctld"] + lat["epilog_slurmctld"]
    return {
        "events": len(sent),
        "jobs": len(wanted),
        "rate_per_min": rate,
        "burst_s": round(last_sent - min(sent.values(), default=last_sent), 1),
        "missing": missing,
        "delivered_before_hook": early,
        "p50_s": round(_percentile(both, 50), 3),
        "p99_s": round(_percentile(both, 99), 3),
        "max_s": round(max(both, default=math.nan), 3),
        "start_p50_s": round(_percentile(lat["prolog_slurmctld"], 50), 3),
        "start_p99_s": round(_percentile(lat["prolog_slurmctld"], 99), 3),
        "stop_p99_s": round(_percentile(lat["epilog_slurmctld"], 99), 3),
        "mean_s": round(statistics.fmean(both), 3) if both else math.nan,
        "backlog_jobs": len(backlog_ids),
        "events_during_backlog": len(during),
        "during_backlog_p50_s": round(_percentile(during, 50), 3),
        "during_backlog_p99_s": round(_percentile(during, 99), 3),
        "daemon_exit": proc.returncode,
        "slurm_calls": len(calls),
        "slurm_calls_per_event": round(len(calls) / max(1, len(sent)), 2),
        "slurm_calls_by_command": dict(Counter(str(c["command"]) for c in calls)),
    }


def run(
    rate: float = 1000.0,
    seconds: float = 30.0,
    backlog: int = 3000,
    seed: int = 1,
    store_scripts: bool = False,
) -> dict[str, Any]:
    """Both scenarios; prints the table and returns the numbers for the aggregator."""
    from benchmarks.machine import machine_info, print_table

    target = QUERY_DELAY + 1.0
    results: dict[str, Any] = {"machine": machine_info(), "target_p99_s": target}
    rows = []
    for name, n_backlog in (("burst", 0), ("burst during backlog sync", backlog)):
        tmp = Path(tempfile.mkdtemp(prefix="ccsa-hooklat-", dir="/tmp"))
        try:
            r = trio.run(
                partial(
                    _scenario,
                    tmp,
                    rate=rate,
                    seconds=seconds,
                    backlog=n_backlog,
                    seed=seed,
                    store_scripts=store_scripts,
                )
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        p99 = r["during_backlog_p99_s"] if n_backlog else r["p99_s"]
        r["target_met"] = bool(p99 <= target) and r["missing"] == 0
        results[name] = r
        rows.append(
            [
                name,
                f"{r['events']} in {r['burst_s']:.0f} s",
                r["backlog_jobs"] or "-",
                f"{r['p50_s']:.2f}",
                f"{r['p99_s']:.2f}",
                f"{r['start_p99_s']:.2f} / {r['stop_p99_s']:.2f}",
                f"{r['during_backlog_p99_s']:.2f} ({r['events_during_backlog']})"
                if n_backlog
                else "-",
                r["missing"],
                f"{r['slurm_calls_per_event']:.2f}",
                f"{'yes' if r['target_met'] else 'NO'} (p99 <= {target:g} s)",
            ]
        )
    command = (
        f"python -m benchmarks.bench_hooklatency --rate {rate:g} --seconds {seconds:g} "
        f"--backlog {backlog}" + (" --store-scripts" if store_scripts else "")
    )
    headers = [
        "scenario",
        "hook events",
        "backlog jobs",
        "p50 s",
        "p99 s",
        "p99 start / stop",
        "p99 during backlog (events)",
        "missing",
        "Slurm calls/event",
        "target",
    ]
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"(load average at the end: {load} on {os.cpu_count()} cores; other work competes)")
    where = "slurmdbd (sacct --batch-script)" if store_scripts else "slurmctld only (scontrol)"
    title = f"hook -> cc-backend latency at {rate:g} events/min, job scripts in {where}"
    print_table(title, headers, rows, command)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description="hook-to-cc-backend latency under a burst")
    parser.add_argument("--rate", type=float, default=1000.0, help="hook events per minute")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the burst")
    parser.add_argument("--backlog", type=int, default=3000, help="backlog submissions")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--store-scripts",
        action="store_true",
        help="slurmdbd stores job scripts (AccountingStoreFlags=job_script)",
    )
    args = parser.parse_args()
    result = run(args.rate, args.seconds, args.backlog, args.seed, args.store_scripts)
    for name in ("burst", "burst during backlog sync"):
        print(f"{name}: Slurm calls {result[name]['slurm_calls_by_command']}")


if __name__ == "__main__":
    os.environ.setdefault("TZ", "UTC")
    main()
