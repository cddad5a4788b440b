"""The pure sync planner: which jobs start, stop, get resources, go stale (no I/O).

The jobs are real `SacctJob` / `QueueJob` views, built as sacct's and squeue's JSON would
decode, and the planner applies `ccsa.convert`'s own rules to them.
"""

from __future__ import annotations

import re

import msgspec

from ccsa.ccbackend.models import Resource
from ccsa.convert import ConvertOptions
from ccsa.daemon.plan import (
    Action,
    Ignore,
    JobKey,
    KnownJob,
    MarkStale,
    Metadata,
    QueueStart,
    QueueStop,
    UpdateResources,
    Wait,
    build,
    decide,
)
from ccsa.slurm.sacct import SacctJob, SacctState, SacctTime
from ccsa.slurm.squeue import QueueJob


def acct(
    job_id: int,
    start: int | None,
    end: int = 0,
    state: str = "",
    nodes: str = "n1",
    partition: str = "batch",
    script: str = "",
    restarts: int = 0,
) -> SacctJob:
    """A sacct record as sacct's JSON would decode to (``state`` defaults to COMPLETED for a
    record with an end time, else RUNNING)."""
    return SacctJob(
        job_id=job_id,
        cluster="c1",
        user="u",
        account="p",
        nodes=nodes,
        partition=partition,
        script=script,
        time=SacctTime(start=start or 0, end=end),
        state=SacctState(current=[state or ("COMPLETED" if end else "RUNNING")]),
        restart_cnt=restarts,
    )


def queued(job_id: int, cpus: dict[str, list[int]] | None = None) -> QueueJob:
    """slurmctld's record of a running job: ``cpus`` maps a host to its allocated core ids
    (one socket, v0.0.41+ ``job_resources`` shape); None: no allocation in the record."""
    alloc = [
        {
            "index": i,
            "name": host,
            "sockets": [
                {"index": 0, "cores": [{"index": c, "status": ["ALLOCATED"]} for c in cores]}
            ],
        }
        for i, (host, cores) in enumerate((cpus or {}).items())
    ]
    res = {"nodes": {"allocation": alloc}} if alloc else None
    return QueueJob(
        job_id=job_id,
        cluster="c1",
        job_state=["RUNNING"],
        job_resources_json=msgspec.Raw(msgspec.json.encode(res)),
    )


OPTS = ConvertOptions()


def known(*rows: KnownJob) -> dict[tuple[int, int], KnownJob]:
    return {(r.key.job_id, r.key.start_time): r for r in rows}


def k(job_id: int, start: int) -> JobKey:
    return JobKey("c1", job_id, start)


def plan(
    accts: list[SacctJob],
    queue: dict[int, QueueJob] | None,
    rows: dict[tuple[int, int], KnownJob],
    *,
    full: bool = True,
    opts: ConvertOptions = OPTS,
) -> list[Action]:
    d = decide("c1", accts, queue, rows, opts, full_queue=full)
    return build(d, opts)


def host_only(actions: list[Action]) -> int:
    """How many starts go out with host names only."""
    return sum(1 for a in actions if isinstance(a, QueueStart) and not a.resources_complete)


def test_new_running_job_gets_start_with_captured_resources() -> None:
    q = queued(1, {"n1": [0, 1]})
    actions = plan([acct(1, 100)], {1: q}, {})
    assert len(actions) == 1
    (a,) = actions
    assert isinstance(a, QueueStart)
    assert a.key == k(1, 100)
    assert a.resources_complete
    assert a.body.resources == [Resource(hostname="n1", hwthreads=[0, 1])]
    assert host_only(actions) == 0


def test_never_started_jobs_are_skipped() -> None:
    assert plan([acct(1, None), acct(2, 0, end=50, state="CANCELLED")], {}, {}) == []


def test_finished_unknown_job_gets_host_only_start_then_stop() -> None:
    actions = plan([acct(7, 100, end=200, state="COMPLETED", nodes="a,b")], {}, {})
    assert [type(a) for a in actions] == [QueueStart, QueueStop]
    start, stop = actions
    assert not start.resources_complete
    assert start.body.resources == [Resource(hostname="a"), Resource(hostname="b")]
    assert stop.body.stop_time == 200
    assert stop.body.job_state == "completed"
    assert host_only(actions) == 1


def test_known_started_job_finishing_gets_stop_only() -> None:
    rows = known(KnownJob(k(3, 10), "started"))
    actions = plan([acct(3, 10, end=99, state="FAILED")], {}, rows)
    assert len(actions) == 1
    assert isinstance(actions[0], QueueStop)
    assert actions[0].key == k(3, 10)


def test_already_stopped_or_stop_queued_jobs_produce_nothing() -> None:
    rows = known(KnownJob(k(3, 10), "stopped"), KnownJob(k(4, 10), "stop_queued"))
    accts = [acct(3, 10, end=99), acct(4, 10, end=99)]
    assert plan(accts, {}, rows) == []


