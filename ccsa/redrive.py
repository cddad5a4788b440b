"""`cc-slurm-adapter redrive`: list parked rejections and move them back into the outbox.

A start or stop that cc-backend rejected (400/401/403...) is parked in the state database with
cc-backend's reason, and the jobs after it go on (no head-of-line blocking). Once the operator has
fixed the cause (a missing cluster.json, a token), ``redrive --id N`` or ``--all`` moves the rows
back with ``Store.re_drive`` (a start takes the stops parked with it; ids are kept, so a start is
still sent before its stop). This is safe while the daemon runs: SQLite in WAL mode lets a second
process write, each write is one short transaction, and the daemon's poll ticker wakes its
delivery after every poll, so re-driven rows go out within ``slurmPollInterval``. When the daemon
is not running they go out when it starts.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import Annotated, TextIO

from cyclopts import Parameter

from ccsa.config import Config
from ccsa.daemon.store import ParkedRow, Store
from ccsa.errors import DaemonError, StateError

__all__ = ["list_parked", "open_existing", "redrive_command", "redrive_ids"]


def open_existing(path: str) -> Store:
    """Open the daemon's state database; StateError (one line) when there is none."""
    if not os.path.exists(path):
        raise StateError(
            f"state database {path}: does not exist (wrong -config? stateDbPath / lastRunPath "
            "decide where it is)"
        )
    return Store.open(path)


def list_parked(rows: Sequence[ParkedRow], out: TextIO) -> None:
    """Print parked rows (newest first) as aligned plain text."""
    if not rows:
        out.write("no parked rejections\n")
        return
    table = [("id", "cluster", "job", "kind", "status", "parked (UTC)", "reason")]
    for p in rows:
        table.append(
            (
                str(p.row.id),
                p.row.key.cluster,
                str(p.row.key.job_id),
                p.row.kind,
                "-" if p.status is None else str(p.status),
                time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(p.parked_at)),
                " ".join(p.reason.split()),
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(6)]
    for r in table:
        out.write("  ".join(c.ljust(w) for c, w in zip(r[:6], widths, strict=True)))
        out.write(f"  {r[6]}\n")


def redrive_ids(store: Store, ids: Sequence[int] | None) -> tuple[int, list[int]]:
    """Re-drive ``ids`` (None: all). Returns (rows moved back, asked ids that are not parked)."""
    if ids is None:
        return store.re_drive(None), []
    parked = {p.row.id for p in store.parked()}
    unknown = [i for i in ids if i not in parked]
    moved = store.re_drive([i for i in ids if i in parked]) if len(unknown) < len(ids) else 0
    return moved, unknown


def _daemon_note(cfg: Config) -> str:
    """Whether a daemon answers on the socket, for the closing line."""
    import trio

    from ccsa import status

    try:
        snap = trio.run(status.fetch, cfg.prep_sock_connect_path, 3.0)
    except DaemonError:
        return "the daemon is not running: they are sent when it starts"
    interval = cfg.slurm_poll_interval
    return (
        f"the running daemon (pid {snap.pid or '?'}) sends them after its next poll "
        f"(within {interval:g} s)"
    )


def redrive_command(
    *,
    ids: Annotated[list[int] | None, Parameter(name="--id")] = None,
    everything: Annotated[bool, Parameter(name="--all")] = False,
    show: Annotated[bool, Parameter(name="--list")] = False,
    config: str | None = None,
    debug: int = 1,
) -> int:
    """List parked rejections, or send them again after fixing their cause.

    Parameters
    ----------
    ids
        Parked row id to re-send (repeatable; a start takes its parked stops along).
    everything
        Re-send every parked row.
    show
        Only list the parked rows (the default when neither --id nor --all is given).
    config
        Config file (default /etc/cc-slurm-adapter/config.json); stateDbPath is used.
    debug
        Log level 0-5.
    """
    from ccsa import cli

    cfg = cli.load_config(config, debug)
    if ids and everything:
        return cli.fail("redrive: give --id N... or --all, not both", 2)
    try:
        store = open_existing(cfg.state_db_path)
    except StateError as exc:
        return cli.fail(str(exc), 1)
    with store:
        if show or not (ids or everything):
            list_parked(store.parked(), sys.stdout)
            return 0
        try:
            moved, unknown = redrive_ids(store, None if everything else ids)
        except StateError as exc:
            return cli.fail(f"redrive: {exc}", 1)
    for rid in unknown:
        sys.stderr.write(f"{cli.PROG}: redrive: no parked row with id {rid}\n")
    if moved:
        print(f"{moved} row(s) moved back to the outbox; {_daemon_note(cfg)}")
    else:
        print("nothing to re-drive")
    return 1 if unknown else 0
