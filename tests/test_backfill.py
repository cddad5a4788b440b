"""`backfill` end to end: simulated Slurm (real subprocesses) -> ccsa -> stand-in cc-backend (HTTP).

A three-day window (three times slurmQueryMaxSpan) walked in one-day chunks: every job is started
once and stopped once; a second run sends nothing new; an interrupted CLI run (SIGINT) resumes
from its checkpoint and completes without a job delivered twice.
"""

from __future__ import annotations

import io
import json
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from ccsa.backfill import ChunkLine, PlainReporter, RichReporter, backfill, chunks, parse_time
from ccsa.config import Config, make_config
from ccsa.daemon.store import Store
from ccsa.errors import ConfigError
from ccsa.sim.ccbackend.clusters import minimal
from ccsa.sim.ccbackend.server import StandIn
from ccsa.sim.ccbackend.state import Backend
from ccsa.sim.slurm import JobSpec, Shape, SimCluster

T0 = 1_700_000_000.0
DAY = 86400.0


@dataclass
class Env:
    sim: SimCluster
    backend: Backend
    standin: StandIn
    tmp: Path
    ids: list[int]

    def values(self) -> dict[str, Any]:
        return {
            "cc_rest_url": self.standin.url,
            "slurm_bin_dir": str(self.sim.bin_dir),
            "state_db_path": str(self.tmp / "lib" / "state.sqlite3"),
            "last_run_path": str(self.tmp / "lib" / "lastrun"),
            "slurm_query_max_span": DAY,
        }

    def config(self) -> Config:
        return make_config(**self.values())

    def config_file(self) -> str:
        path = self.tmp / "config.json"
        raw = {
            "ccRestUrl": self.standin.url,
            "ccRestJwt": "test-jwt",
            "slurmBinDir": str(self.sim.bin_dir),
            "stateDbPath": str(self.tmp / "lib" / "state.sqlite3"),
            "lastRunPath": str(self.tmp / "lib" / "lastrun"),
            "slurmQueryMaxSpan": DAY,
        }
        path.write_text(json.dumps(raw))
        path.chmod(0o600)
        return str(path)

    def expected(self) -> list[tuple[str, int]]:
        return [(j.cluster, j.job_id) for j in self.sim.jobs() if j.start is not None]


@asynccontextmanager
async def environment(tmp: Path, n_jobs: int) -> AsyncIterator[Env]:
    sim = SimCluster.create(tmp / "sim", clusters=("c1",), start=T0)
    # spread over the three days before T0; all have ended by T0
    specs = [
        JobSpec(user="alice", submit=T0 - 3 * DAY + 60 + i * (3 * DAY - 7200) / n_jobs,
                duration=300, shape=Shape(cpus_per_node=2))
        for i in range(n_jobs)
    ]  # fmt: skip
    ids = sim.submit_many(specs)
    backend = Backend({"c1": minimal("c1")}, clock=lambda: sim.now)
    standin = StandIn(backend)
    async with trio.open_nursery() as nursery:
        await nursery.start(standin.serve)
        yield Env(sim, backend, standin, tmp, ids)
        nursery.cancel_scope.cancel()


def sacct_windows(sim: SimCluster) -> list[str]:
    out = []
    for call in sim.calls():
        raw = call["argv"]
        assert isinstance(raw, list)
        argv = [str(a) for a in raw]
        if "--starttime" in argv:
            out.append(argv[argv.index("--starttime") + 1])
    return out


async def test_three_day_window_in_chunks_then_idempotent(tmp_path: Path) -> None:
    async with environment(tmp_path, 40) as env:
        cfg = env.config()
        out = io.StringIO()
        result = await backfill(
            cfg, since=T0 - 3 * DAY, until=T0, chunk=DAY, reporter=PlainReporter(out)
        )
        expected = env.expected()
        assert len(expected) == 40
        report = env.backend.check_exactly_once(expected)  # history: host names only
        assert report.ok, report.summary()
        assert result.chunks == 3
        assert result.starts == 40
        assert result.stops == 40
        assert sacct_windows(env.sim) == [
            "2023-11-11T22:13:20",
            "2023-11-12T22:13:20",
            "2023-11-13T22:13:20",
        ]
        lines = out.getvalue().splitlines()
        assert lines[0] == "backfill: 3.0 cluster-days to walk"
        assert lines[-1].endswith("100% done, ETA 0 s")
        with Store.open(cfg.state_db_path) as store:
            assert store.watermark("c1") is None  # the daemon's watermark is left alone
            assert store.outbox_depth() == 0

        # a second run: everything is known, nothing is sent again
        requests = len(env.standin.request_log)
        again = await backfill(cfg, since=T0 - 3 * DAY, until=T0, chunk=DAY, reporter=None)
        assert again.chunks == 0  # the checkpoint says the window is done
        assert len(env.standin.request_log) == requests
        # a different, overlapping window re-reads Slurm but queues nothing known
        third = await backfill(cfg, since=T0 - 2 * DAY, until=T0, chunk=DAY)
        assert third.chunks == 2
        assert third.starts == third.stops == 0
        assert len(env.standin.request_log) == requests


