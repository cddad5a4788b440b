"""`cc-slurm-adapter backfill`: deliver a window of history larger than ``slurmQueryMaxSpan``.

The window is walked in chunks (default one day) so memory stays bounded by one chunk's
``sacct`` answer (`walk`: each chunk through the daemon's own pipeline; `window`: the time
arguments, chunks and checkpoint; `progress`: the progress output).

Safe to interrupt and re-run: actions are queued durably before anything is sent, a checkpoint
file next to the state database remembers, per cluster and window, where the walk got to
(written after each chunk's actions are in the outbox), the next run starts there and first
drains what the outbox still holds; jobs the store already knows are not planned again, and a
start cc-backend already has answers 422, which counts as success. Running it while the daemon
runs is safe too: both share the SQLite (WAL) state, and a row both happen to send earns a 422.

Progress: a rich progress bar (jobs, rate, ETA) on a terminal, one plain line per chunk otherwise.
"""

from __future__ import annotations

import sys
import time

import trio

from ccsa.backfill.progress import ChunkLine, PlainReporter, Reporter, RichReporter
from ccsa.backfill.walk import DEFAULT_CHUNK, BackfillResult, backfill
from ccsa.backfill.window import Checkpoint, chunks, parse_time
from ccsa.errors import CcsaError, ConfigError, SlurmError

__all__ = [
    "DEFAULT_CHUNK",
    "BackfillResult",
    "Checkpoint",
    "ChunkLine",
    "PlainReporter",
    "RichReporter",
    "backfill",
    "backfill_command",
    "chunks",
    "parse_time",
]


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
