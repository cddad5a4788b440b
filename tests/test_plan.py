"""The pure sync planner: which jobs start, stop, get resources, go stale (no I/O)."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ccsa.ccbackend.models import Resource, StartJob, StopJob
from ccsa.daemon.plan import (
    Ignore,
    JobKey,
    KnownJob,
    MarkStale,
    QueueStart,
    QueueStop,
    SubWindows,
    UpdateResources,
    build,
    count_without_resources,
    decide,
)


@dataclass
class Acct:
    """A sacct record as the planner sees it (through the converter below)."""

    job_id: int
    start: int | None
    end: int = 0
    state: str = "RUNNING"
    nodes: tuple[str, ...] = ("n1",)
    partition: str = "batch"
    script: str = ""


@dataclass
class Queued:
    job_id: int
    cpus: dict[str, list[int]] = field(default_factory=dict)


class Conv:
    """Converter over the small records above; applies the same rules as ccsa.convert."""

    def __init__(self, ignore: frozenset[str] = frozenset()) -> None:
        self.ignore = ignore

    def job_id(self, job: Any) -> int:
        return int(job.job_id)

    def start_time(self, acct: Any) -> int | None:
        return int(acct.start) if acct.start else None

    def is_finished(self, acct: Any) -> bool:
        return bool(acct.end)

    def partition(self, acct: Any) -> str:
        return str(acct.partition)

    def job_script(self, acct: Any) -> str:
        return str(acct.script)

    def capture_resources(self, queue_job: Any) -> list[Resource] | None:
        if not queue_job.cpus:
            return None
        return [Resource(hostname=h, hwthreads=t) for h, t in queue_job.cpus.items()]

    def host_resources(self, acct: Any) -> list[Resource]:
        return [Resource(hostname=h) for h in acct.nodes]

    def start_body(
        self,
        acct: Any,
        *,
        resources: list[Resource],
        queue: Any | None,
        slurm_info: str,
        job_script: str,
    ) -> StartJob | str:
        if all(h in self.ignore for h in acct.nodes):
            return "all hosts ignored"
        meta = {"slurmInfo": slurm_info} if slurm_info else {}
        if job_script:
            meta["jobScript"] = job_script
        return StartJob(
            job_id=acct.job_id,
            cluster="c1",
            user="u",
            project="p",
            num_nodes=len(acct.nodes),
            resources=resources,
            start_time=acct.start,
            shared="none",
            meta_data=meta,
        )

    def stop_body(self, acct: Any, start_time: int) -> StopJob | None:
        return StopJob(
            job_id=acct.job_id,
            cluster="c1",
            job_state=acct.state.lower(),
            stop_time=max(acct.end, start_time),
            start_time=start_time,
        )


CONV = Conv()


def known(*rows: KnownJob) -> dict[tuple[int, int], KnownJob]:
    return {(r.key.job_id, r.key.start_time): r for r in rows}


def k(job_id: int, start: int) -> JobKey:
    return JobKey("c1", job_id, start)


def plan(
    accts: list[Acct],
    queue: dict[int, Any] | None,
    rows: dict[tuple[int, int], KnownJob],
    *,
    full: bool = True,
    conv: Conv = CONV,
) -> list[Any]:
    d = decide("c1", accts, queue, rows, conv, full_queue=full)
    return build(d, conv)


def test_new_running_job_gets_start_with_captured_resources() -> None:
    q = Queued(1, {"n1": [0, 1]})
    actions = plan([Acct(1, 100)], {1: q}, {})
    assert len(actions) == 1
    (a,) = actions
    assert isinstance(a, QueueStart)
    assert a.key == k(1, 100)
    assert a.resources_complete
    assert a.body.resources == [Resource(hostname="n1", hwthreads=[0, 1])]
    assert count_without_resources(actions) == 0


def test_never_started_jobs_are_skipped() -> None:
    assert plan([Acct(1, None), Acct(2, 0, end=50, state="CANCELLED")], {}, {}) == []


def test_finished_unknown_job_gets_host_only_start_then_stop() -> None:
    actions = plan([Acct(7, 100, end=200, state="COMPLETED", nodes=("a", "b"))], {}, {})
    assert [type(a) for a in actions] == [QueueStart, QueueStop]
    start, stop = actions
    assert not start.resources_complete
    assert start.body.resources == [Resource(hostname="a"), Resource(hostname="b")]
    assert stop.body.stop_time == 200
    assert stop.body.job_state == "completed"
    assert count_without_resources(actions) == 1


def test_known_started_job_finishing_gets_stop_only() -> None:
    rows = known(KnownJob(k(3, 10), "started"))
    actions = plan([Acct(3, 10, end=99, state="FAILED")], {}, rows)
    assert len(actions) == 1
    assert isinstance(actions[0], QueueStop)
    assert actions[0].key == k(3, 10)


def test_already_stopped_or_stop_queued_jobs_produce_nothing() -> None:
    rows = known(KnownJob(k(3, 10), "stopped"), KnownJob(k(4, 10), "stop_queued"))
    accts = [Acct(3, 10, end=99), Acct(4, 10, end=99)]
    assert plan(accts, {}, rows) == []


def test_running_known_job_in_queue_produces_nothing() -> None:
    rows = known(KnownJob(k(3, 10), "started"))
    assert plan([Acct(3, 10)], {3: Queued(3)}, rows) == []


def test_resources_arriving_for_queued_start_patch_it() -> None:
    rows = known(KnownJob(k(5, 10), "start_queued", resources_complete=False))
    q = Queued(5, {"n1": [4]})
    actions = plan([Acct(5, 10)], {5: q}, rows)
    assert actions == [UpdateResources(k(5, 10), [Resource(hostname="n1", hwthreads=[4])])]
    # complete resources are not patched again
    rows = known(KnownJob(k(5, 10), "start_queued", resources_complete=True))
    assert plan([Acct(5, 10)], {5: q}, rows) == []


def test_slurmdbd_lag_pending_state_with_start_is_started() -> None:
    actions = plan([Acct(9, 100, state="PENDING")], {9: Queued(9, {"n1": [0]})}, {})
    assert len(actions) == 1
    assert isinstance(actions[0], QueueStart)


def test_ignored_job_is_remembered_and_never_stopped() -> None:
    conv = Conv(ignore=frozenset({"login1"}))
    actions = plan([Acct(1, 5, end=9, nodes=("login1",))], {}, {}, conv=conv)
    assert actions == [Ignore(k(1, 5), "all hosts ignored")]
    rows = known(KnownJob(k(1, 5), "ignored"))
    assert plan([Acct(1, 5, end=9, nodes=("login1",))], {}, rows, conv=conv) == []


def test_requeued_job_stops_old_run_and_starts_new() -> None:
    rows = known(KnownJob(k(4, 100), "started", partition="p1"))
    actions = plan([Acct(4, 500)], {4: Queued(4, {"n1": [0]})}, rows)
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
    d = decide("c1", [], {}, known(running), CONV, full_queue=True)
    assert build(d, CONV) == [MarkStale(k(8, 10), True)]
    assert d.lookup == []
    # tick 2: still missing and already stale -> sacct -j lookup
    stale = KnownJob(k(8, 10), "started", stale=True)
    d = decide("c1", [], {}, known(stale), CONV, full_queue=True)
    assert d.lookup == [8]
    assert build(d, CONV) == []
    # the lookup answers finished -> stop (same function, no queue view)
    d = decide("c1", [Acct(8, 10, end=50)], None, known(stale), CONV, full_queue=False)
    (stop,) = build(d, CONV)
    assert isinstance(stop, QueueStop)
    assert stop.key == k(8, 10)


def test_stale_job_back_in_queue_is_unmarked() -> None:
    stale = KnownJob(k(8, 10), "started", stale=True)
    d = decide("c1", [], {8: Queued(8)}, known(stale), CONV, full_queue=True)
    assert build(d, CONV) == [MarkStale(k(8, 10), False)]


def test_partial_queue_never_marks_stale() -> None:
    running = KnownJob(k(8, 10), "started")
    d = decide("c1", [], {}, known(running), CONV, full_queue=False)
    assert d.empty


def test_job_finishing_in_window_is_stopped_not_marked_stale() -> None:
    running = KnownJob(k(8, 10), "started")
    actions = plan([Acct(8, 10, end=30)], {}, known(running))
    assert [type(a) for a in actions] == [QueueStop]


def test_array_tasks_and_het_components_are_separate_jobs() -> None:
    accts = [Acct(101, 10), Acct(102, 10), Acct(103, 11)]
    actions = plan(accts, {}, {})
    assert sorted(a.key.job_id for a in actions) == [101, 102, 103]


def test_metadata_ids_only_for_jobs_in_slurmctld() -> None:
    d = decide(
        "c1",
        [Acct(1, 10), Acct(2, 10, end=20), Acct(3, 10, script="#!/bin/sh")],
        {1: Queued(1), 3: Queued(3)},
        {},
        CONV,
        full_queue=True,
    )
    assert d.metadata_ids(CONV) == [1, 3]
    assert d.script_ids(CONV) == [1]  # job 3's script came with sacct
    actions = build(d, CONV, slurm_info={1: "JobId=1"}, scripts={1: "#!/bin/bash"})
    by_id = {a.key.job_id: a for a in actions if isinstance(a, QueueStart)}
    assert by_id[1].body.meta_data == {"slurmInfo": "JobId=1", "jobScript": "#!/bin/bash"}
    assert by_id[3].body.meta_data == {"jobScript": "#!/bin/sh"}


def test_duplicate_records_in_one_answer_are_planned_once() -> None:
    actions = plan([Acct(1, 10), Acct(1, 10)], {}, {})
    assert len(actions) == 1


def test_jobs_missing_from_the_live_queue_are_unseen() -> None:
    """New starts and host-only queued starts without a live squeue record are asked for."""
    rows = known(
        KnownJob(k(2, 10), "start_queued", resources_complete=False),
        KnownJob(k(3, 10), "start_queued", resources_complete=True),
        KnownJob(k(4, 10), "started"),
    )
    accts = [Acct(1, 10, end=20), Acct(2, 10, end=20), Acct(3, 10, end=20), Acct(4, 10)]
    accts += [Acct(5, 10), Acct(6, None)]
    d = decide("c1", accts, {5: Queued(5, {"n1": [0]})}, rows, CONV, full_queue=True)
    assert d.unseen == [1, 2]  # 3 is complete, 4 started, 5 is live, 6 never started
    # without a queue view (finished-job lookups) nothing is asked for
    assert decide("c1", accts, None, rows, CONV, full_queue=False).unseen == []


def test_recent_records_give_resources_and_metadata_of_finished_jobs() -> None:
    """slurmctld's record of a job that ended between two polls (within MinJobAge)."""
    done = Queued(7, {"n2": [2, 3]})
    accts = [Acct(7, 100, end=200, state="COMPLETED", nodes=("n2",))]
    d = decide("c1", accts, {}, {}, CONV, full_queue=True, recent={7: done})
    assert d.unseen == []
    assert d.metadata_ids(CONV) == [7]  # scontrol still has its text and batch script
    start, stop = build(d, CONV)
    assert isinstance(start, QueueStart)
    assert start.resources_complete
    assert start.body.resources == [Resource(hostname="n2", hwthreads=[2, 3])]
    assert isinstance(stop, QueueStop)
    assert count_without_resources([start, stop]) == 0
    # a queued host-only start of the same job is patched from it
    rows = known(KnownJob(k(7, 100), "start_queued", resources_complete=False))
    d = decide("c1", accts, {}, rows, CONV, full_queue=True, recent={7: done})
    actions = build(d, CONV)
    assert UpdateResources(k(7, 100), [Resource(hostname="n2", hwthreads=[2, 3])]) in actions


