"""`cc-slurm-adapter backfill`: deliver a window of history larger than ``slurmQueryMaxSpan``.

The window is walked in chunks (default one day) so memory stays bounded by one chunk's
``sacct`` answer. Each chunk goes through the daemon's own code, not a copy: ``Slurm`` (runner,
limiter, timeouts), ``plan.decide`` + the ``Syncer``'s metadata/build/apply steps, the same
``Store`` (known jobs, outbox; the watermark is left alone) and the same ``Delivery`` workers.
Before the next chunk the outbox is drained below `MAX_BACKLOG` rows, so a slow cc-backend
slows the walk instead of growing the backlog.

Safe to interrupt and re-run: actions are queued durably before anything is sent, a checkpoint
file next to the state database remembers, per cluster and window, where the walk got to
(written after each chunk's actions are in the outbox), the next run starts there and first
drains what the outbox still holds; jobs the store already knows are not planned again, and a
start cc-backend already has answers 422, which counts as success. Running it while the daemon
runs is safe too: both share the SQLite (WAL) state, and a row both happen to send earns a 422.

Progress: a rich progress bar (jobs, rate, ETA) on a terminal, one plain line per chunk otherwise.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

import trio

from ccsa import convert
from ccsa.config import Config
from ccsa.daemon import plan
from ccsa.daemon.delivery import Delivery
from ccsa.daemon.pipeline import build, slurm_for
from ccsa.daemon.startup import startup_checks
from ccsa.daemon.stats import Stats
from ccsa.daemon.store import Store
from ccsa.daemon.sync import Syncer, of_cluster
from ccsa.errors import CcsaError, ConfigError, SlurmError
from ccsa.slurm.commands import Slurm

__all__ = [
    "DEFAULT_CHUNK",
    "BackfillResult",
    "Checkpoint",
    "backfill",
    "backfill_command",
    "chunks",
    "parse_time",
]

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 86400.0
#: Outbox rows allowed before the next chunk is read.
MAX_BACKLOG = 5000


# --- pure helpers ----------------------------------------------------------------------------


def parse_time(text: str, now: float, what: str = "--since") -> float:
    """``2026-11-01``, ``2026-11-01T06:00[:00]`` (UTC unless it has an offset), an epoch number,
    or ``7d`` / ``12h`` / ``30m`` (that long before now). ConfigError names the option."""
    value = text.strip()
    rel = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([dhm])", value)
    if rel:
        factor = {"d": 86400, "h": 3600, "m": 60}[rel.group(2)]
        return now - float(rel.group(1)) * factor
    if re.fullmatch(r"\d{9,}(\.\d+)?", value):
        return float(value)
    if value == "now":
        return now
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            "command line",
            f"{text!r} is not a date (use YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS], an epoch, or 7d)",
            what,
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def chunks(since: float, until: float, step: float) -> list[tuple[float, float]]:
    """[since, until) cut into consecutive windows of at most ``step`` seconds."""
    if step <= 0:
        raise ValueError("chunk must be > 0")
    out: list[tuple[float, float]] = []
    begin = since
    while begin < until:
        end = min(begin + step, until)
        out.append((begin, end))
        begin = end
    return out


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S")


# --- checkpoint ------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """Where each (cluster, window) walk got to, in ``<stateDbPath>.backfill.json``."""

    path: str
    done: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def key(cluster: str, since: float, until: float) -> str:
        return f"{cluster}|{int(since)}|{int(until)}"

    @classmethod
    def load(cls, path: str) -> Checkpoint:
        try:
            with open(path, encoding="utf-8") as fh:
                raw = json.load(fh)
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable backfill checkpoint %s: %s", path, exc)
            return cls(path)
        done = {str(k): float(v) for k, v in raw.items() if isinstance(v, int | float)}
        return cls(path, done)

    def get(self, cluster: str, since: float, until: float) -> float:
        return self.done.get(self.key(cluster, since, until), since)

    def save(self, cluster: str, since: float, until: float, reached: float) -> None:
        self.done[self.key(cluster, since, until)] = reached
        tmp = f"{self.path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(self.done, fh, indent=1, sort_keys=True)
        os.replace(tmp, self.path)


# --- progress --------------------------------------------------------------------------------


class Reporter(Protocol):
    def start(self, total_seconds: float) -> None: ...

    def chunk(self, cluster: str, window: tuple[float, float], line: ChunkLine) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ChunkLine:
    """What one chunk did and where the walk is."""

    jobs: int
    starts: int
    stops: int
    delivered: int
    done_seconds: float
    total_seconds: float
    elapsed: float

    @property
    def fraction(self) -> float:
        return self.done_seconds / self.total_seconds if self.total_seconds > 0 else 1.0

    @property
    def rate(self) -> float:
        return self.delivered / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        f = self.fraction
        return None if f <= 0 else self.elapsed * (1 - f) / f


class PlainReporter:
    """One line per chunk (logs, cron, pipes)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def start(self, total_seconds: float) -> None:
        self.out.write(f"backfill: {total_seconds / 86400:.1f} cluster-days to walk\n")

    def chunk(self, cluster: str, window: tuple[float, float], line: ChunkLine) -> None:
        eta = "?" if line.eta is None else f"{line.eta:.0f} s"
        self.out.write(
            f"{cluster} {_utc(window[0])}..{_utc(window[1])}: {line.jobs} jobs, "
            f"{line.starts} starts / {line.stops} stops queued; {line.delivered} delivered "
            f"({line.rate:.1f}/s); {line.fraction:.0%} done, ETA {eta}\n"
        )
        self.out.flush()

    def close(self) -> None:
        self.out.flush()


