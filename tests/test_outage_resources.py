"""Resources survive a cc-backend outage longer than MinJobAge; parked rejections are visible.

Issue 8, "resources through outages" and "parked rejections": the daemon runs in-process
(``supervisor.main``) against the simulated Slurm cluster (real executables, sim clock injected
as the daemon's wall clock) and the stand-in cc-backend on a loopback port.

* cc-backend goes ``down()`` while jobs start and end; the outage (in Slurm time) is longer than
  MinJobAge, so when it is back slurmctld has forgotten every one of those jobs. They must still
  arrive with exactly Slurm's hwthreads and GPU PCI addresses, because ccsa captured them while
  the jobs were in slurmctld and kept them with the pending start in its state database.
* Jobs that start and end while ccsa itself is stopped (nothing could capture them) arrive with
  their host names only and are counted as ``without_resources``.
* A start cc-backend rejects with 400 is parked with cc-backend's message and time, visible in
  ``status`` (socket) and ``redrive --list``; after the cause is fixed ``redrive --all`` sends it
  and its stop, and the job ends up in cc-backend exactly once.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ccsa import config, metrics, status
from ccsa.config import Config
from ccsa.daemon.plan import JobKey
from ccsa.daemon.supervisor import Daemon, main
from ccsa.demo import gpu_pci_map
from ccsa.sim.ccbackend.clusters import minimal
from ccsa.sim.ccbackend.server import StandIn
from ccsa.sim.ccbackend.state import Backend
from ccsa.sim.slurm import JobSpec, JobTruth, Shape, SimCluster
from ccsa.sim.verdict import resource_problem

T0 = 1_700_000_000.0
MIN_JOB_AGE = 120.0


@dataclass
class World:
    sim: SimCluster
    backend: Backend
    standin: StandIn
    cfg_path: Path
    cfg: Config
    pci: dict[str, list[str]]


@asynccontextmanager
async def world(tmp: Path, sock_dir: Path) -> AsyncIterator[World]:
    sim = SimCluster.create(
        tmp / "sim", clusters=("c1",), start=T0, clock="sim", min_job_age=MIN_JOB_AGE
    )
    pci = gpu_pci_map(sim.spec())
    backend = Backend({"c1": minimal("c1")}, clock=lambda: sim.now)
    standin = StandIn(backend)
    async with trio.open_nursery() as nursery:
        await nursery.start(standin.serve)
        values: dict[str, Any] = {
            "ccRestUrl": standin.url,
            "ccRestJwt": "unused-without-auth",
            "pidFilePath": str(tmp / "run" / "daemon.pid"),
            "prepSockListenPath": str(sock_dir / "d.sock"),
            "prepSockConnectPath": str(sock_dir / "d.sock"),
            "lastRunPath": str(tmp / "lib" / "lastrun"),
            "stateDbPath": str(tmp / "lib" / "state.sqlite3"),
            "slurmBinDir": str(sim.bin_dir),
            "slurmPollInterval": 1,
            "slurmQueryDelay": 1,
            "slurmQueryMaxSpan": 86400,
            "slurmQueryOverlap": 60,
            "ccPollInterval": 3600,
            "gpuPciAddrs": pci,
        }
        cfg_path = tmp / "config.json"
        cfg_path.write_text(json.dumps(values))
        cfg_path.chmod(0o600)
        yield World(sim, backend, standin, cfg_path, config.load(str(cfg_path)), pci)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def daemon(w: World) -> AsyncIterator[Daemon]:
    async with trio.open_nursery() as nursery:
        d: Daemon = await nursery.start(
            lambda task_status: main(w.cfg, now=lambda: w.sim.now, task_status=task_status)
        )
        yield d
        nursery.cancel_scope.cancel()


async def wait_for(cond: Any, timeout: float = 90.0, what: str = "") -> None:
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.05)


async def next_tick(d: Daemon) -> None:
    """Wait for a poll that began after now (so it saw the current sim time)."""
    seen = d.stats.sync_ticks
    await wait_for(lambda: d.stats.sync_ticks >= seen + 2)


def _specs(t: float) -> list[JobSpec]:
    """CPU, multi-node, a100, two-type GPU (h100 + h200 nodes), array and het jobs."""
    return [
        JobSpec(user="alice", submit=t + 5, duration=150, shape=Shape(cpus_per_node=4)),
        JobSpec(user="bob", submit=t + 20, duration=200, shape=Shape(nodes=2, cpus_per_node=3)),
        JobSpec(
            user="carol",
            partition="gpu",
            submit=t + 30,
            duration=180,
            shape=Shape(cpus_per_node=8, gpus_per_node=2, gpu_type="a100"),
        ),
        JobSpec(
            user="dave",
            partition="gpu",
            submit=t + 45,
            duration=240,
            shape=Shape(cpus_per_node=4, gpus_per_node=3, gpu_type="h200"),
        ),
        JobSpec(
            user="alice",
            partition="gpu",
            submit=t + 60,
            duration=120,
            shape=Shape(nodes=2, cpus_per_node=2, gpus_per_node=1),
        ),
        JobSpec(
            user="bob", submit=t + 75, duration=130, array_size=3, shape=Shape(cpus_per_node=1)
        ),
        JobSpec(
            user="carol",
            submit=t + 90,
            duration=160,
            shape=Shape(cpus_per_node=2),
            het=(Shape(cpus_per_node=1),),
        ),
    ]


def _ran(truth: list[JobTruth], ids: set[int] | None = None) -> list[JobTruth]:
    return [j for j in truth if j.start is not None and (ids is None or j.job_id in ids)]


async def test_outage_longer_than_min_job_age_keeps_hwthreads_and_gpus(
    tmp_path: Path, short_dir: Path
) -> None:
    async with world(tmp_path, short_dir) as w:
        sim, backend = w.sim, w.backend
        async with daemon(w) as d:
            await next_tick(d)
            w.standin.down()  # cc-backend unreachable: connections refused
            outage_began = sim.now
            ids = set(sim.submit_many(_specs(sim.now)))
            # Move Slurm time in poll-sized steps: the daemon sees each job while it runs.
            while sim.now < outage_began + 600:
                sim.advance(60)
                await next_tick(d)
            truth = _ran(sim.jobs())
            assert len(truth) == 10  # 5 plain jobs + 3 array tasks + 2 het components
            ids = {j.job_id for j in truth}
            assert all(j.end is not None for j in truth)
            # Every job ended more than MinJobAge ago: slurmctld has forgotten all of them.
            assert all(j.end is not None and j.end + MIN_JOB_AGE < sim.now for j in truth)
            queue = await d.syncer.slurm.squeue_all("c1")
            assert not {q.job_id for q in queue.jobs} & ids
            # Nothing reached cc-backend; the starts wait in the outbox WITH their resources.
            assert backend.jobs == []
            assert d.stats.transient_failures > 0
            pending = {r.key.job_id for r in d.store.outbox_rows() if r.kind == "start"}
            assert pending == ids
            for j in truth:
                assert j.start is not None
                kept = d.store.resources(JobKey("c1", j.job_id, int(j.start)))
                assert kept is not None
                assert [r.hwthreads for r in kept] == [list(n.hwthreads) for n in j.nodes]
            # cc-backend is back, much later than MinJobAge.
            w.standin.up()
            await wait_for(lambda: d.store.outbox_depth() == 0, timeout=120)
            snap = await status.fetch(w.cfg.prep_sock_connect_path)
        report = backend.check_exactly_once([("c1", i) for i in sorted(ids)], hwthreads=True)
        assert report.ok, report.summary()
        problems = [
            f"job {j.job_id}: {p}"
            for j in truth
            if (p := resource_problem(j, backend.find("c1", j.job_id)[0], w.pci))
        ]
        assert not problems, problems
        gpu_jobs = [j for j in truth if any(n.gpus for n in j.nodes)]
        assert len(gpu_jobs) == 3
        assert all(
            r.get("accelerators")
            for j in gpu_jobs
            for r in backend.find("c1", j.job_id)[0].resources
        )
        assert snap.counter("without_resources") == 0
        assert snap.counter("starts_delivered") == len(ids)


async def test_jobs_that_ran_while_ccsa_was_down_get_host_names_and_are_counted(
    tmp_path: Path, short_dir: Path
) -> None:
    async with world(tmp_path, short_dir) as w:
        sim, backend = w.sim, w.backend
        async with daemon(w) as d:
            await next_tick(d)
            early = sim.submit(
                JobSpec(user="bob", submit=sim.now + 2, duration=60, shape=Shape(cpus_per_node=2))
            )
            for _ in range(3):
                sim.advance(30)
                await next_tick(d)
            await wait_for(lambda: d.store.outbox_depth() == 0)
        # ccsa is stopped: jobs start and end, and slurmctld forgets them (MinJobAge).
        down = set(sim.submit_many(_specs(sim.now)[:5]))
        sim.advance(600)
        truth = sim.jobs()
        lost_resources = _ran(truth, down)
        assert len(lost_resources) == 5
        async with daemon(w) as d2:
            await wait_for(lambda: d2.stats.sync_ticks >= 1 and d2.store.outbox_depth() == 0)
            snap = await status.fetch(w.cfg.prep_sock_connect_path)
        expected = [("c1", early)] + [("c1", j.job_id) for j in lost_resources]
        report = backend.check_exactly_once(expected, hwthreads=[("c1", early)])
        assert report.ok, report.summary()
        for j in lost_resources:
            (row,) = backend.find("c1", j.job_id)
            assert [r["hostname"] for r in row.resources] == [n.hostname for n in j.nodes]
            assert all(not r.get("hwthreads") for r in row.resources)
        assert snap.counter("without_resources") == len(lost_resources)


async def test_rejected_start_is_parked_visible_and_redriven(
    tmp_path: Path, short_dir: Path
) -> None:
    message = "no subcluster of cluster c1 matches host ccn001 (cluster.json outdated)"
    async with world(tmp_path, short_dir) as w:
        sim, backend = w.sim, w.backend
        async with daemon(w) as d:
            await next_tick(d)
            bad, good = sim.submit_many(
                [
                    JobSpec(
                        user="alice", submit=sim.now + 2, duration=50, shape=Shape(cpus_per_node=2)
                    ),
                    JobSpec(
                        user="bob", submit=sim.now + 3, duration=50, shape=Shape(cpus_per_node=2)
                    ),
                ]
            )
            w.standin.faults.rule("start_job", job_id=bad, status=400, message=message)
            for _ in range(4):
                sim.advance(30)
                await next_tick(d)
            await wait_for(lambda: d.store.outbox_depth() == 0 and d.store.parked_count() == 2)
            (bad_truth,) = [j for j in sim.jobs() if j.job_id == bad]
            assert bad_truth.start is not None
            # Visible: in the status snapshot over the daemon's socket...
            snap = await status.fetch(w.cfg.prep_sock_connect_path)
            assert snap.parked == 2
            rows = {p.kind: p for p in snap.parked_latest}
            assert rows["start"].job_id == bad
            assert rows["start"].status == 400
            assert message in rows["start"].reason
            # When: on the daemon's wall clock (here Slurm's simulated one), after the job began.
            assert bad_truth.start <= rows["start"].parked_at <= sim.now
            assert len(w.standin.requests("start_job")) >= 2  # the rejected one and the good one
            assert rows["stop"].job_id == bad
            assert "start was rejected" in rows["stop"].reason
            assert snap.labelled("rejections") == {"400": 1}
            # ... and through the operator command (a second process on the same state file).
            listed = await _cli("redrive", "--list", "-config", str(w.cfg_path))
            assert listed.returncode == 0, listed.stderr
            lines = [ln for ln in listed.stdout.splitlines() if f" {bad} " in ln]
            assert len(lines) == 2, listed.stdout
            assert any(" start " in ln and " 400 " in ln and message in ln for ln in lines)
            assert any(" stop " in ln and "start was rejected" in ln for ln in lines)
            assert backend.check_exactly_once([("c1", good)], allow_unexpected=True).ok
            assert not backend.find("c1", bad)
            # The cause is fixed (cluster.json updated): re-drive while the daemon runs.
            w.standin.faults.clear()
            moved = await _cli("redrive", "--all", "-config", str(w.cfg_path))
            assert moved.returncode == 0, moved.stderr
            assert moved.stdout.startswith("2 row(s) moved back"), moved.stdout
            await wait_for(
                lambda: (
                    len(backend.find("c1", bad)) == 1
                    and backend.find("c1", bad)[0].state != "running"
                )
            )
            await wait_for(lambda: d.store.outbox_depth() == 0)
            assert d.store.parked_count() == 0
        report = backend.check_exactly_once([("c1", bad), ("c1", good)], hwthreads=True)
        assert report.ok, report.summary()


async def test_a_401_window_is_visible_in_status_and_metrics_and_parks_nothing(
    tmp_path: Path, short_dir: Path
) -> None:
    """Issue 17 items 2 and 8 through the running daemon: while cc-backend answers 401 (an
    expired token), ``status`` (socket and command) and the metrics show the blocked REST
    channel with the problem, and the oldest waiting row with its attempts and last answer;
    nothing is parked, and every job arrives once the token works again."""
    async with world(tmp_path, short_dir) as w:
        sim, backend = w.sim, w.backend
        w.standin.faults.rule("*", status=401, message="token is expired")
        async with daemon(w) as d:
            await next_tick(d)
            jobs = sim.submit_many(
                [
                    JobSpec(
                        user="alice", submit=sim.now + 2, duration=40, shape=Shape(cpus_per_node=2)
                    )
                    for _ in range(3)
                ]
            )
            for _ in range(3):
                sim.advance(30)
                await next_tick(d)
            await wait_for(lambda: d.delivery.channels()["rest"].blocked_answers >= 2)
            snap = await status.fetch(w.cfg.prep_sock_connect_path)
            rest = snap.channels["rest"]
            assert rest.problem is not None
            assert "401 Unauthorized: token is expired" in rest.problem
            assert rest.blocked_since is not None
            assert snap.oldest_waiting is not None
            assert snap.oldest_waiting.job_id in jobs
            assert snap.oldest_waiting.attempts >= 1
            assert "token is expired" in (snap.oldest_waiting.last_error or "")
            assert snap.parked == 0
            text = metrics.exposition(d.status).decode()
            assert 'ccsa_channel_blocked{channel="rest"} 1.0' in text
            assert 'ccsa_blocked_answers_total{status="401"}' in text
            assert "ccsa_oldest_waiting_attempts" in text
            shown = await _cli("status", "-config", str(w.cfg_path))
            assert shown.returncode == 0, shown.stderr
            assert "BLOCKED" in shown.stdout
            assert "token is expired" in shown.stdout
            w.standin.faults.clear()  # the token works again
            await wait_for(lambda: d.store.outbox_depth() == 0)
            assert d.store.parked_count() == 0
            assert d.delivery.channels()["rest"].problem is None
        report = backend.check_exactly_once([("c1", j) for j in jobs], hwthreads=True)
        assert report.ok, report.summary()


async def test_a_lost_state_database_re_reads_what_was_undelivered(
    tmp_path: Path, short_dir: Path
) -> None:
    """Issue 17 item 4: lastRunPath's mtime means "everything before this reached cc-backend"
    (the oldest undelivered action's time), so deleting the state database while starts and
    stops wait for a down cc-backend loses none of them: the new database starts from lastrun
    and re-reads them. Before, lastrun was touched to "now" after every poll, and the jobs that
    had ended more than the overlap earlier were never read again."""
    async with world(tmp_path, short_dir) as w:
        sim, backend = w.sim, w.backend
        w.standin.down()
        async with daemon(w) as d:
            await next_tick(d)
            jobs = sim.submit_many(
                [
                    JobSpec(
                        user="alice", submit=sim.now + 2, duration=30, shape=Shape(cpus_per_node=2)
                    )
                    for _ in range(3)
                ]
            )
            for _ in range(6):  # the jobs start and end; MinJobAge passes
                sim.advance(30)
                await next_tick(d)
            await wait_for(lambda: d.store.outbox_depth() == 6)
            starts = [t.start for t in sim.jobs() if t.job_id in jobs]
            assert all(start is not None for start in starts)
            lastrun = os.stat(w.cfg.last_run_path).st_mtime
            assert lastrun <= min(s for s in starts if s is not None)
        _delete_database(w.cfg.state_db_path)  # the state database is lost
        w.standin.up()
        async with daemon(w) as d:
            await wait_for(lambda: all(len(backend.find("c1", j)) == 1 for j in jobs))
            await wait_for(lambda: d.store.outbox_depth() == 0)
        report = backend.check_exactly_once([("c1", j) for j in jobs])
        assert report.ok, report.summary()


def _delete_database(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


async def _cli(*args: str) -> Ran:
    """Run ``python -m ccsa ARGS`` without blocking the in-process daemon (it must answer)."""
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "NOTIFY_SOCKET")}
    done = await trio.run_process(
        [sys.executable, "-m", "ccsa", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=env,
    )
    return Ran(done.returncode, done.stdout.decode(), done.stderr.decode())


def test_concurrent_failures_count_as_one_failed_attempt() -> None:
    """Regression (found by the soak): 8 workers whose requests time out together used to
    count 8 failures, pausing REST for 2**7 s (up to the 300 s cap) right after an outage."""
    import random

    from ccsa.daemon.channel import Backoff, Channel

    gate = Channel(Backoff(rng=random.Random(1)))
    for _ in range(8):
        gate.failure(100.0)  # eight rows in flight fail at the same moment
    assert gate.failures == 1
    assert gate.pause_until <= 101.0  # base delay 1 s
    # Probes that fail one after another (each after the pause ended) do escalate.
    for n in range(2, 6):
        now = gate.pause_until
        gate.failure(now)
        assert gate.failures == n
        assert gate.pause_until - now >= 0.5 * 2 ** (n - 1)
    gate.success()
    assert gate.failures == 0
    assert gate.open(0.0)


async def test_poll_takes_the_squeue_snapshot_after_sacct(tmp_path: Path, short_dir: Path) -> None:
    """Regression (found by the soak): sacct and squeue ran concurrently, so squeue could be
    the older snapshot: a job sacct already showed started was PENDING (no job_resources) in it,
    and its start went to cc-backend with host names only."""
    async with world(tmp_path, short_dir) as w:
        async with daemon(w) as d:
            await next_tick(d)
            before = len(w.sim.calls())
            w.sim.set_fault("latency", command="sacct", seconds=1.5, calls=1)
            await next_tick(d)
            await next_tick(d)
        calls = w.sim.calls()[before:]
        slow = next(i for i, c in enumerate(calls) if c["command"] == "sacct")
        assert "--allusers" in calls[slow]["argv"]  # type: ignore[operator]
        # One poll is sacct + squeue (any order if concurrent), then sinfo (node state).
        lo = max((i for i, c in enumerate(calls[:slow]) if c["command"] == "sinfo"), default=-1)
        hi = next(i for i, c in enumerate(calls) if i > slow and c["command"] == "sinfo")
        (after,) = [c for c in calls[lo + 1 : hi] if c["command"] == "squeue"]
        # The poll's squeue started only once its (slow) sacct had answered.
        assert float(after["t"]) - float(calls[slow]["t"]) >= 1.4  # type: ignore[arg-type]
