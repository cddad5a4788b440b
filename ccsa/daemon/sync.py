"""One cluster's sync: Slurm I/O -> `plan` -> one store transaction -> wake delivery.

`Syncer.tick(cluster)` is the poll: the ``sacct --allusers`` window from the cluster's own
watermark (minus an overlap) to now, then ``squeue --all``, metadata for the new starts, the plan
and ONE transaction that queues the actions and moves the watermark (so a crash anywhere re-reads
the window instead of skipping it). A long window (a backlog) is read in consecutive sub-windows
(`plan.SubWindows`), each with its own sacct, squeue, plan and transaction, so memory is bounded
by one sub-window's answer and the delivery starts on the first one. Then phase 2 of the stale
check (``sacct -j`` of jobs missing from squeue twice) and node state (best effort).
`Syncer.lookup(cluster, ids)` is the same planning for a few job ids (PrEp events, stale jobs,
the stuck-job checker) without a watermark move.

Both fetch slurmctld's record of a new start missing from the live queue (it ended between two
polls, or while slurmdbd was down so sacct could not answer in time) with one
``scontrol show job --json``: slurmctld keeps finished jobs, cores included, for MinJobAge.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import msgspec
import trio

from ccsa import convert
from ccsa.ccbackend.models import NodeStateRequest, Resource, StartJob, StopJob
from ccsa.daemon import plan
from ccsa.daemon.plan import JobKey, KnownJob
from ccsa.daemon.scripts import ScriptCache
from ccsa.daemon.stats import Stats
from ccsa.daemon.store import ApplyResult, Store
from ccsa.errors import BackendError, SlurmError
from ccsa.slurm.commands import Slurm
from ccsa.slurm.sacct import SacctJob
from ccsa.slurm.squeue import QueueJob
from ccsa.slurm.types import first

log = logging.getLogger(__name__)

#: How long a remembered live squeue record of a not-yet-started job is kept (`Syncer.remember`):
#: long enough for the slowest poll to plan the job, short enough to stay small.
MEMORY_SECONDS = 3600.0
_live_encoder = msgspec.json.Encoder()
_live_decoder = msgspec.json.Decoder(QueueJob)
#: Stopped jobs are forgotten once they ended this long before the window start (they can no
#: longer appear in a window; a stale re-appearance would only cost an idempotent 422).
PRUNE_MARGIN = 3600.0


class ConvertAdapter:
    """`plan.Converter` over `ccsa.convert` with the configured options bound."""

    def __init__(self, opts: convert.ConvertOptions) -> None:
        self.opts = opts

    def job_id(self, job: Any) -> int:
        return int(job.job_id)

    def start_time(self, acct: Any) -> int | None:
        return convert.start_time(acct)

    def is_finished(self, acct: Any) -> bool:
        return convert.is_finished(acct)

    def partition(self, acct: Any) -> str:
        return str(acct.partition)

    def job_script(self, acct: Any) -> str:
        return str(acct.script)

    def capture_resources(self, queue_job: Any) -> list[Resource] | None:
        return convert.capture_resources(queue_job, self.opts)

    def host_resources(self, acct: Any) -> list[Resource]:
        return convert.host_resources(acct)

    def start_body(
        self,
        acct: Any,
        *,
        resources: list[Resource],
        queue: Any | None,
        slurm_info: str,
        job_script: str,
    ) -> StartJob | str:
        body = convert.start_body(
            acct,
            resources=resources,
            queue=queue,
            slurm_info=slurm_info or None,
            job_script=job_script or None,
            opts=self.opts,
        )
        return body.reason if isinstance(body, convert.Skip) else body

    def stop_body(self, acct: Any, start_time: int) -> StopJob | None:
        return convert.stop_body(acct, start_time)


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
        now: the wall clock (epoch seconds) for sacct windows; injected for tests.
        initial_start: where a cluster without a watermark starts (see docs/daemon.md).
        sub_windows: how a long window is cut (`plan.SubWindows`; its `first` must exceed a
            normal poll's window so that a normal poll stays one sacct call).
        on_queued: called after actions were stored (wakes the delivery).
        post_node_state: sends a node-state body (None: node state sync off).
    """

    slurm: Slurm
    store: Store
    conv: ConvertAdapter
    now: Callable[[], float]
    rest: bool
    nats: bool
    overlap: float = 300.0
    max_span: float = 604800.0
    sub_windows: plan.SubWindows = field(default_factory=plan.SubWindows)
    initial_start: Callable[[], float] | None = None
    on_queued: Callable[[], None] = lambda: None
    post_node_state: Callable[[NodeStateRequest], Awaitable[None]] | None = None
    stats: Stats = field(default_factory=Stats)
    #: Per cluster: does ``sacct --batch-script`` carry job scripts (slurmdbd stores them)?
    #: Learned from answers (`note_scripts`); absent = not known yet.
    scripts_in_sacct: dict[str, bool] = field(default_factory=dict)
    #: Scripts fetched when a hook event arrived (`prefetch_script`); None: fetch when needed.
    scripts: ScriptCache | None = None

    # --- the poll -------------------------------------------------------------------------

    def window(self, cluster: str) -> tuple[float, float, float]:
        """(start, end, seconds skipped by the slurmQueryMaxSpan cap) of the next poll."""
        end = self.now()
        mark = self.store.watermark(cluster)
        if mark is None:
            begin = self.initial_start() if self.initial_start else end - self.max_span
        else:
            begin = mark - self.overlap
        begin = min(begin, end)
        skipped = 0.0
        if end - begin > self.max_span:
            skipped = end - self.max_span - begin
            begin = end - self.max_span
        return begin, end, skipped

    async def tick(self, cluster: str) -> TickResult:
        """Poll one cluster, sub-window by sub-window (see `plan.SubWindows`).

        Each sub-window is committed on its own, watermark included, before the next one is
        read, so a failure part-way keeps what was done and the next poll resumes at the last
        committed sub-window. Raises SlurmError (the watermark then stays at that point).
        """
        begin, end, skipped = self.window(cluster)
        if skipped > 0:
            log.warning(
                "%s: the last sync is older than slurmQueryMaxSpan; skipping %.0f s of history "
                "(%s to %s UTC). Deliver it with: cc-slurm-adapter backfill --cluster %s "
                "--since %s --until %s",
                cluster, skipped, _utc(begin - skipped), _utc(begin), cluster,
                _utc(begin - skipped), _utc(begin),
            )  # fmt: skip
        seen = parts = 0
        applied = ApplyResult()
        span = self.sub_windows.first
        part_begin = begin
        while True:
            part_end = self.sub_windows.cut(part_begin, end, span)
            last = part_end >= end
            part = await self._part(cluster, part_begin, part_end, last=last)
            parts += 1
            seen += part.jobs
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
        self.store.prune(cluster, begin - PRUNE_MARGIN)
        log.info(
            "%s: synced %s..%s UTC%s: %d jobs seen, %d starts and %d stops queued",
            cluster, _utc(begin), _utc(end), f" in {parts} sub-windows" if parts > 1 else "",
            seen, applied.starts, applied.stops,
        )  # fmt: skip
        return TickResult(cluster, (begin, end), seen, applied, skipped, parts)

    async def _part(self, cluster: str, begin: float, end: float, *, last: bool) -> _Part:
        """One sub-window: sacct, then squeue, plan, ONE transaction moving the watermark to
        `end`. Only the `last` one (whose squeue is newer than every sacct of the poll) runs
        the stale check: a running job missing from squeue may have its stop in a later
        sub-window. Everything read here is dropped on return (bounded memory)."""
        doc = await self.slurm.sacct_window(cluster, _dt(begin), _dt(end))
        accts = of_cluster(doc.jobs, cluster)
        del doc
        fresh, carried = _density(accts, begin, end)
        if not accts and not last:
            # nothing to plan: no squeue needed, just move the watermark past the quiet stretch
            self.apply(cluster, [], watermark=end)
            log.debug("%s: sub-window %s..%s UTC is empty", cluster, _utc(begin), _utc(end))
            return _Part(0, 0, 0, ApplyResult(), [])
        # sacct first, then squeue (not concurrently): slurmctld starts a job before slurmdbd
        # records it, so every job this sacct shows as started is in the later squeue snapshot
        # with its resources. Concurrently, squeue could be the older snapshot and still show
        # it PENDING; its start would then go out with host names only (found by the soak).
        # Hence one squeue per sub-window, each after its own sacct.
        queue_jobs = (await self.slurm.squeue_all(cluster)).jobs
        queue = {q.job_id: q for q in queue_jobs}
        ids = {j.job_id for j in accts}
        ids.update(queue)
        # the rows of these jobs, plus (last sub-window) every running row for the stale check
        known = self.store.known_jobs_for(cluster, ids, running=last)
        del ids
        self.remember(cluster, queue_jobs, known)
        decision = await self.decide(cluster, accts, queue, known, full_queue=last)
        actions = await self.build(cluster, decision)
        applied = self.apply(cluster, actions, watermark=end)
        if not last:
            log.info(
                "%s: sub-window %s..%s UTC: %d jobs seen, %d starts and %d stops queued",
                cluster, _utc(begin), _utc(end), len(accts), applied.starts, applied.stops,
            )  # fmt: skip
        return _Part(len(accts), fresh, carried, applied, decision.lookup)

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
                    cluster, "none" if mark is None else _utc(mark), exc,
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
            body = convert.node_state(doc, cluster, self.conv.opts)
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
        accts: list[SacctJob] = []
        queue_jobs: list[QueueJob] = []
        info: dict[int, str] = {}
        scripts: dict[int, str] = {}
        # The hook path wants one round of Slurm calls, not two: the metadata of jobs this
        # daemon does not know yet (a prolog's new job) is fetched alongside sacct/squeue.
        known_wanted = self.store.known_jobs_for(cluster, wanted)
        known_ids = {jid for jid, _ in known_wanted}
        new_ids = [i for i in wanted if i not in known_ids] if with_queue else []

        # Where slurmdbd stores job scripts (AccountingStoreFlags=job_script), this sacct
        # answer carries them (--batch-script), and asking scontrol for each new job would cost
        # one subprocess per job for nothing: scripts are prefetched from scontrol only where
        # sacct is not known to have them.
        stored = self.scripts_in_sacct.get(cluster)
        script_ids = [] if stored else new_ids
        want_scripts = with_queue and stored is not False

        async def get_sacct() -> None:
            doc = await self.slurm.sacct_jobs(cluster, wanted, scripts=want_scripts)
            accts.extend(doc.jobs)

        async def get_queue() -> None:
            got = await self.slurm.squeue_jobs(cluster, wanted)
            queue_jobs.extend(got)
            # at once, even if sacct fails in this round: the job may be gone by the retry
            self.remember(cluster, got, known_wanted)

        async def get_meta() -> None:
            got_info, got_scripts = await self._metadata(cluster, new_ids, script_ids)
            info.update(got_info)
            scripts.update(got_scripts)

        calls = [get_sacct, get_queue, get_meta] if with_queue else [get_sacct]
        await _concurrently(*calls)
        accts = of_cluster(accts, cluster)
        if want_scripts:
            self.note_scripts(cluster, accts)
        known: dict[tuple[int, int], KnownJob] = dict(
            self.store.known_jobs_for(cluster, [j.job_id for j in accts])
        )
        for key in forget:
            known.pop(key, None)
        queue = {q.job_id: q for q in queue_jobs} if with_queue else None
        decision = await self.decide(cluster, accts, queue, known, full_queue=False)
        actions = await self.build(
            cluster, decision, (info, scripts, set(new_ids), set(script_ids))
        )
        if forget:
            lost = {JobKey(cluster, jid, st) for jid, st in forget}
            actions = [
                replace(a, resend=True) if isinstance(a, plan.QueueStart) and a.key in lost else a
                for a in actions
            ]
        applied = self.apply(cluster, actions, watermark=None)
        started = frozenset(j.job_id for j in accts if convert.start_time(j) is not None)
        finished = frozenset(j.job_id for j in accts if convert.is_finished(j))
        return LookupResult(started, finished, applied)

    def prefetch_script(self, cluster: str, job_id: int) -> None:
        """A hook event arrived: fetch the job's script now if its start will need one from
        slurmctld (a job not started in cc-backend yet, where sacct carries no scripts), so the
        lookup after ``slurmQueryDelay`` finds it ready (`ccsa.daemon.scripts`)."""
        if self.scripts is None or self.scripts_in_sacct.get(cluster):
            return
        if self.store.known_jobs_for(cluster, [job_id]):
            return
        self.scripts.prefetch(cluster, job_id)

    # --- shared ---------------------------------------------------------------------------

    def note_scripts(self, cluster: str, accts: Sequence[SacctJob]) -> None:
        """Learn from a ``sacct --batch-script`` answer whether slurmdbd stores job scripts:
        yes once any record carries one; no when started jobs came back without any."""
        if self.scripts_in_sacct.get(cluster):
            return
        if any(j.script for j in accts):
            self.scripts_in_sacct[cluster] = True
            log.info(
                "%s: slurmdbd stores job scripts: new jobs' scripts come from sacct "
                "--batch-script, one call for many jobs instead of one scontrol per job",
                cluster,
            )
        elif cluster not in self.scripts_in_sacct and any(
            convert.start_time(j) is not None for j in accts
        ):
            self.scripts_in_sacct[cluster] = False
            log.debug("%s: sacct --batch-script carries no scripts: using scontrol", cluster)

    async def decide(
        self,
        cluster: str,
        accts: Sequence[SacctJob],
        queue: Mapping[int, QueueJob] | None,
        known: Mapping[tuple[int, int], KnownJob],
        *,
        full_queue: bool,
    ) -> plan.Decision:
        """`plan.decide`, then again with better records of the jobs it found unseen.

        For a job missing from this squeue answer, a live record remembered from an earlier
        answer (`remember`: RUNNING, cores and GPU indices) beats slurmctld's record of the
        finished job (`recent`: cores only, ``gres_detail`` is emptied when a job ends).
        """
        decision = plan.decide(cluster, accts, queue, known, self.conv, full_queue=full_queue)
        if not decision.unseen:
            return decision
        recent = self.remembered(cluster, decision.unseen, accts)
        missing = [jid for jid in decision.unseen if jid not in recent]
        if missing:
            recent = {**await self.recent(cluster, missing, accts), **recent}
        if not recent:
            return decision
        return plan.decide(
            cluster, accts, queue, known, self.conv, full_queue=full_queue, recent=recent
        )

    def remember(
        self,
        cluster: str,
        queue_jobs: Sequence[QueueJob],
        known: Mapping[tuple[int, int], KnownJob],
    ) -> None:
        """Durably keep the live record of every RUNNING job whose start is not delivered yet.

        A short job can end before the plan that starts it runs: a hook lookup then finds only
        slurmctld's finished record (no GPU indices), while an earlier squeue answer, whose own
        plan was still fetching metadata (or whose daemon was killed before it committed), saw
        it running with its GPUs (both found by the soak). Storing the live record the moment an
        answer is decoded lets whichever plan starts the job use it. Only jobs not yet started
        in cc-backend are kept, and only for MEMORY_SECONDS.
        """
        records: list[tuple[int, int, bytes]] = []
        for q in queue_jobs:
            if first(q.job_state) != "RUNNING":
                continue
            start = convert.queue_start_time(q)
            if start is None:
                continue
            row = known.get((q.job_id, start))
            if row is not None and (row.phase != "start_queued" or row.resources_complete):
                continue
            records.append((q.job_id, start, _live_encoder.encode(q)))
        if records:
            self.store.remember_live(cluster, records, now=self.now(), keep=MEMORY_SECONDS)

    def remembered(
        self, cluster: str, ids: Sequence[int], accts: Sequence[SacctJob]
    ) -> dict[int, QueueJob]:
        """Remembered live records of ``ids``, each only for the run sacct describes."""
        stored = self.store.live_records(cluster, ids)
        found: dict[int, QueueJob] = {}
        for acct in accts:
            rec = stored.get((acct.job_id, convert.start_time(acct) or -1))
            if rec is not None:
                found[acct.job_id] = _live_decoder.decode(rec)
        return found

    async def recent(
        self, cluster: str, ids: Sequence[int], accts: Sequence[SacctJob]
    ) -> dict[int, QueueJob]:
        """slurmctld's records of ``ids`` that are missing from squeue's default view.

        One ``scontrol show job --json``: unlike squeue's default state filter it still lists
        jobs that ended less than MinJobAge ago, with their cores (not their GPU indices:
        ``gres_detail`` is empty once a job ended). A record is only used for the run sacct
        describes (same start time): a requeued job's current run is not its earlier one.
        Failures are logged; the jobs then go out with host names, as before.
        """
        try:
            found = await self.slurm.scontrol_jobs_json(cluster, ids)
        except SlurmError as exc:
            log.warning("%s: no slurmctld record for %d jobs: %s", cluster, len(ids), exc)
            return {}
        starts = {j.job_id: convert.start_time(j) for j in accts}
        recent = {
            q.job_id: q
            for q in found
            if q.job_id in starts and convert.queue_start_time(q) == starts[q.job_id]
        }
        log.debug(
            "%s: %d of %d jobs missing from squeue found in slurmctld (ended < MinJobAge ago)",
            cluster, len(recent), len(ids),
        )  # fmt: skip
        return recent

    async def build(
        self,
        cluster: str,
        decision: plan.Decision,
        prefetched: tuple[Mapping[int, str], Mapping[int, str], set[int], set[int]] | None = None,
    ) -> list[plan.Action]:
        """Fetch the metadata the decision needs (minus what was prefetched) and build.

        ``prefetched``: (scontrol texts, scripts, ids whose text was asked, ids whose script
        was asked).
        """
        have_info, have_scripts, asked_info, asked_scripts = prefetched or ({}, {}, set(), set())
        info_ids = [i for i in decision.metadata_ids(self.conv) if i not in asked_info]
        script_ids = [i for i in decision.script_ids(self.conv) if i not in asked_scripts]
        from_sacct: dict[int, str] = {}
        if script_ids and self.scripts_in_sacct.get(cluster) is not False:
            from_sacct, listed = await self._sacct_scripts(cluster, script_ids)
            if self.scripts_in_sacct.get(cluster):
                # stored: a job sacct lists without a script has none (srun, salloc)
                script_ids = [i for i in script_ids if i not in listed]
        info, scripts = await self._metadata(cluster, info_ids, script_ids)
        scripts = {**scripts, **from_sacct}
        return plan.build(
            decision,
            self.conv,
            slurm_info={**have_info, **info},
            scripts={**have_scripts, **scripts},
        )

    async def _sacct_scripts(
        self, cluster: str, ids: Sequence[int]
    ) -> tuple[dict[int, str], set[int]]:
        """(scripts, ids sacct listed) from one ``sacct -j IDS --batch-script`` (learns whether
        slurmdbd stores scripts). When sacct fails, nothing: scontrol is then asked instead."""
        try:
            doc = await self.slurm.sacct_jobs(cluster, ids, scripts=True)
        except SlurmError as exc:
            log.warning("%s: no job scripts from sacct for %d jobs: %s", cluster, len(ids), exc)
            return {}, set()
        jobs = of_cluster(doc.jobs, cluster)
        self.note_scripts(cluster, jobs)
        return {j.job_id: j.script for j in jobs if j.script}, {j.job_id for j in jobs}

    async def _metadata(
        self, cluster: str, info_ids: Sequence[int], script_ids: Sequence[int]
    ) -> tuple[Mapping[int, str], Mapping[int, str]]:
        """scontrol text (one call) and batch scripts (one call per job, only when sacct has
        none; fetched ahead by a hook event where `scripts` has them) of new starts still in
        slurmctld. Missing metadata never blocks a start."""
        info: dict[int, str] = {}
        scripts: dict[int, str] = {}

        async def get_info() -> None:
            try:
                info.update(await self.slurm.scontrol_show_jobs_text(cluster, info_ids))
            except SlurmError as exc:
                log.warning("%s: no slurmInfo for %d new jobs: %s", cluster, len(info_ids), exc)

        async def get_scripts() -> None:
            ids: Sequence[int] = script_ids
            if self.scripts is not None:
                ready, ids = await self.scripts.take(cluster, ids)
                scripts.update(ready)
            if ids:
                scripts.update(await self.slurm.batch_scripts(cluster, ids))

        async with trio.open_nursery() as nursery:
            if info_ids:
                nursery.start_soon(get_info)
            if script_ids:
                nursery.start_soon(get_scripts)
        return info, scripts

    def apply(
        self, cluster: str, actions: Sequence[plan.Action], *, watermark: float | None
    ) -> ApplyResult:
        applied = self.store.apply(
            cluster, actions, now=self.now(), rest=self.rest, nats=self.nats, watermark=watermark
        )
        self.stats.starts_queued += applied.starts
        self.stats.stops_queued += applied.stops
        self.stats.resource_updates += applied.resource_updates
        self.stats.stale_marked += sum(
            1 for a in actions if isinstance(a, plan.MarkStale) and a.stale
        )
        if applied.starts or applied.stops or applied.resource_updates or applied.parked_stops:
            self.on_queued()
        return applied


