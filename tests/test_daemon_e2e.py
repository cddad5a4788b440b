"""The daemon end to end: simulated Slurm (real subprocesses) -> ccsa -> stand-in cc-backend (HTTP).

The daemon runs in-process through ``supervisor.main`` with the simulated cluster's clock as its
wall clock (so the test moves time for Slurm), or as the real CLI in a subprocess for the signal
test. Intervals are the minimum (slurmPollInterval = slurmQueryDelay = 1 s).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest
import trio

from ccsa.config import Config, make_config
from ccsa.daemon.supervisor import Daemon, main
from ccsa.sim.ccbackend.clusters import minimal
from ccsa.sim.ccbackend.server import StandIn
from ccsa.sim.ccbackend.state import Backend
from ccsa.sim.slurm import JobSpec, Shape, SimCluster

PCI = ["0000:01:00.0", "0000:41:00.0", "0000:81:00.0", "0000:c1:00.0"]


@dataclass
class Env:
    sim: SimCluster
    backend: Backend
    standin: StandIn
    tmp: Path
    sock: Path

    def config(self, **overrides: Any) -> Config:
        values: dict[str, Any] = {
            "cc_rest_url": self.standin.url,
            "pid_file_path": str(self.tmp / "run" / "daemon.pid"),
            "prep_sock_listen_path": str(self.sock),
            "prep_sock_connect_path": str(self.sock),
            "last_run_path": str(self.tmp / "lib" / "lastrun"),
            "state_db_path": str(self.tmp / "lib" / "state.sqlite3"),
            "slurm_bin_dir": str(self.sim.bin_dir),
            "slurm_poll_interval": 1,
            "slurm_query_delay": 1,
            "slurm_query_max_span": 86400,
            "sync_overlap": 60,
            "slurm_command_timeout": 30,
            "cc_poll_interval": 3600,
            "gpu_pci_addrs": {r"gpu\d+$": PCI},
        }
        values.update(overrides)
        return make_config(**values)


@asynccontextmanager
async def environment(
    tmp: Path, sock_dir: Path, *, clock: str = "sim", commit_interval: float = 0.0
) -> AsyncIterator[Env]:
    start = 1_700_000_000.0 if clock == "sim" else None
    sim = SimCluster.create(tmp / "sim", clusters=("c1",), start=start, clock=clock)  # type: ignore[arg-type]
    now: Callable[[], float] = (lambda: sim.now) if clock == "sim" else time.time
    backend = Backend({"c1": minimal("c1")}, clock=now, commit_interval=commit_interval)
    standin = StandIn(backend)
    async with trio.open_nursery() as nursery:
        await nursery.start(standin.serve)
        yield Env(sim, backend, standin, tmp, sock_dir / "d.sock")
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def daemon(env: Env, cfg: Config, **kw: Any) -> AsyncIterator[Daemon]:
    async with trio.open_nursery() as nursery:
        d: Daemon = await nursery.start(
            lambda task_status: main(cfg, now=lambda: env.sim.now, task_status=task_status, **kw)
        )
        yield d
        nursery.cancel_scope.cancel()


async def wait_for(cond: Callable[[], bool], timeout: float = 60.0) -> None:
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.05)


async def next_tick(d: Daemon) -> None:
    """Wait until the daemon has completed a poll that started after now."""
    seen = d.stats.sync_ticks
    await wait_for(lambda: d.stats.sync_ticks >= seen + 2)


def started_ids(sim: SimCluster) -> list[tuple[str, int]]:
    return [(j.cluster, j.job_id) for j in sim.jobs() if j.start is not None]


async def test_jobs_over_time_arrive_started_once_stopped_once_with_resources(
    tmp_path: Path, short_dir: Path
) -> None:
    async with environment(tmp_path, short_dir) as env:
        sim = env.sim
        t0 = sim.now
        sim.submit_many(
            [
                JobSpec(user="alice", submit=t0 + 10, duration=400, shape=Shape(cpus_per_node=4)),
                JobSpec(user="bob", partition="gpu", submit=t0 + 40, duration=300,
                        shape=Shape(nodes=2, cpus_per_node=2, gpus_per_node=2)),
                JobSpec(user="carol", submit=t0 + 70, duration=250, array_size=3,
                        shape=Shape(cpus_per_node=2)),
                JobSpec(user="dave", submit=t0 + 100, duration=350, shape=Shape(cpus_per_node=1),
                        het=(Shape(cpus_per_node=2),)),
                JobSpec(user="alice", partition="gpu", submit=t0 + 130, duration=200,
                        shape=Shape(cpus_per_node=8, gpus_per_node=1)),
            ]
        )  # fmt: skip
        async with daemon(env, env.config()) as d:
            for _ in range(7):
                sim.advance(90)
                await next_tick(d)
            await wait_for(lambda: d.store.outbox_depth() == 0)
            status = d.status()
        expected = started_ids(sim)
        assert len(expected) == 8  # 1 + 1 + 3 array tasks + 2 het components + 1
        assert all(j.end is not None for j in sim.jobs())
        report = env.backend.check_exactly_once(expected, hwthreads=True)
        assert report.ok, report.summary()
        stored = {j.job_id: j for j in env.backend.jobs}
        for truth in sim.jobs():
            job = stored[truth.job_id]
            assert [r["hostname"] for r in job.resources] == [n.hostname for n in truth.nodes]
            for res, node in zip(job.resources, truth.nodes, strict=True):
                assert res["hwthreads"] == list(node.hwthreads)
                assert res.get("accelerators", []) == [PCI[g] for g in node.gpus]
        assert status.outbox == 0
        assert status.counter("without_resources") == 0
        assert status.clusters["c1"].last_error is None
        assert await trio.Path(env.config().last_run_path).exists()  # for administrators


async def test_hook_event_delivers_start_before_the_next_poll(
    tmp_path: Path, short_dir: Path
) -> None:
    async with environment(tmp_path, short_dir) as env:
        cfg = env.config(slurm_poll_interval=3600)  # only the hook can deliver in time
        async with daemon(env, cfg) as d:
            await wait_for(lambda: d.stats.sync_ticks == 1)
            jid = env.sim.submit(JobSpec(user="bob", duration=5000, shape=Shape(cpus_per_node=3)))
            env.sim.advance(1)
            from ccsa import hook

            hook.send(cfg.prep_sock_connect_path, json.dumps(
                {"SLURM_JOB_ID": str(jid), "SLURM_CLUSTER_NAME": "c1",
                 "SLURM_SCRIPT_CONTEXT": "prolog_slurmctld"}).encode())  # fmt: skip
            sent = trio.current_time()
            await wait_for(lambda: any(j.job_id == jid for j in env.backend.jobs), timeout=30)
            latency = trio.current_time() - sent
            assert d.stats.sync_ticks == 1  # delivered by the hook path, not by a poll
            assert d.coalescer is not None
            assert d.coalescer.batches == 1
            (job,) = [j for j in env.backend.jobs if j.job_id == jid]
            assert job.resources[0]["hwthreads"]  # captured from slurmctld at start
            (truth,) = [j for j in env.sim.records() if j.job_id == jid]
            assert truth.script
            assert (job.meta_data or {}).get("jobScript") == truth.script
            # the script was fetched when the event came, before the lookup's sacct -j
            argvs = [[str(a) for a in cast(list[object], c["argv"])] for c in env.sim.calls()]
            order = [" ".join(argv) for argv in argvs if str(jid) in argv]
            assert order[0].endswith(f"write batch_script {jid} -"), order
            assert any(" -j " in f" {line} " for line in order[1:]), order
            assert sum("batch_script" in line for line in order) == 1, order
            assert d.stats.scripts_prefetched == d.stats.scripts_prefetch_hits == 1
            print(f"hook -> cc-backend start latency: {latency:.2f} s (slurmQueryDelay 1 s)")


async def test_hook_for_unknown_job_and_garbage_do_not_hurt(
    tmp_path: Path, short_dir: Path
) -> None:
    # Upstream exits FATAL when a hook names a job sacct does not return.
    async with environment(tmp_path, short_dir) as env:
        cfg = env.config(slurm_poll_interval=3600, slurm_max_retries=1)
        async with daemon(env, cfg) as d:
            await wait_for(lambda: d.stats.sync_ticks == 1)
            from ccsa import hook

            hook.send(cfg.prep_sock_connect_path, json.dumps(
                {"SLURM_JOB_ID": "987654", "SLURM_CLUSTER_NAME": "c1",
                 "SLURM_SCRIPT_CONTEXT": "prolog_slurmctld"}).encode())  # fmt: skip
            hook.send(cfg.prep_sock_connect_path, b"\x00garbage")
            await wait_for(lambda: d.stats.prep_given_up == 1, timeout=30)
            assert d.stats.prep_garbage == 1
            stream = await trio.open_unix_socket(str(env.sock))
            async with stream:
                await stream.send_all(b'{"ccsa": "status"}')
                await stream.send_eof()
                answer = b""
                while chunk := await stream.receive_some(65536):
                    answer += chunk
            status = json.loads(answer)
            assert status["counters"]["prep_given_up"] == 1
            assert "c1" in status["clusters"]


async def test_job_ending_while_its_start_hides_in_job_cache(
    tmp_path: Path, short_dir: Path
) -> None:
    # cc-backend's GET /api/jobs/ does not list job_cache rows (commit worker every 2 min).
    # Upstream's cache refresh then thinks the job is not running and skips its stop.
    async with environment(tmp_path, short_dir, commit_interval=120) as env:
        cfg = env.config(cc_poll_interval=1)
        jid = env.sim.submit(JobSpec(user="alice", duration=90))
        async with daemon(env, cfg) as d:
            env.sim.advance(30)
            await wait_for(lambda: any(j.job_id == jid for j in env.backend.jobs))
            assert not env.backend.jobs[0].committed  # still in job_cache
            ticks = d.stats.sync_ticks
            await trio.sleep(2.5)  # several stuck-job checks while the start is invisible
            assert d.stats.sync_ticks > ticks
            assert d.stats.stuck_restarted == 0
            env.sim.advance(90)  # the job ends; still inside the 120 s commit interval
            await wait_for(lambda: d.stats.stops_delivered == 1)
        report = env.backend.check_exactly_once([("c1", jid)], hwthreads=True)
        assert report.ok, report.summary()
        assert len(env.standin.requests("start_job")) == 1


async def test_rejected_job_and_404_stop_do_not_block_the_batch(
    tmp_path: Path, short_dir: Path
) -> None:
    async with environment(tmp_path, short_dir) as env:
        t0 = env.sim.now
        ids = env.sim.submit_many(
            [JobSpec(user="alice", submit=t0 - 7200 + i, duration=60) for i in range(60)]
        )
        bad, gone = ids[17], ids[30]
        env.standin.faults.rule(
            "start_job",
            job_id=bad,
            status=400,
            message="no subcluster found for cluster c1 and host ccn001",
        )
        # a stop for a job cc-backend no longer has (deleted, DB reset): v1.5 answers 404
        env.standin.faults.rule(
            "stop_job",
            job_id=gone,
            status=404,
            message="finding job failed: sql: no rows in result set",
        )
        async with daemon(env, env.config()) as d:
            await wait_for(lambda: d.stats.sync_ticks >= 1 and d.store.outbox_depth() == 0)
            parked = d.status().parked_latest
            assert {(p.job_id, p.kind) for p in parked} == {(bad, "start"), (bad, "stop")}
            assert any("no subcluster" in p.reason for p in parked)
            assert d.stats.stops_done == 1  # the 404, not parked, not retried
            assert d.stats.stops_delivered == 58
            # the operator fixes cluster.json and re-drives the parked job
            env.standin.faults.clear()
            assert d.store.re_drive() == 2
            d.delivery.wake()
            await wait_for(lambda: d.store.outbox_depth() == 0)
        assert len([r for r in env.standin.requests("stop_job") if r.status == 404]) == 1
        report = env.backend.check_exactly_once(
            [("c1", i) for i in ids if i != gone], allow_unexpected=True
        )
        assert report.ok, report.summary()


async def test_once_and_dry_run(tmp_path: Path, short_dir: Path) -> None:
    async with environment(tmp_path, short_dir) as env:
        t0 = env.sim.now
        ids = env.sim.submit_many(
            [JobSpec(user="bob", submit=t0 - 3600 + 60 * i, duration=30) for i in range(5)]
        )
        cfg = env.config()
        out = io.StringIO()
        assert await main(cfg, now=lambda: env.sim.now, dry_run=True, out=out) == 0
        lines = [json.loads(x) for x in out.getvalue().splitlines()]
        kinds = [x["kind"] for x in lines]
        assert kinds.count("start_job") == 5
        assert kinds.count("stop_job") == 5
        assert "node_state" in kinds
        assert env.backend.jobs == []  # nothing sent
        assert not await trio.Path(cfg.last_run_path).exists()
        assert await main(cfg, now=lambda: env.sim.now, once=True) == 0
        report = env.backend.check_exactly_once([("c1", i) for i in ids])
        assert report.ok, report.summary()
        assert not await trio.Path(cfg.pid_file_path).exists()


def _config_file(env: Env, path: Path) -> str:
    cfg = {
        "ccRestUrl": env.standin.url,
        "ccRestJwt": "test-jwt",
        "pidFilePath": str(env.tmp / "run" / "daemon.pid"),
        "prepSockListenPath": str(env.sock),
        "prepSockConnectPath": str(env.sock),
        "lastRunPath": str(env.tmp / "lib" / "lastrun"),
        "stateDbPath": str(env.tmp / "lib" / "state.sqlite3"),
        "slurmBinDir": str(env.sim.bin_dir),
        "slurmPollInterval": 1,
        "slurmQueryDelay": 1,
        "slurmQueryMaxSpan": 86400,
    }
    path.write_text(json.dumps(cfg))
    path.chmod(0o600)
    return str(path)


async def test_sigterm_mid_delivery_loses_nothing(tmp_path: Path, short_dir: Path) -> None:
    async with environment(tmp_path, short_dir, clock="real") as env:
        now = time.time()
        ids = env.sim.submit_many(
            [JobSpec(user="carol", submit=now - 7000 + 10 * i, duration=20) for i in range(150)]
        )
        env.standin.faults.latency("stop_job", 0.05)
        conf = _config_file(env, tmp_path / "config.json")
        argv = [sys.executable, "-m", "ccsa", "-daemon", "-config", conf]
        pid_path = trio.Path(env.tmp / "run" / "daemon.pid")
        async with trio.open_nursery() as nursery:
            proc: trio.Process = await nursery.start(partial(trio.run_process, argv, check=False))
            await wait_for(lambda: len(env.standin.requests("stop_job")) >= 10, timeout=90)
            proc.send_signal(signal.SIGTERM)
            with trio.fail_after(60):
                assert await proc.wait() == 0
        assert not await pid_path.exists()
        assert not await trio.Path(env.sock).exists()
        stopped = sum(1 for j in env.backend.jobs if j.state != "running")
        assert stopped < len(ids)  # it was really interrupted mid-way
        # restart: the rest is delivered, nothing twice
        async with trio.open_nursery() as nursery:
            proc = await nursery.start(partial(trio.run_process, argv, check=False))
            expected = [("c1", i) for i in ids]
            await wait_for(lambda: env.backend.check_exactly_once(expected).ok, timeout=120)
            proc.send_signal(signal.SIGTERM)
            with trio.fail_after(60):
                assert await proc.wait() == 0


async def test_lost_start_is_sent_again_only_after_job_cache_age(
    tmp_path: Path, short_dir: Path
) -> None:
    async with environment(tmp_path, short_dir) as env:
        cfg = env.config(cc_poll_interval=1)
        jid = env.sim.submit(JobSpec(user="dave", duration=50_000))
        async with daemon(env, cfg) as d:
            env.sim.advance(10)
            await wait_for(lambda: any(j.job_id == jid for j in env.backend.jobs))
            env.backend.delete_job("c1", jid)  # cc-backend lost it (DB restored from backup)
            await trio.sleep(2.5)  # stuck checks run, but the start is younger than 10 min
            assert d.stats.stuck_restarted == 0
            env.sim.advance(700)
            await wait_for(lambda: d.stats.stuck_restarted == 1)
            await wait_for(lambda: any(j.job_id == jid for j in env.backend.jobs))
        assert len(env.standin.requests("start_job")) == 2


# --- supervisor pieces on trio's clock --------------------------------------------------------


class FakeSyncer:
    def __init__(self, tick_seconds: float) -> None:
        self.tick_seconds = tick_seconds
        self.starts: list[float] = []

    async def sync_all(self, clusters: list[str]) -> bool:
        self.starts.append(trio.current_time())
        await trio.sleep(self.tick_seconds)
        return True

    def now(self) -> float:
        return 1_700_000_000.0


class FakeDaemon:
    def __init__(self, cfg: Config, syncer: FakeSyncer) -> None:
        self.cfg = cfg
        self.syncer = syncer
        self.clusters = ["c1"]
        self.last_tick_ok: bool | None = None
        self.delivery = self
        self.store = self  # lastRunPath's time: nothing undelivered (Store.delivered_before)

    def delivered_before(self) -> float | None:
        return None

    def drop_unknown_clusters(self, before: float) -> dict[str, int]:
        return {}

    def wake(self) -> None:
        pass

    def summary(self) -> str:
        return "ok"


class Notes:
    watchdog_interval = None

    def __init__(self) -> None:
        self.texts: list[str] = []

    def ready(self, status: str = "") -> bool:
        return True

    def watchdog(self) -> bool:
        self.texts.append("WATCHDOG=1")
        return True

    def status(self, text: str) -> bool:
        self.texts.append(text)
        return True

    def stopping(self, status: str = "") -> bool:
        return True


async def test_ticker_first_after_query_delay_then_every_poll_interval(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    from ccsa.daemon.supervisor import _ticker

    cfg = make_config(slurm_query_delay=3, slurm_poll_interval=60,
                      last_run_path=str(tmp_path / "lastrun"))  # fmt: skip
    fast, slow = FakeSyncer(5), FakeSyncer(100)
    for syncer in (fast, slow):
        t0 = trio.current_time()
        with trio.move_on_after(400):
            await _ticker(FakeDaemon(cfg, syncer), Notes())  # type: ignore[arg-type]
        syncer.starts = [t - t0 for t in syncer.starts]
    assert fast.starts[:4] == pytest.approx([3, 63, 123, 183])
    # a tick longer than the interval: the next one starts right after, never overlapping
    assert slow.starts[:4] == pytest.approx([3, 103, 203, 303])
    assert await trio.Path(tmp_path / "lastrun").exists()


async def test_watchdog_pings_on_trio_clock(autojump_clock: trio.testing.MockClock) -> None:
    from ccsa.daemon.supervisor import _watchdog

    notes = Notes()
    with trio.move_on_after(95):
        await _watchdog(notes, 10)
    assert notes.texts.count("WATCHDOG=1") == 10


def test_pid_file_refuses_live_adapter_and_replaces_stale(tmp_path: Path) -> None:
    from ccsa.daemon.pidfile import pid_file
    from ccsa.errors import DaemonError

    path = tmp_path / "run" / "d.pid"
    with pid_file(str(path)):
        assert path.read_text().strip() == str(os.getpid())
    assert not path.exists()
    # a live process that is not an adapter (PID reuse): stale, replaced
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        path.write_text(f"{sleeper.pid}\n")
        with pid_file(str(path)):
            assert path.read_text().strip() == str(os.getpid())
    finally:
        sleeper.kill()
        sleeper.wait()
    # a live adapter: refused, file untouched
    adapter = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)",
                                "cc-slurm-adapter"])  # fmt: skip
    try:
        cmdline = Path(f"/proc/{adapter.pid}/cmdline")
        while b"cc-slurm-adapter" not in cmdline.read_bytes():  # exec is under way
            time.sleep(0.01)
        path.write_text(f"{adapter.pid}\n")
        with pytest.raises(DaemonError, match=f"running as PID {adapter.pid}"), pid_file(str(path)):
            pass
        assert path.read_text().strip() == str(adapter.pid)
    finally:
        adapter.kill()
        adapter.wait()


def _fake_sacctmgr(bin_dir: Path, version: str, level: str, user: str = "svc") -> None:
    major, minor, micro = version.split(".")
    meta = {"slurm": {"version": {"major": major, "minor": minor, "micro": micro},
                      "release": version}}  # fmt: skip
    clusters = json.dumps({"clusters": [{"name": "c1"}], "meta": meta})
    users = json.dumps({"users": [{"name": user,
                                   "administrator_level": [level]}], "meta": meta})  # fmt: skip
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "sacctmgr"
    script.write_text(
        f"#!{sys.executable}\nimport sys\n"
        f"print({clusters!r} if sys.argv[1] == 'list' else {users!r})\n"
    )
    script.chmod(0o755)


async def test_startup_checks_version_gate_and_operator_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from ccsa.daemon.startup import startup_checks
    from ccsa.errors import DaemonError
    from ccsa.slurm.commands import Slurm
    from ccsa.slurm.runner import SlurmRunner

    slurm = Slurm(SlurmRunner(str(tmp_path / "bin"), 2, 30))
    _fake_sacctmgr(tmp_path / "bin", "23.11.4", "Operator")
    with pytest.raises(DaemonError, match=r"Slurm 23\.11\.4.*supports Slurm 24\.x and 25\.x"):
        await startup_checks(slurm, "svc")
    _fake_sacctmgr(tmp_path / "bin", "24.11.5", "None")
    assert await startup_checks(slurm, "svc") == ["c1"]
    assert "set adminlevel=operator" in caplog.text
    caplog.clear()
    _fake_sacctmgr(tmp_path / "bin", "25.05.1", "Administrator")
    assert await startup_checks(slurm, "svc") == ["c1"]
    assert "adminlevel" not in caplog.text


def test_run_reports_a_busy_socket_in_one_line(
    tmp_path: Path, short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from ccsa.daemon.prep import bind_unix
    from ccsa.daemon.supervisor import run

    sim = SimCluster.create(tmp_path / "sim", clusters=("c1",), start=1_700_000_000.0)
    sock = short_dir / "d.sock"
    other = bind_unix(str(sock))  # another daemon is serving here
    try:
        cfg = make_config(
            cc_rest_url="http://127.0.0.1:9", pid_file_path=str(tmp_path / "pid"),
            prep_sock_listen_path=str(sock), last_run_path=str(tmp_path / "lastrun"),
            state_db_path=str(tmp_path / "state.sqlite3"), slurm_bin_dir=str(sim.bin_dir),
        )  # fmt: skip
        assert run(cfg) == 1
    finally:
        other.close()
    (record,) = [r for r in caplog.records if r.levelname == "CRITICAL"]
    assert "another daemon is answering on it" in record.getMessage()
    assert record.exc_info is None
    assert not (tmp_path / "pid").exists()  # released on the way out


async def test_resources_survive_a_backend_outage_longer_than_min_job_age(
    tmp_path: Path, short_dir: Path
) -> None:
    # Upstream re-polls after an outage and by then slurmctld has forgotten the job
    # (MinJobAge, 300 s here): host names only. ccsa captured them at first sight.
    async with environment(tmp_path, short_dir) as env:
        async with daemon(env, env.config()) as d:
            await wait_for(lambda: d.stats.sync_ticks >= 1)
            env.standin.down()
            jid = env.sim.submit(
                JobSpec(user="bob", partition="gpu", duration=120,
                        shape=Shape(nodes=2, cpus_per_node=4, gpus_per_node=2))
            )  # fmt: skip
            env.sim.advance(30)
            await next_tick(d)  # seen running while cc-backend is down
            env.sim.advance(1000)  # ended, and long gone from slurmctld
            await next_tick(d)
            assert d.store.outbox_depth() == 2
            env.standin.up()
            await wait_for(lambda: d.store.outbox_empty(), timeout=90)
        report = env.backend.check_exactly_once([("c1", jid)], hwthreads=True)
        assert report.ok, report.summary()
        (job,) = env.backend.jobs
        (truth,) = env.sim.jobs()
        assert [r["accelerators"] for r in job.resources] == [
            [PCI[g] for g in n.gpus] for n in truth.nodes
        ]


async def test_nats_only_delivery_through_a_real_nats_server(
    tmp_path: Path, short_dir: Path
) -> None:
    from nats_server import NatsServer

    from ccsa.sim.ccbackend.nats_consumer import NatsConsumer

    async with environment(tmp_path, short_dir) as env:
        t0 = env.sim.now
        ids = env.sim.submit_many(
            [JobSpec(user="alice", submit=t0 - 3000 + 100 * i, duration=50) for i in range(5)]
        )
        with NatsServer(tmp_path) as server:
            consumer = NatsConsumer(env.backend, server.url, "cc.job.event")
            async with trio.open_nursery() as nursery:
                await nursery.start(consumer.run)
                cfg = env.config(cc_rest_submit_jobs=False, nats_server="127.0.0.1",
                                 nats_port=server.port, nats_subject="cc.job.event")  # fmt: skip
                assert await main(cfg, now=lambda: env.sim.now, once=True) == 0
                expected = [("c1", i) for i in ids]
                await wait_for(lambda: env.backend.check_exactly_once(expected).ok, timeout=30)
                nursery.cancel_scope.cancel()
        assert env.standin.requests("start_job") == []  # REST submission is off
        assert {o.function for o in consumer.outcomes} == {"start_job", "stop_job"}


# --- the stuck-job checker's decisions (real store, small stand-ins for Slurm and cc-backend) --


@dataclass
class Running:
    cluster: str
    job_id: int
    start_time: int


class StuckWorld:
    """cc-backend's running list + slurmctld's queue + what lookups were asked for."""

    def __init__(self, store: Any, now: float) -> None:
        from ccsa.daemon.stats import Stats

        self.store = store
        self.stats = Stats()
        self.clusters = ["c1"]
        self.cc_running: list[Running] = []
        self.in_squeue: set[int] = set()
        self.lookups: list[tuple[list[int], bool, list[tuple[int, int]]]] = []
        self.checks: list[float] = []
        self.woken = False
        self._now = now
        self.delivery = self
        self.client = self
        self.syncer = self
        self.slurm = self
        self.cfg = make_config(slurm_query_delay=1, cc_poll_interval=600)

    def now(self) -> float:
        return self._now

    def on_queued(self) -> None:
        self.woken = True

    async def running_jobs(self) -> list[Running]:
        self.checks.append(trio.current_time())
        return self.cc_running

    async def squeue_jobs(self, cluster: str, ids: list[int]) -> list[Any]:
        return [Running(cluster, i, 0) for i in ids if i in self.in_squeue]

    async def lookup(
        self, cluster: str, ids: list[int], *, with_queue: bool = True, forget: Any = ()
    ) -> Any:
        from ccsa.daemon.store import ApplyResult
        from ccsa.daemon.sync import LookupResult

        self.lookups.append((sorted(ids), with_queue, sorted(forget)))
        return LookupResult(frozenset(), frozenset(), ApplyResult(starts=len(list(forget))))


def _started(store: Any, job_id: int, start: int, delivered_at: float) -> None:
    from ccsa.ccbackend.models import Resource, StartJob
    from ccsa.daemon.plan import JobKey, QueueStart

    body = StartJob(
        job_id=job_id, cluster="c1", user="u", project="p", num_nodes=1,
        resources=[Resource(hostname="n1")], start_time=start, shared="none",
    )  # fmt: skip
    store.apply("c1", [QueueStart(JobKey("c1", job_id, start), body, "p", True)], now=0.0,
                rest=True, nats=False)  # fmt: skip
    (row,) = [r for r in store.outbox_rows() if r.key.job_id == job_id]
    store.rest_done(row, publish_nats=False, now=delivered_at)


def test_stuck_candidates_both_directions() -> None:
    """The pure decision: which listed jobs to ask slurmctld about, which delivered starts are
    missing from cc-backend's list (older than min_age only: job_cache hides younger ones)."""
    from ccsa.daemon.plan import JobKey, KnownJob
    from ccsa.daemon.stuck import stuck_candidates

    now = 1_700_100_000.0

    def known(job_id: int, phase: str, delivered: float | None) -> KnownJob:
        return KnownJob(JobKey("c1", job_id, 100), phase, start_delivered_at=delivered)  # type: ignore[arg-type]

    store = {(k.key.job_id, 100): k for k in [
        known(1, "started", now - 3600),  # lost by cc-backend
        known(2, "started", now - 60),  # young: may sit in job_cache
        known(3, "started", now - 3600),  # listed, still running here
        known(5, "stopped", now - 3600),  # done here, yet listed running
    ]}  # fmt: skip
    listed = [Running("c1", 3, 100), Running("c1", 5, 100), Running("c1", 9, 50),
              Running("other", 1, 100)]  # fmt: skip
    suspects, lost = stuck_candidates("c1", listed, store, now, 600)
    assert suspects == [3, 9]  # running here or unknown; the stopped job 5 is not asked again
    assert lost == [(1, 100)]


