"""The state database's file: schema, opening and migration, one-transaction helper.

The standard library's sqlite3 gives transactions, crash safety and a single file without a
server, which is all the daemon needs; a hand-written JSON state file could not move a watermark
and enqueue 10,000 actions atomically.

Durability: WAL mode with ``synchronous=NORMAL`` (the default here) survives any *process* crash
(kill -9, OOM, a bug): a committed transaction is in the WAL file before ``commit()`` returns.
Only an operating-system crash or power loss can drop the last few commits; ``synchronous=FULL``
closes that window too at the cost of an fsync per transaction. Either way nothing is lost for
good: a lost commit means its watermark did not move, so the next poll re-reads that window.

Every method of the tables built on `StateDB` (``ccsa.daemon.jobtable``, ``ccsa.daemon.outbox``,
``ccsa.daemon.store``) runs one short transaction on the calling thread (the trio thread); the
connection is never shared between threads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal, Self

from ccsa.errors import StateError

log = logging.getLogger(__name__)

__all__ = ["SCHEMA_VERSION", "StateDB", "by_ids"]

SCHEMA_VERSION = 2

#: Squeue records of not-yet-started jobs (see remember_live): part of a new database's schema,
#: and all that the migration from version 1 to 2 adds.
_LIVE_TABLE = """
CREATE TABLE live (
    cluster TEXT NOT NULL,
    job_id INTEGER NOT NULL,
    start_time INTEGER NOT NULL,
    record BLOB NOT NULL,         -- squeue's JSON of the job while RUNNING (cores, GPU indices)
    seen REAL NOT NULL,
    PRIMARY KEY (cluster, job_id, start_time)
) WITHOUT ROWID;
"""

_SCHEMA = (
    """
