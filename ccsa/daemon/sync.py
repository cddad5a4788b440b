"""One cluster's sync: Slurm I/O -> `plan` -> one store transaction -> wake delivery.

`Syncer.tick(cluster)` is the poll: the ``sacct --allusers`` window from the cluster's own
watermark (minus an overlap) to now (`windows.poll_window`), then ``squeue --all``, metadata for
the new starts, the plan and ONE transaction that queues the actions and moves the watermark (so
a crash anywhere re-reads the window instead of skipping it). A long window (a backlog) is read
in consecutive sub-windows (`windows.SubWindows`), each with its own sacct, squeue, plan and
transaction, so memory is bounded by one sub-window's answer and the delivery starts on the
first one. Then phase 2 of the stale check (``sacct -j`` of jobs missing from squeue twice) and
node state (best effort). `Syncer.sync_all` polls every cluster, each on its own.
`Syncer.lookup(cluster, ids)` is the same planning for a few job ids (PrEp events, stale jobs,
the stuck-job checker; its Slurm calls: `byid.fetch`) without a watermark move.

Metadata of new starts (``scontrol show job`` text, batch scripts) comes from
`metadata.MetadataSource`, each script from the source `scripts.ScriptSource` chooses. A new
start missing from the live queue gets the best record `live.LiveRecords` has (the remembered
live record, else slurmctld's record of the finished job).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial

import trio

from ccsa import convert, logs
from ccsa.ccbackend.models import NodeStateRequest
from ccsa.convert import ConvertOptions
from ccsa.daemon import byid, plan
from ccsa.daemon.chunks import split, store_in_chunks
from ccsa.daemon.dbdlag import LagWatch
from ccsa.daemon.live import LiveRecords
from ccsa.daemon.metadata import MetadataSource
from ccsa.daemon.plan import NO_METADATA, JobKey, KnownJob, Metadata, of_cluster
from ccsa.daemon.scripts import ScriptSource
from ccsa.daemon.stats import Stats
from ccsa.daemon.store import ApplyResult, Store
from ccsa.daemon.undecodable import Undecodable, without_waits
from ccsa.daemon.windows import SubWindows, as_datetime, beyond, density, poll_window, utc
from ccsa.errors import BackendError, SlurmError, SlurmTimeout
from ccsa.nodestate import NodeLoad, node_load, node_shapes
from ccsa.slurm.commands import Slurm
from ccsa.slurm.sacct import SacctJob
from ccsa.slurm.squeue import QueueJob

__all__ = ["LookupResult", "Syncer", "TickResult", "of_cluster"]

log = logging.getLogger(__name__)
#: One INFO line per sync and cluster, shown at the default level (docs/admin-guide.md).
summary_log = logging.getLogger(logs.SUMMARY)

#: Stopped jobs are forgotten once they ended this long before the window start (they can no
#: longer appear in a window; a stale re-appearance would only cost an idempotent 422).
PRUNE_MARGIN = 3600.0


@dataclass(frozen=True)
class TickResult:
    """What one poll of one cluster did (`parts`: how many sub-windows it was cut into)."""

    cluster: str
    window: tuple[float, float]
    jobs_seen: int
    applied: ApplyResult
    skipped_seconds: float = 0.0
    parts: int = 1


@dataclass(frozen=True)
class _Part:
    """What one sub-window of a poll did; `fresh`/`carried` size the next one."""

    jobs: int
    fresh: int
    carried: int
    applied: ApplyResult
    lookup: list[int]
    #: ids of the sacct records read (the waiting jobs among them need no lookup of their own)
    seen: frozenset[int] = frozenset()
    #: its sacct ignored the window and covered the rest of the poll (`windows.beyond`)
    covered_rest: bool = False


class _SacctTimedOut(Exception):
    """A sub-window's sacct timed out (not its squeue): `Syncer.tick` reads it in shorter ones."""

    def __init__(self, timeout: SlurmTimeout) -> None:
        super().__init__(str(timeout))
        self.timeout = timeout