def test_recent_records_never_count_as_running() -> None:
    """A finished job in ``recent`` does not clear a stale mark nor hide a job from the check."""
    stale = KnownJob(k(8, 10), "started", stale=True)
    d = decide("c1", [Acct(8, 10)], {}, known(stale), CONV, full_queue=True, recent={8: Queued(8)})
    assert MarkStale(k(8, 10), False) not in d.extra
    assert d.lookup == [8]  # still missing from the live queue: phase 2 looks it up
    running = KnownJob(k(9, 10), "started")
    d = decide("c1", [], {}, known(running), CONV, full_queue=True, recent={9: Queued(9)})
    assert build(d, CONV) == [MarkStale(k(9, 10), True)]


# --- sub-windows of a long poll window ------------------------------------------------------

H = 3600.0


def walk(
    parts: SubWindows, begin: float, end: float, jobs: list[tuple[float, float]]
) -> list[tuple[float, float, int]]:
    """Cut [begin, end] the way `Syncer.tick` does, against synthetic jobs (eligible, end):
    each sub-window "returns" what sacct would (every job whose span touches it)."""
    out: list[tuple[float, float, int]] = []
    span = parts.first
    lo = begin
    while True:
        hi = parts.cut(lo, end, span)
        answer = [(e, x) for e, x in jobs if e <= hi and x >= lo]
        out.append((lo, hi, len(answer)))
        if hi >= end:
            return out
        fresh = sum(1 for e, _ in answer if e >= lo)
        carried = sum(1 for _, x in answer if x >= hi)
        span = parts.next_span(span, fresh=fresh, carried=carried)
        lo = hi


