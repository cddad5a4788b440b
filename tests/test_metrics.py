"""The Prometheus endpoint (``metricsListen``): scraped over real HTTP from a running daemon
(simulated Slurm, stand-in cc-backend rejecting one job), plus the exposition of a snapshot."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from ccsa.config import make_config
from ccsa.daemon.snapshot import StatusSnapshot
from ccsa.daemon.supervisor import Daemon, main
from ccsa.errors import ConfigError
from ccsa.metrics import exposition, listen_address, serve
from ccsa.sim.ccbackend.clusters import minimal
from ccsa.sim.ccbackend.server import StandIn
from ccsa.sim.ccbackend.state import Backend
from ccsa.sim.slurm import JobSpec, Shape, SimCluster

T0 = 1_700_000_000.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_scrape_running_daemon(tmp_path: Path, short_dir: Path) -> None:
    sim = SimCluster.create(tmp_path / "sim", clusters=("c1",), start=T0)
    ids = sim.submit_many(
        [JobSpec(user="alice", submit=T0 - 3000 + 10 * i, duration=60) for i in range(6)]
    )
    running = sim.submit(
        JobSpec(user="bob", submit=T0 - 100, duration=10_000, shape=Shape(cpus_per_node=2))
    )
    backend = Backend({"c1": minimal("c1")}, clock=lambda: sim.now)
    standin = StandIn(backend)
    standin.faults.rule("start_job", job_id=ids[2], status=400, message="no subcluster found")
    port = free_port()
    cfg = make_config(
        cc_rest_url="http://127.0.0.1:1",  # replaced below
        pid_file_path=str(tmp_path / "daemon.pid"),
        prep_sock_listen_path=str(short_dir / "d.sock"),
        prep_sock_connect_path=str(short_dir / "d.sock"),
        last_run_path=str(tmp_path / "lib" / "lastrun"),
        slurm_bin_dir=str(sim.bin_dir),
        slurm_poll_interval=1,
        slurm_query_delay=1,
        slurm_max_concurrent=3,
        metrics_listen=f"127.0.0.1:{port}",
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(standin.serve)
        values: dict[str, Any] = {"cc_rest_url": standin.url}
        cfg = make_config(**{k: getattr(cfg, k) for k in cfg.KEYS if k not in values}, **values)
        d: Daemon = await nursery.start(
            lambda task_status: main(cfg, now=lambda: sim.now, task_status=task_status)
        )
        with trio.fail_after(60):
            while d.stats.sync_ticks < 1 or d.store.outbox_depth() or d.store.parked_count() < 2:
                await trio.sleep(0.05)
        async with httpx.AsyncClient(trust_env=False) as client:
            resp = await client.get(f"http://127.0.0.1:{port}/metrics")
            missing = await client.get(f"http://127.0.0.1:{port}/nope")
        watermark = d.store.watermark("c1")
        nursery.cancel_scope.cancel()
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert missing.status_code == 404
    got = samples(resp.text)
    started = {e.job_id for e in backend.events if e.kind == "start" and e.status == 201}
    stopped = {e.job_id for e in backend.events if e.kind == "stop" and e.status == 200}
    assert started == {*ids, running} - {ids[2]}
    assert got[("ccsa_starts_delivered_total", ())] == len(started)
    assert got[("ccsa_stops_delivered_total", ())] == len(stopped)
    assert got[("ccsa_rejections_total", (("status", "400"),))] == 1
    assert got[("ccsa_parked", ())] == 2  # the rejected start and its stop
    assert got[("ccsa_outbox_depth", ())] == 0
    assert got[("ccsa_slurm_limiter_capacity", ())] == 3
    assert got[("ccsa_slurm_command_seconds_count", (("command", "sacct"),))] >= 1
    assert got[("ccsa_slurm_command_seconds_sum", (("command", "sacct"),))] > 0
    assert got[("ccsa_watermark_seconds", (("cluster", "c1"),))] == watermark


def test_exposition_of_a_snapshot() -> None:
    snap = {
        "outbox": 7,
        "parked": 1,
        "counters": {
            "starts_delivered": 5,
            "without_resources": 2,
            "rejections": {"400": 3, "403": 1},
            "sync_failures": {"b": 4},
        },
        "clusters": {
            "a": {
                "watermark": 1234.5,
                "last_sync": 1300.0,
                "waiting": 3,
                "slurm_clock_offset": -300.0,
                "dbd_queue": 12,
                "held_at": 1200.0,
            },
            "b": {"watermark": None},
        },
        "slurm_commands": {
            "commands": {
                "squeue": {
                    "count": 4,
                    "total_latency": 2.5,
                    "errors": 1,
                    "timeouts": 1,
                    "max_latency": 1.5,
                }
            },
            "limiter": {"capacity": 10, "in_use": 4, "waiting": 2},
        },
    }
    got = samples(exposition(lambda: msgspec.convert(snap, StatusSnapshot)).decode())
    assert got[("ccsa_outbox_depth", ())] == 7
    assert got[("ccsa_jobs_without_resources_total", ())] == 2
    assert got[("ccsa_rejections_total", (("status", "403"),))] == 1
    assert got[("ccsa_sync_failures_total", (("cluster", "b"),))] == 4
    assert got[("ccsa_watermark_seconds", (("cluster", "a"),))] == 1234.5
    assert ("ccsa_watermark_seconds", (("cluster", "b"),)) not in got
    assert got[("ccsa_jobs_waiting", (("cluster", "a"),))] == 3
    assert got[("ccsa_jobs_waiting", (("cluster", "b"),))] == 0
    assert got[("ccsa_slurm_clock_offset_seconds", (("cluster", "a"),))] == -300.0
    assert got[("ccsa_dbd_agent_queue", (("cluster", "a"),))] == 12
    assert got[("ccsa_watermark_held_at_seconds", (("cluster", "a"),))] == 1200.0
    assert ("ccsa_dbd_agent_queue", (("cluster", "b"),)) not in got  # not measured
    assert got[("ccsa_slurm_command_seconds_count", (("command", "squeue"),))] == 4
    assert got[("ccsa_slurm_command_timeouts_total", (("command", "squeue"),))] == 1
    assert got[("ccsa_slurm_limiter_in_use", ())] == 4
    assert got[("ccsa_slurm_limiter_waiting", ())] == 2
    assert got[("ccsa_stops_delivered_total", ())] == 0  # absent counters are zero


async def test_server_bounds_and_methods() -> None:
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(serve, "127.0.0.1:0", lambda: StatusSnapshot(outbox=1))
        url = f"http://{bound[0]}"
        async with httpx.AsyncClient(trust_env=False) as client:
            post = await client.post(f"{url}/metrics", content=b"x")
            head = await client.head(f"{url}/metrics")
            ok = await client.get(f"{url}/metrics?x=1")
        host, port = bound[0].rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(b"NOT HTTP\r\n\r\n")
        answer = await stream.receive_some(1000)
        await stream.aclose()
        nursery.cancel_scope.cancel()
    assert post.status_code == 405
    assert head.status_code == 200
    assert head.content == b""
    assert "ccsa_outbox_depth 1.0" in ok.text
    assert answer.startswith(b"HTTP/1.1 400")


def test_listen_address_errors() -> None:
    assert listen_address("127.0.0.1:9105").port == 9105
    assert listen_address("[::1]:9105").host == "::1"
    with pytest.raises(ConfigError, match="metricsListen"):
        listen_address("/run/metrics.sock")
