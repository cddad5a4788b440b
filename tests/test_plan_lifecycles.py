"""The planner's rules for issue 18's lifecycles, on real Slurm 24.11 documents.

The documents are in tests/fixtures/slurm-24.11-lifecycles (captured on the real test bed; its
README and docs/real-slurm.md "Lifecycles of issue 18" describe them). Node power-up: while the
nodes boot the job is RUNNING+CONFIGURING in squeue and RUNNING in sacct with the allocation
time as start; when they are up slurmctld resets the start time (``job_mgr.c``
``job_config_fini``) and overwrites sacct's record. A resize (``scontrol update NumNodes``;
``job_mgr.c`` ``job_pre_resize_acctg``/``job_post_resize_acctg``) ends the record as RESIZING
and starts a new one at the resize time. Neither is a requeue: no restart count increase, no
REQUEUED/PREEMPTED record.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from ccsa import convert
from ccsa.convert import ConvertOptions
from ccsa.daemon import runs
from ccsa.daemon.plan import (
    CONFIGURING_LIMIT,
    Action,
    JobKey,
    KnownJob,
    QueueStart,
    QueueStop,
    build,
    decide,
)
from ccsa.slurm import sacct as sacct_view
from ccsa.slurm import squeue as squeue_view
from ccsa.slurm.sacct import SacctJob, SacctState, SacctTime
from ccsa.slurm.squeue import QueueJob

DOCS = Path(__file__).parent / "fixtures" / "slurm-24.11-lifecycles"
OPTS = ConvertOptions()
C = "testcluster"
JOB = 39  # the power-up job of the fixtures
ALLOCATED = 1796522208  # its start while node2 booted (CONFIGURING)
RESET = 1796522222  # its start after "Resetting JobId=39 start time for node power up"


def _acct(name: str) -> list[SacctJob]:
    return sacct_view.decode((DOCS / name).read_bytes()).jobs


def _queue(name: str) -> dict[int, QueueJob]:
    return {j.job_id: j for j in squeue_view.decode((DOCS / name).read_bytes()).jobs}


def _plan(
    accts: list[SacctJob],
    queue: dict[int, QueueJob] | None,
    rows: list[KnownJob],
    *,
    now: float | None,
) -> list[Action]:
    known = {(r.key.job_id, r.key.start_time): r for r in rows}
    return build(decide(C, accts, queue, known, OPTS, full_queue=True, now=now), OPTS)


def _finished(acct: SacctJob, end: int) -> SacctJob:
    """The same record once the job completed (as sacct shows it then)."""
    return SacctJob(
        job_id=acct.job_id,
        cluster=acct.cluster,
        user=acct.user,
        account=acct.account,
        nodes=acct.nodes,
        partition=acct.partition,
        time=SacctTime(start=acct.time.start, end=end, submission=acct.time.submission),
        state=SacctState(current=["COMPLETED"]),
        restart_cnt=acct.restart_cnt,
    )


def test_the_fixtures_are_the_power_up_of_one_job() -> None:
    (configuring,) = _acct("powerup-configuring-sacct.json")
    (running,) = _acct("powerup-running-sacct.json")
    assert (configuring.job_id, configuring.time.start) == (JOB, ALLOCATED)
    assert (running.job_id, running.time.start) == (JOB, RESET)
    assert configuring.restart_cnt == running.restart_cnt == 0
    assert list(_queue("powerup-configuring-squeue.json")[JOB].job_state) == [
        "RUNNING",
        "CONFIGURING",
        "POWER_UP_NODE",
    ]


def test_a_configuring_job_is_not_started_before_it_runs() -> None:
    accts = _acct("powerup-configuring-sacct.json")
    queue = _queue("powerup-configuring-squeue.json")
    # 14 s into the boot (the real job's CONFIGURING time): nothing, also for a hook lookup
    assert _plan(accts, queue, [], now=RESET) == []
    # once RUNNING, the start goes out with the reset start time
    actions = _plan(_acct("powerup-running-sacct.json"), _queue("powerup-running-squeue.json"),
                    [], now=RESET + 2)  # fmt: skip
    assert [(type(a), a.key) for a in actions] == [(QueueStart, JobKey(C, JOB, RESET))]
    assert isinstance(actions[0], QueueStart)
    assert actions[0].body.start_time == RESET


def test_a_job_configuring_longer_than_the_bound_is_started() -> None:
    accts = _acct("powerup-configuring-sacct.json")
    queue = _queue("powerup-configuring-squeue.json")
    assert _plan(accts, queue, [], now=ALLOCATED + CONFIGURING_LIMIT - 1) == []
    actions = _plan(accts, queue, [], now=ALLOCATED + CONFIGURING_LIMIT + 1)
    assert [(type(a), a.key) for a in actions] == [(QueueStart, JobKey(C, JOB, ALLOCATED))]


def test_a_start_reset_after_a_delivered_start_is_the_same_run() -> None:
    """The start went out with the allocation time (a boot longer than the bound): no stop,
    no second start when the start moves; the stop carries the delivered start time."""
    delivered = KnownJob(JobKey(C, JOB, ALLOCATED), "started", partition="boot")
    (running,) = _acct("powerup-running-sacct.json")
    queue = _queue("powerup-running-squeue.json")
    assert _plan([running], queue, [delivered], now=RESET + 30) == []
    done = _finished(running, RESET + 21)
    actions = _plan([done], {}, [delivered], now=RESET + 30)
    assert [(type(a), a.key) for a in actions] == [(QueueStop, delivered.key)]
    assert isinstance(actions[0], QueueStop)
    assert actions[0].body.start_time == ALLOCATED
    assert actions[0].body.stop_time == RESET + 21
    assert actions[0].body.job_state == "completed"
    # later windows still show the record: nothing more once the stop is queued or sent
    for phase in ("stop_queued", "stopped"):
        row = KnownJob(delivered.key, phase, partition="boot")
        assert _plan([done], {}, [row], now=RESET + 40) == []


def test_a_lagging_record_of_the_allocation_time_is_the_same_run() -> None:
    """slurmdbd lag after a power-up: the start went out (or is queued) under the reset time,
    then a lagging sacct answer still shows the record with the allocation time (slurmdbd has
    not applied the reset yet). Same run: no second start under the allocation time, which
    cc-backend would refuse as a rerun (422) while the run it keeps is never stopped (found by
    the short soak: job power_up-206 stuck "running" in the stand-in)."""
    (lagging,) = _acct("powerup-configuring-sacct.json")  # start = ALLOCATED, RUNNING
    (running,) = _acct("powerup-running-sacct.json")  # start = RESET
    queue = _queue("powerup-running-squeue.json")
    for phase in ("start_queued", "started"):
        row = KnownJob(JobKey(C, JOB, RESET), phase, partition="boot")
        assert _plan([lagging], queue, [row], now=RESET + 30) == []
        done = _finished(running, RESET + 21)
        actions = _plan([lagging, done], {}, [row], now=RESET + 30)
        assert [(type(a), a.key) for a in actions] == [(QueueStop, row.key)]
        assert isinstance(actions[0], QueueStop)
        assert actions[0].body.start_time == RESET


def test_the_stop_goes_to_the_start_cc_backend_has_when_two_planners_raced() -> None:
    """Two planners raced over a power-up job (long soak 2026-12-06, job 17159): one queued
    its start under the allocation time, the other under the reset time; the reset time's
    went out first, the allocation time's got cc-backend's 422 and is parked. The run
    cc-backend has must get the stop: before, the record was mapped to the earlier known start
    (the same run), whose stop waited parked beside it, and the job stayed running in
    cc-backend for good."""
    parked = KnownJob(JobKey(C, JOB, ALLOCATED), "start_queued", partition="boot")
    delivered = KnownJob(JobKey(C, JOB, RESET), "started", partition="boot",
                         start_delivered_at=RESET + 5)  # fmt: skip
    (running,) = _acct("powerup-running-sacct.json")
    done = _finished(running, RESET + 21)
    stops = [a for a in _plan([done], {}, [parked, delivered], now=RESET + 30)
             if isinstance(a, QueueStop) and a.body.job_state == "completed"]  # fmt: skip
    assert [(a.key, a.body.start_time, a.body.stop_time) for a in stops] == [
        (delivered.key, RESET, RESET + 21)
    ]
    # the usual case is unchanged: the start that reached cc-backend is the earlier one
    first = KnownJob(JobKey(C, JOB, ALLOCATED), "started", partition="boot",
                     start_delivered_at=ALLOCATED + 5)  # fmt: skip
    actions = _plan([done], {}, [first], now=RESET + 30)
    assert [(type(a), a.key) for a in actions] == [(QueueStop, first.key)]


def test_a_resize_is_the_same_run() -> None:
    """Resize: the first record ends RESIZING, a new one starts at the resize time (submit =
    eligible = start = resize time, restart count unchanged). One cc-backend job."""
    delivered = KnownJob(JobKey(C, 7, 100), "started", partition="p")
    first = SacctJob(job_id=7, cluster=C, user="u", account="a", nodes="n[1-2]", partition="p",
                     time=SacctTime(start=100, end=160, submission=90),
                     state=SacctState(current=["RESIZING"]))  # fmt: skip
    rest = SacctJob(job_id=7, cluster=C, user="u", account="a", nodes="n1", partition="p",
                    time=SacctTime(start=160, submission=160),
                    state=SacctState(current=["RUNNING"]))  # fmt: skip
    running = QueueJob(job_id=7, cluster=C, job_state=["RUNNING"])
    assert _plan([first, rest], {7: running}, [delivered], now=170) == []
    done = SacctJob(job_id=7, cluster=C, user="u", account="a", nodes="n1", partition="p",
                    time=SacctTime(start=160, end=200, submission=160),
                    state=SacctState(current=["COMPLETED"]))  # fmt: skip
    actions = _plan([first, done], {}, [delivered], now=210)
    assert [(type(a), a.key) for a in actions] == [(QueueStop, delivered.key)]
    assert isinstance(actions[0], QueueStop)
    assert (actions[0].body.start_time, actions[0].body.stop_time) == (100, 200)


def test_a_requeue_is_still_a_new_run() -> None:
    """The real requeue: the first run's REQUEUED record, the next run with restart_cnt 1."""
    first, pending = _acct("requeue-pending-sacct-duplicates.json")
    assert first.restart_cnt == 0
    assert pending.restart_cnt == 1
    s1 = first.time.start
    assert isinstance(s1, int)
    delivered = KnownJob(JobKey(C, first.job_id, s1), "started", partition="gpu")
    rerun = SacctJob(job_id=first.job_id, cluster=C, user=first.user, account=first.account,
                     nodes="node1", partition=first.partition,
                     time=SacctTime(start=s1 + 200, submission=s1 + 2),
                     state=SacctState(current=["RUNNING"]), restart_cnt=1)  # fmt: skip
    actions = _plan([first, rerun], {}, [delivered], now=s1 + 210)
    stops = [a for a in actions if isinstance(a, QueueStop)]
    starts = [a for a in actions if isinstance(a, QueueStart)]
    # the REQUEUED record's own stop and the requeue rule's: one run, stopped as cancelled
    assert {s.key for s in stops} == {delivered.key}
    assert {s.body.job_state for s in stops} == {"cancelled"}
    assert [s.key.start_time for s in starts] == [s1 + 200]
    # a `sacct -j` lookup shows only the rerun (no --duplicates): still a requeue
    actions = _plan([rerun], {}, [delivered], now=s1 + 210)
    assert [type(a) for a in actions] == [QueueStart, QueueStop]