def test_running_known_job_in_queue_produces_nothing() -> None:
    rows = known(KnownJob(k(3, 10), "started"))
    assert plan([acct(3, 10)], {3: queued(3)}, rows) == []


def test_resources_arriving_for_queued_start_patch_it() -> None:
    rows = known(KnownJob(k(5, 10), "start_queued", resources_complete=False))
    q = queued(5, {"n1": [4]})
    actions = plan([acct(5, 10)], {5: q}, rows)
    assert actions == [UpdateResources(k(5, 10), [Resource(hostname="n1", hwthreads=[4])])]
    # complete resources are not patched again
    rows = known(KnownJob(k(5, 10), "start_queued", resources_complete=True))
    assert plan([acct(5, 10)], {5: q}, rows) == []


def test_slurmdbd_lag_pending_state_with_start_is_started() -> None:
    actions = plan([acct(9, 100, state="PENDING")], {9: queued(9, {"n1": [0]})}, {})
    assert len(actions) == 1
    assert isinstance(actions[0], QueueStart)


def test_ignored_job_is_remembered_and_never_stopped() -> None:
    opts = ConvertOptions(ignore_hosts=re.compile(r"^login\d+$"))
    actions = plan([acct(1, 5, end=9, nodes="login1")], {}, {}, opts=opts)
    assert actions == [Ignore(k(1, 5), "all hosts match ignoreHosts (login1)")]
    rows = known(KnownJob(k(1, 5), "ignored"))
    assert plan([acct(1, 5, end=9, nodes="login1")], {}, rows, opts=opts) == []


def test_requeued_job_stops_old_run_and_starts_new() -> None:
    rows = known(KnownJob(k(4, 100), "started", partition="p1"))
    # the rerun's record (restart count 1); a start that moves without a requeue is the
    # same run (tests/test_plan_lifecycles.py)
    actions = plan([acct(4, 500, restarts=1)], {4: queued(4, {"n1": [0]})}, rows)
    starts = [a for a in actions if isinstance(a, QueueStart)]
    stops = [a for a in actions if isinstance(a, QueueStop)]
    assert [s.key for s in starts] == [k(4, 500)]
    assert [s.key for s in stops] == [k(4, 100)]
    assert stops[0].body.start_time == 100
    assert stops[0].body.stop_time == 500
    assert stops[0].body.job_state == "cancelled"  # as convert maps "requeued"
    # the old run is not also marked stale although squeue does not list it under that start
    assert not any(isinstance(a, MarkStale) for a in actions)


def test_stale_two_phase() -> None:
    running = KnownJob(k(8, 10), "started")
    # tick 1: missing from squeue, not finished in the window -> marked, not looked up
    d = decide("c1", [], {}, known(running), OPTS, full_queue=True)
    assert build(d, OPTS) == [MarkStale(k(8, 10), True)]
    assert d.lookup == []
    # tick 2: still missing and already stale -> sacct -j lookup
    stale = KnownJob(k(8, 10), "started", stale=True)
    d = decide("c1", [], {}, known(stale), OPTS, full_queue=True)
    assert d.lookup == [8]
    assert build(d, OPTS) == []
    # the lookup answers finished -> stop (same function, no queue view)
    d = decide("c1", [acct(8, 10, end=50)], None, known(stale), OPTS, full_queue=False)
    (stop,) = build(d, OPTS)
    assert isinstance(stop, QueueStop)
    assert stop.key == k(8, 10)


def test_stale_job_back_in_queue_is_unmarked() -> None:
    stale = KnownJob(k(8, 10), "started", stale=True)
    d = decide("c1", [], {8: queued(8)}, known(stale), OPTS, full_queue=True)
    assert build(d, OPTS) == [MarkStale(k(8, 10), False)]


def test_partial_queue_never_marks_stale() -> None:
    running = KnownJob(k(8, 10), "started")
    d = decide("c1", [], {}, known(running), OPTS, full_queue=False)
    assert (d.starts, d.stops, d.extra, d.lookup) == ([], [], [], [])


def test_job_finishing_in_window_is_stopped_not_marked_stale() -> None:
    running = KnownJob(k(8, 10), "started")
    actions = plan([acct(8, 10, end=30)], {}, known(running))
    assert [type(a) for a in actions] == [QueueStop]


def test_array_tasks_and_het_components_are_separate_jobs() -> None:
    accts = [acct(101, 10), acct(102, 10), acct(103, 11)]
    actions = plan(accts, {}, {})
    assert sorted(a.key.job_id for a in actions) == [101, 102, 103]


