"""The daemon's root nursery: startup checks, then ticker, stuck-job checker, PrEp, delivery.

Start order (each child is ready before the next starts): state opened, PID file taken, Slurm
checked (``sacctmgr``: clusters, version 24/25, Operator rights), delivery workers running, PrEp
socket bound; then the signal watcher, the poll ticker, the stuck-job checker, the coalescer and
the watchdog. SIGTERM/SIGINT stop the intake at once and give the deliveries in flight a grace
period; whatever is not confirmed is still in the outbox (nothing is lost) and is sent after the
restart. Transient errors (Slurm, cc-backend, NATS) are logged and retried on the next tick; any
other exception is a bug and crashes the daemon loudly (systemd restarts it).

`run` is what the CLI calls (it is the only `trio.run` of the daemon); `main` is the same for
tests, with the wall clock, the output stream and the systemd notifier injectable.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TextIO

import msgspec
import trio

from ccsa import __version__, convert
from ccsa.ccbackend.client import BackendClient
from ccsa.ccbackend.models import NodeStateRequest, StartJob, StopJob, encode
from ccsa.config import Config
from ccsa.daemon.delivery import Delivery, NatsPublisher
from ccsa.daemon.plan import FIRST_SUB_WINDOW, RUNNING_PHASES, SubWindows
from ccsa.daemon.prep import Coalescer, PrepEvent, PrepServer
from ccsa.daemon.scripts import ScriptCache
from ccsa.daemon.stats import Stats
from ccsa.daemon.store import OutboxRow, Store
from ccsa.daemon.sync import ConvertAdapter, LookupResult, Syncer
from ccsa.errors import BackendError, CcsaError, DaemonError, PublishError, SlurmError
from ccsa.natsbus import lineproto
from ccsa.sdnotify import Notifier
from ccsa.slurm.commands import Slurm
from ccsa.slurm.runner import SlurmRunner

log = logging.getLogger(__name__)

SUPPORTED_MAJORS = (24, 25)
#: A start younger than this may still sit in cc-backend's job_cache, which GET /api/jobs/ does
#: not list (ccbackend.md §12 #1; commit worker default 2 min). Re-sending it would earn a 500
#: (duplicate in job_cache) or, worse, nothing visible; so only older starts are re-queued.
STUCK_MIN_AGE = 600.0
#: Seconds the deliveries in flight may take to finish after SIGTERM.
GRACE = 10.0
#: Process names that identify a running adapter in a PID file.
_OUR_NAMES = ("cc-slurm-adapter", "ccsa")


class NotifierLike(Protocol):
    """systemd notification hook point (``ccsa.sdnotify.Notifier``; no-op outside systemd)."""

    @property
    def watchdog_interval(self) -> float | None: ...

    def ready(self, status: str = "") -> bool: ...

    def watchdog(self) -> bool: ...

    def status(self, text: str) -> bool: ...

    def stopping(self, status: str = "") -> bool: ...


# --- PID file ------------------------------------------------------------------------------


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def pid_file(path: str) -> Iterator[None]:
    """Hold the PID file while the daemon runs; refuse if another adapter is alive.

    A PID file naming a dead process, or a live process that is not an adapter (the PID was
    reused after a crash), is stale and replaced.
    """
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            text = fh.read().strip()
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise DaemonError(f"PID file {path}: cannot read: {exc.strerror}") from exc
    if text.isdigit() and int(text) != os.getpid():
        other = int(text)
        if _alive(other) and any(n in _cmdline(other) for n in _OUR_NAMES):
            raise DaemonError(
                f"PID file {path}: another cc-slurm-adapter daemon is running as PID {other}"
            )
        log.warning("PID file %s: replacing stale entry (PID %s is not running an adapter)",
                    path, other)  # fmt: skip
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(tmp, "w", encoding="ascii") as fh:
            fh.write(f"{os.getpid()}\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise DaemonError(f"PID file {path}: cannot write: {exc.strerror}") from exc
    try:
        yield
    finally:
        try:
            with open(path, encoding="ascii") as fh:
                mine = fh.read().strip() == str(os.getpid())
            if mine:
                os.unlink(path)
        except OSError:
            pass


# --- startup checks ------------------------------------------------------------------------


def _major(version: str) -> int | None:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else None


async def startup_checks(slurm: Slurm, user: str | None = None) -> list[str]:
    """Cluster names, Slurm version gate, Operator check. Returns the cluster names.

    Raises:
        DaemonError: unsupported Slurm version, or no clusters.
        SlurmError: sacctmgr failed (the caller decides whether to retry).
    """
    doc = await slurm.clusters()
    version = doc.meta.version
    major = _major(version)
    if major not in SUPPORTED_MAJORS:
        found = f"Slurm {version}" if version else "an unknown Slurm version (no meta.slurm)"
        raise DaemonError(
            f"`sacctmgr list clusters --json` reports {found}; ccsa supports Slurm 24.x and 25.x"
        )
    names = [c.name for c in doc.clusters if c.name]
    if not names:
        raise DaemonError("`sacctmgr list clusters --json` lists no clusters")
    me = user or getpass.getuser()
    try:
        users = await slurm.user(me)
        levels = {lvl for u in users.users if u.name == me for lvl in u.administrator_level}
    except SlurmError as exc:
        log.warning("cannot check Slurm permissions of %s: %s", me, exc)
        levels = None
    if levels is not None and not levels & {"Operator", "Administrator"}:
        log.warning(
            "!!! Slurm user %s is not an Operator (AdminLevel %s): sacct --allusers will only "
            "show %s's own jobs and cc-backend will miss everyone else's. Fix: "
            "`sacctmgr modify user %s set adminlevel=operator` (or, if the user does not exist "
            "in slurmdbd: `sacctmgr add user %s account=root adminlevel=operator`)",
            me, ",".join(sorted(levels)) or "None", me, me, me,
        )  # fmt: skip
    log.info("Slurm %s, clusters: %s", version, ", ".join(names))
    return names


# --- the daemon ----------------------------------------------------------------------------


@dataclass
class Daemon:
    """The wired daemon (what tests and `status` look at)."""

    cfg: Config
    store: Store
    stats: Stats
    runner: SlurmRunner
    syncer: Syncer
    delivery: Delivery
    clusters: list[str]
    coalescer: Coalescer | None = None
    started_at: float = 0.0
    prep_bound: list[str] = field(default_factory=list)
    last_tick_ok: bool | None = None

    def status(self) -> dict[str, Any]:
        """The status snapshot (``cc-slurm-adapter status``, metrics)."""
        marks = {w.cluster: w for w in self.store.watermarks()}
        clusters = {}
        for name in self.clusters:
            w = marks.get(name)
            clusters[name] = {
                "watermark": w.ts if w else None,
                "last_sync": w.last_sync if w else None,
                "last_error": w.last_error if w else None,
                "last_error_at": w.last_error_at if w else None,
            }
        parked = [
            {
                "id": p.row.id,
                "cluster": p.row.key.cluster,
                "job_id": p.row.key.job_id,
                "start_time": p.row.key.start_time,
                "kind": p.row.kind,
                "status": p.status,
                "reason": p.reason,
                "parked_at": p.parked_at,
            }
            for p in self.store.parked(limit=10)
        ]
        limiter = self.runner.limiter
        return {
            "version": __version__,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "clusters": clusters,
            "outbox": self.store.outbox_depth(),
            "in_flight": self.delivery.in_flight,
            "waiting_retry": self.delivery.waiting_retry,
            "rest_paused_for": round(self.delivery.paused_for(), 3),
            "parked": self.store.parked_count(),
            "parked_latest": parked,
            "prep_pending": self.coalescer.pending if self.coalescer else 0,
            "prep_listen": self.prep_bound,
            "slurm_commands": self.runner.stats(),
            "limiter": {"borrowed": limiter.borrowed_tokens, "total": limiter.total_tokens},
            "counters": self.stats.as_dict(),
        }

    def summary(self) -> str:
        """One line for systemd's STATUS=."""
        s = self.stats
        return (
            f"{s.starts_delivered} starts, {s.stops_delivered} stops delivered; outbox "
            f"{self.store.outbox_depth()}, parked {self.store.parked_count()}"
        )


