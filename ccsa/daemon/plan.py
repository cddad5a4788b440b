"""Pure sync planning: Slurm's view of a cluster + what ccsa already knows -> actions to store.

No I/O here (no trio, httpx, sqlite): `decide` looks at the sacct jobs of a window (or of a
`sacct -j` lookup), the slurmctld queue and the known-job rows, and says which jobs need a start,
which a stop, whose pending start can now get its resources, and which running jobs look stale.
`build` then turns that decision plus the fetched metadata into the actions the store applies in
one transaction. `SubWindows` cuts a long poll window (a backlog after downtime, the first sync)
into consecutive sub-windows sized by the job density seen so far, so one ``sacct`` answer (the
daemon's peak memory) stays small while a normal poll remains one call. The Slurm view objects
are opaque here: every question about them goes through a `Converter` (in production a thin
adapter over `ccsa.convert`), so this module can be tested with small hand-made jobs as well as
with real Slurm fixtures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

from ccsa.ccbackend.models import Resource, StartJob, StopJob

Phase = Literal["start_queued", "started", "stop_queued", "stopped", "ignored"]

#: Phases in which ccsa believes the job is running in cc-backend (or is about to be).
RUNNING_PHASES: frozenset[str] = frozenset({"start_queued", "started"})

#: cc-backend's state for the earlier run of a requeued job. cc-backend has no "requeued"
#: state (ccbackend.md §3.3, cc-backend#30); its maintainers advise stopping the old run as
#: cancelled (or failed) and starting the new run under its new start time; ccsa.convert
#: maps a "requeued" record to cancelled too.
REQUEUE_STOP_STATE = "cancelled"


class JobKey(NamedTuple):
    """cc-backend's identity of a job: (cluster, jobId, startTime) (ccbackend.md §6)."""

    cluster: str
    job_id: int
    start_time: int


@dataclass(frozen=True, slots=True)
class KnownJob:
    """One row of the known-job cache, as the planner needs it."""

    key: JobKey
    phase: Phase
    resources_complete: bool = False
    stale: bool = False
    partition: str = ""
    start_delivered_at: float | None = None


class Converter(Protocol):
    """What the planner asks about Slurm's job views (adapter over `ccsa.convert`)."""

    def job_id(self, job: Any) -> int: ...

    def start_time(self, acct: Any) -> int | None:
        """Epoch start of a sacct job, None if it never started."""
        ...

    def is_finished(self, acct: Any) -> bool: ...

    def partition(self, acct: Any) -> str: ...

    def job_script(self, acct: Any) -> str:
        """sacct's own ``script`` field ("" when slurmdbd does not store scripts)."""
        ...

    def capture_resources(self, queue_job: Any) -> list[Resource] | None:
        """hwthreads/accelerators from slurmctld's view, None if it has no allocation."""
        ...

    def host_resources(self, acct: Any) -> list[Resource]:
        """Host-name-only resources from sacct's node list (the fallback)."""
        ...

    def start_body(
        self,
        acct: Any,
        *,
        resources: list[Resource],
        queue: Any | None,
        slurm_info: str,
        job_script: str,
    ) -> StartJob | str:
        """The start_job body, or the reason (str) why this job is not sent at all."""
        ...

    def stop_body(self, acct: Any, start_time: int) -> StopJob | None: ...


# --- actions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueStart:
    """Put a start_job into the outbox and record the job as start_queued."""

    key: JobKey
    body: StartJob
    partition: str
    resources_complete: bool
    #: send it although the job is recorded as started (cc-backend lost it); without this the
    #: store ignores starts of jobs already past start_queued (a plan made on older knowledge).
    resend: bool = False


@dataclass(frozen=True, slots=True)
class QueueStop:
    """Put a stop_job into the outbox (delivered only after the job's start)."""

    key: JobKey
    body: StopJob
    partition: str


@dataclass(frozen=True, slots=True)
class UpdateResources:
    """Resources arrived for a start that is still in the outbox: patch its body."""

    key: JobKey
    resources: list[Resource]


@dataclass(frozen=True, slots=True)
class MarkStale:
    """Set or clear the stale mark (phase 1 of the two-phase stale check)."""

    key: JobKey
    stale: bool


@dataclass(frozen=True, slots=True)
class Ignore:
    """Remember a job that is not sent (ignoreHosts, no resources) so its stop is not sent."""

    key: JobKey
    reason: str


Action = QueueStart | QueueStop | UpdateResources | MarkStale | Ignore