CREATE TABLE watermark (
    cluster TEXT PRIMARY KEY,
    ts REAL,                      -- end of the last window fully queued (epoch s)
    last_sync REAL,               -- wall time of the last successful sync
    last_error TEXT,
    last_error_at REAL
);
CREATE TABLE jobs (
    cluster TEXT NOT NULL,
    job_id INTEGER NOT NULL,
    start_time INTEGER NOT NULL,
    phase TEXT NOT NULL,          -- start_queued | started | stop_queued | stopped | ignored
                                  -- | waiting | parked (plan.Phase)
    partition TEXT NOT NULL DEFAULT '',
    resources BLOB,               -- JSON list[Resource] captured from slurmctld
    resources_complete INTEGER NOT NULL DEFAULT 0,
    stale INTEGER NOT NULL DEFAULT 0,
    stop_time INTEGER,
    start_delivered_at REAL,
    note TEXT,
    updated REAL NOT NULL,
    PRIMARY KEY (cluster, job_id, start_time)
) WITHOUT ROWID;
CREATE INDEX jobs_phase ON jobs (cluster, phase);
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cluster TEXT NOT NULL,
    job_id INTEGER NOT NULL,
    start_time INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('start', 'stop')),
    body BLOB NOT NULL,
    partition TEXT NOT NULL DEFAULT '',
    rest_pending INTEGER NOT NULL,
    nats_pending INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created REAL NOT NULL
);
CREATE INDEX outbox_key ON outbox (cluster, job_id, start_time, kind);
CREATE TABLE parked (
    id INTEGER PRIMARY KEY,       -- the outbox id it had (AUTOINCREMENT never reuses it)
    cluster TEXT NOT NULL,
    job_id INTEGER NOT NULL,
    start_time INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body BLOB NOT NULL,
    partition TEXT NOT NULL DEFAULT '',
    rest_pending INTEGER NOT NULL,
    nats_pending INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    created REAL NOT NULL,
    status INTEGER,               -- cc-backend's HTTP status (NULL: parked with its start)
    reason TEXT NOT NULL,
    parked_at REAL NOT NULL
);
CREATE INDEX parked_key ON parked (cluster, job_id, start_time, kind);
"""
    + _LIVE_TABLE
)

#: Ids per ``IN (...)`` list: well below SQLite's limit on bound parameters.
_IDS_PER_QUERY = 500


def by_ids(select: str, cluster: str, ids: Iterable[int]) -> list[tuple[str, tuple[object, ...]]]:
    """``select`` (ending in ``job_id IN``) completed for each chunk of the distinct ``ids``,
    with its arguments (the cluster first): so many ids never become one huge statement."""
    wanted = sorted(set(ids))
    out: list[tuple[str, tuple[object, ...]]] = []
    for i in range(0, len(wanted), _IDS_PER_QUERY):
        chunk = wanted[i : i + _IDS_PER_QUERY]
        out.append((f"{select} ({','.join('?' * len(chunk))})", (cluster, *chunk)))
    return out


class StateDB:
    """The open SQLite connection and its path. Open with `open`; close with `close` (or
    ``with``)."""

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self._db = conn
        self.path = path

    # --- opening --------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        in_memory_copy: bool = False,
        move_corrupt: bool = False,
    ) -> Self:
        """Open (creating mode 0600 and the schema on first use) the state database.

        Args:
            in_memory_copy: work on a private in-memory copy of the file (for ``--dry-run``:
                everything is planned and "delivered" as usual, and the real state is untouched).
            move_corrupt: (the daemon) check the file (``PRAGMA quick_check``); one that SQLite
                reports corrupt is renamed to ``PATH.corrupt-<UTC time>`` (with its -wal/-shm),
                never deleted, with an ERROR naming it, and a new database is created. The
                daemon then starts from lastRunPath's time (issue 17 item 4).

        Raises:
            StateError: the file cannot be created/opened, is not a ccsa state database, or has
                a newer schema than this ccsa understands. The message names the path.
        """
        spath = os.fspath(path)
        try:
            return cls._open(spath, synchronous, in_memory_copy, move_corrupt)
        except sqlite3.DatabaseError as exc:
            if not (move_corrupt and _corrupt(exc)):
                raise StateError(f"state database {spath}: {exc}") from exc
            try:
                moved = _move_aside(spath)
            except OSError as err:
                raise StateError(
                    f"state database {spath} is corrupt ({exc}) and cannot be moved aside: "
                    f"{err.strerror or err}"
                ) from exc
            log.error(
                "state database %s is corrupt (%s): moved to %s (kept for inspection); starting "
                "with a new one from lastRunPath's time: deliveries that were waiting are found "
                "again by the re-read window",
                spath,
                exc,
                moved,
            )
        return cls.open(spath, synchronous=synchronous)

    @classmethod
    def _open(cls, spath: str, synchronous: str, in_memory_copy: bool, check: bool) -> Self:
        try:
            if in_memory_copy:
                conn = sqlite3.connect(":memory:", isolation_level=None)
                if os.path.exists(spath):
                    src = sqlite3.connect(f"file:{spath}?mode=ro", uri=True)
                    try:
                        src.backup(conn)
                    finally:
                        src.close()
            else:
                parent = Path(spath).parent
                parent.mkdir(parents=True, exist_ok=True)
                # Create the file ourselves so it is never world-readable (it holds job
                # scripts); SQLite gives the -wal/-shm files the database file's mode.
                fd = os.open(spath, os.O_RDWR | os.O_CREAT, 0o600)
                os.close(fd)
                conn = sqlite3.connect(spath, isolation_level=None, timeout=10.0)
        except OSError as exc:
            raise StateError(f"state database {spath}: {exc.strerror or exc}") from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous}")
            conn.execute("PRAGMA foreign_keys=ON")
            if check:
                verdict = str(conn.execute("PRAGMA quick_check").fetchone()[0])
                if verdict != "ok":
                    raise _Corrupt(f"quick_check: {verdict}")
            store = cls(conn, spath)
            store._migrate()
        except BaseException:
            conn.close()
            raise
        return store

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise StateError(
                f"state database {self.path}: schema version {version} is newer than this "
                f"ccsa understands ({SCHEMA_VERSION}); upgrade ccsa or move the file away"
            )
        if version == 1:
            with self._tx() as db:
                db.execute(_LIVE_TABLE)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            return
        tables = self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if version == 0 and tables:
            raise StateError(
                f"state database {self.path}: not a ccsa state database (tables without a "
                "schema version); point stateDbPath elsewhere"
            )
        with self._tx() as db:
            # executescript() would COMMIT first; run the statements inside our transaction.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @property
    def connection(self) -> sqlite3.Connection:
        """The connection, for a module's own small table (``ccsa.daemon.topocache``)."""
        return self._db

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction; rolled back on any exception."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StateError(f"state database {self.path}: {exc}") from exc
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        try:
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StateError(f"state database {self.path}: commit failed: {exc}") from exc


class _Corrupt(sqlite3.DatabaseError):
    """``PRAGMA quick_check`` found the file damaged."""


def _corrupt(exc: sqlite3.DatabaseError) -> bool:
    """True when SQLite says the file is damaged or not a database at all."""
    name = getattr(exc, "sqlite_errorname", "")
    return isinstance(exc, _Corrupt) or name in ("SQLITE_CORRUPT", "SQLITE_NOTADB")


def _move_aside(path: str) -> str:
    """Rename ``path`` (and its -wal/-shm) to ``path.corrupt-<UTC time>``; the new name."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = f"{path}.corrupt-{stamp}"
    for suffix in ("-wal", "-shm", ""):
        if os.path.exists(path + suffix):
            os.replace(path + suffix, target + suffix)
    return target