def _initial_start(cfg: Config, now: Callable[[], float]) -> Callable[[], float]:
    """Where a cluster without a watermark starts: the Go adapter's lastrun mtime if present
    (a migration continues where it stopped), else slurmQueryMaxSpan ago (upstream's cap)."""

    def start() -> float:
        try:
            return os.stat(cfg.last_run_path).st_mtime
        except OSError:
            return now() - cfg.slurm_query_max_span

    return start


def _touch(path: str, when: float) -> None:
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "a"):
            pass
        os.utime(path, (when, when))
    except OSError as exc:
        log.warning("cannot update lastRunPath %s: %s", path, exc.strerror)


def nats_encoder(hostname: str) -> Callable[[OutboxRow], bytes]:
    start_dec = msgspec.json.Decoder(StartJob)
    stop_dec = msgspec.json.Decoder(StopJob)

    def enc(row: OutboxRow) -> bytes:
        if row.kind == "start":
            return lineproto.encode_start(start_dec.decode(row.body), hostname=hostname)
        body = stop_dec.decode(row.body)
        return lineproto.encode_stop(body, hostname=hostname, partition=row.partition)

    return enc


async def open_delivery(
    cfg: Config,
    store: Store,
    astack: contextlib.AsyncExitStack,
    *,
    stats: Stats,
    now: Callable[[], float],
    dry_run: bool = False,
    out: TextIO | None = None,
) -> tuple[BackendClient, Delivery]:
    """The REST client, the NATS publisher (when configured; not in dry-run) and the outbox
    `Delivery` over them, as the daemon and ``backfill`` both use them. The client and the
    publisher are closed by ``astack``."""
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
    return client, delivery


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
    store = Store.open(cfg.state_db_path, in_memory_copy=dry_run)
    with contextlib.ExitStack() as stack:
        stack.callback(store.close)
        if not dry_run:
            stack.enter_context(pid_file(cfg.pid_file_path))
        runner = SlurmRunner(cfg.slurm_bin_dir, cfg.slurm_max_concurrent, cfg.slurm_command_timeout)
        slurm = Slurm(runner)
        clusters = await _clusters_with_retry(slurm, cfg, once or dry_run, notify)
        async with contextlib.AsyncExitStack() as astack:
            client, delivery = await open_delivery(
                cfg, store, astack, stats=stats, now=now, dry_run=dry_run, out=out
            )

            async def post_node_state(body: NodeStateRequest) -> None:
                if dry_run:
                    line = b'{"kind":"node_state","body":' + encode(body) + b"}\n"
                    (out or sys.stdout).write(line.decode())
                    return
                outcome = await client.node_state(body)
                if outcome.kind not in ("delivered", "done"):
                    stats.node_state_failures += 1
                    log.warning("%s: node state not accepted: %s %s", body.cluster,
                                outcome.status, outcome.message)  # fmt: skip

            syncer = Syncer(
                slurm,
                store,
                ConvertAdapter(convert.ConvertOptions.from_config(cfg)),
                now=now,
                rest=cfg.cc_rest_submit_jobs,
                nats=cfg.nats_enabled,
                overlap=cfg.sync_overlap,
                max_span=cfg.slurm_query_max_span,
                sub_windows=_sub_windows(cfg),
                initial_start=_initial_start(cfg, now),
                on_queued=delivery.wake,
                post_node_state=post_node_state,
                stats=stats,
            )
            daemon = Daemon(cfg, store, stats, runner, syncer, delivery, clusters, None, now())
            if once or dry_run:
                return await _once(daemon, dry_run, once_timeout, task_status)
            return await _serve(daemon, notify, grace, stuck_min_age, task_status)
    raise AssertionError("unreachable")  # pragma: no cover