class RichReporter:
    """A rich progress bar: window covered, jobs, delivery rate, ETA."""

    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[jobs]} jobs, {task.fields[delivered]} sent"),
            TextColumn("{task.fields[rate]:.1f}/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(file=out),
        )
        self.task: Any = None
        self.jobs = 0

    def start(self, total_seconds: float) -> None:
        self.progress.start()
        self.task = self.progress.add_task(
            "backfill", total=total_seconds, jobs=0, delivered=0, rate=0.0
        )

    def chunk(self, cluster: str, window: tuple[float, float], line: ChunkLine) -> None:
        self.jobs += line.jobs
        self.progress.update(
            self.task,
            completed=line.done_seconds,
            description=f"{cluster} {_utc(window[1])[:10]}",
            jobs=self.jobs,
            delivered=line.delivered,
            rate=line.rate,
        )

    def close(self) -> None:
        self.progress.stop()


# --- the walk --------------------------------------------------------------------------------


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
        *(cluster, _utc(window[0]), _utc(window[1])),
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


def backfill_command(
    *,
    since: str,
    until: str = "now",
    cluster: str | None = None,
    chunk: str = "1d",
    config: str | None = None,
    debug: int = 2,
) -> int:
    """Deliver jobs of a past window (bigger than slurmQueryMaxSpan), chunk by chunk.

    Safe to interrupt (Ctrl-C) and re-run with the same arguments: it resumes.

    Parameters
    ----------
    since
        Window start: YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS] (UTC unless an offset is given), an
        epoch, or 7d / 12h (that long ago).
    until
        Window end (same forms; default now).
    cluster
        Only this Slurm cluster (default: every cluster sacctmgr lists).
    chunk
        sacct window per step (e.g. 1d, 6h; default 1d).
    config
        Config file (default /etc/cc-slurm-adapter/config.json).
    debug
        Log level 0-5.
    """
    from ccsa import cli

    cfg = cli.load_config(config, debug)
    wall = time.time()
    try:
        start = parse_time(since, wall, "--since")
        end = parse_time(until, wall, "--until")
        step = wall - parse_time(chunk, wall, "--chunk")
        if step <= 0:
            raise ConfigError("command line", f"{chunk!r} must be longer than 0", "--chunk")
    except ConfigError as exc:
        return cli.fail(str(exc), 2)
    reporter: Reporter = (
        RichReporter(sys.stderr) if sys.stderr.isatty() else PlainReporter(sys.stdout)
    )
    try:
        result = trio.run(
            lambda: backfill(
                cfg, since=start, until=end, cluster=cluster, chunk=step, reporter=reporter
            )
        )
    except KeyboardInterrupt:
        return _interrupted(cli.PROG)
    except BaseExceptionGroup as group:  # Ctrl-C inside a nursery arrives wrapped
        if group.split(KeyboardInterrupt)[1] is None:
            return _interrupted(cli.PROG)
        raise
    except SlurmError as exc:
        return cli.fail(f"backfill stopped: {exc} (run the same command again to resume)", 1)
    except CcsaError as exc:
        return cli.fail(str(exc), 1 if not isinstance(exc, ConfigError) else 2)
    s = result.stats
    print(
        f"backfill done: {', '.join(result.clusters)}: {result.chunks} chunks, {result.jobs} "
        f"jobs seen, {result.starts} starts and {result.stops} stops queued; delivered "
        f"{s.starts_delivered} starts and {s.stops_delivered} stops, {s.starts_done + s.stops_done}"
        f" already known to cc-backend, {sum(s.rejections.values())} rejected (see: "
        "cc-slurm-adapter redrive --list)"
    )
    return 0


def _interrupted(prog: str) -> int:
    sys.stderr.write(
        f"{prog}: backfill interrupted; nothing is lost: run the same command again to resume\n"
    )
    return 130