def test_metadata_ids_only_for_jobs_in_slurmctld() -> None:
    d = decide(
        "c1",
        [acct(1, 10), acct(2, 10, end=20), acct(3, 10, script="#!/bin/sh")],
        {1: queued(1), 3: queued(3)},
        {},
        OPTS,
        full_queue=True,
    )
    assert d.metadata_ids() == [1, 3]
    assert d.script_ids() == [1]  # job 3's script came with sacct
    actions = build(d, OPTS, Metadata(slurm_info={1: "JobId=1"}, scripts={1: "#!/bin/bash"}))
    by_id = {a.key.job_id: a for a in actions if isinstance(a, QueueStart)}
    assert by_id[1].body.meta_data == {
        "jobName": "",
        "slurmInfo": "JobId=1",
        "jobScript": "#!/bin/bash",
    }
    assert by_id[3].body.meta_data == {"jobName": "", "jobScript": "#!/bin/sh"}


def test_duplicate_records_in_one_answer_are_planned_once() -> None:
    actions = plan([acct(1, 10), acct(1, 10)], {}, {})
    assert len(actions) == 1


def test_jobs_missing_from_the_live_queue_are_unseen() -> None:
    """New starts and host-only queued starts without a live squeue record are asked for."""
    rows = known(
        KnownJob(k(2, 10), "start_queued", resources_complete=False),
        KnownJob(k(3, 10), "start_queued", resources_complete=True),
        KnownJob(k(4, 10), "started"),
    )
    accts = [acct(1, 10, end=20), acct(2, 10, end=20), acct(3, 10, end=20), acct(4, 10)]
    accts += [acct(5, 10), acct(6, None)]
    d = decide("c1", accts, {5: queued(5, {"n1": [0]})}, rows, OPTS, full_queue=True)
    assert d.unseen == [1, 2]  # 3 is complete, 4 started, 5 is live, 6 never started
    # without a queue view (finished-job lookups) nothing is asked for
    assert decide("c1", accts, None, rows, OPTS, full_queue=False).unseen == []


def test_recent_records_give_resources_and_metadata_of_finished_jobs() -> None:
    """slurmctld's record of a job that ended between two polls (within MinJobAge)."""
    done = queued(7, {"n2": [2, 3]})
    accts = [acct(7, 100, end=200, state="COMPLETED", nodes="n2")]
    d = decide("c1", accts, {}, {}, OPTS, full_queue=True, recent={7: done})
    assert d.unseen == []
    assert d.metadata_ids() == [7]  # scontrol still has its text and batch script
    start, stop = build(d, OPTS)
    assert isinstance(start, QueueStart)
    assert start.resources_complete
    assert start.body.resources == [Resource(hostname="n2", hwthreads=[2, 3])]
    assert isinstance(stop, QueueStop)
    assert host_only([start, stop]) == 0
    # a queued host-only start of the same job is patched from it
    rows = known(KnownJob(k(7, 100), "start_queued", resources_complete=False))
    d = decide("c1", accts, {}, rows, OPTS, full_queue=True, recent={7: done})
    actions = build(d, OPTS)
    assert UpdateResources(k(7, 100), [Resource(hostname="n2", hwthreads=[2, 3])]) in actions


def test_recent_records_never_count_as_running() -> None:
    """A finished job in ``recent`` does not clear a stale mark nor hide a job from the check."""
    stale = KnownJob(k(8, 10), "started", stale=True)
    d = decide("c1", [acct(8, 10)], {}, known(stale), OPTS, full_queue=True, recent={8: queued(8)})
    assert MarkStale(k(8, 10), False) not in d.extra
    assert d.lookup == [8]  # still missing from the live queue: phase 2 looks it up
    running = KnownJob(k(9, 10), "started")
    d = decide("c1", [], {}, known(running), OPTS, full_queue=True, recent={9: queued(9)})
    assert build(d, OPTS) == [MarkStale(k(9, 10), True)]


def test_a_reason_that_may_pass_waits_and_holds_the_stop_back() -> None:
    """An empty user name (the host's user lookup failed) is not final: the job waits, its stop
    with it, and the next plan tries its start again (issue #17 item 3)."""
    nameless = msgspec.structs.replace(acct(1, 5, end=9), user="")
    assert plan([nameless], {}, {}) == [
        Wait(k(1, 5), "no user name (uid not resolvable where sacct ran)")
    ]
    rows = known(KnownJob(k(1, 5), "waiting"))
    start, stop = plan([acct(1, 5, end=9)], {}, rows)
    assert isinstance(start, QueueStart)
    assert start.body.user == "u"
    assert isinstance(stop, QueueStop)
    # a node list that does not expand waits too; a parked job is left to redrive
    assert isinstance(plan([acct(2, 5, nodes="n[9-1]")], {}, {})[0], Wait)
    assert plan([acct(1, 5, end=9)], {}, known(KnownJob(k(1, 5), "parked"))) == []
