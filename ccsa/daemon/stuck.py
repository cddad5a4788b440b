"""The stuck-job checker: compare cc-backend's running jobs with Slurm and the store.

Per managed cluster (jobs of other clusters are ignored):

* running in cc-backend but not running here (gone from slurmctld, finished per ``sacct -j``)
  -> its stop is queued (a run the store does not know, after a lost state database, is first
  recorded as started, so the stop goes to the start cc-backend has: `Store.adopt_running`);
* a start parked as a refused rerun (a 422) that cc-backend lists as running -> it is recorded
  as delivered and its parked stops go back to the outbox (`Store.adopt_parked_starts`);
* delivered as started more than ``min_age`` ago but not running in cc-backend -> the start is
  queued again (plus its stop if the job ended). Younger starts may still sit in cc-backend's
  job_cache, which ``GET /api/jobs/`` does not list (docs/ccbackend.md §12 #1; commit worker
  default 2 min); re-sending one would earn a 500 or nothing visible.

`stuck_candidates` is the pure decision; `stuck_check` does one round of I/O around it with the
REST client (``GET /api/jobs/`` needs only the JWT, not ``ccRestSubmitJobs``) and the Syncer's
lookups; `stuck_loop` repeats it every ``ccPollInterval``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import trio

from ccsa.ccbackend.client import BackendClient
from ccsa.daemon.plan import RUNNING_PHASES, KnownJob
from ccsa.daemon.stats import Stats
from ccsa.daemon.sync import Syncer
from ccsa.errors import BackendError, PublishError, SlurmError

__all__ = ["STUCK_MIN_AGE", "stuck_candidates", "stuck_check", "stuck_loop"]

log = logging.getLogger(__name__)

#: A start younger than this may still sit in cc-backend's job_cache (see the module docstring).
STUCK_MIN_AGE = 600.0


class Listed(Protocol):
    """One row of cc-backend's running-jobs list (``ccsa.ccbackend.client.RunningJob``)."""

    @property
    def cluster(self) -> str: ...

    @property
    def job_id(self) -> int: ...

    @property
    def start_time(self) -> int: ...


def stuck_candidates(
    cluster: str,
    running: Iterable[Listed],
    known: Mapping[tuple[int, int], KnownJob],
    now: float,
    min_age: float = STUCK_MIN_AGE,
) -> tuple[list[int], list[tuple[int, int]]]:
    """(suspects, lost) of one cluster (pure).

    suspects: job ids cc-backend lists as running that the store does not know or believes
    running (ask slurmctld whether they still run). lost: (job id, start) keys delivered as
    started longer than ``min_age`` ago that cc-backend does not list.
    """
    in_cc = {(j.job_id, j.start_time) for j in running if j.cluster == cluster}
    suspects = sorted(
        {jid for jid, st in in_cc if (jid, st) not in known or
         known[(jid, st)].phase in RUNNING_PHASES}
    )  # fmt: skip
    lost = [
        k for k, row in known.items()
        if row.phase == "started" and k not in in_cc
        and (row.start_delivered_at or math.inf) < now - min_age
    ]  # fmt: skip
    return suspects, lost


async def stuck_check(
    client: BackendClient,
    syncer: Syncer,
    clusters: Sequence[str],
    stats: Stats,
    min_age: float = STUCK_MIN_AGE,
) -> tuple[int, int]:
    """One round in both directions; returns (checked, re-queued)."""
    running = await client.running_jobs()
    now = syncer.now()
    checked = requeued = 0
    for cluster in clusters:
        in_cc = {(j.job_id, j.start_time) for j in running if j.cluster == cluster}
        adopted = syncer.store.adopt_parked_starts(cluster, in_cc, now)
        if adopted:
            syncer.on_queued()
        for key in adopted:
            stats.refused_adopted += 1
            log.warning(
                "%s: job %d: cc-backend runs start %d, whose start_job answer (422) was taken "
                "for a refused rerun: recorded as delivered, its stop goes out",
                cluster, key.job_id, key.start_time,
            )  # fmt: skip
        known = syncer.store.known_jobs(cluster)
        suspects, lost = stuck_candidates(cluster, running, known, now, min_age)
        checked += len(suspects) + len(lost)
        if suspects:
            alive = {q.job_id for q in await syncer.slurm.squeue_jobs(cluster, suspects)}
            gone = [j for j in suspects if j not in alive]
            if gone:
                ended = set(gone)
                unknown = [k for k in in_cc if k[0] in ended and k not in known]
                syncer.store.adopt_running(cluster, sorted(unknown), now)
                res = await syncer.lookup(cluster, gone, with_queue=False)
                stats.stuck_stopped += res.applied.stops
        if lost:
            log.warning("%s: %d jobs delivered as started are not running in cc-backend; "
                        "sending their start again", cluster, len(lost))  # fmt: skip
            res = await syncer.lookup(cluster, [k[0] for k in lost], forget=lost)
            requeued += res.applied.starts
            stats.stuck_restarted += res.applied.starts
    return checked, requeued


async def stuck_loop(
    client: BackendClient,
    syncer: Syncer,
    clusters: Sequence[str],
    stats: Stats,
    *,
    first_delay: float,
    interval: float,
    min_age: float = STUCK_MIN_AGE,
) -> None:
    """`stuck_check` after ``first_delay``, then every ``interval`` seconds (trio clock);
    transient errors are logged and retried next round."""
    await trio.sleep(first_delay)
    while True:
        try:
            await stuck_check(client, syncer, clusters, stats, min_age)
        except (SlurmError, BackendError, PublishError) as exc:
            log.warning("stuck-job check failed (retried in %.0f s): %s", interval, exc)
        await trio.sleep(interval)