def test_a_normal_poll_is_one_sub_window() -> None:
    parts = SubWindows(first=2 * 360.0)
    assert parts.cut(1000.0, 1360.0, parts.first) == 1360.0  # slurmPollInterval 60 + overlap 300
    assert parts.cut(1000.5, 2080.5, parts.first) == 2080.5  # a slow tick (1.5 x first)
    assert parts.cut(1000.5, 2081.0, parts.first) == 1720.0  # beyond: cut at a whole second


def test_span_follows_the_density_of_the_last_answer() -> None:
    parts = SubWindows(first=H, longest=8 * H, shortest=60.0, target=1000)
    assert parts.next_span(H, fresh=0, carried=0) == 2 * H  # nothing seen: grow, at most 2x
    assert parts.next_span(4 * H, fresh=0, carried=0) == 8 * H
    assert parts.next_span(8 * H, fresh=0, carried=0) == 8 * H  # capped
    assert parts.next_span(H, fresh=4000, carried=0) == H / 4  # 4x too many: a quarter as long
    assert parts.next_span(H, fresh=4000, carried=500) == H / 8  # half the budget is carried
    # carried jobs come back whatever the length: once they dominate, as many new ones again
    assert parts.next_span(H, fresh=1000, carried=700) == H / 1000 * 700
    assert parts.next_span(4 * H, fresh=1000, carried=1500) == 6 * H
    assert parts.next_span(H, fresh=10**9, carried=0) == 60.0  # never below the shortest
    # the first sub-window may be longer than `longest` (a slow poll interval): it is the cap
    slow = SubWindows(first=10 * H, longest=6 * H)
    assert slow.next_span(10 * H, fresh=1, carried=0) == 10 * H
    assert slow.next_span(10 * H, fresh=4000, carried=0) == 5 * H