def _sub_windows(cfg: Config) -> SubWindows:
    """Sub-windows whose first one holds twice a normal poll's window: a normal poll (and a
    slow one) stays one sacct call; only a backlog is cut."""
    normal = cfg.slurm_poll_interval + cfg.sync_overlap
    return SubWindows(first=max(FIRST_SUB_WINDOW, 2 * normal))


async def _clusters_with_retry(
    slurm: Slurm, cfg: Config, once: bool, notify: NotifierLike
) -> list[str]:
    delay = 5.0
    while True:
        try:
            return await startup_checks(slurm)
        except SlurmError as exc:
            if once:
                raise DaemonError(f"startup check failed: {exc}") from exc
            notify.status(f"waiting for Slurm: {exc}")
            log.error("startup check failed (retrying in %.0f s): %s", delay, exc)
            await trio.sleep(delay)
            delay = min(delay * 2, max(cfg.slurm_poll_interval, 5.0))


async def _once(
    daemon: Daemon, dry_run: bool, timeout: float, task_status: trio.TaskStatus[Daemon]
) -> int:
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.delivery.run)
        task_status.started(daemon)
        ok = await daemon.syncer.sync_all(daemon.clusters)
        daemon.last_tick_ok = ok
        if ok and not dry_run:
            _touch(daemon.cfg.last_run_path, daemon.syncer.now())
        daemon.delivery.wake()
        with trio.move_on_after(timeout) as scope:
            await daemon.delivery.wait_empty()
        nursery.cancel_scope.cancel()
    drained = not scope.cancelled_caught
    log.info("once: %s; %s", "synced" if ok else "sync failed", daemon.summary())
    return 0 if ok and drained else 1


