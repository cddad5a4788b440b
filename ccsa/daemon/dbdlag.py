"""slurmdbd lag and clock skew: the rules that keep a poll's sacct window honest (issue 18).

**slurmdbd lag** (item 3). slurmctld hands its job events to slurmdbd through a queue (``sdiag``'s
"DBD Agent queue size"); when slurmdbd stalls, sacct still answers but lags behind squeue. A
job that starts and ends inside a lag longer than ``slurmQueryOverlap`` would be in no sacct
window ever read. So a poll does not move the cluster's watermark past the oldest start that
squeue showed and neither sacct's answer nor ccsa's rows have (`unrecorded_starts`,
`hold_watermark`): the next window begins at that start minus the overlap and reads the job
once slurmdbd has it. squeue's answers include the hook lookups' (`LiveRecords.remember`,
kept `live.MEMORY_SECONDS`): while slurmdbd is down the poll's sacct fails before its squeue
runs, but a prolog's lookup runs ``squeue -j`` (without ``--cluster`` for the local cluster, so
it answers, `Slurm.learn_local_cluster`), and a job that ends before slurmdbd is back is in no
later squeue. The hold is bounded (`HOLD_LIMIT`): a job slurmdbd still lacks after
that is let go with a warning (``backfill`` re-reads such a span once slurmdbd has it).

**Clock skew** (item 4). The window's end is "now", and a job's times are slurmctld's clock. If
slurmctld's host runs behind the daemon's by more than the overlap, short jobs fall between two
windows. `SkewGauge` keeps, per cluster, the offset of slurmctld's clock (``sdiag``'s
``req_time``, slurmctld's ``time(NULL)`` when it answered) from the daemon's, measured at the
midpoint of the call; the poll's window ends at the daemon's now plus that offset (Slurm's own
"now"), and an offset larger than `SKEW_WARN_FRACTION` of the overlap is logged as a warning.

The rules (`unrecorded_starts`, `hold_watermark`, `SkewGauge`) are pure; `LagWatch` is the
Syncer's per-cluster state and runs ``sdiag`` (best effort: without it the offset stays 0).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ccsa import convert
from ccsa.daemon.live import MEMORY_SECONDS
from ccsa.daemon.plan import KnownJob
from ccsa.daemon.snapshot import ClusterStatus
from ccsa.daemon.store import Store
from ccsa.daemon.undecodable import UNDECODED_START
from ccsa.daemon.windows import utc
from ccsa.errors import SlurmError
from ccsa.slurm.commands import Slurm
from ccsa.slurm.sacct import SacctJob
from ccsa.slurm.squeue import QueueJob
from ccsa.slurm.types import num

log = logging.getLogger(__name__)

#: How far the watermark may be held behind now for a start slurmdbd does not have yet.
HOLD_LIMIT = 6 * 3600.0
#: A clock offset above this fraction of slurmQueryOverlap is worth a warning.
SKEW_WARN_FRACTION = 0.25
#: How often slurmctld's clock is read (``sdiag``) per cluster.
SKEW_INTERVAL = 600.0


@dataclass(frozen=True)
class Hold:
    """The watermark of a cluster is held at ``start`` for job ``job_id``; ``behind`` is how far
    that is from the window's end (seconds)."""

    job_id: int
    start: int
    behind: float
    jobs: int


def unrecorded_starts(queue: Iterable[QueueJob], recorded: Collection[int]) -> dict[int, int]:
    """Job id -> start time of every job squeue shows started whose id is not in ``recorded``
    (the ids sacct's answer shows started, plus those ccsa already has rows for)."""
    out: dict[int, int] = {}
    for q in queue:
        if q.job_id in recorded:
            continue
        start = convert.queue_start_time(q)
        if start is not None and start > 0:
            out[q.job_id] = start
    return out


def hold_watermark(
    end: float, unrecorded: Mapping[int, int], *, overlap: float, limit: float = HOLD_LIMIT
) -> tuple[float, Hold | None, list[int]]:
    """(watermark to commit, the hold or None, ids let go because they exceed ``limit``).

    The watermark is ``end`` unless a start in ``unrecorded`` is older than ``end - overlap``
    (a younger one is in the next window anyway, e.g. a job that started between the poll's
    sacct and squeue): then it is that start (the oldest one within ``limit`` of ``end``), so
    the next window reads it again.
    """
    unrecorded = {jid: s for jid, s in unrecorded.items() if s < end - overlap}
    within = {jid: s for jid, s in unrecorded.items() if end - s <= limit}
    let_go = sorted(jid for jid in unrecorded if jid not in within)
    if not within:
        return end, None, let_go
    jid, start = min(within.items(), key=lambda kv: (kv[1], kv[0]))
    if start >= end:
        return end, None, let_go
    return float(start), Hold(jid, start, end - start, len(within)), let_go