@given(
    begin=st.floats(1e9, 2e9),
    length=st.floats(0, 30 * 86400),
    first=st.floats(60, 86400),
    density=st.lists(st.integers(0, 10**5), min_size=1, max_size=50),
)
def test_sub_windows_cover_the_window_exactly(
    begin: float, length: float, first: float, density: list[int]
) -> None:
    parts = SubWindows(first=first)
    end = begin + length
    span, lo, pieces = first, begin, []
    while True:
        hi = parts.cut(lo, end, span)
        assert lo < hi or hi == end
        pieces.append((lo, hi))
        if hi >= end:
            break
        assert hi == int(hi)  # inner boundaries are whole seconds (sacct's resolution)
        n = density[len(pieces) % len(density)]
        span = parts.next_span(span, fresh=n, carried=n // 3)
        assert parts.shortest <= span <= max(parts.longest, first)
        lo = hi
    assert pieces[0][0] == begin
    assert pieces[-1][1] == end
    assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))
    assert len(pieces) <= length / parts.shortest + 2


def test_backlog_after_a_quiet_stretch_stays_near_the_target() -> None:
    """The benchmark's shape: a week's window, jobs only in its last day (100/h, 10 min each).
    No answer holds more than `longest` of jobs (the answers that straddle the quiet-to-busy
    edge under-estimate the density); after those two the answers stay near the target; the
    quiet days cost few calls."""
    rng = random.Random(7)
    end = 7 * 86400.0
    jobs = [(t, t + 600) for t in (rng.uniform(end - 86400, end) for _ in range(2400))]
    parts = SubWindows(first=H, longest=6 * H, target=300)
    pieces = walk(parts, 0.0, end, jobs)
    sizes = [n for _, _, n in pieces]
    busy = sizes.index(next(n for n in sizes if n))
    assert max(sizes) <= 6 * 100 * 1.2  # `longest` at 100 jobs/h, give or take
    assert max(sizes[busy + 2 :]) <= 1.5 * parts.target
    assert sum(n for _, _, n in pieces) < 1.1 * len(jobs)  # few jobs are read twice
    quiet = [p for p in pieces if p[1] <= end - 86400]
    assert len(quiet) <= 6 * 24 / 6 + 3  # the quiet days: about one call per `longest`
    assert pieces[-1][1] == end


