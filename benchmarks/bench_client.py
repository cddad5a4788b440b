"""Benchmark: BackendClient start_job requests/second against the stand-in cc-backend on loopback.

The stand-in runs as its own process (``python -m ccsa.sim.ccbackend``, JWT auth on, as the
demo runs it), so client and server do not share one interpreter. Measured: sequential start_job
(one in flight), concurrent start_job (8 and 64 in flight through one connection pool), and
concurrent stop_job, each with the CPU time per request of both processes: on a shared machine
the wall-clock rate says more about the neighbours than about ccsa, the CPU cost does not.
"new conns" counts the TCP connections the client opened during a case: keep-alive works when
it is 0 (a warm-up with as many in flight opens the pool's connections before each case).
Target: >= 1,000 start_job requests/s concurrent. This is ccsa's HTTP budget per job.

    python benchmarks/bench_client.py [N]      (default 2000 requests per concurrent case)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import machine_info, print_table
from ccsa.ccbackend.client import BackendClient
from ccsa.ccbackend.models import Resource, StartJob, StopJob, encode
from ccsa.errors import BackendError

TARGET = 1000.0
COMMAND = "python benchmarks/bench_client.py"
T0 = 1_700_000_000


def _start(job_id: int) -> StartJob:
    return StartJob(
        job_id=job_id,
        cluster="bench",
        user="alice",
        project="p",
        num_nodes=1,
        resources=[Resource(hostname="n001", hwthreads=list(range(8)))],
        start_time=T0 + job_id,
        shared="none",
        num_hwthreads=8,
        meta_data={"jobName": "bench", "submitTime": str(T0)},
    )


def _stop(job_id: int) -> StopJob:
    return StopJob(
        job_id=job_id, cluster="bench", job_state="completed", stop_time=T0 + job_id + 60
    )


async def _measure(
    client: BackendClient, kind: str, ids: range, in_flight: int
) -> tuple[float, int]:
    """Send one request per id with ``in_flight`` workers; returns (seconds, failures)."""
    queue = iter(ids)
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for job_id in queue:
            try:
                if kind == "start":
                    outcome = await client.post("start_job", encode(_start(job_id)))
                else:
                    outcome = await client.post("stop_job", encode(_stop(job_id)))
            except BackendError:
                failures += 1
                continue
            if outcome.kind != "delivered":
                failures += 1

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(in_flight):
            nursery.start_soon(worker)
    return time.perf_counter() - t0, failures


def _cpu_seconds(pid: int) -> float | None:
    """User+system CPU seconds of process ``pid`` (Linux /proc), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _bench(
    url: str, token: str, n_seq: int, n_conc: int, server_pid: int
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async with BackendClient(url, token, timeout=30) as client:
        plan = [
            ("start_job sequential", "start", range(1, 1 + n_seq), 1),
            ("start_job concurrent", "start", range(5_001, 5_001 + n_conc), 8),
            ("start_job concurrent", "start", range(10_001, 10_001 + n_conc), 64),
            ("stop_job concurrent", "stop", range(10_001, 10_001 + n_conc), 64),
        ]
        warm_id = 1_000_000
        for label, kind, ids, in_flight in plan:
            # warm up with as many in flight: the pool's connections are open (idle ones close
            # after 5 s), so a case pays only for connections it needs beyond those
            await _measure(client, "start", range(warm_id, warm_id + 2 * in_flight), in_flight)
            warm_id += 2 * in_flight
            opened0 = client.connections_opened
            server0, client0 = _cpu_seconds(server_pid), time.process_time()
            seconds, failures = await _measure(client, kind, ids, in_flight)
            client_cpu = (time.process_time() - client0) / len(ids)
            server1 = _cpu_seconds(server_pid)
            server_cpu = (
                (server1 - server0) / len(ids)
                if server0 is not None and server1 is not None
                else None
            )
            # With one core each, the slower side bounds the rate: a load-independent figure.
            bound = 1 / max(client_cpu, server_cpu or 0.0)
            rows.append(
                {
                    "case": label,
                    "requests": len(ids),
                    "in_flight": in_flight,
                    "seconds": round(seconds, 3),
                    "req_per_s": round(len(ids) / seconds, 1),
                    "ms_per_req": round(1000 * seconds / len(ids), 3),
                    "client_cpu_ms": round(1000 * client_cpu, 3),
                    "server_cpu_ms": round(1000 * server_cpu, 3) if server_cpu else None,
                    "cpu_bound_req_per_s": round(bound, 1),
                    "new_connections": client.connections_opened - opened0,
                    "failures": failures,
                }
            )
    return rows


def run(n_conc: int = 2000, n_seq: int = 500) -> dict[str, Any]:
    """Start the stand-in process, measure, print the table; returns the numbers."""
    with tempfile.TemporaryDirectory() as tmp:
        token_file = Path(tmp) / "bench.jwt"
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "ccsa.sim.ccbackend", "--cluster", "bench=main:n[001-999]",
                "--write-token", str(token_file),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if not line.startswith("listening on "):
                raise RuntimeError(f"stand-in did not start: {line!r}")
            url = line.removeprefix("listening on ")
            token = token_file.read_text().strip()
            rows = trio.run(_bench, url, token, n_seq, n_conc, proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)
    concurrent = next(
        r for r in rows if r["case"] == "start_job concurrent" and r["in_flight"] == 64
    )
    print_table(
        "BackendClient -> stand-in cc-backend (separate process, loopback, JWT auth)",
        [
            "case",
            "requests",
            "in flight",
            "seconds",
            "req/s",
            "ms/req",
            "client CPU ms/req",
            "server CPU ms/req",
            "CPU-bound req/s",
            "new conns",
            "failures",
        ],
        [
            [
                r["case"],
                r["requests"],
                r["in_flight"],
                r["seconds"],
                r["req_per_s"],
                r["ms_per_req"],
                r["client_cpu_ms"],
                r["server_cpu_ms"],
                r["cpu_bound_req_per_s"],
                r["new_connections"],
                r["failures"],
            ]
            for r in rows
        ],
        COMMAND,
    )
    ok = concurrent["req_per_s"] >= TARGET and all(r["failures"] == 0 for r in rows)
    verdict = "meets" if ok else "MISSES"
    total_cpu = concurrent["client_cpu_ms"] + (concurrent["server_cpu_ms"] or 0.0)
    print(
        f"\nstart_job concurrent (64 in flight): {concurrent['req_per_s']} req/s, {verdict} "
        f"target {TARGET:g}; CPU-bound estimate {concurrent['cpu_bound_req_per_s']} req/s "
        f"(client + server CPU {total_cpu:.2f} ms/req); "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    return {"machine": machine_info(), "rows": rows, "target_req_per_s": TARGET, "ok": ok}


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