@dataclass
class SkewGauge:
    """Per-cluster offset of slurmctld's clock from the daemon's (positive: Slurm ahead)."""

    overlap: float
    interval: float = SKEW_INTERVAL
    offsets: dict[str, float] = field(default_factory=dict)
    measured_at: dict[str, float] = field(default_factory=dict)
    queue: dict[str, int] = field(default_factory=dict)

    def due(self, cluster: str, now: float) -> bool:
        """True when the cluster's clock has not been read for ``interval`` seconds."""
        last = self.measured_at.get(cluster)
        return last is None or now - last >= self.interval

    def record(
        self, cluster: str, *, slurm_now: int, sent: float, received: float, queue: int
    ) -> str | None:
        """Store one ``sdiag`` answer; returns a warning text when the offset is large.

        ``slurm_now`` is whole seconds, so offsets within 1 s (plus half the call's duration)
        are measurement noise and count as 0.
        """
        mid = (sent + received) / 2.0
        offset = slurm_now - mid
        noise = 1.0 + (received - sent) / 2.0
        if abs(offset) <= noise:
            offset = 0.0
        self.offsets[cluster] = offset
        self.measured_at[cluster] = received
        self.queue[cluster] = queue
        if abs(offset) > SKEW_WARN_FRACTION * self.overlap:
            side = "behind" if offset < 0 else "ahead of"
            return (
                f"{cluster}: slurmctld's clock runs {abs(offset):.0f} s {side} this host's "
                f"(more than {SKEW_WARN_FRACTION:.0%} of slurmQueryOverlap "
                f"{self.overlap:.0f} s); sacct windows end at Slurm's time. Fix the clocks "
                "(NTP/chrony) on both hosts"
            )
        return None

    def offset(self, cluster: str) -> float:
        return self.offsets.get(cluster, 0.0)


@dataclass
class LagWatch:
    """The Syncer's view of slurmctld's clock and slurmdbd's lag, per cluster."""

    slurm: Slurm
    now: Callable[[], float]
    overlap: float
    store: Store
    clock: SkewGauge = field(init=False)
    #: per cluster: the start the watermark waits behind (`hold_watermark`)
    holds: dict[str, Hold] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.clock = SkewGauge(self.overlap)

    def hold(
        self,
        cluster: str,
        end: float,
        accts: Sequence[SacctJob],
        queue_jobs: Sequence[QueueJob],
        known: Mapping[tuple[int, int], KnownJob],
    ) -> float:
        """The watermark a poll commits: `end`, or the oldest start squeue showed (this poll
        or a remembered live record) that neither this sacct answer nor ccsa's rows have."""
        recorded = {jid for jid, _start in known}
        recorded.update(j.job_id for j in accts if convert.start_time(j) is not None)
        since = self.now() - MEMORY_SECONDS
        live = self.store.live_starts(cluster, since, not_start=UNDECODED_START)
        unrecorded = {jid: s for jid, s in live.items() if jid not in recorded}
        unrecorded.update(unrecorded_starts(queue_jobs, recorded))
        mark, hold, let_go = hold_watermark(end, unrecorded, overlap=self.overlap)
        if let_go:
            log.warning(
                "%s: slurmdbd still has no start of job(s) %s that squeue showed running over "
                "%.0f h ago; the watermark no longer waits for them (deliver them later with "
                "cc-slurm-adapter backfill --cluster %s)",
                cluster, ", ".join(map(str, let_go[:10])), HOLD_LIMIT / 3600, cluster,
            )  # fmt: skip
        if hold is not None and cluster not in self.holds:
            log.warning(
                "%s: sacct lags behind squeue (slurmdbd busy or catching up): job %d started at "
                "%s UTC is not in slurmdbd yet; the watermark waits behind it",
                cluster, hold.job_id, utc(hold.start),
            )  # fmt: skip
        elif hold is None and cluster in self.holds:
            log.info("%s: slurmdbd caught up; the watermark moves on", cluster)
        if hold is None:
            self.holds.pop(cluster, None)
        else:
            self.holds[cluster] = hold
        return mark

    async def read_clock(self, cluster: str) -> None:
        """Read slurmctld's clock and slurmdbd queue (``sdiag``) when due, and on every poll
        while the watermark waits for slurmdbd."""
        sent = self.now()
        if not self.clock.due(cluster, sent) and cluster not in self.holds:
            return
        try:
            doc = await self.slurm.sdiag(cluster)
        except SlurmError as exc:
            self.clock.measured_at[cluster] = sent  # not again before the interval
            log.warning("%s: sdiag failed (clock offset and slurmdbd queue not measured): %s",
                        cluster, exc)  # fmt: skip
            return
        slurm_now = num(doc.statistics.req_time)
        if slurm_now is None:
            self.clock.measured_at[cluster] = sent
            return
        queue = num(doc.statistics.dbd_agent_queue_size) or 0
        warning = self.clock.record(
            cluster, slurm_now=slurm_now, sent=sent, received=self.now(), queue=queue
        )
        if warning:
            log.warning("%s", warning)

    def report(self, cluster: str, status: ClusterStatus) -> None:
        """Fill the cluster's status: clock offset, slurmdbd queue, the job held behind."""
        if cluster in self.clock.measured_at and cluster in self.clock.offsets:
            status.slurm_clock_offset = round(self.clock.offset(cluster), 1)
            status.dbd_queue = self.clock.queue.get(cluster)
        hold = self.holds.get(cluster)
        if hold is not None:
            status.held_for_job, status.held_at = hold.job_id, float(hold.start)