async def _concurrently(*calls: Callable[[], Awaitable[None]]) -> None:
    """Run the calls at once and let each finish; then raise the first SlurmError, if any.

    A failing call does not cancel the others: what they learned is still used (e.g. the live
    squeue record `Syncer.remember` keeps while sacct is failing). Anything else propagates.
    """
    failures: list[SlurmError] = []

    async def guarded(call: Callable[[], Awaitable[None]]) -> None:
        try:
            await call()
        except SlurmError as exc:
            failures.append(exc)

    async with trio.open_nursery() as nursery:
        for call in calls:
            nursery.start_soon(guarded, call)
    if failures:
        raise failures[0]


def of_cluster(jobs: Iterable[SacctJob], cluster: str) -> list[SacctJob]:
    """The sacct records of ``cluster`` (a record naming no cluster counts as ours)."""
    return [j for j in jobs if not j.cluster or j.cluster == cluster]


def _density(accts: Sequence[SacctJob], begin: float, end: float) -> tuple[int, int]:
    """(records submitted inside [begin, end], records still active at `end`).

    sacct's window holds every job whose (eligible .. end) span touches it: the first count
    grows with the window's length, the second comes back in the next window whatever its
    length (`plan.SubWindows.next_span`). The submit time stands in for the eligible time
    (the same, except for ``--begin`` jobs).
    """
    fresh = carried = 0
    for acct in accts:
        t = acct.time
        since = convert.timestamp(t.submission) or convert.timestamp(t.start)
        if since is None or since >= begin:
            fresh += 1
        until = convert.timestamp(t.end)
        if until is None or until >= end:
            carried += 1
    return fresh, carried


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(int(epoch), UTC)


def _utc(epoch: float) -> str:
    return _dt(epoch).strftime("%Y-%m-%dT%H:%M:%S")