def test_a_requeued_run_never_takes_the_next_runs_allocation() -> None:
    """ccsa first sees a requeued job once it runs again: sacct has the first run's REQUEUED
    record, squeue only the new run (other nodes, later start). The first run's start must not
    carry the new run's cores and hosts (found by the short soak: cc-backend kept a run with
    the hosts of the next one); it gets what ccsa remembered of its own run, else host names."""
    first, _ = _acct("requeue-pending-sacct-duplicates.json")
    s1 = first.time.start
    assert isinstance(s1, int)
    (other,) = _queue("powerup-running-squeue.json").values()  # a real allocation elsewhere
    rerun = msgspec.structs.replace(other, job_id=first.job_id, start_time=s1 + 200)
    assert convert.capture_resources(rerun, OPTS)  # it has cores to (wrongly) take
    actions = _plan([first], {first.job_id: rerun}, [], now=s1 + 210)
    starts = [a for a in actions if isinstance(a, QueueStart)]
    assert [a.key.start_time for a in starts] == [s1]
    assert [r.hostname for r in starts[0].body.resources] == [first.nodes]
    assert not starts[0].resources_complete
    assert all(r.hwthreads is None for r in starts[0].body.resources)


def test_a_run_not_yet_ended_in_sacct_never_takes_the_next_runs_allocation() -> None:
    """sacct still shows the first run RUNNING (slurmdbd has not recorded the requeue yet, so
    no REQUEUED/PREEMPTED record) while slurmctld already has the next run: ``restart_cnt`` 1
    in squeue against 0 in sacct (the real fields: docs/real-slurm.md "Lifecycles of issue
    18", operator requeue). Another run: the first run's start gets host names, not the next
    run's cores (found by the short soak, seed 8: jobs 1628 and 1663 reached cc-backend with
    the next run's hosts)."""
    first, _ = _acct("requeue-pending-sacct-duplicates.json")
    s1 = first.time.start
    assert isinstance(s1, int)
    lagging = msgspec.structs.replace(
        first, state=SacctState(current=["RUNNING"]), time=SacctTime(start=s1, submission=s1 - 1)
    )
    (other,) = _queue("powerup-running-squeue.json").values()  # a real allocation elsewhere
    assert other.restart_cnt == 0
    for start in (s1 + 200, s1):  # the next run, whatever start slurmctld shows
        rerun = msgspec.structs.replace(other, job_id=first.job_id, start_time=start, restart_cnt=1)
        actions = _plan([lagging], {first.job_id: rerun}, [], now=s1 + 210)
        starts = [a for a in actions if isinstance(a, QueueStart)]
        assert [a.key.start_time for a in starts] == [s1]
        assert [r.hostname for r in starts[0].body.resources] == [first.nodes]
        assert all(r.hwthreads is None for r in starts[0].body.resources)
    # the same restart count under a moved start is a power-up reset: the same run's cores
    same = msgspec.structs.replace(other, job_id=first.job_id, start_time=s1 + 14)
    actions = _plan([lagging], {first.job_id: same}, [], now=s1 + 210)
    starts = [a for a in actions if isinstance(a, QueueStart)]
    assert [a.key.start_time for a in starts] == [s1]
    assert starts[0].resources_complete
    assert all(r.hwthreads for r in starts[0].body.resources)