async def _serve(
    daemon: Daemon,
    notify: NotifierLike,
    grace: float,
    stuck_min_age: float,
    task_status: trio.TaskStatus[Daemon],
) -> int:
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
    daemon.syncer.scripts = script_cache

    def on_event(event: PrepEvent) -> None:
        if coalescer.put(event):
            daemon.syncer.prefetch_script(event.cluster, event.job_id)

    server = PrepServer(on_event, daemon.status, stats=daemon.stats)
    stopping: list[str] = []
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
                await work.start(_signals, work.cancel_scope, stopping)
                work.start_soon(_ticker, daemon, notify)
                work.start_soon(_stuck_loop, daemon, stuck_min_age)
                if notify.watchdog_interval:
                    work.start_soon(_watchdog, notify, notify.watchdog_interval)
                log.info("ccsa %s serving clusters %s; PrEp socket %s", __version__,
                         ", ".join(daemon.clusters), ", ".join(daemon.prep_bound))  # fmt: skip
                notify.ready(daemon.summary())
                task_status.started(daemon)
        finally:
            notify.stopping(f"stopping ({', '.join(stopping) or 'error'})")
            # Intake has stopped; let deliveries in flight finish, then stop the workers.
            daemon.delivery.close()
            root.cancel_scope.deadline = trio.current_time() + grace
    log.info("stopped: %s", daemon.summary())
    return 0


async def _signals(
    scope: trio.CancelScope,
    stopping: list[str],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            log.info("%s received: shutting down", name)
            stopping.append(name)
            scope.cancel()
            return


async def _ticker(daemon: Daemon, notify: NotifierLike) -> None:
    cfg = daemon.cfg
    await trio.sleep(cfg.slurm_query_delay)
    while True:
        began = trio.current_time()
        ok = await daemon.syncer.sync_all(daemon.clusters)
        daemon.last_tick_ok = ok
        if ok:
            _touch(cfg.last_run_path, daemon.syncer.now())
        daemon.delivery.wake()  # also picks up rows `redrive` moved back from another process
        notify.status(daemon.summary())
        await trio.sleep_until(began + cfg.slurm_poll_interval)


async def _watchdog(notify: NotifierLike, interval: float) -> None:
    while True:
        notify.watchdog()
        await trio.sleep(interval)


async def _stuck_loop(daemon: Daemon, min_age: float) -> None:
    cfg = daemon.cfg
    await trio.sleep(cfg.slurm_query_delay + 1.0)
    while True:
        try:
            await stuck_check(daemon, min_age)
        except (SlurmError, BackendError, PublishError) as exc:
            log.warning("stuck-job check failed (retried in %.0f s): %s",
                        cfg.cc_poll_interval, exc)  # fmt: skip
        await trio.sleep(cfg.cc_poll_interval)


async def stuck_check(daemon: Daemon, min_age: float = STUCK_MIN_AGE) -> tuple[int, int]:
    """Compare cc-backend's running jobs with Slurm and the store, in both directions.

    * running in cc-backend, gone from slurmctld, finished per ``sacct -j`` -> stop queued;
    * delivered as started more than `min_age` ago but not running in cc-backend -> the start
      is queued again (plus its stop if the job ended). Younger starts may sit in job_cache,
      which the list does not show.

    Jobs of clusters this daemon does not manage are ignored. Returns (checked, re-queued).
    """
    client = daemon.delivery.client
    if client is None or not hasattr(client, "running_jobs"):
        return 0, 0
    running: list[Any] = await client.running_jobs()
    now = daemon.syncer.now()
    checked = requeued = 0
    for cluster in daemon.clusters:
        in_cc = {(j.job_id, j.start_time) for j in running if j.cluster == cluster}
        known = daemon.store.known_jobs(cluster)
        suspects = sorted(
            {jid for jid, st in in_cc if (jid, st) not in known or
             known[(jid, st)].phase in RUNNING_PHASES}
        )  # fmt: skip
        lost = [
            k for k, row in known.items()
            if row.phase == "started" and k not in in_cc
            and (row.start_delivered_at or math.inf) < now - min_age
        ]  # fmt: skip
        checked += len(suspects) + len(lost)
        if suspects:
            alive = {q.job_id for q in await daemon.syncer.slurm.squeue_jobs(cluster, suspects)}
            gone = [j for j in suspects if j not in alive]
            if gone:
                res = await daemon.syncer.lookup(cluster, gone, with_queue=False)
                daemon.stats.stuck_stopped += res.applied.stops
        if lost:
            log.warning("%s: %d jobs delivered as started are not running in cc-backend; "
                        "sending their start again", cluster, len(lost))  # fmt: skip
            res = await daemon.syncer.lookup(cluster, [k[0] for k in lost], forget=lost)
            requeued += res.applied.starts
            daemon.stats.stuck_restarted += res.applied.starts
    return checked, requeued