async def test_stuck_check_both_directions(tmp_path: Path) -> None:
    from ccsa.daemon.store import Store
    from ccsa.daemon.stuck import stuck_check

    now = 1_700_100_000.0
    with Store.open(tmp_path / "s.sqlite3") as store:
        _started(store, 1, 100, now - 3600)  # old start, cc-backend lost it -> re-queue
        _started(store, 2, 100, now - 60)  # young start: may hide in job_cache -> leave
        _started(store, 3, 100, now - 3600)  # listed running, still in squeue -> fine
        _started(store, 4, 100, now - 3600)  # listed running, gone from squeue -> sacct -j
        world = StuckWorld(store, now)
        world.cc_running = [Running("c1", 3, 100), Running("c1", 4, 100),
                            Running("other", 4, 100), Running("c1", 9, 50)]  # fmt: skip
        world.in_squeue = {3}
        checked, requeued = await stuck_check(world, world, world.clusters, world.stats, 600)  # type: ignore[arg-type]
    assert requeued == 1
    # finished-job lookups (no squeue) for 4 and for 9 (running in cc-backend, unknown here);
    # the other cluster's job is ignored; the lost start of job 1 is planned as unknown
    assert ([4, 9], False, []) in world.lookups
    assert ([1], True, [(1, 100)]) in world.lookups
    assert all(2 not in ids for ids, _, _ in world.lookups)
    assert checked == 4


