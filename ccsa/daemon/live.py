"""slurmctld's records of jobs a plan found missing from its squeue answer.

A new start (or a queued start still without its resources) that sacct shows but the live
squeue answer does not list ended between two polls, or while slurmdbd was down. Its resources
can still come from two places, best first:

* the live record remembered from an earlier squeue answer (`LiveRecords.remember`): RUNNING,
  cores and GPU indices. A short job can end before the plan that starts it runs: a hook
  lookup then finds only slurmctld's finished record, while an earlier answer, whose own plan
  was still fetching metadata (or whose daemon was killed before it committed), saw it running
  with its GPUs (both found by the soak). The record is stored durably the moment an answer is
  decoded, only for jobs not started in cc-backend yet, and only for `MEMORY_SECONDS`.
* slurmctld's record of the finished job (`LiveRecords.recent`): ``squeue -j IDS -t all``
  still lists jobs that ended less than MinJobAge ago, with their cores (not their GPU
  indices: ``gres_detail`` is emptied when a job ends), and prints only the jobs asked for
  (``scontrol show job --json`` without an id would print every job slurmctld holds, and
  takes one id per call otherwise).

Either is used only for the run sacct describes (`runs.same_run_record`: the same start, or the
same restart count when slurmdbd has not recorded a power-up's reset start yet): a requeued
job's current run is not its earlier one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import msgspec

from ccsa import convert
from ccsa.daemon import runs
from ccsa.daemon.plan import KnownJob
from ccsa.daemon.store import Store
from ccsa.errors import SlurmError
from ccsa.slurm.commands import Slurm
from ccsa.slurm.sacct import SacctJob
from ccsa.slurm.squeue import QueueJob
from ccsa.slurm.types import first

log = logging.getLogger(__name__)

#: How long a remembered live squeue record of a not-yet-started job is kept: long enough for
#: the slowest poll to plan the job, short enough to stay small.
MEMORY_SECONDS = 3600.0
_live_encoder = msgspec.json.Encoder()
_live_decoder = msgspec.json.Decoder(QueueJob)


class LiveRecords:
    """Remembers live squeue records and finds the best record of jobs missing from squeue."""

    def __init__(self, slurm: Slurm, store: Store, now: Callable[[], float]) -> None:
        self.slurm = slurm
        self.store = store
        self.now = now

    def remember(
        self,
        cluster: str,
        queue_jobs: Sequence[QueueJob],
        known: Mapping[tuple[int, int], KnownJob],
    ) -> None:
        """Durably keep the live record of every RUNNING job whose start is not delivered yet
        (the module docstring says why)."""
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

    async def for_unseen(
        self, cluster: str, ids: Sequence[int], accts: Sequence[SacctJob]
    ) -> dict[int, QueueJob]:
        """The best record of each of ``ids`` (missing from squeue): remembered, else recent."""
        found = self.remembered(cluster, ids, accts)
        missing = [jid for jid in ids if jid not in found]
        if missing:
            found = {**await self.recent(cluster, missing, accts), **found}
        return found

    def remembered(
        self, cluster: str, ids: Sequence[int], accts: Sequence[SacctJob]
    ) -> dict[int, QueueJob]:
        """Remembered live records of ``ids``, each only for the run sacct describes."""
        stored: dict[int, list[tuple[int, bytes]]] = {}
        for (jid, start), rec in self.store.live_records(cluster, ids).items():
            stored.setdefault(jid, []).append((start, rec))
        found: dict[int, QueueJob] = {}
        for acct in accts:
            want = convert.start_time(acct) or -1
            # the record under the same start first, then the latest other one of the same run
            for _, rec in sorted(stored.get(acct.job_id, ()), key=lambda s: (s[0] != want, -s[0])):
                q = _live_decoder.decode(rec)
                if runs.same_run_record(q, acct):
                    found[acct.job_id] = q
                    break
        return found

    async def recent(
        self, cluster: str, ids: Sequence[int], accts: Sequence[SacctJob]
    ) -> dict[int, QueueJob]:
        """slurmctld's records of ``ids``, which are missing from squeue's default view (one
        ``squeue -j IDS -t all``). Failures are logged; the jobs then go out with host names,
        as before."""
        try:
            found = await self.slurm.squeue_jobs(cluster, ids, all_states=True)
        except SlurmError as exc:
            log.warning("%s: no slurmctld record for %d jobs: %s", cluster, len(ids), exc)
            return {}
        records: dict[int, list[SacctJob]] = {}
        for acct in accts:
            records.setdefault(acct.job_id, []).append(acct)
        recent = {
            q.job_id: q
            for q in found
            if any(runs.same_run_record(q, a) for a in records.get(q.job_id, ()))
        }
        log.debug(
            "%s: %d of %d jobs missing from squeue found in slurmctld (ended < MinJobAge ago)",
            cluster, len(recent), len(ids),
        )  # fmt: skip
        return recent
