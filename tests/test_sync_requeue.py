"""A requeued job's earlier runs reach the daemon whichever way it reads sacct (issue 18).

Real subprocesses (the simulated Slurm's sacct and squeue), the real Syncer and Store, the
simulated clock. On the 24.11 test bed (docs/real-slurm.md "Lifecycles of issue 18", job 53) a
time window without ``--duplicates`` prints only each job's latest record: once a job requeued
and cancelled while it pended has its CANCELLED record (never started) in the window, the
REQUEUED record of the run that did happen is only in ``sacct --duplicates``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from sim_syncer import T0, syncer

from ccsa.ccbackend.models import StartJob, StopJob
from ccsa.daemon.store import Store
from ccsa.sim.slurm import JobSpec, SimCluster


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "state.sqlite3")
    yield s
    s.close()


def queued(store: Store) -> tuple[list[StartJob], list[StopJob]]:
    starts: list[StartJob] = []
    stops: list[StopJob] = []
    for r in store.outbox_rows():
        if r.kind == "start":
            starts.append(msgspec.json.decode(r.body, type=StartJob))
        else:
            stops.append(msgspec.json.decode(r.body, type=StopJob))
    return starts, stops


def requeued_then_cancelled(tmp_path: Path) -> tuple[SimCluster, int]:
    """A job that runs 60 s from T0 + 10, is requeued, and is cancelled 2 s later while it
    pends (test bed job 35's lifecycle)."""
    sim = SimCluster.create(tmp_path / "sim", clusters=("c1",), start=T0, min_job_age=30)
    spec = JobSpec(
        user="alice", submit=T0 + 10, duration=300, requeue_after=60, cancel_requeued_after=2
    )
    (job,) = sim.submit_many([spec])
    return sim, job


async def test_a_run_requeued_then_cancelled_unseen_in_squeue_is_delivered(
    tmp_path: Path, store: Store
) -> None:
    """The job runs 60 s, is requeued, and is cancelled 2 s later while it pends; the daemon's
    first poll comes after the cancelled record became eligible (a daemon that was down, or
    polls slower than the run). Before the fix (window without ``--duplicates``) nothing was
    queued: the run was lost. Now its start and a stop as cancelled at the requeue."""
    sim, job = requeued_then_cancelled(tmp_path)
    sim.set_now(T0 + 400)
    (truth,) = (t for t in sim.jobs() if t.job_id == job)
    (first,) = truth.earlier
    sync = syncer(sim, store)
    await sync.tick("c1")
    starts, stops = queued(store)
    assert [(s.job_id, s.start_time) for s in starts] == [(job, first.start)]
    assert [(s.job_id, s.start_time, s.stop_time, s.job_state) for s in stops] == [
        (job, first.start, first.end, "cancelled")
    ]
    assert [r.hostname for r in starts[0].resources] == list(first.hosts)


async def test_a_lookup_by_id_finds_the_earlier_run_it_knows(tmp_path: Path, store: Store) -> None:
    """ccsa queued the run's start while it ran; the job is then requeued and cancelled while
    it pends. A lookup by id (the stuck-job check's, for a job cc-backend shows running that
    squeue no longer lists) must stop that run: ``sacct -j`` without ``--duplicates`` prints
    only the CANCELLED record that never started (test bed job 35), so before the fix the
    lookup stopped nothing and the run stayed running in cc-backend."""
    sim, job = requeued_then_cancelled(tmp_path)
    sync = syncer(sim, store)
    sim.set_now(T0 + 30)
    await sync.tick("c1")
    assert [s.job_id for s in queued(store)[0]] == [job]
    sim.set_now(T0 + 400)
    await sync.lookup("c1", [job], with_queue=False)
    (truth,) = (t for t in sim.jobs() if t.job_id == job)
    (first,) = truth.earlier
    starts, stops = queued(store)
    assert [(s.job_id, s.start_time) for s in starts] == [(job, first.start)]
    assert [(s.job_id, s.start_time, s.stop_time, s.job_state) for s in stops] == [
        (job, first.start, first.end, "cancelled")
    ]


async def test_the_stuck_check_stops_the_allocation_start_cc_backend_kept(
    tmp_path: Path, store: Store
) -> None:
    """A power-up job whose start reached cc-backend under the allocation time; then the state
    database was lost, and the re-read sent the start under the reset time (cc-backend's 422
    taken for "delivered twice") and its stop (404, "done"). cc-backend still lists the run
    under the allocation time. Before the fix the stuck-job check's lookup planned the record
    (reset time, already stopped) and nothing more: the run stayed running for good (long soak
    2026-12-06, job 12718). Now the unknown run is recorded as started and gets the stop."""
    from ccsa.daemon.plan import JobKey, QueueStart, QueueStop
    from ccsa.daemon.stats import Stats
    from ccsa.daemon.stuck import stuck_check

    sim = SimCluster.create(tmp_path / "sim", clusters=("c1",), start=T0, min_job_age=30)
    (job,) = sim.submit_many([JobSpec(user="alice", submit=T0 + 10, duration=60, boot_delay=20)])
    sim.set_now(T0 + 400)
    (truth,) = (t for t in sim.jobs() if t.job_id == job)
    assert truth.start is not None
    assert truth.end is not None
    assert truth.allocated < truth.start  # the reset moved the start
    sync = syncer(sim, store)
    reset = JobKey("c1", job, truth.start)
    body = StartJob(job_id=job, cluster="c1", user="alice", project="p", num_nodes=1,
                    resources=[], start_time=truth.start, shared="none")  # fmt: skip
    stop = StopJob(job_id=job, cluster="c1", job_state="completed", stop_time=int(truth.end),
                   start_time=truth.start)  # fmt: skip
    store.apply("c1", [QueueStart(reset, body, "p", True), QueueStop(reset, stop, "p")],
                now=T0 + 300, rest=True, nats=False)  # fmt: skip
    for _ in range(2):  # the 422 of the start, then the 404 of its stop: both "done"
        for row in store.eligible(0, 10):
            store.rest_done(row, publish_nats=False, now=T0 + 301)
    assert store.outbox_depth() == 0

    class Backend:
        async def running_jobs(self) -> list[Any]:
            return [SimpleNamespace(cluster="c1", job_id=job, start_time=truth.allocated)]

    await stuck_check(Backend(), sync, ["c1"], Stats())  # type: ignore[arg-type]
    _, stops = queued(store)
    assert [(s.start_time, s.stop_time, s.job_state) for s in stops] == [
        (truth.allocated, truth.end, "completed")
    ]