async def test_stuck_check_sends_the_stop_of_a_refused_start_cc_backend_runs(
    tmp_path: Path,
) -> None:
    """A start parked as a refused rerun (422) that cc-backend lists as running: the 422 was
    for another run (after a lost state database the re-read sent the job's later run first,
    whose 422 was taken for "delivered twice"). Before the fix the run stayed "running" in
    cc-backend for good: its stop waited parked beside the start and no lookup could queue
    another (long soak 2026-12-06, job 14531)."""
    from ccsa.ccbackend.models import Resource, StartJob, StopJob
    from ccsa.daemon.plan import JobKey, QueueStart, QueueStop
    from ccsa.daemon.store import Store
    from ccsa.daemon.stuck import stuck_check

    now = 1_700_100_000.0
    first = JobKey("c1", 5, 100)
    start = StartJob(
        job_id=5, cluster="c1", user="u", project="p", num_nodes=1,
        resources=[Resource(hostname="n1")], start_time=100, shared="none",
    )  # fmt: skip
    stop = StopJob(job_id=5, cluster="c1", job_state="cancelled", stop_time=280, start_time=100)
    with Store.open(tmp_path / "s.sqlite3") as store:
        _started(store, 5, 300, now - 3600)  # the later run, its 422 taken as "delivered"
        store.apply("c1", [QueueStart(first, start, "p", True), QueueStop(first, stop, "p")],
                    now=now - 3000, rest=True, nats=False)  # fmt: skip
        (row,) = [r for r in store.eligible(0, 10) if r.kind == "start"]
        store.park(row, 422, "refused rerun", now - 3000)
        world = StuckWorld(store, now)
        world.cc_running = [Running("c1", 5, 100)]  # cc-backend holds the first run
        await stuck_check(world, world, world.clusters, world.stats, 600)  # type: ignore[arg-type]
        assert [(r.key, r.kind) for r in store.eligible(0, 10)] == [(first, "stop")]
        assert store.parked_count() == 0
    assert world.woken
    assert world.stats.refused_adopted == 1


