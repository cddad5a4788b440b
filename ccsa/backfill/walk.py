"""The backfill's walk: each chunk of the window through the daemon's own pipeline.

Each chunk goes through the daemon's code, not a copy: ``Slurm`` (runner, limiter, timeouts),
``plan.decide`` + the ``Syncer``'s build/apply steps, the same ``Store`` (known jobs, outbox;
the watermark is left alone) and the same ``Delivery`` workers, all from
``ccsa.daemon.pipeline.build``. Before the next chunk the outbox is drained below `MAX_BACKLOG`
rows, so a slow cc-backend slows the walk instead of growing the backlog.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import trio

from ccsa import convert
from ccsa.backfill.progress import ChunkLine, PlainReporter, Reporter
from ccsa.backfill.window import Checkpoint, chunks, utc
from ccsa.config import Config
from ccsa.daemon import plan
from ccsa.daemon.delivery import Delivery
from ccsa.daemon.pipeline import build, slurm_for
from ccsa.daemon.startup import startup_checks
from ccsa.daemon.stats import Stats
from ccsa.daemon.store import Store
from ccsa.daemon.sync import Syncer, of_cluster
from ccsa.errors import ConfigError
from ccsa.slurm.commands import Slurm

__all__ = ["DEFAULT_CHUNK", "MAX_BACKLOG", "BackfillResult", "backfill"]

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 86400.0
#: Outbox rows allowed before the next chunk is read.
MAX_BACKLOG = 5000


@dataclass
class BackfillResult:
    """Totals of one run."""

    clusters: list[str]
    chunks: int = 0
    jobs: int = 0
    starts: int = 0
    stops: int = 0
    stats: Stats = field(default_factory=Stats)

    @property
    def delivered(self) -> int:
        s = self.stats
        return s.starts_delivered + s.stops_delivered + s.starts_done + s.stops_done


async def backfill(
    cfg: Config,
    *,
    since: float,
    until: float,
    cluster: str | None = None,
    chunk: float = DEFAULT_CHUNK,
    reporter: Reporter | None = None,
    now: Callable[[], float] = time.time,
    drain_timeout: float | None = None,
) -> BackfillResult:
    """Walk [since, until) per cluster in chunks, queue and deliver everything in it.

    Raises SlurmError (a chunk could not be read: re-run to resume), CcsaError for setup
    problems (state database, config).
    """
    if until <= since:
        raise ConfigError("command line", "--until must be after --since", "--until")
    report: Reporter = reporter or PlainReporter(sys.stderr)
    stats = Stats()
    slurm = slurm_for(cfg)
    names = await startup_checks(slurm)
    if cluster is not None:
        if cluster not in names:
            raise ConfigError(
                "command line",
                f"Slurm has no cluster {cluster!r} ({', '.join(names)})",
                "--cluster",
            )
        names = [cluster]
    result = BackfillResult(names, stats=stats)
    store = Store.open(cfg.state_db_path)
    checkpoint = Checkpoint.load(f"{cfg.state_db_path}.backfill.json")
    with store:
        async with contextlib.AsyncExitStack() as astack:
            pipe = await build(cfg, store, astack, stats=stats, now=now, slurm=slurm)
            delivery, syncer = pipe.delivery, pipe.syncer
            walks = {n: chunks(checkpoint.get(n, since, until), until, chunk) for n in names}
            total = (until - since) * len(names)
            done = sum(checkpoint.get(n, since, until) - since for n in names)
            report.start(total)
            began = trio.current_time()
            async with trio.open_nursery() as nursery:
                await nursery.start(delivery.run)
                delivery.wake()  # rows left by an interrupted run (or the daemon) go first
                try:
                    for name in names:
                        for window in walks[name]:
                            jobs, starts, stops = await _chunk(syncer, slurm, name, window)
                            checkpoint.save(name, since, until, window[1])
                            await _drain(delivery, store, MAX_BACKLOG)
                            done += window[1] - window[0]
                            result.chunks += 1
                            result.jobs += jobs
                            result.starts += starts
                            result.stops += stops
                            report.chunk(
                                name,
                                window,
                                ChunkLine(
                                    jobs,
                                    starts,
                                    stops,
                                    result.delivered,
                                    done,
                                    total,
                                    trio.current_time() - began,
                                ),
                            )
                    with trio.move_on_after(drain_timeout or float("inf")):
                        await _drain(delivery, store, 0)
                finally:
                    report.close()
                    delivery.close()
                    nursery.cancel_scope.deadline = trio.current_time() + 10.0
    return result


async def _chunk(
    syncer: Syncer, slurm: Slurm, cluster: str, window: tuple[float, float]
) -> tuple[int, int, int]:
    """One window through the daemon's planning: (jobs seen, starts queued, stops queued)."""
    begin, end = (datetime.fromtimestamp(int(t), UTC) for t in window)
    doc = await slurm.sacct_window(cluster, begin, end)
    accts = of_cluster(doc.jobs, cluster)
    running = [j.job_id for j in accts if not convert.is_finished(j)]
    queue = {q.job_id: q for q in await slurm.squeue_jobs(cluster, running)} if running else {}
    known = syncer.store.known_jobs_for(cluster, [j.job_id for j in accts])
    decision = plan.decide(cluster, accts, queue, known, syncer.opts, full_queue=False)
    actions = await syncer.build(cluster, decision)
    applied = syncer.apply(cluster, actions, watermark=None)
    log.info(
        "%s: backfilled %s..%s: %d jobs, %d starts and %d stops queued",
        *(cluster, utc(window[0]), utc(window[1])),
        *(len(accts), applied.starts, applied.stops),
    )
    return len(accts), applied.starts, applied.stops


async def _drain(delivery: Delivery, store: Store, limit: int) -> None:
    """Wait until the outbox holds at most ``limit`` rows (rows another process delivers
    count too, so the depth is re-read at least every second)."""
    while store.outbox_depth() > limit:
        delivery.wake()
        with trio.move_on_after(1.0):
            await delivery.wait_empty()