@dataclass(frozen=True)
class LookupResult:
    """Which asked ids Slurm showed started / finished (the PrEp path retries the others)."""

    started: frozenset[int]
    finished: frozenset[int]
    applied: ApplyResult


@dataclass
class Syncer:
    """Per-cluster polls and lookups. One instance serves every cluster of the daemon.

    Args:
        opts: the configured conversion options (gpuPciAddrs, ignoreHosts).
        now: the wall clock (epoch seconds) for sacct windows; injected for tests.
        initial_start: where a cluster without a watermark starts (see docs/daemon.md).
        sub_windows: how a long window is cut (its `first` must exceed a normal poll's
            window so that a normal poll stays one sacct call).
        on_queued: called after actions were stored (wakes the delivery).
        post_node_state: sends a node-state body (None: node state sync off).
    """

    slurm: Slurm
    store: Store
    opts: ConvertOptions
    now: Callable[[], float]
    rest: bool
    nats: bool
    overlap: float = 300.0
    max_span: float = 604800.0
    sub_windows: SubWindows = field(default_factory=SubWindows)
    initial_start: Callable[[], float] | None = None
    on_queued: Callable[[], None] = lambda: None
    post_node_state: Callable[[NodeStateRequest], Awaitable[None]] | None = None
    stats: Stats = field(default_factory=Stats)
    #: Where new jobs' scripts come from (set ``scripts.cache`` to prefetch on hook events).
    scripts: ScriptSource = field(init=False)
    metadata: MetadataSource = field(init=False)
    live: LiveRecords = field(init=False)
    #: slurmctld's clock offset, slurmdbd's queue and lag per cluster (`dbdlag`, issue 18)
    lag: LagWatch = field(init=False)
    #: records Slurm sent that do not decode (issue #17 item 5), for the log and ``status``
    undecodable: Undecodable = field(default_factory=Undecodable)
    #: Per-node load of each cluster's running jobs, from the last poll's squeue (node state).
    loads: dict[str, dict[str, NodeLoad] | None] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.scripts = ScriptSource(self.slurm, self.store)
        self.metadata = MetadataSource(self.slurm, self.scripts)
        self.live = LiveRecords(self.slurm, self.store, self.now)
        self.lag = LagWatch(self.slurm, self.now, self.overlap, self.store)

    # --- the poll -------------------------------------------------------------------------

    def window(self, cluster: str) -> tuple[float, float, float]:
        """(start, end, seconds skipped by the slurmQueryMaxSpan cap) of the next poll."""
        return poll_window(
            self.now() + self.lag.clock.offset(cluster),  # Slurm's "now" (issue 18 item 4)
            self.store.watermark(cluster),
            overlap=self.overlap,
            max_span=self.max_span,
            initial_start=self.initial_start,
        )

    async def tick(self, cluster: str) -> TickResult:
        """Poll one cluster, sub-window by sub-window (see `windows.SubWindows`).

        Each sub-window is committed on its own, watermark included, before the next one is
        read, so a failure part-way keeps what was done and the next poll resumes at the last
        committed sub-window. Raises SlurmError (the watermark then stays at that point).
        """
        await self.lag.read_clock(cluster)
        begin, end, skipped = self.window(cluster)
        if skipped > 0:
            log.warning(
                "%s: the last sync is older than slurmQueryMaxSpan; skipping %.0f s of history "
                "(%s to %s UTC). Deliver it with: cc-slurm-adapter backfill --cluster %s "
                "--since %s --until %s",
                cluster, skipped, utc(begin - skipped), utc(begin), cluster,
                utc(begin - skipped), utc(begin),
            )  # fmt: skip
        seen = parts = 0
        seen_ids: set[int] = set()
        self.undecodable.begin(cluster)
        applied = ApplyResult()
        span = self.sub_windows.first
        part_begin = begin
        while True:
            part_end = self.sub_windows.cut(part_begin, end, span)
            last = part_end >= end
            try:
                part = await self._part(cluster, part_begin, part_end, last=last, poll_end=end)
            except _SacctTimedOut as exc:
                span = self._shorter(cluster, exc, part_begin, part_end)
                continue
            last = last or part.covered_rest
            parts += 1
            seen += part.jobs
            seen_ids |= part.seen
            applied += part.applied
            if last:
                break
            span = self.sub_windows.next_span(span, fresh=part.fresh, carried=part.carried)
            part_begin = part_end
        self.stats.sync_ticks += 1
        if part.lookup:
            try:
                await self.lookup(cluster, part.lookup, with_queue=False)
            except SlurmError as exc:
                log.warning("%s: stale-job lookup failed (retried next poll): %s", cluster, exc)
        await self._retry_waiting(cluster, seen_ids)
        self.store.prune(cluster, begin - PRUNE_MARGIN)
        summary_log.info(
            "%s: synced %s..%s UTC%s: %d jobs seen, %d starts and %d stops queued",
            cluster, utc(begin), utc(end), f" in {parts} sub-windows" if parts > 1 else "",
            seen, applied.starts, applied.stops,
        )  # fmt: skip
        return TickResult(cluster, (begin, end), seen, applied, skipped, parts)

    def _shorter(self, cluster: str, exc: _SacctTimedOut, begin: float, end: float) -> float:
        """The span to read [begin, end] again in after its sacct timed out; raises the
        timeout when the window cannot get shorter."""
        span = self.sub_windows.after_timeout(end - begin)
        if span is None:
            raise exc.timeout
        self.stats.sacct_window_timeouts[cluster] += 1
        log.warning(
            "%s: sacct over %s..%s UTC timed out (%.0f s of jobs is more than sacct answers "
            "within slurmCommandTimeout); reading it in sub-windows of %.0f s",
            cluster, utc(begin), utc(end), end - begin, span,
        )  # fmt: skip
        return span

    async def _part(
        self, cluster: str, begin: float, end: float, *, last: bool, poll_end: float
    ) -> _Part:
        """One sub-window: sacct, then squeue, plan, ONE transaction moving the watermark to
        `end`. Only the `last` one (whose squeue is newer than every sacct of the poll) runs
        the stale check: a running job missing from squeue may have its stop in a later
        sub-window. Everything read here is dropped on return (bounded memory)."""
        try:
            doc = await self.slurm.sacct_window(cluster, as_datetime(begin), as_datetime(end))
        except SlurmTimeout as exc:
            raise _SacctTimedOut(exc) from exc
        accts = of_cluster(doc.jobs, cluster)
        waits = self.undecodable.waits(cluster, "sacct", doc.bad)
        del doc
        covered_rest = not last and beyond(accts, end) > 0
        if covered_rest:  # this sacct ignores -E: its answer holds the rest of the poll
            log.info("%s: sacct answered beyond %s UTC: the rest of the window to %s UTC is "
                     "planned from this answer", cluster, utc(end), utc(poll_end))  # fmt: skip
            end, last = poll_end, True
        fresh, carried = density(accts, begin, end)
        if not accts and not last:
            # nothing to plan: no squeue needed, just move the watermark past the quiet stretch
            self.apply(cluster, waits, watermark=end)
            log.debug("%s: sub-window %s..%s UTC is empty", cluster, utc(begin), utc(end))
            return _Part(0, 0, 0, ApplyResult(), [])
        # sacct first, then squeue (not concurrently): slurmctld starts a job before slurmdbd
        # records it, so every job this sacct shows as started is in the later squeue snapshot
        # with its resources. Concurrently, squeue could be the older snapshot and still show
        # it PENDING; its start would then go out with host names only (found by the soak).
        # Hence one squeue per sub-window, each after its own sacct.
        queue_doc = await self.slurm.squeue_all(cluster)
        self.undecodable.waits(cluster, "squeue", queue_doc.bad)  # sacct's record decides
        queue_jobs = queue_doc.jobs
        del queue_doc
        if last:
            self.loads[cluster] = node_load(queue_jobs)
        queue = {q.job_id: q for q in queue_jobs}
        ids = {j.job_id for j in accts}
        ids.update(queue)
        # the rows of these jobs, plus (last sub-window) every running row for the stale check
        known = without_waits(self.store.known_jobs_for(cluster, ids, running=last))
        del ids
        self.live.remember(cluster, queue_jobs, known)
        decision = await self.decide(cluster, accts, queue, known, full_queue=last)
        mark = self.lag.hold(cluster, end, accts, queue_jobs, known) if last else end
        del queue_jobs, queue, known
        # slurmctld's text of every new start in one call, the scripts chunk by chunk
        have = await self.metadata.fetch(cluster, decision.metadata_ids(), [], sacct=False)
        n, seen, lookup = len(accts), frozenset(j.job_id for j in accts), decision.lookup
        parts = split(decision)
        del decision, accts  # each chunk's views are dropped once it is stored
        build = partial(self.build, cluster, have=have)
        applied = await store_in_chunks(parts, waits, build, partial(self.apply, cluster), mark)
        self.undecodable.decoded(self.store, cluster, seen)
        if not last:
            log.info(
                "%s: sub-window %s..%s UTC: %d jobs seen, %d starts and %d stops queued",
                cluster, utc(begin), utc(end), n, applied.starts, applied.stops,
            )  # fmt: skip
        return _Part(n, fresh, carried, applied, lookup, seen, covered_rest)

    async def _retry_waiting(self, cluster: str, seen: Collection[int]) -> None:
        """Look the cluster's waiting jobs (`plan.Wait`) up by id, whatever the watermark (a
        job that ended is in no later window), then park those waiting longer than
        `plan.WAIT_LIMIT` with their reason for ``redrive``."""
        ids = [jid for jid in self.store.waiting_ids(cluster) if jid not in seen]
        if ids:
            try:
                await self.lookup(cluster, ids)
            except SlurmError as exc:
                log.warning("%s: lookup of %d waiting jobs failed (retried next poll): %s",
                            cluster, len(ids), exc)  # fmt: skip
        now = self.now()
        for jid, reason in self.store.park_waiting(cluster, now - plan.WAIT_LIMIT, now):
            log.error(
                "%s: job %d parked after waiting %.0f h: %s; once the cause is fixed, send it "
                "with: cc-slurm-adapter redrive --all (or --id, see redrive --list)",
                cluster, jid, plan.WAIT_LIMIT / 3600, reason,
            )  # fmt: skip

    async def sync_all(self, clusters: Sequence[str], *, node_state: bool = True) -> bool:
        """Poll every cluster concurrently, each on its own: one cluster's failure (Slurm
        errors) is recorded for that cluster only and never stops or rolls back the others.

        Returns True when every cluster synced.
        """
        failed: list[str] = []

        async def one(cluster: str) -> None:
            try:
                await self.tick(cluster)
            except SlurmError as exc:
                failed.append(cluster)
                self.stats.sync_failures[cluster] += 1
                self.store.record_error(cluster, str(exc), self.now())
                mark = self.store.watermark(cluster)
                log.error(
                    "%s: sync failed; the next poll resumes at its watermark (%s UTC): %s",
                    cluster, "none" if mark is None else utc(mark), exc,
                )  # fmt: skip
            if node_state:
                await self.node_state(cluster)

        async with trio.open_nursery() as nursery:
            for cluster in clusters:
                nursery.start_soon(one, cluster)
        return not failed

    async def node_state(self, cluster: str) -> bool:
        """sinfo -> POST /api/nodestate/ (best effort: errors are logged, never raised)."""
        if self.post_node_state is None:
            return False
        try:
            doc = await self.slurm.sinfo(cluster)
            self.opts.layouts.set_shapes(cluster, node_shapes(doc))  # hwthread numbering
            body = convert.node_state(doc, cluster, self.opts, self.loads.get(cluster))
            await self.post_node_state(body)
        except (SlurmError, BackendError) as exc:
            self.stats.node_state_failures += 1
            log.warning("%s: node state sync skipped: %s", cluster, exc)
            return False
        return True

    # --- lookups (PrEp, stale phase 2, stuck-job checker) ---------------------------------

    async def lookup(
        self,
        cluster: str,
        ids: Collection[int],
        *,
        with_queue: bool = True,
        forget: Collection[tuple[int, int]] = (),
    ) -> LookupResult:
        """Plan and queue a few jobs by id (``sacct -j`` [+ ``squeue -j``]).

        Args:
            with_queue: also ask slurmctld (resources, metadata); off for finished-job checks.
            forget: known (job_id, start_time) rows to plan as if unknown (re-send a start
                that cc-backend lost).
        """
        wanted = sorted(set(ids))
        accts, queue, meta, bad = await byid.fetch(self, cluster, wanted, with_queue=with_queue)
        known = without_waits(self.store.known_jobs_for(cluster, [j.job_id for j in accts]))
        for key in forget:
            known.pop(key, None)
        decision = await self.decide(cluster, accts, queue, known, full_queue=False)
        actions = await self.build(cluster, decision, meta)
        if forget:
            lost = {JobKey(cluster, jid, st) for jid, st in forget}
            actions = [
                replace(a, resend=True) if isinstance(a, plan.QueueStart) and a.key in lost else a
                for a in actions
            ]
        applied = self.apply(cluster, [*actions, *self.undecodable.waits(cluster, "sacct", bad)],
                             watermark=None)  # fmt: skip
        self.undecodable.decoded(self.store, cluster, {j.job_id for j in accts})
        started = frozenset(j.job_id for j in accts if convert.start_time(j) is not None)
        finished = frozenset(j.job_id for j in accts if convert.is_finished(j))
        return LookupResult(started, finished, applied)

    # --- shared by polls and lookups -------------------------------------------------------

    async def decide(
        self,
        cluster: str,
        accts: Sequence[SacctJob],
        queue: Mapping[int, QueueJob] | None,
        known: Mapping[tuple[int, int], KnownJob],
        *,
        full_queue: bool,
    ) -> plan.Decision:
        """`plan.decide`, then again with better records of the jobs it found unseen
        (`live.LiveRecords.for_unseen`)."""
        now = self.now() + self.lag.clock.offset(cluster)  # Slurm's, for the CONFIGURING bound
        decision = plan.decide(
            cluster, accts, queue, known, self.opts, full_queue=full_queue, now=now
        )
        if not decision.unseen:
            return decision
        recent = await self.live.for_unseen(cluster, decision.unseen, accts)
        if not recent:
            return decision
        return plan.decide(
            cluster, accts, queue, known, self.opts, full_queue=full_queue, recent=recent, now=now
        )

    async def build(
        self, cluster: str, decision: plan.Decision, have: Metadata = NO_METADATA
    ) -> list[plan.Action]:
        """Fetch the metadata the decision needs (minus what `have` asked already), build."""
        info_ids = [i for i in decision.metadata_ids() if i not in have.info_asked]
        script_ids = [i for i in decision.script_ids() if i not in have.scripts_asked]
        meta = have
        if info_ids or script_ids:
            meta = have | await self.metadata.fetch(cluster, info_ids, script_ids, sacct=True)
        return plan.build(decision, self.opts, meta)

    def apply(
        self, cluster: str, actions: Sequence[plan.Action], *, watermark: float | None
    ) -> ApplyResult:
        """Store the actions in one transaction (moving the watermark if given); count them
        and wake the delivery when something is to send."""
        applied = self.store.apply(
            cluster, actions, now=self.now(), rest=self.rest, nats=self.nats, watermark=watermark
        )
        self.stats.starts_queued += applied.starts
        self.stats.stops_queued += applied.stops
        self.stats.resource_updates += applied.resource_updates
        self.stats.stale_marked += sum(
            1 for a in actions if isinstance(a, plan.MarkStale) and a.stale
        )
        waits = [a for a in actions if isinstance(a, plan.Wait)]
        if waits:
            log.warning(
                "%s: %d jobs not sent yet, looked up again on later polls (job %d: %s)",
                cluster, len(waits), waits[0].key.job_id, waits[0].reason,
            )  # fmt: skip
        if applied.starts or applied.stops or applied.resource_updates or applied.parked_stops:
            self.on_queued()
        return applied