async def test_stuck_loop_runs_every_cc_poll_interval(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    from ccsa.daemon.store import Store
    from ccsa.daemon.stuck import stuck_loop

    with Store.open(tmp_path / "s.sqlite3") as store:
        world = StuckWorld(store, 1_700_000_000.0)
        t0 = trio.current_time()
        with trio.move_on_after(2000):
            await stuck_loop(
                world,  # type: ignore[arg-type]
                world,  # type: ignore[arg-type]
                world.clusters,
                world.stats,
                first_delay=world.cfg.slurm_query_delay + 1.0,
                interval=world.cfg.cc_poll_interval,
                min_age=600,
            )
    assert [t - t0 for t in world.checks] == pytest.approx([2, 602, 1202, 1802])


def test_first_window_starts_at_the_go_adapters_lastrun(tmp_path: Path) -> None:
    from ccsa.daemon.pipeline import initial_start

    cfg = make_config(last_run_path=str(tmp_path / "lastrun"), slurm_query_max_span=7200)
    start = initial_start(cfg, lambda: 1_700_000_000.0)
    assert start() == 1_700_000_000.0 - 7200  # fresh install: slurmQueryMaxSpan back
    (tmp_path / "lastrun").touch()
    os.utime(tmp_path / "lastrun", (1_699_999_000, 1_699_999_000))
    assert start() == 1_699_999_000  # migration: where the Go adapter stopped


async def test_stuck_checker_runs_with_rest_submission_off(tmp_path: Path, short_dir: Path) -> None:
    """Issue 17 item 6: with ccRestSubmitJobs false (jobs over NATS) the checker still asks
    cc-backend's ``GET /api/jobs/`` (it needs only the JWT) and still runs its round."""
    from nats_server import NatsServer

    async with environment(tmp_path, short_dir) as env:
        with NatsServer(tmp_path) as server:
            cfg = env.config(cc_rest_submit_jobs=False, nats_server="127.0.0.1",
                             nats_port=server.port, nats_subject="cc.job.event")  # fmt: skip
            async with daemon(env, cfg) as d:
                assert d.delivery.client is None  # REST submission is off
                await wait_for(lambda: env.standin.requests("get_jobs") != [], timeout=30)
    assert env.standin.requests("start_job") == []


# --- start-up exits (issue 17 item 9): a real daemon process --------------------------------

SLURM_COMMANDS = ("sacctmgr", "sacct", "squeue", "scontrol", "sinfo")


def _daemon_config_file(tmp: Path, sock_dir: Path, bin_dir: Path) -> Path:
    cfg = {
        "ccRestUrl": "http://127.0.0.1:9",
        "ccRestJwt": "x.y.z",
        "pidFilePath": str(tmp / "run" / "daemon.pid"),
        "prepSockListenPath": str(sock_dir / "d.sock"),
        "prepSockConnectPath": str(sock_dir / "d.sock"),
        "lastRunPath": str(tmp / "lib" / "lastrun"),
        "stateDbPath": str(tmp / "lib" / "state.sqlite3"),
        "slurmBinDir": str(bin_dir),
    }
    path = tmp / "config.json"
    path.write_text(json.dumps(cfg))
    path.chmod(0o600)  # it holds the JWT (a looser mode earns a warning line)
    return path


def test_sigterm_while_startup_checks_retry_logs_and_removes_the_pid_file(
    tmp_path: Path, short_dir: Path
) -> None:
    """slurmdbd is down (every ``sacctmgr`` fails, as the real one does with "Problem talking to
    the database"), so the daemon waits in its start-up retry; systemd's stop sends SIGTERM."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in SLURM_COMMANDS:
        script = bin_dir / name
        script.write_text("#!/bin/sh\necho 'Problem talking to the database' >&2\nexit 1\n")
        script.chmod(0o755)
    cfg = _daemon_config_file(tmp_path, short_dir, bin_dir)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccsa", "-daemon", "-config", str(cfg)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        seen = ""
        deadline = time.monotonic() + 60
        while "retrying in" not in seen and time.monotonic() < deadline:
            seen += proc.stderr.readline()
        assert "retrying in" in seen, seen
        assert (tmp_path / "run" / "daemon.pid").read_text().strip() == str(proc.pid)
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=30)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, seen + rest
    assert "SIGTERM received while waiting for Slurm at start-up" in rest, seen + rest
    assert not (tmp_path / "run" / "daemon.pid").exists()


def test_a_slurm_command_that_is_not_installed_is_a_config_error(
    tmp_path: Path, short_dir: Path
) -> None:
    """No ``sacctmgr`` in slurmBinDir: one line naming it and slurmBinDir, exit 1, no retries
    (systemd's Restart=on-failure retries anyway), no pid file left."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in SLURM_COMMANDS:
        if name != "sacctmgr":
            (bin_dir / name).write_text("#!/bin/sh\nexit 1\n")
            (bin_dir / name).chmod(0o755)
    cfg = _daemon_config_file(tmp_path, short_dir, bin_dir)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "ccsa", "-daemon", "-config", str(cfg)],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the daemon kept retrying a missing sacctmgr: {exc.stderr!r}")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert "sacctmgr" in lines[0], lines[0]
    assert "slurmBinDir" in lines[0], lines[0]
    assert "retrying" not in proc.stderr
    assert not (tmp_path / "run" / "daemon.pid").exists()


def test_sigterm_ends_a_once_run_that_waits_for_cc_backend(tmp_path: Path, short_dir: Path) -> None:
    """``--once`` with cc-backend down waits up to 300 s for the outbox to drain; SIGTERM ends it
    at once (exit 1, one WARNING line), the rows stay in the outbox, the PID file goes."""
    sim = SimCluster.create(tmp_path / "sim", clusters=("c1",), clock="real")
    sim.submit_many([JobSpec(user="alice", submit=sim.now - 120, duration=10)])
    cfg = _daemon_config_file(tmp_path, short_dir, sim.bin_dir)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccsa", "-daemon", "--once", "-debug", "3", "-config", str(cfg)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        seen = ""
        deadline = time.monotonic() + 60
        while " synced " not in seen and time.monotonic() < deadline:
            seen += proc.stderr.readline()
        assert " synced " in seen, seen
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=30)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, seen + rest
    assert "SIGTERM received: once run stopped" in rest, seen + rest
    assert not (tmp_path / "run" / "daemon.pid").exists()
