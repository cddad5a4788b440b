"""A lookup's one round of Slurm calls by job id (`sync.Syncer.lookup`: PrEp, stale, stuck jobs).

Contract: `fetch(parts, cluster, wanted, with_queue=...)` asks ``sacct -j`` for the `wanted`
ids and, with `with_queue`, ``squeue -j`` and the metadata (``scontrol`` text, scripts) of the
ids the store does not know yet (a prolog's new job), all at once: the hook path wants one
round, not two. The squeue answer is remembered (`live.LiveRecords.remember`) as soon as it
arrives, even if sacct fails in the same round. It returns `Fetched`: the cluster's sacct
records (scripts noted when sacct carried them), the queue by id (None without `with_queue`),
the metadata fetched ahead and the records that did not decode. It plans and stores nothing;
the first SlurmError of the round is raised after every call has finished (`concurrently`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NamedTuple, Protocol

import trio

from ccsa.daemon import runs
from ccsa.daemon.live import LiveRecords
from ccsa.daemon.metadata import MetadataSource
from ccsa.daemon.plan import NO_METADATA, Metadata, of_cluster
from ccsa.daemon.scripts import ScriptSource
from ccsa.daemon.store import Store
from ccsa.errors import SlurmError
from ccsa.slurm.commands import Slurm
from ccsa.slurm.sacct import SacctJob
from ccsa.slurm.squeue import QueueJob
from ccsa.slurm.stream import BadRecord

__all__ = ["Fetched", "Parts", "concurrently", "fetch"]


class Parts(Protocol):
    """What `fetch` uses (a `sync.Syncer` is one)."""

    @property
    def slurm(self) -> Slurm: ...
    @property
    def store(self) -> Store: ...
    @property
    def scripts(self) -> ScriptSource: ...
    @property
    def metadata(self) -> MetadataSource: ...
    @property
    def live(self) -> LiveRecords: ...


class Fetched(NamedTuple):
    """One round's answers (see the module docstring)."""

    accts: list[SacctJob]
    queue: dict[int, QueueJob] | None
    meta: Metadata
    bad: list[BadRecord]


async def fetch(parts: Parts, cluster: str, wanted: list[int], *, with_queue: bool) -> Fetched:
    """``sacct -j`` and (`with_queue`) ``squeue -j`` plus the metadata of the jobs this daemon
    does not know yet, all at once."""
    accts: list[SacctJob] = []
    bad: list[BadRecord] = []
    queue_jobs: list[QueueJob] = []
    meta = [NO_METADATA]
    known_wanted = parts.store.known_jobs_for(cluster, wanted)
    known_ids = {jid for jid, _ in known_wanted}
    new_ids = [i for i in wanted if i not in known_ids] if with_queue else []
    script_ids = parts.scripts.from_slurmctld_ahead(cluster, new_ids)
    with_scripts = with_queue and parts.scripts.ask_sacct(cluster)

    async def get_sacct() -> None:
        doc = await parts.slurm.sacct_jobs(cluster, wanted, scripts=with_scripts, duplicates=True)
        accts.extend(runs.lookup_records(doc.jobs, known_wanted))
        bad.extend(doc.bad)

    async def get_queue() -> None:
        got = await parts.slurm.squeue_jobs(cluster, wanted)
        queue_jobs.extend(got)
        # at once, even if sacct fails in this round: the job may be gone by the retry
        parts.live.remember(cluster, got, known_wanted)

    async def get_meta() -> None:
        meta[0] = await parts.metadata.fetch(cluster, new_ids, script_ids, sacct=False)

    await concurrently(*([get_sacct, get_queue, get_meta] if with_queue else [get_sacct]))
    accts = of_cluster(accts, cluster)
    if with_scripts:
        parts.scripts.note(cluster, accts)
    queue = {q.job_id: q for q in queue_jobs} if with_queue else None
    return Fetched(accts, queue, meta[0], bad)


async def concurrently(*calls: Callable[[], Awaitable[None]]) -> None:
    """Run the calls at once and let each finish; then raise the first SlurmError, if any.

    A failing call does not cancel the others: what they learned is still used (e.g. the live
    squeue record `LiveRecords.remember` keeps while sacct is failing). Anything else propagates.
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