@dataclass(slots=True)
class Decision:
    """What `decide` found; `build` turns it into actions once metadata is fetched."""

    cluster: str
    starts: list[tuple[Any, Any | None]] = field(default_factory=list)
    stops: list[tuple[Any, int]] = field(default_factory=list)
    extra: list[Action] = field(default_factory=list)
    lookup: list[int] = field(default_factory=list)
    stop_keys: set[tuple[int, int]] = field(default_factory=set)
    #: ids that need slurmctld's record (new starts, or queued starts still without their
    #: resources) but are missing from the live queue: typically jobs that ended between two
    #: polls or while slurmdbd was down. slurmctld keeps finished jobs for MinJobAge
    #: (``scontrol show job --json``, ``squeue -t all``); pass them back to `decide` as `recent`.
    unseen: list[int] = field(default_factory=list)

    def metadata_ids(self, conv: Converter) -> list[int]:
        """Ids of new starts still in slurmctld: only those have scontrol text / batch script."""
        return [conv.job_id(acct) for acct, queue in self.starts if queue is not None]

    def script_ids(self, conv: Converter) -> list[int]:
        """Ids of new starts in slurmctld whose sacct record carries no job script."""
        return [
            conv.job_id(acct)
            for acct, queue in self.starts
            if queue is not None and not conv.job_script(acct)
        ]

    @property
    def empty(self) -> bool:
        return not (self.starts or self.stops or self.extra or self.lookup)


def decide(
    cluster: str,
    accts: Iterable[Any],
    queue: Mapping[int, Any] | None,
    known: Mapping[tuple[int, int], KnownJob],
    conv: Converter,
    *,
    full_queue: bool,
    recent: Mapping[int, Any] | None = None,
) -> Decision:
    """Compare Slurm's view with the known jobs of one cluster.

    Args:
        accts: sacct jobs (a poll window, or the answer to a ``sacct -j`` lookup).
        queue: slurmctld's jobs by id (``squeue --all`` or ``squeue -j``), None if not asked.
        known: the cluster's known-job rows keyed by (job_id, start_time).
        full_queue: True when `queue` is the complete ``squeue --all``; only then can a job
            missing from it be called stale.
        recent: slurmctld's records of jobs missing from `queue` (finished, but still within
            MinJobAge), each for the same run as its sacct record. Used for resources and
            metadata only: a job found only here is not running, so it never clears a stale
            mark and plays no part in the stale check.
    """
    decision = Decision(cluster)
    by_id: dict[int, list[KnownJob]] = {}
    for known_row in known.values():
        by_id.setdefault(known_row.key.job_id, []).append(known_row)
    settled: set[tuple[int, int]] = set()  # keys this window already decides about

    for acct in accts:
        jid = conv.job_id(acct)
        start = conv.start_time(acct)
        if start is None:
            continue  # never started (pending, or cancelled before it ran)
        key = JobKey(cluster, jid, start)
        if (jid, start) in settled:
            continue  # the same record twice (overlapping answers)
        settled.add((jid, start))
        finished = conv.is_finished(acct)
        live = queue.get(jid) if queue is not None else None
        q = live if live is not None or recent is None else recent.get(jid)
        unseen = q is None and queue is not None
        for older in by_id.get(jid, []):
            # A requeued job comes back with a new start time: a new job for cc-backend.
            if older.key.start_time < start and older.phase in RUNNING_PHASES:
                settled.add((jid, older.key.start_time))
                decision.extra.append(_requeue_stop(older, start))
        row = known.get((jid, start))
        if row is None:
            decision.starts.append((acct, q))
            if unseen:
                decision.unseen.append(jid)
            if finished:
                decision.stops.append((acct, start))
                decision.stop_keys.add((jid, start))
            continue
        if row.phase == "ignored":
            continue
        if row.phase == "start_queued" and not row.resources_complete:
            if q is not None:
                resources = conv.capture_resources(q)
                if resources:
                    decision.extra.append(UpdateResources(key, resources))
            elif unseen:
                decision.unseen.append(jid)
        if finished and row.phase in RUNNING_PHASES:
            decision.stops.append((acct, start))
            decision.stop_keys.add((jid, start))
        elif row.stale and live is not None:
            decision.extra.append(MarkStale(key, False))

    if queue is not None and full_queue:
        _stale_check(decision, queue, known, settled)
    return decision


def _stale_check(
    decision: Decision,
    queue: Mapping[int, Any],
    known: Mapping[tuple[int, int], KnownJob],
    settled: set[tuple[int, int]],
) -> None:
    """Two-phase stale check over jobs we believe running but slurmctld no longer lists.

    Phase 1 marks such a job; if it is still missing on the next tick (phase 2) it is looked
    up with ``sacct -j`` and stopped if finished. Marking first avoids reporting a job that
    ended a moment ago twice (its stop is usually in the next window anyway).
    """
    finished_now = decision.stop_keys
    for (jid, start), row in known.items():
        if row.phase not in RUNNING_PHASES:
            continue
        if jid in queue:
            if row.stale and (jid, start) not in settled:
                decision.extra.append(MarkStale(row.key, False))
            continue
        if (jid, start) in finished_now or _requeued(decision, row.key):
            continue
        if not row.stale:
            decision.extra.append(MarkStale(row.key, True))
        else:
            decision.lookup.append(jid)


