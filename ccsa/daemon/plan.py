"""Pure sync planning: Slurm's view of a cluster + what ccsa already knows -> actions to store.

No I/O here (no trio, httpx, sqlite): `decide` looks at the sacct jobs of a window (or of a
`sacct -j` lookup), the slurmctld queue and the known-job rows, and says which jobs need a start,
which a stop, whose pending start can now get its resources, and which running jobs look stale.
`build` then turns that decision plus the fetched metadata into the actions the store applies in
one transaction. It reads the decoded Slurm views (`SacctJob`, `QueueJob`) and asks the pure
functions of `ccsa.convert` every question about them (start time, finished, resources, bodies),
so the rules live in one place and mypy checks every call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from ccsa import convert
from ccsa.ccbackend.models import Resource, StartJob, StopJob
from ccsa.convert import ConvertOptions
from ccsa.daemon import runs
from ccsa.slurm.sacct import SacctJob
from ccsa.slurm.squeue import QueueJob
from ccsa.slurm.types import flags

#: ``waiting``: started in Slurm, but its start could not be built for a reason that may pass
#: (`Wait`); looked up again by id on every poll. ``parked``: waited longer than `WAIT_LIMIT`,
#: listed by ``redrive`` (which puts it back to waiting).
Phase = Literal["start_queued", "started", "stop_queued", "stopped", "ignored", "waiting", "parked"]

#: Phases in which ccsa believes the job is running in cc-backend (or is about to be).
RUNNING_PHASES: frozenset[str] = frozenset({"start_queued", "started"})

#: cc-backend's state for the earlier run of a requeued job. cc-backend has no "requeued"
#: state (ccbackend.md §3.3, cc-backend#30); its maintainers advise stopping the old run as
#: cancelled (or failed) and starting the new run under its new start time; ccsa.convert
#: maps a "requeued" record to cancelled too.
REQUEUE_STOP_STATE = "cancelled"

#: How long a job may stay CONFIGURING (powered-down nodes booting) before its start goes out
#: with the allocation time as startTime (issue 18 item 2). Until then the start waits for
#: RUNNING, when slurmctld has reset the start time to the end of the boot (``job_mgr.c``
#: ``job_config_fini``; docs/real-slurm.md "Lifecycles of issue 18"); a start that went out
#: earlier keeps its startTime (`_same_run`). Ten minutes covers Slurm's default
#: ResumeTimeout (60 s) and a typical bare-metal boot; slurmctld only notices the end of the
#: boot on its ~30 s ``job_time_limit`` pass.
CONFIGURING_LIMIT = 600.0


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
    """Remember a job that is never sent (all hosts in ignoreHosts, never started) so its stop
    is not sent either."""

    key: JobKey
    reason: str


@dataclass(frozen=True, slots=True)
class Wait:
    """Remember a job whose start cannot be built yet for a reason that may pass (an empty
    user name while the host's user lookup fails, a node list that does not expand): it is
    looked up again by id on later polls, whatever the watermark, until it is sent or has
    waited `WAIT_LIMIT` (then it is parked for ``redrive``). Its stop waits with it."""

    key: JobKey
    reason: str


#: How long a job may wait (`Wait`) before it is parked with its reason (``redrive`` lists it
#: and puts it back to waiting): a user lookup outage of a day is an incident someone handles.
WAIT_LIMIT = 86400.0


Action = QueueStart | QueueStop | UpdateResources | MarkStale | Ignore | Wait


@dataclass(slots=True)
class Decision:
    """What `decide` found; `build` turns it into actions once metadata is fetched."""

    cluster: str
    #: new starts: the sacct record and slurmctld's record of the same run (None: not seen)
    starts: list[tuple[SacctJob, QueueJob | None]] = field(default_factory=list)
    #: stops: the sacct record and the run's start time
    stops: list[tuple[SacctJob, int]] = field(default_factory=list)
    extra: list[Action] = field(default_factory=list)
    lookup: list[int] = field(default_factory=list)
    stop_keys: set[tuple[int, int]] = field(default_factory=set)
    #: ids that need slurmctld's record (new starts, or queued starts still without their
    #: resources) but are missing from the live queue: typically jobs that ended between two
    #: polls or while slurmdbd was down. slurmctld keeps finished jobs for MinJobAge
    #: (``squeue -j IDS -t all``); pass them back to `decide` as `recent`.
    unseen: list[int] = field(default_factory=list)

    def metadata_ids(self) -> list[int]:
        """Ids of new starts still in slurmctld: only those have scontrol text / batch script."""
        return [acct.job_id for acct, queue in self.starts if queue is not None]

    def script_ids(self) -> list[int]:
        """Ids of new starts in slurmctld whose sacct record carries no job script."""
        return [acct.job_id for acct, queue in self.starts if queue is not None and not acct.script]


@dataclass(frozen=True, slots=True)
class Metadata:
    """slurmctld's metadata of new starts by job id, and which ids were asked for already.

    ``slurm_info``: ``scontrol show job`` text; ``scripts``: batch scripts (sacct's own
    ``script`` field wins over these). ``info_asked`` / ``scripts_asked``: ids fetched already
    (a hook lookup fetches the metadata of jobs it does not know alongside its sacct call), not
    to be asked again even where the answer had nothing.
    """

    slurm_info: Mapping[int, str] = field(default_factory=dict)
    scripts: Mapping[int, str] = field(default_factory=dict)
    info_asked: frozenset[int] = frozenset()
    scripts_asked: frozenset[int] = frozenset()

    def __or__(self, other: Metadata) -> Metadata:
        return Metadata(
            {**self.slurm_info, **other.slurm_info},
            {**self.scripts, **other.scripts},
            self.info_asked | other.info_asked,
            self.scripts_asked | other.scripts_asked,
        )


#: No metadata at all (the jobs' starts go out without slurmInfo and, unless sacct carries
#: it, without the job script).
NO_METADATA = Metadata()


def of_cluster(jobs: Iterable[SacctJob], cluster: str) -> list[SacctJob]:
    """The sacct records of ``cluster`` (a record naming no cluster counts as ours)."""
    return [j for j in jobs if not j.cluster or j.cluster == cluster]


def decide(
    cluster: str,
    accts: Iterable[SacctJob],
    queue: Mapping[int, QueueJob] | None,
    known: Mapping[tuple[int, int], KnownJob],
    opts: ConvertOptions,
    *,
    full_queue: bool,
    recent: Mapping[int, QueueJob] | None = None,
    now: float | None = None,
) -> Decision:
    """Compare Slurm's view with the known jobs of one cluster.

    Args:
        accts: sacct jobs (a poll window, or the answer to a ``sacct -j`` lookup).
        queue: slurmctld's jobs by id (``squeue --all`` or ``squeue -j``), None if not asked.
        known: the cluster's known-job rows keyed by (job_id, start_time).
        opts: the configured conversion options (gpuPciAddrs for captured resources).
        full_queue: True when `queue` is the complete ``squeue --all``; only then can a job
            missing from it be called stale.
        recent: slurmctld's records of jobs missing from `queue` (ended within MinJobAge),
            each of the same run as its sacct record: for resources and metadata only (such
            a job is not running: it never clears a stale mark).
        now: Slurm's time (epoch s) for the CONFIGURING bound; None: never held back (backfill).
    """
    decision = Decision(cluster)
    accts = list(accts)
    by_id = _rows_by_id(known.values())
    records = _records_by_id(accts)
    settled: set[tuple[int, int]] = set()  # keys this window already decides about

    for acct in accts:
        jid = acct.job_id
        rows = by_id.get(jid, ())
        run = runs.run_of(acct, _starts(rows), records[jid], _delivered(rows))
        if run is None:
            continue
        start, moved = run
        key = JobKey(cluster, jid, start)
        if (jid, start) in settled:
            continue  # the same record twice (overlapping answers)
        settled.add((jid, start))
        finished = convert.is_finished(acct)
        live = queue.get(jid) if queue is not None else None
        q = live if live is not None or recent is None else recent.get(jid)
        if q is not None and runs.other_run(q, acct):
            q = None  # slurmctld's record is the next run of a requeued job: not this one's cores
        unseen = q is None and queue is not None
        if not moved:  # a requeued job comes back with a new start time: a new job
            _requeue_stops(decision, settled, by_id.get(jid, ()), start)
        row = known.get((jid, start))
        if row is None or row.phase == "waiting":
            if not finished and _configuring(live, start, now):
                continue  # nodes still booting: start it once RUNNING (reset start time)
            decision.starts.append((acct, q))
            if unseen:
                decision.unseen.append(jid)
            if finished:
                decision.stops.append((acct, start))
                decision.stop_keys.add((jid, start))
            continue
        if row.phase in ("ignored", "parked"):
            continue
        if row.phase == "start_queued" and not row.resources_complete:
            if q is not None:
                resources = convert.capture_resources(q, opts)
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


def _rows_by_id(rows: Iterable[KnownJob]) -> dict[int, list[KnownJob]]:
    out: dict[int, list[KnownJob]] = {}
    for row in rows:
        out.setdefault(row.key.job_id, []).append(row)
    return out


def _starts(rows: Iterable[KnownJob]) -> list[int]:
    """The start times under which ccsa knows a job's runs (not merely waiting ones)."""
    return [r.key.start_time for r in rows if r.phase != "waiting"]


def _delivered(rows: Iterable[KnownJob]) -> set[int]:
    """The start times of a job's runs whose start reached cc-backend."""
    return {r.key.start_time for r in rows if r.start_delivered_at is not None}


def _records_by_id(accts: Iterable[SacctJob]) -> dict[int, list[SacctJob]]:
    out: dict[int, list[SacctJob]] = {}
    for acct in accts:
        out.setdefault(acct.job_id, []).append(acct)
    return out


def _requeue_stops(
    decision: Decision, settled: set[tuple[int, int]], rows: Iterable[KnownJob], start: int
) -> None:
    """Stop the earlier runs ccsa believes running of a job that runs again under ``start``."""
    for older in rows:
        if older.key.start_time < start and older.phase in RUNNING_PHASES:
            settled.add((older.key.job_id, older.key.start_time))
            decision.extra.append(_requeue_stop(older, start))


def _configuring(live: QueueJob | None, start: int, now: float | None) -> bool:
    """slurmctld shows the job CONFIGURING (nodes booting) for less than `CONFIGURING_LIMIT`."""
    if live is None or now is None:
        return False
    return "CONFIGURING" in flags(live.job_state) and now - start < CONFIGURING_LIMIT


def _stale_check(
    decision: Decision,
    queue: Mapping[int, QueueJob],
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


def build(decision: Decision, opts: ConvertOptions, meta: Metadata = NO_METADATA) -> list[Action]:
    """Turn a decision plus fetched metadata into store actions (starts before stops)."""
    actions: list[Action] = []
    unsent: set[tuple[int, int]] = set()  # ignored or waiting: their stops wait too
    for acct, queue in decision.starts:
        jid = acct.job_id
        start = convert.start_time(acct)
        assert start is not None  # decide() only keeps started jobs
        key = JobKey(decision.cluster, jid, start)
        captured = convert.capture_resources(queue, opts) if queue is not None else None
        resources = captured if captured else convert.host_resources(acct)
        body = convert.start_body(
            acct,
            resources=resources,
            queue=queue,
            slurm_info=meta.slurm_info.get(jid) or None,
            job_script=acct.script or meta.scripts.get(jid) or None,
            opts=opts,
        )
        if isinstance(body, convert.Skip):
            unsent.add((jid, start))
            actions.append(Ignore(key, body.reason) if body.final else Wait(key, body.reason))
            continue
        actions.append(QueueStart(key, body, acct.partition, bool(captured)))
    actions.extend(decision.extra)
    for acct, start in decision.stops:
        if (acct.job_id, start) in unsent:
            continue
        key = JobKey(decision.cluster, acct.job_id, start)
        actions.append(QueueStop(key, convert.stop_body(acct, start), acct.partition))
    return actions