def test_a_deep_pending_queue_is_not_read_over_and_over() -> None:
    """An oversubscribed cluster (the 50k-job benchmark): every answer holds the whole pending
    queue, which grows to 13k jobs. Shrinking the sub-windows cannot make the answers smaller,
    only more numerous; the walk reads the records at most ~2x and makes few calls."""
    end = 36 * H
    finished = [(t, t + 60.0) for t in range(0, int(end), 10)]  # 360 jobs/h, done at once
    pending = [(t + 5.0, math.inf) for t in range(0, int(end), 10)]  # 360/h, never start
    jobs = finished + pending
    parts = SubWindows(first=H, longest=6 * H, target=2000)
    pieces = walk(parts, 0.0, end, jobs)
    read = sum(n for _, _, n in pieces)
    assert read <= 2.5 * len(jobs)
    assert len(pieces) <= 20
    assert max(n for _, _, n in pieces) <= 2 * len(pending) + parts.target


def test_density_jump_and_long_runners() -> None:
    """10 jobs/h, then 1000/h; 400 jobs run through the whole window (always carried)."""
    rng = random.Random(3)
    end = 2 * 86400.0
    jobs = [(t, t + 300) for t in (rng.uniform(0, 86400) for _ in range(240))]
    jobs += [(t, t + 300) for t in (rng.uniform(86400, end) for _ in range(24000))]
    jobs += [(-1.0, end + 1)] * 400
    parts = SubWindows(first=H, longest=6 * H, target=1000)
    pieces = walk(parts, 0.0, end, jobs)
    busy = [n for lo, _, n in pieces if lo >= 86400]
    # the first busy answer is as big as the span chosen in the quiet day allows; then the
    # span shrinks to what the density allows
    assert max(busy[1:]) <= 1.5 * parts.target
    assert len(pieces) < 80
    assert pieces[-1][1] == end
