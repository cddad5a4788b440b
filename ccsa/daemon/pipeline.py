"""One wiring of Slurm -> Syncer -> outbox -> cc-backend/NATS, shared by the daemon, ``backfill``
and ``check``.

`slurm_for(cfg)` is the one place a `SlurmRunner` is built from the config (``check`` needs no
more). `build` opens the rest on an ``AsyncExitStack`` (which closes the REST client and the NATS
publisher): the `Delivery` over the outbox and the `Syncer` that fills it, returned as one
`Pipeline`. The daemon adds its long-running parts (PrEp, ticker, stuck-job checker) on top.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

import msgspec

from ccsa import convert
from ccsa.ccbackend.client import BackendClient
from ccsa.ccbackend.models import NodeStateRequest, StartJob, StopJob, encode
from ccsa.config import Config
from ccsa.daemon.delivery import Delivery, NatsPublisher
from ccsa.daemon.stats import Stats
from ccsa.daemon.store import OutboxRow, Store
from ccsa.daemon.sync import Syncer
from ccsa.daemon.topocache import TopologyKeeper
from ccsa.daemon.windows import FIRST_SUB_WINDOW, SubWindows
from ccsa.errors import BackendError
from ccsa.natsbus import lineproto
from ccsa.slurm.commands import Slurm
from ccsa.slurm.runner import SlurmRunner

__all__ = ["Pipeline", "build", "initial_start", "nats_encoder", "slurm_for"]

log = logging.getLogger(__name__)


@dataclass
class Pipeline:
    """The wired parts (what the daemon, ``backfill`` and tests look at)."""

    cfg: Config
    store: Store
    stats: Stats
    runner: SlurmRunner
    slurm: Slurm
    client: BackendClient
    delivery: Delivery
    syncer: Syncer
    topology: TopologyKeeper | None = None


def slurm_for(cfg: Config) -> Slurm:
    """Slurm's commands with the config's bin dir, concurrency and timeout."""
    runner = SlurmRunner(cfg.slurm_bin_dir, cfg.slurm_max_concurrent, cfg.slurm_command_timeout)
    return Slurm(runner)


def nats_encoder(hostname: str) -> Callable[[OutboxRow], bytes]:
    """An outbox row (a REST body) as the NATS line-protocol message cc-backend consumes."""
    start_dec = msgspec.json.Decoder(StartJob)
    stop_dec = msgspec.json.Decoder(StopJob)

    def enc(row: OutboxRow) -> bytes:
        if row.kind == "start":
            return lineproto.encode_start(start_dec.decode(row.body), hostname=hostname)
        body = stop_dec.decode(row.body)
        return lineproto.encode_stop(body, hostname=hostname, partition=row.partition)

    return enc


def initial_start(cfg: Config, now: Callable[[], float]) -> Callable[[], float]:
    """Where a cluster without a watermark starts: the Go adapter's lastrun mtime if present
    (a migration continues where it stopped), else slurmQueryMaxSpan ago (upstream's cap)."""

    def start() -> float:
        try:
            return os.stat(cfg.last_run_path).st_mtime
        except OSError:
            return now() - cfg.slurm_query_max_span

    return start


def sub_windows(cfg: Config) -> SubWindows:
    """Sub-windows whose first one holds twice a normal poll's window: a normal poll (and a
    slow one) stays one sacct call; only a backlog is cut."""
    normal = cfg.slurm_poll_interval + cfg.sync_overlap
    return SubWindows(first=max(FIRST_SUB_WINDOW, 2 * normal))


async def build(
    cfg: Config,
    store: Store,
    astack: contextlib.AsyncExitStack,
    *,
    stats: Stats,
    now: Callable[[], float],
    slurm: Slurm | None = None,
    dry_run: bool = False,
    out: TextIO | None = None,
) -> Pipeline:
    """The REST client, the NATS publisher (when configured; not in dry-run), the `Delivery`
    over the outbox and the `Syncer`; ``astack`` closes the client and the publisher.
    ``slurm``: reuse the one the start-up checks ran with (default: `slurm_for`)."""
    slurm = slurm or slurm_for(cfg)
    client = await astack.enter_async_context(BackendClient.from_config(cfg))
    publisher: NatsPublisher | None = None
    if cfg.nats_enabled and not dry_run:
        from ccsa.natsbus.publisher import Publisher

        publisher = await astack.enter_async_context(Publisher.from_config(cfg))
    delivery = Delivery(
        store,
        client=client if cfg.cc_rest_submit_jobs else None,
        publisher=publisher,
        nats_encode=nats_encoder(socket.gethostname()),
        stats=stats,
        now=now,
        dry_run=dry_run,
        out=out,
    )

    async def post_node_state(body: NodeStateRequest) -> None:
        if dry_run:
            line = b'{"kind":"node_state","body":' + encode(body) + b"}\n"
            (out or sys.stdout).write(line.decode())
            return
        try:
            await client.post("nodestate", encode(body))
        except BackendError as exc:
            stats.node_state_failures += 1
            log.warning("%s: node state not accepted: %s", body.cluster, exc)

    opts = convert.ConvertOptions.from_config(cfg)
    keeper = TopologyKeeper(opts.layouts, client.clusters, store.connection, now, opts.pci_list)
    syncer = Syncer(
        slurm,
        store,
        opts,
        now=now,
        rest=cfg.cc_rest_submit_jobs,
        nats=cfg.nats_enabled,
        overlap=cfg.sync_overlap,
        max_span=cfg.slurm_query_max_span,
        sub_windows=sub_windows(cfg),
        initial_start=initial_start(cfg, now),
        on_queued=delivery.wake,
        post_node_state=post_node_state,
        stats=stats,
    )
    return Pipeline(cfg, store, stats, slurm.runner, slurm, client, delivery, syncer, keeper)
