"""The daemon's root nursery: start-up checks, then ticker, stuck-job checker, PrEp, delivery.

Start order (each child is ready before the next starts): state opened, PID file taken, signal
watcher running, Slurm checked (``sacctmgr``: clusters, version 24/25, Operator rights), delivery
workers running, PrEp socket bound; then the poll ticker, the stuck-job checker, the coalescer and
the watchdog. SIGTERM/SIGINT stop the intake at once and give the deliveries in flight a grace
period; whatever is not confirmed is still in the outbox (nothing is lost) and is sent after the
restart. Transient errors (Slurm, cc-backend, NATS) are logged and retried on the next tick; any
other exception is a bug and crashes the daemon loudly (systemd restarts it).

This module only wires: the PID file is `ccsa.daemon.pidfile`, the start-up checks
`ccsa.daemon.startup`, the Slurm -> outbox -> cc-backend parts `ccsa.daemon.pipeline`, the
stuck-job checker `ccsa.daemon.stuck`, the wired `Daemon` and its status snapshot
`ccsa.daemon.running`.
`run` is what the CLI calls (the daemon's only `trio.run`); `main` is the same for tests, with the
wall clock, the output stream and the systemd notifier injectable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol, TextIO

import trio

from ccsa import __version__
from ccsa.config import Config
from ccsa.daemon.pidfile import pid_file
from ccsa.daemon.pipeline import build, slurm_for
from ccsa.daemon.prep import Coalescer, PrepEvent, PrepServer
from ccsa.daemon.running import Daemon
from ccsa.daemon.scripts import ScriptCache
from ccsa.daemon.startup import clusters_with_retry, require_commands
from ccsa.daemon.stats import Stats
from ccsa.daemon.store import Store
from ccsa.daemon.stuck import STUCK_MIN_AGE, stuck_loop
from ccsa.daemon.sync import LookupResult
from ccsa.errors import CcsaError
from ccsa.sdnotify import Notifier

__all__ = ["GRACE", "Daemon", "main", "run"]

log = logging.getLogger(__name__)

#: Seconds the deliveries in flight may take to finish after SIGTERM.
GRACE = 10.0


class NotifierLike(Protocol):
    """systemd notification hook point (``ccsa.sdnotify.Notifier``; no-op outside systemd)."""

    @property
    def watchdog_interval(self) -> float | None: ...

    def ready(self, status: str = "") -> bool: ...

    def watchdog(self) -> bool: ...

    def status(self, text: str) -> bool: ...

    def stopping(self, status: str = "") -> bool: ...


def _touch_lastrun(daemon: Daemon) -> None:
    """lastRunPath's mtime: everything before it reached cc-backend (issue 17 item 4); and the
    retention of rows of clusters cc-backend does not know (item 7)."""
    when = daemon.store.delivered_before()
    _touch(daemon.cfg.last_run_path, daemon.syncer.now() if when is None else when)
    keep = daemon.cfg.unknown_cluster_retention
    for cluster, n in daemon.store.drop_unknown_clusters(daemon.syncer.now() - keep).items():
        daemon.stats.retention_dropped[cluster] += n
        log.warning("%s: dropped %d parked/job rows older than %.0f s (unknownClusterRetention):"
                    " cc-backend does not know this cluster", cluster, n, keep)  # fmt: skip


def _touch(path: str, when: float) -> None:
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "a"):
            pass
        os.utime(path, (when, when))
    except OSError as exc:
        log.warning("cannot update lastRunPath %s: %s", path, exc.strerror)


def run(cfg: Config, *, once: bool = False, dry_run: bool = False) -> int:
    """Run the daemon until SIGTERM/SIGINT (or one sync with `once`); the exit status."""
    try:
        return trio.run(partial(main, cfg, once=once, dry_run=dry_run))
    except CcsaError as exc:
        log.critical("%s", exc)
        return 1
    except BaseExceptionGroup as group:
        # A setup error inside a nursery (socket in use, Slurm version) arrives wrapped; it is
        # still a user-facing problem: one line, no traceback. Anything else is a bug: re-raise.
        ours, rest = group.split(CcsaError)
        if ours is None or rest is not None:
            raise
        first = _first_leaf(ours)
        log.critical("%s", first)
        return 1


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


async def main(
    cfg: Config,
    *,
    now: Callable[[], float] = time.time,
    once: bool = False,
    dry_run: bool = False,
    notifier: NotifierLike | None = None,
    out: TextIO | None = None,
    grace: float = GRACE,
    stuck_min_age: float = STUCK_MIN_AGE,
    once_timeout: float = 300.0,
    task_status: trio.TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED,
) -> int:
    """The daemon. Returns the exit status (0 = clean shutdown / everything delivered)."""
    notify: NotifierLike = notifier if notifier is not None else Notifier()
    stats = Stats()
    store = Store.open(cfg.state_db_path, in_memory_copy=dry_run, move_corrupt=not dry_run)
    with contextlib.ExitStack() as stack:
        stack.callback(store.close)
        if not dry_run:
            stack.enter_context(pid_file(cfg.pid_file_path))
        slurm = slurm_for(cfg)
        require_commands(slurm.runner)
        async with trio.open_nursery() as guard:  # SIGTERM/SIGINT from the start on
            stop = _Stop(trio.CancelScope())
            await guard.start(_signals, stop)
            with stop.scope:
                clusters = await clusters_with_retry(
                    slurm, once=once or dry_run, max_delay=cfg.slurm_poll_interval, notify=notify
                )
            if stop.scope.cancelled_caught:
                log.warning("%s received while waiting for Slurm at start-up: exiting (nothing "
                            "was read or sent)", stop.signals[0])  # fmt: skip
                return 0
            async with contextlib.AsyncExitStack() as astack:
                pipe = await build(
                    cfg, store, astack, stats=stats, now=now, slurm=slurm, dry_run=dry_run, out=out
                )
                daemon = Daemon.of(pipe, clusters, now())
                if pipe.topology is not None:  # hwthread/GPU ids as cc-backend indexes them
                    pipe.topology.load_saved()
                    await pipe.topology.refresh()
                if once or dry_run:
                    status = await _once(daemon, dry_run, once_timeout, stop, task_status)
                else:
                    status = await _serve(daemon, notify, stop, grace, stuck_min_age, task_status)
            guard.cancel_scope.cancel()
            return status
    raise AssertionError("unreachable")  # pragma: no cover


async def _once(
    daemon: Daemon,
    dry_run: bool,
    timeout: float,
    stop: _Stop,
    task_status: trio.TaskStatus[Daemon],
) -> int:
    ok = drained = False
    async with trio.open_nursery() as nursery:
        stop.scope = nursery.cancel_scope  # a signal ends the run (the outbox keeps the rest)
        await nursery.start(daemon.delivery.run)
        task_status.started(daemon)
        ok = await daemon.syncer.sync_all(daemon.clusters)
        daemon.last_tick_ok = ok
        if ok and not dry_run:
            _touch_lastrun(daemon)
        daemon.delivery.wake()
        with trio.move_on_after(timeout) as scope:
            await daemon.delivery.wait_empty()
        drained = not scope.cancelled_caught
        nursery.cancel_scope.cancel()
    if stop.signals:
        log.warning("%s received: once run stopped; %s", stop.signals[0], daemon.summary())
        return 1
    log.info("once: %s; %s", "synced" if ok else "sync failed", daemon.summary())
    return 0 if ok and drained else 1


def _intake(daemon: Daemon) -> tuple[Coalescer, ScriptCache, PrepServer]:
    """The hook path: PrEp server -> coalescer -> urgent lookups, and the script prefetch."""
    cfg = daemon.cfg

    async def hook_lookup(cluster: str, ids: Collection[int]) -> LookupResult:
        # the hook path goes first: a poll (a backlog) pauses its Slurm calls meanwhile
        with daemon.runner.urgent():
            result = await daemon.syncer.lookup(cluster, ids)
        daemon.delivery.hurry(cluster, ids)  # and its starts/stops go before a backlog's rows
        return result

    coalescer = Coalescer(
        hook_lookup,
        delay=cfg.slurm_query_delay,
        max_retries=cfg.slurm_max_retries,
        clusters=daemon.clusters,
        stats=daemon.stats,
    )
    daemon.coalescer = coalescer

    async def fetch_script(cluster: str, job_id: int) -> str | None:
        with daemon.runner.urgent():  # hook work, like the lookup
            return await daemon.syncer.slurm.batch_script(cluster, job_id)

    script_cache = ScriptCache(fetch_script, stats=daemon.stats)
    daemon.syncer.scripts.cache = script_cache

    def on_event(event: PrepEvent) -> None:
        if coalescer.put(event):
            daemon.syncer.scripts.prefetch(event.cluster, event.job_id)

    return coalescer, script_cache, PrepServer(on_event, daemon.status, stats=daemon.stats)


async def _serve(
    daemon: Daemon,
    notify: NotifierLike,
    stop: _Stop,
    grace: float,
    stuck_min_age: float,
    task_status: trio.TaskStatus[Daemon],
) -> int:
    cfg = daemon.cfg
    coalescer, script_cache, server = _intake(daemon)
    async with trio.open_nursery() as root:
        await root.start(daemon.delivery.run)
        try:
            async with trio.open_nursery() as work:
                await work.start(script_cache.run)
                daemon.prep_bound = await work.start(server.serve, cfg.prep_sock_listen_path)
                await work.start(coalescer.run)
                if cfg.metrics_listen:  # optional Prometheus endpoint (ccsa.metrics)
                    from ccsa import metrics

                    await work.start(metrics.serve, cfg.metrics_listen, daemon.status)
                stop.scope = work.cancel_scope  # a signal now stops the intake
                work.start_soon(_ticker, daemon, notify)
                if daemon.topology is not None:
                    work.start_soon(daemon.topology.run, cfg.cc_poll_interval)
                if cfg.cc_rest_jwt.get():  # GET /api/jobs/ needs the JWT, not ccRestSubmitJobs
                    work.start_soon(
                        partial(
                            stuck_loop,
                            daemon.client,
                            daemon.syncer,
                            daemon.clusters,
                            daemon.stats,
                            first_delay=cfg.slurm_query_delay + 1.0,
                            interval=cfg.cc_poll_interval,
                            min_age=stuck_min_age,
                        )
                    )
                if notify.watchdog_interval:
                    work.start_soon(_watchdog, notify, notify.watchdog_interval)
                log.info(
                    "ccsa %s serving clusters %s; PrEp socket %s",
                    __version__,
                    ", ".join(daemon.clusters),
                    ", ".join(daemon.prep_bound),
                )
                notify.ready(daemon.summary())
                task_status.started(daemon)
        finally:
            notify.stopping(f"stopping ({', '.join(stop.signals) or 'error'})")
            # Intake has stopped; let deliveries in flight finish, then stop the workers.
            daemon.delivery.close()
            root.cancel_scope.deadline = trio.current_time() + grace
    log.info("stopped: %s", daemon.summary())
    return 0


@dataclass
class _Stop:
    """Where SIGTERM/SIGINT land: the scope to cancel (the start-up checks, then the intake)
    and the names of the signals received."""

    scope: trio.CancelScope
    signals: list[str] = field(default_factory=list)


async def _signals(
    stop: _Stop, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """The first SIGTERM/SIGINT cancels ``stop.scope``; a second one gets the default action
    (the receiver is closed), so a stuck shutdown can still be ended at once."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            log.info("%s received: shutting down", name)
            stop.signals.append(name)
            stop.scope.cancel()
            return


async def _ticker(daemon: Daemon, notify: NotifierLike) -> None:
    cfg = daemon.cfg
    await trio.sleep(cfg.slurm_query_delay)
    while True:
        began = trio.current_time()
        ok = await daemon.syncer.sync_all(daemon.clusters)
        daemon.last_tick_ok = ok
        if ok:
            _touch_lastrun(daemon)
        daemon.delivery.wake()  # also picks up rows `redrive` moved back from another process
        notify.status(daemon.summary())
        await trio.sleep_until(began + cfg.slurm_poll_interval)


async def _watchdog(notify: NotifierLike, interval: float) -> None:
    while True:
        notify.watchdog()
        await trio.sleep(interval)