def test_a_run_requeued_then_cancelled_is_one_start_and_a_cancelled_stop() -> None:
    """Test bed job 35 as a ``--duplicates`` window prints it (the daemon never saw it in
    squeue): the REQUEUED run and the CANCELLED record that never started. One start under the
    run's start, one stop as cancelled at the requeue time; nothing for the other record, and
    nothing more once the start and stop are known."""
    first, cancelled = _acct("requeue-cancelled-sacct-duplicates.json")
    assert convert.start_time(cancelled) is None  # 4294967294: never started
    s1, e1 = first.time.start, first.time.end
    assert isinstance(s1, int)
    actions = _plan([first, cancelled], {}, [], now=None)
    assert [(type(a), a.key) for a in actions] == [
        (QueueStart, JobKey(C, 35, s1)),
        (QueueStop, JobKey(C, 35, s1)),
    ]
    stop = actions[1]
    assert isinstance(stop, QueueStop)
    assert (stop.body.job_state, stop.body.stop_time) == ("cancelled", e1)
    for phase in ("stop_queued", "stopped"):
        row = KnownJob(JobKey(C, 35, s1), phase, partition=first.partition)
        assert _plan([first, cancelled], {}, [row], now=None) == []


def test_het_components_are_separate_jobs_with_their_own_resources() -> None:
    """#18 item 5: each het component is its own cc-backend job under its raw id."""
    accts = _acct("het-completed-sacct.json")
    queue = _queue("het-running-squeue.json")
    actions = _plan(accts, queue, [], now=None)
    starts = [a for a in actions if isinstance(a, QueueStart)]
    stops = [a for a in actions if isinstance(a, QueueStop)]
    assert [s.key.job_id for s in starts] == [43, 44]
    assert [s.key.job_id for s in stops] == [43, 44]
    assert {s.key.start_time for s in starts} == {1796522312}
    assert [(s.body.num_nodes, s.body.num_hwthreads, s.body.num_acc) for s in starts] == [
        (1, 1, 1),
        (1, 2, 0),
    ]
    assert [s.body.resources[0].hostname for s in starts] == ["node1", "node2"]


