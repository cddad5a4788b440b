"""`cc-slurm-adapter status` end to end: a running daemon (simulated Slurm, stand-in cc-backend)
asked by the real CLI over the PrEp socket; plus the table layout and the not-running error."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from ccsa.daemon.snapshot import StatusSnapshot
from ccsa.daemon.supervisor import Daemon, main
from ccsa.errors import DaemonError
from ccsa.sim.ccbackend.clusters import minimal
from ccsa.sim.ccbackend.server import StandIn
from ccsa.sim.ccbackend.state import Backend
from ccsa.sim.slurm import JobSpec, SimCluster
from ccsa.sockaddr import UnixAddr
from ccsa.status import fetch, render, sections

T0 = 1_700_000_000.0


def write_config(path: Path, tmp: Path, sock: Path, url: str, sim: SimCluster) -> dict[str, Any]:
    raw = {
        "ccRestUrl": url,
        "ccRestJwt": "test-jwt",
        "pidFilePath": str(tmp / "run" / "daemon.pid"),
        "prepSockListenPath": str(sock),
        "prepSockConnectPath": str(sock),
        "lastRunPath": str(tmp / "lib" / "lastrun"),
        "slurmBinDir": str(sim.bin_dir),
        "slurmPollInterval": 1,
        "slurmQueryDelay": 1,
        "slurmQueryMaxSpan": 86400,
    }
    path.write_text(json.dumps(raw))
    path.chmod(0o600)
    return raw


@asynccontextmanager
async def running_daemon(tmp: Path, sock_dir: Path) -> AsyncIterator[tuple[Daemon, str, Backend]]:
    from ccsa.config import load

    sim = SimCluster.create(tmp / "sim", clusters=("c1",), start=T0)
    ids = sim.submit_many(
        [JobSpec(user="bob", submit=T0 - 3000 + i, duration=60) for i in range(5)]
    )
    backend = Backend({"c1": minimal("c1")}, clock=lambda: sim.now)
    standin = StandIn(backend)
    async with trio.open_nursery() as nursery:
        await nursery.start(standin.serve)
        conf = tmp / "config.json"
        write_config(conf, tmp, sock_dir / "d.sock", standin.url, sim)
        cfg = load(str(conf))
        d: Daemon = await nursery.start(
            lambda task_status: main(cfg, now=lambda: sim.now, task_status=task_status)
        )
        with trio.fail_after(60):
            while not backend.check_exactly_once([("c1", i) for i in ids]).ok:
                await trio.sleep(0.05)
        yield d, str(conf), backend
        nursery.cancel_scope.cancel()


async def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "ccsa", *args], capture_stdout=True, capture_stderr=True, check=False
    )


async def test_status_cli_against_running_daemon(tmp_path: Path, short_dir: Path) -> None:
    async with running_daemon(tmp_path, short_dir) as (d, conf, _backend):
        plain = await cli("status", "-config", conf)
        raw = await cli("status", "-config", conf, "--json")
        watermark = d.store.watermark("c1")
    assert plain.returncode == 0, plain.stderr.decode()
    text = plain.stdout.decode()
    assert "clusters (times UTC)" in text
    assert watermark is not None
    # the watermark row shows the daemon's own watermark for c1, in UTC
    import time as _time

    shown = _time.strftime("%Y-%m-%d %H:%M:%S", _time.gmtime(watermark))
    assert any(line.strip().startswith("c1") and shown in line for line in text.splitlines())
    assert "Slurm commands" in text
    assert "sacct" in text
    assert re.search(r"^\s+starts_delivered\s+5\s*$", text, re.M)
    snap = json.loads(raw.stdout)
    assert snap["counters"]["starts_delivered"] == 5
    assert snap["counters"]["stops_delivered"] == 5
    assert snap["outbox"] == 0
    assert snap["clusters"]["c1"]["last_sync"] is not None
    assert snap["slurm_commands"]["commands"]["sacct"]["count"] >= 1


async def test_status_when_no_daemon_runs(tmp_path: Path, short_dir: Path) -> None:
    sim = SimCluster.create(tmp_path / "sim", clusters=("c1",), start=T0)
    conf = tmp_path / "config.json"
    write_config(conf, tmp_path, short_dir / "d.sock", "http://127.0.0.1:9", sim)
    proc = await cli("status", "-config", str(conf))
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert err.count("\n") == 1
    assert f"no daemon is listening at unix:{short_dir / 'd.sock'}" in err
    with pytest.raises(DaemonError, match="no daemon"):
        await fetch(UnixAddr(str(short_dir / "d.sock")), 2.0)


def test_sections_show_errors_and_parked() -> None:
    now = 1_000_000.0
    snap = {
        "version": "9.9",
        "pid": 42,
        "started_at": now - 7200,
        "clusters": {
            "a": {
                "watermark": now - 30,
                "last_sync": now - 30,
                "last_error": None,
                "waiting": 2,
                "waiting_since": now - 600,
            },
            "b": {
                "watermark": None,
                "last_sync": None,
                "last_error": "sacct exited 1: Problem talking to the database",
                "last_error_at": now - 5,
            },
        },
        "outbox": 3,
        "parked": 1,
        "parked_latest": [
            {
                "id": 7,
                "cluster": "a",
                "job_id": 99,
                "kind": "start",
                "status": 400,
                "reason": "no subcluster",
                "parked_at": now - 60,
            }
        ],
        "slurm_commands": {
            "commands": {
                "sacct": {
                    "count": 4,
                    "errors": 1,
                    "timeouts": 0,
                    "deferred": 3,
                    "total_latency": 2.0,
                    "last_latency": 0.25,
                    "max_latency": 1.0,
                }
            },
            "limiter": {"capacity": 10, "in_use": 2, "waiting": 0},
        },
        "counters": {"starts_delivered": 12, "rejections": {"400": 1}, "stops_delivered": 0},
    }
    out = io.StringIO()
    render(sections(msgspec.convert(snap, StatusSnapshot), now), out, rich=False)
    text = out.getvalue()
    assert re.search(r"^  b +- +- +sacct exited 1", text, re.M)
    assert re.search(r"^  a .* - +2 \(oldest .* \(10 min ago\)\)$", text, re.M)  # jobs waiting
    assert "Problem talking to the database (1970-01-12 13:46:35 (5 s ago))" in text
    assert "redrive --id N" in text
    assert "7   a        99   start  400" in text
    assert "sacct    4     1       0         3       0.500  0.250   1.000" in text
    assert "limiter 2/10 in use" in text
    assert "stops_delivered" not in text  # zero counters are left out
    assert "  rejections        400: 1\n" in text
    rich_out = io.StringIO()
    render(sections(msgspec.convert(snap, StatusSnapshot), now), rich_out, rich=True)
    assert "Problem" in rich_out.getvalue()
    assert "│ starts_delivered │ 12" in rich_out.getvalue()


def test_sections_show_slurm_clock_and_dbd_lag() -> None:
    """Issue 18 items 3-4: slurmctld's clock offset, sdiag's DBD agent queue and the job the
    watermark waits for."""
    now = 1_000_000.0
    snap = {
        "clusters": {
            "a": {"watermark": now - 400, "slurm_clock_offset": -300.0, "dbd_queue": 42,
                  "held_for_job": 77, "held_at": now - 400},
            "b": {"watermark": now - 5, "slurm_clock_offset": 0.0, "dbd_queue": 0},
            "c": {"watermark": now - 5},
        },
    }  # fmt: skip
    out = io.StringIO()
    render(sections(msgspec.convert(snap, StatusSnapshot), now), out, rich=False)
    text = out.getvalue()
    assert "Slurm clock and slurmdbd" in text
    assert re.search(r"^  a +-300 s +42 +job 77 \(started .* \(6 min ago\)\)$", text, re.M), text
    assert re.search(r"^  b +in step +0 +-$", text, re.M), text
    assert not re.search(r"^  c +(in step|-\d)", text, re.M)


def test_zero_counters_are_left_out_labelled_ones_too() -> None:
    """Issue 20 item 7: the title says "(zeros left out)", so an empty labelled counter (no
    rejection, no failed poll) is left out like a zero instead of printed as ``-``."""
    snap = StatusSnapshot(
        counters={"starts_delivered": 3, "stops_delivered": 0, "rejections": {},
                  "sync_failures": {"c1": 2}}
    )  # fmt: skip
    out = io.StringIO()
    render(sections(snap, 1_000_000.0), out, rich=False)
    text = out.getvalue()
    assert "counters since start (zeros left out)" in text
    assert "rejections" not in text
    assert "stops_delivered" not in text
    assert "  sync_failures     c1: 2\n" in text
    assert "  starts_delivered  3\n" in text