def _default_sigint() -> None:
    """In the child: SIGINT back to its default action. A shell without job control starts
    background commands with SIGINT ignored (bash(1) "SIGNALS"), children inherit that, and
    Python then installs no KeyboardInterrupt handler: the backfill ran to its end (exit 0)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def test_interrupted_cli_run_resumes(tmp_path: Path) -> None:
    async with environment(tmp_path, 120) as env:
        env.standin.faults.latency("start_job", 0.1)
        env.standin.faults.latency("stop_job", 0.1)
        # a slow slurmdbd: the interrupt lands while the second day is being read
        env.sim.set_fault("latency", command="sacct", seconds=3)
        conf = env.config_file()
        argv = [sys.executable, "-m", "ccsa", "backfill", "-config", conf,
                "--since", "2023-11-11T22:13:20", "--until", "1700000000"]  # fmt: skip
        async with trio.open_nursery() as nursery:
            proc: trio.Process = await nursery.start(
                partial(trio.run_process, argv, check=False, capture_stdout=True,
                        capture_stderr=True, preexec_fn=_default_sigint)
            )  # fmt: skip
            with trio.fail_after(60):
                while len(env.standin.requests("start_job")) < 20:
                    await trio.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            with trio.fail_after(30):
                assert await proc.wait() == 130
        first_starts = len(env.standin.requests("start_job"))
        assert first_starts < 120  # really interrupted before the end
        checkpoint = json.loads((tmp_path / "lib" / "state.sqlite3.backfill.json").read_text())
        (reached,) = checkpoint.values()
        assert T0 - 3 * DAY < reached <= T0
        windows_before = len(sacct_windows(env.sim))

        assert T0 - 3 * DAY < reached < T0  # the walk was cut short
        env.standin.faults.clear()
        env.sim.clear_faults()
        proc2 = await trio.run_process(argv, check=False, capture_stdout=True, capture_stderr=True)
        stdout = proc2.stdout.decode()
        assert proc2.returncode == 0, proc2.stderr.decode()
        assert "backfill done: c1" in stdout
        report = env.backend.check_exactly_once(env.expected())
        assert report.ok, report.summary()
        # the resumed run starts where the checkpoint says, not at --since
        resumed = sacct_windows(env.sim)[windows_before:]
        assert resumed, "the resumed run read nothing"
        assert parse_time(resumed[0], 0) == reached
        # jobs already delivered were not sent again (at most the few in flight at SIGINT)
        assert len(env.standin.requests("start_job")) <= 120 + 8


def test_rich_progress_bar_renders() -> None:
    out = io.StringIO()
    bar = RichReporter(out)
    bar.start(3 * DAY)
    bar.chunk("c1", (T0 - DAY, T0), ChunkLine(40, 40, 40, 80, 3 * DAY, 3 * DAY, 2.0))
    bar.close()
    text = out.getvalue()
    assert "40 jobs, 80 sent" in text
    assert "40.0/s" in text
    assert "100%" in text


def test_parse_time_and_chunks() -> None:
    now = 1_700_000_000.0
    assert parse_time("2023-11-14", now) == 1_699_920_000.0
    assert parse_time("2023-11-14T01:00:00+01:00", now) == 1_699_920_000.0
    assert parse_time("7d", now) == now - 7 * DAY
    assert parse_time("12h", now) == now - 12 * 3600
    assert parse_time("1699920000", now) == 1_699_920_000.0
    with pytest.raises(ConfigError, match="--since"):
        parse_time("last tuesday", now)
    assert chunks(0, 250, 100) == [(0, 100), (100, 200), (200, 250)]
    assert chunks(5, 5, 100) == []


async def test_unknown_cluster_is_a_clear_error(tmp_path: Path) -> None:
    async with environment(tmp_path, 1) as env:
        with pytest.raises(ConfigError, match="no cluster 'nope'"):
            await backfill(env.config(), since=T0 - DAY, until=T0, cluster="nope")