def test_the_real_resize_is_the_same_run() -> None:
    """``scontrol update JobId=31 NumNodes=1`` on the test bed: the first record ends
    ``["PENDING", "RESIZING"]`` at the resize, the next starts there (submit = start, restart
    count 0); ``sacct -j`` without ``--duplicates`` shows only the latter."""
    resized, rest = _acct("resize-sacct-duplicates.json")
    s0, r = resized.time.start, rest.time.start
    assert isinstance(s0, int)
    assert isinstance(r, int)
    assert list(resized.state.current) == ["PENDING", "RESIZING"]
    assert rest.time.submission == r
    delivered = KnownJob(JobKey(C, 31, s0), "started", partition="gpu")
    running = QueueJob(job_id=31, cluster=C, job_state=["RUNNING"])
    for answer in ([resized, rest], [rest]):
        assert _plan(answer, {31: running}, [delivered], now=r + 5) == []
    done = _finished(rest, r + 30)
    for answer in ([resized, done], [done]):
        actions = _plan(answer, {}, [delivered], now=r + 40)
        assert [(type(a), a.key) for a in actions] == [(QueueStop, delivered.key)]
        assert isinstance(actions[0], QueueStop)
        assert (actions[0].body.start_time, actions[0].body.stop_time) == (s0, r + 30)


def test_a_lookup_plans_the_latest_record_and_the_runs_ccsa_knows() -> None:
    """``sacct -j 35 --duplicates`` (test bed job 35) plus an older job that had id 35 before a
    slurmctld state reset: a lookup keeps the latest record and the runs ccsa knows, never
    the older job's."""
    first, cancelled = _acct("requeue-cancelled-sacct-duplicates.json")
    older = _finished(
        msgspec.structs.replace(first, time=SacctTime(start=1000, submission=990)), 1100
    )
    s1 = first.time.start
    assert isinstance(s1, int)
    answer = [older, first, cancelled]
    assert runs.lookup_records(answer, set()) == [cancelled]
    assert runs.lookup_records(answer, {(35, s1)}) == [first, cancelled]
