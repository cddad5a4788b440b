"""The running daemon: its wired parts and the status snapshot it answers.

`Daemon` is what ``supervisor.main`` hands to tests (``task_status``) and what the PrEp socket's
``{"ccsa": "status"}`` and the metrics endpoint read: `Daemon.status` assembles the
`ccsa.daemon.snapshot.StatusSnapshot` from the store, the delivery, the Slurm runner, the
coalescer and the counters; `Daemon.summary` is systemd's one-line STATUS=.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import msgspec

from ccsa import __version__
from ccsa.ccbackend.client import BackendClient
from ccsa.config import Config
from ccsa.daemon.delivery import Delivery
from ccsa.daemon.pipeline import Pipeline
from ccsa.daemon.prep import Coalescer
from ccsa.daemon.snapshot import (
    ChannelStatus,
    ClusterStatus,
    ParkedEntry,
    SlurmStats,
    StatusSnapshot,
    WaitingEntry,
)
from ccsa.daemon.stats import Stats
from ccsa.daemon.store import Store
from ccsa.daemon.sync import Syncer
from ccsa.daemon.topocache import TopologyKeeper
from ccsa.slurm.runner import SlurmRunner

__all__ = ["Daemon"]


@dataclass
class Daemon:
    """The wired daemon (what tests and `status` look at)."""

    cfg: Config
    store: Store
    stats: Stats
    runner: SlurmRunner
    syncer: Syncer
    delivery: Delivery
    client: BackendClient
    clusters: list[str]
    coalescer: Coalescer | None = None
    started_at: float = 0.0
    prep_bound: list[str] = field(default_factory=list)
    last_tick_ok: bool | None = None
    topology: TopologyKeeper | None = None

    @classmethod
    def of(cls, pipe: Pipeline, clusters: list[str], started_at: float) -> Daemon:
        return cls(
            pipe.cfg,
            pipe.store,
            pipe.stats,
            pipe.runner,
            pipe.syncer,
            pipe.delivery,
            pipe.client,
            clusters,
            started_at=started_at,
            topology=pipe.topology,
        )

    def status(self) -> StatusSnapshot:
        """The status snapshot (``cc-slurm-adapter status``, metrics)."""
        marks = {w.cluster: w for w in self.store.watermarks()}
        waiting = self.store.waiting_summary()
        clusters = {}
        for name in self.clusters:
            w = marks.get(name)
            count, since = waiting.get(name, (0, None))
            clusters[name] = (
                ClusterStatus(
                    watermark=w.ts,
                    last_sync=w.last_sync,
                    last_error=w.last_error,
                    last_error_at=w.last_error_at,
                    waiting=count,
                    waiting_since=since,
                )
                if w
                else ClusterStatus(waiting=count, waiting_since=since)
            )
            self.syncer.lag.report(name, clusters[name])
            clusters[name].undecodable = list(self.syncer.undecodable.last.get(name, ()))
        parked = [
            ParkedEntry(
                id=p.row.id,
                cluster=p.row.key.cluster,
                job_id=p.row.key.job_id,
                start_time=p.row.key.start_time,
                kind=p.row.kind,
                status=p.status,
                reason=p.reason,
                parked_at=p.parked_at,
            )
            for p in self.store.parked(limit=10)
        ]
        return StatusSnapshot(
            version=__version__,
            pid=os.getpid(),
            started_at=self.started_at,
            clusters=clusters,
            outbox=self.store.outbox_depth(),
            in_flight=self.delivery.in_flight,
            waiting_retry=self.delivery.waiting_retry,
            rest_paused_for=round(self.delivery.paused_for(), 3),
            channels={
                name: ChannelStatus(**dataclasses.asdict(state))
                for name, state in self.delivery.channels().items()
            },
            oldest_waiting=self._oldest_waiting(),
            parked=self.store.parked_count(),
            parked_latest=parked,
            prep_pending=self.coalescer.pending if self.coalescer else 0,
            prep_listen=self.prep_bound,
            slurm_commands=msgspec.convert(self.runner.stats(), SlurmStats),
            counters=self.stats.as_dict(),
            topology=self.topology.status() if self.topology is not None else None,
        )

    def _oldest_waiting(self) -> WaitingEntry | None:
        """The oldest outbox row (issue 17 item 8: a job that keeps failing is visible)."""
        rows = self.store.outbox_rows(limit=1)
        if not rows:
            return None
        row = rows[0]
        return WaitingEntry(
            cluster=row.key.cluster,
            job_id=row.key.job_id,
            start_time=row.key.start_time,
            kind=row.kind,
            attempts=row.attempts,
            last_error=row.last_error,
            queued_at=row.created,
        )

    def summary(self) -> str:
        """One line for systemd's STATUS=."""
        s = self.stats
        return (
            f"{s.starts_delivered} starts, {s.stops_delivered} stops delivered; outbox "
            f"{self.store.outbox_depth()}, parked {self.store.parked_count()}"
        )