def _requeued(decision: Decision, key: JobKey) -> bool:
    return any(isinstance(a, QueueStop) and a.key == key for a in decision.extra)


def _requeue_stop(older: KnownJob, new_start: int) -> QueueStop:
    body = StopJob(
        job_id=older.key.job_id,
        cluster=older.key.cluster,
        job_state=REQUEUE_STOP_STATE,
        stop_time=max(new_start, older.key.start_time),
        start_time=older.key.start_time,
    )
    return QueueStop(older.key, body, older.partition)


def build(
    decision: Decision,
    conv: Converter,
    *,
    slurm_info: Mapping[int, str] | None = None,
    scripts: Mapping[int, str] | None = None,
) -> list[Action]:
    """Turn a decision plus fetched metadata into store actions (starts before stops)."""
    info = slurm_info or {}
    fetched = scripts or {}
    actions: list[Action] = []
    ignored: set[tuple[int, int]] = set()
    for acct, queue in decision.starts:
        jid = conv.job_id(acct)
        start = conv.start_time(acct)
        assert start is not None  # decide() only keeps started jobs
        key = JobKey(decision.cluster, jid, start)
        captured = conv.capture_resources(queue) if queue is not None else None
        resources = captured if captured else conv.host_resources(acct)
        body = conv.start_body(
            acct,
            resources=resources,
            queue=queue,
            slurm_info=info.get(jid, ""),
            job_script=conv.job_script(acct) or fetched.get(jid, ""),
        )
        if isinstance(body, str):
            ignored.add((jid, start))
            actions.append(Ignore(key, body))
            continue
        actions.append(QueueStart(key, body, conv.partition(acct), bool(captured)))
    actions.extend(decision.extra)
    for acct, start in decision.stops:
        jid = conv.job_id(acct)
        if (jid, start) in ignored:
            continue
        stop = conv.stop_body(acct, start)
        if stop is not None:
            key = JobKey(decision.cluster, jid, start)
            actions.append(QueueStop(key, stop, conv.partition(acct)))
    return actions


# --- sub-windows of a long poll window ------------------------------------------------------


#: Default length of a poll's first sub-window (seconds).
FIRST_SUB_WINDOW = 3600.0


@dataclass(frozen=True, slots=True)
class SubWindows:
    """How a long poll window is cut into consecutive sub-windows, one ``sacct`` call each.

    ``sacct --json`` costs about 10 KB per job record, and reading one answer briefly holds it
    twice (the pipe chunks and their join), so the first sync of a 10k-job backlog in ONE call
    peaked at ~300 MiB. Job density is unknown and uneven (an idle week, then a busy day), so
    each sub-window's length is chosen from the previous one's answer (`next_span`) and capped
    (`longest`): the cap bounds the damage when a long quiet stretch ends in a busy one.

    Args:
        first: length of the first sub-window. A window at most `SLACK` times this long is ONE
            call, so a normal poll (window ~ slurmPollInterval + overlap) is never split.
        longest: upper bound of any later sub-window.
        shortest: lower bound (a burst of jobs eligible within one second cannot be split).
        target: job records one sub-window should return.
    """

    first: float = FIRST_SUB_WINDOW
    longest: float = 6 * 3600.0
    shortest: float = 60.0
    target: int = 2000

    #: The last sub-window may be this much longer than planned instead of leaving a short tail.
    SLACK = 1.5

    def cut(self, begin: float, end: float, span: float) -> float:
        """End of the sub-window that starts at `begin` (`end` when the rest fits in one).

        Inner boundaries are whole seconds: sacct takes whole seconds, so consecutive
        sub-windows share their boundary second instead of leaving a gap.
        """
        if end - begin <= span * self.SLACK:
            return end
        return float(max(int(begin + span), int(begin) + 1))

    def next_span(self, span: float, *, fresh: int, carried: int) -> float:
        """Length of the next sub-window after one of length `span` returned `fresh` records
        that became eligible inside it, and `carried` records still active at its end.

        sacct returns every job active at some moment of the window, so the next answer holds
        about ``carried + rate * span'`` records (``rate = fresh / span``): solve for
        ``target``. Carried records (a deep pending queue, long jobs) come back in every answer
        whatever its length: once they alone approach the target, shrinking would only read
        them again and again (a 50k-job backlog with an 18k-job queue read 18x its size), so
        the new records may then match the carried ones (at most 2x the unavoidable answer,
        and at most 2x the minimal reading). Growth is at most 2x per step.
        """
        budget = max(self.target - carried, carried)
        want = span * 2 if fresh <= 0 else span * budget / fresh
        return max(self.shortest, min(want, span * 2, max(self.longest, self.first)))


def count_without_resources(actions: Sequence[Action]) -> int:
    """How many starts go out with host names only (counted in the metrics)."""
    return sum(1 for a in actions if isinstance(a, QueueStart) and not a.resources_complete)
