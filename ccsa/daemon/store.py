"""Durable daemon state in SQLite (WAL): watermarks, known jobs, the outbox, parked rejections.

The standard library's sqlite3 gives transactions, crash safety and a single file without a
server, which is all the daemon needs; a hand-written JSON state file could not move a watermark
and enqueue 10,000 actions atomically.

Durability: WAL mode with ``synchronous=NORMAL`` (the default here) survives any *process* crash
(kill -9, OOM, a bug): a committed transaction is in the WAL file before ``commit()`` returns.
Only an operating-system crash or power loss can drop the last few commits; ``synchronous=FULL``
closes that window too at the cost of an fsync per transaction. Either way nothing is lost for
good: a lost commit means its watermark did not move, so the next poll re-reads that window.

Invariant kept by `apply`: a cluster's watermark moves only in the same transaction that queues
the actions of the window it covers. Every method runs one short transaction on the calling
thread (the trio thread); the connection is never shared between threads.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec

from ccsa.ccbackend.models import Resource, StartJob, encode
from ccsa.daemon.plan import (
    RUNNING_PHASES,
    Action,
    Ignore,
    JobKey,
    KnownJob,
    MarkStale,
    Phase,
    QueueStart,
    QueueStop,
    UpdateResources,
)
from ccsa.errors import StateError

SCHEMA_VERSION = 2

Kind = Literal["start", "stop"]

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

_ROW_COLS = (
    "id, cluster, job_id, start_time, kind, body, partition, rest_pending, nats_pending, "
    "attempts, last_error, created"
)

_RUNNING_SQL = ",".join(f"'{p}'" for p in sorted(RUNNING_PHASES))

#: An outbox row (alias ``o``) that may be sent now: a stop only once no start of the same job
#: is left in the outbox (pending, in flight, or waiting for its NATS publish).
_SENDABLE = (
    "(o.kind='start' OR NOT EXISTS (SELECT 1 FROM outbox s WHERE s.cluster=o.cluster AND "
    "s.job_id=o.job_id AND s.start_time=o.start_time AND s.kind='start'))"
)

#: Ids per ``IN (...)`` list: well below SQLite's limit on bound parameters.
_IDS_PER_QUERY = 500


def _by_ids(select: str, cluster: str, ids: Iterable[int]) -> list[tuple[str, tuple[object, ...]]]:
    """``select`` (ending in ``job_id IN``) completed for each chunk of the distinct ``ids``,
    with its arguments (the cluster first): so many ids never become one huge statement."""
    wanted = sorted(set(ids))
    out: list[tuple[str, tuple[object, ...]]] = []
    for i in range(0, len(wanted), _IDS_PER_QUERY):
        chunk = wanted[i : i + _IDS_PER_QUERY]
        out.append((f"{select} ({','.join('?' * len(chunk))})", (cluster, *chunk)))
    return out


_resources_decoder = msgspec.json.Decoder(list[Resource])
_start_decoder = msgspec.json.Decoder(StartJob)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One pending delivery: a start or stop body plus what is still to do with it."""

    id: int
    key: JobKey
    kind: Kind
    body: bytes
    partition: str
    rest_pending: bool
    nats_pending: bool
    attempts: int
    last_error: str | None
    created: float


@dataclass(frozen=True, slots=True)
class ParkedRow:
    """A delivery cc-backend refused for good (400/401/403), kept for the operator."""

    row: OutboxRow
    status: int | None
    reason: str
    parked_at: float


@dataclass(frozen=True, slots=True)
class Watermark:
    cluster: str
    ts: float | None
    last_sync: float | None
    last_error: str | None
    last_error_at: float | None


@dataclass(frozen=True, slots=True)
class ApplyResult:
    starts: int = 0
    stops: int = 0
    resource_updates: int = 0
    parked_stops: int = 0
    ignored: int = 0

    def __add__(self, other: ApplyResult) -> ApplyResult:
        """The sum of two results (the sub-windows of one poll)."""
        return ApplyResult(
            self.starts + other.starts,
            self.stops + other.stops,
            self.resource_updates + other.resource_updates,
            self.parked_stops + other.parked_stops,
            self.ignored + other.ignored,
        )


def _row(r: Any) -> OutboxRow:
    (rid, cluster, job_id, start, kind, body, part, rest, nats, attempts, err, created) = r
    return OutboxRow(
        id=int(rid),
        key=JobKey(str(cluster), int(job_id), int(start)),
        kind="start" if kind == "start" else "stop",
        body=bytes(body),
        partition=str(part),
        rest_pending=bool(rest),
        nats_pending=bool(nats),
        attempts=int(attempts),
        last_error=None if err is None else str(err),
        created=float(created),
    )


class Store:
    """The daemon's SQLite state. Open with `Store.open`; close with `close` (or ``with``)."""

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
    ) -> Store:
        """Open (creating mode 0600 and the schema on first use) the state database.

        Args:
            in_memory_copy: work on a private in-memory copy of the file (for ``--dry-run``:
                everything is planned and "delivered" as usual, and the real state is untouched).

        Raises:
            StateError: the file cannot be created/opened, is not a ccsa state database, or has
                a newer schema than this ccsa understands. The message names the path.
        """
        spath = os.fspath(path)
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
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous}")
            conn.execute("PRAGMA foreign_keys=ON")
            store = cls(conn, spath)
            store._migrate()
        except sqlite3.DatabaseError as exc:
            raise StateError(f"state database {spath}: {exc}") from exc
        except OSError as exc:
            raise StateError(f"state database {spath}: {exc.strerror or exc}") from exc
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

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
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

    # --- watermarks -----------------------------------------------------------------------

    def watermark(self, cluster: str) -> float | None:
        r = self._db.execute("SELECT ts FROM watermark WHERE cluster=?", (cluster,)).fetchone()
        return None if r is None or r[0] is None else float(r[0])

    def watermarks(self) -> list[Watermark]:
        rows = self._db.execute(
            "SELECT cluster, ts, last_sync, last_error, last_error_at FROM watermark "
            "ORDER BY cluster"
        ).fetchall()
        return [Watermark(*r) for r in rows]

    def record_error(self, cluster: str, message: str, now: float) -> None:
        """Remember a cluster's last sync error (the watermark stays where it is)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO watermark (cluster, last_error, last_error_at) VALUES (?, ?, ?) "
                "ON CONFLICT(cluster) DO UPDATE SET last_error=excluded.last_error, "
                "last_error_at=excluded.last_error_at",
                (cluster, message, now),
            )

    # --- known jobs -----------------------------------------------------------------------

    def known_jobs(self, cluster: str) -> dict[tuple[int, int], KnownJob]:
        rows = self._db.execute(
            "SELECT job_id, start_time, phase, resources_complete, stale, partition, "
            "start_delivered_at FROM jobs WHERE cluster=?",
            (cluster,),
        ).fetchall()
        return {
            (jid, st): KnownJob(JobKey(cluster, jid, st), phase, bool(rc), bool(stale), part, sd)
            for jid, st, phase, rc, stale, part, sd in rows
        }

    def job(self, key: JobKey) -> KnownJob | None:
        return self.known_jobs_for(key.cluster, [key.job_id]).get((key.job_id, key.start_time))

    def known_jobs_for(
        self, cluster: str, ids: Iterable[int], *, running: bool = False
    ) -> dict[tuple[int, int], KnownJob]:
        """Known rows of some job ids only (a hook lookup, one sub-window of a poll), read in
        chunks of 500 ids, not the whole table.

        Args:
            running: also every row ccsa believes running (start_queued / started): the rows
                the stale check compares with the full squeue answer.
        """
        out: dict[tuple[int, int], KnownJob] = {}
        cols = "job_id, start_time, phase, resources_complete, stale, partition, start_delivered_at"
        queries = _by_ids(f"SELECT {cols} FROM jobs WHERE cluster=? AND job_id IN", cluster, ids)
        if running:
            queries.append(
                (
                    f"SELECT {cols} FROM jobs WHERE cluster=? AND phase IN ({_RUNNING_SQL})",
                    (cluster,),
                )
            )
        for query, args in queries:
            for jid, st, phase, rc, stale, part, sd in self._db.execute(query, args):
                key = JobKey(cluster, jid, st)
                out[(jid, st)] = KnownJob(key, phase, bool(rc), bool(stale), part, sd)
        return out

    def resources(self, key: JobKey) -> list[Resource] | None:
        r = self._db.execute(
            "SELECT resources FROM jobs WHERE cluster=? AND job_id=? AND start_time=?", key
        ).fetchone()
        return None if r is None or r[0] is None else _resources_decoder.decode(r[0])

    def remember_live(
        self, cluster: str, records: Sequence[tuple[int, int, bytes]], *, now: float, keep: float
    ) -> None:
        """Keep squeue's live records ``(job_id, start_time, json)``; forget those older than
        ``keep`` seconds. Durable, so a record seen just before a crash still serves the start
        planned after the restart (found by the soak's kill -9)."""
        with self._tx() as db:
            db.executemany(
                "INSERT INTO live (cluster, job_id, start_time, record, seen) VALUES (?,?,?,?,?) "
                "ON CONFLICT (cluster, job_id, start_time) DO UPDATE SET "
                "record=excluded.record, seen=excluded.seen",
                [(cluster, jid, start, rec, now) for jid, start, rec in records],
            )
            db.execute("DELETE FROM live WHERE cluster=? AND seen < ?", (cluster, now - keep))

    def live_records(self, cluster: str, ids: Sequence[int]) -> dict[tuple[int, int], bytes]:
        """The remembered live records of ``ids``, keyed (job_id, start_time)."""
        out: dict[tuple[int, int], bytes] = {}
        select = "SELECT job_id, start_time, record FROM live WHERE cluster=? AND job_id IN"
        for query, args in _by_ids(select, cluster, ids):
            for jid, start, rec in self._db.execute(query, args):
                out[(jid, start)] = bytes(rec)
        return out

    def prune(self, cluster: str, before: float) -> int:
        """Forget finished/ignored jobs that ended (or were seen) before `before`."""
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM jobs WHERE cluster=? AND ((phase='stopped' AND stop_time < ?) "
                "OR (phase='ignored' AND updated < ?))",
                (cluster, before, before),
            )
            return cur.rowcount

    # --- planning results -----------------------------------------------------------------

    def apply(
        self,
        cluster: str,
        actions: Sequence[Action],
        *,
        now: float,
        rest: bool,
        nats: bool,
        watermark: float | None = None,
    ) -> ApplyResult:
        """Apply a plan and (optionally) move the cluster's watermark, in ONE transaction.

        Args:
            rest: REST submission is on (new rows wait for REST first).
            nats: NATS is configured (with REST off, new rows wait for NATS only).
            watermark: the end of the window these actions cover; None leaves it alone.
        """
        starts = stops = updates = parked = ignored = 0
        rest_p, nats_p = (1, 0) if rest else (0, 1 if nats else 0)
        with self._tx() as db:
            for a in actions:
                if isinstance(a, QueueStart):
                    starts += self._queue_start(db, a, now, rest_p, nats_p)
                elif isinstance(a, QueueStop):
                    n, p = self._queue_stop(db, a, now, rest_p, nats_p)
                    stops += n
                    parked += p
                elif isinstance(a, UpdateResources):
                    updates += self._update_resources(db, a, now)
                elif isinstance(a, MarkStale):
                    db.execute(
                        "UPDATE jobs SET stale=?, updated=? WHERE cluster=? AND job_id=? "
                        "AND start_time=?",
                        (int(a.stale), now, *a.key),
                    )
                elif isinstance(a, Ignore):
                    ignored += 1
                    db.execute(
                        "INSERT INTO jobs (cluster, job_id, start_time, phase, note, updated) "
                        "VALUES (?, ?, ?, 'ignored', ?, ?) ON CONFLICT DO NOTHING",
                        (*a.key, a.reason, now),
                    )
            if watermark is not None:
                db.execute(
                    "INSERT INTO watermark (cluster, ts, last_sync, last_error, last_error_at) "
                    "VALUES (?, ?, ?, NULL, NULL) ON CONFLICT(cluster) DO UPDATE SET "
                    "ts=excluded.ts, last_sync=excluded.last_sync, last_error=NULL, "
                    "last_error_at=NULL",
                    (cluster, watermark, now),
                )
        return ApplyResult(starts, stops, updates, parked, ignored)

    @staticmethod
    def _phase(db: sqlite3.Connection, key: JobKey) -> str | None:
        r = db.execute(
            "SELECT phase FROM jobs WHERE cluster=? AND job_id=? AND start_time=?", key
        ).fetchone()
        return None if r is None else str(r[0])

    @staticmethod
    def _has(db: sqlite3.Connection, table: str, key: JobKey, kind: Kind) -> bool:
        q = f"SELECT 1 FROM {table} WHERE cluster=? AND job_id=? AND start_time=? AND kind=?"
        return db.execute(q, (*key, kind)).fetchone() is not None

    def _queue_start(
        self, db: sqlite3.Connection, a: QueueStart, now: float, rest: int, nats: int
    ) -> int:
        if self._has(db, "outbox", a.key, "start") or self._has(db, "parked", a.key, "start"):
            return 0
        phase = self._phase(db, a.key)
        if phase in ("started", "stop_queued", "stopped", "ignored") and not a.resend:
            return 0  # planned on older knowledge (the hook path was quicker): already done
        resources = msgspec.json.encode(a.body.resources)
        db.execute(
            "INSERT INTO jobs (cluster, job_id, start_time, phase, partition, resources, "
            "resources_complete, updated) VALUES (?, ?, ?, 'start_queued', ?, ?, ?, ?) "
            "ON CONFLICT DO UPDATE SET phase=CASE WHEN phase IN ('stop_queued', 'stopped') "
            "THEN phase ELSE 'start_queued' END, resources=excluded.resources, "
            "resources_complete=excluded.resources_complete, stale=0, "
            "updated=excluded.updated",
            (*a.key, a.partition, resources, int(a.resources_complete), now),
        )
        db.execute(
            "INSERT INTO outbox (cluster, job_id, start_time, kind, body, partition, "
            "rest_pending, nats_pending, created) VALUES (?, ?, ?, 'start', ?, ?, ?, ?, ?)",
            (*a.key, encode(a.body), a.partition, rest, nats, now),
        )
        return 1

    def _queue_stop(
        self, db: sqlite3.Connection, a: QueueStop, now: float, rest: int, nats: int
    ) -> tuple[int, int]:
        if self._has(db, "outbox", a.key, "stop") or self._has(db, "parked", a.key, "stop"):
            return 0, 0
        if self._phase(db, a.key) in ("stopped", "ignored"):
            return 0, 0
        db.execute(
            "INSERT INTO jobs (cluster, job_id, start_time, phase, partition, stop_time, "
            "updated) VALUES (?, ?, ?, 'stop_queued', ?, ?, ?) ON CONFLICT DO UPDATE SET "
            "phase=CASE WHEN phase='stopped' THEN phase ELSE 'stop_queued' END, "
            "stop_time=excluded.stop_time, stale=0, updated=excluded.updated",
            (*a.key, a.partition, a.body.stop_time, now),
        )
        values = (*a.key, encode(a.body), a.partition, rest, nats)
        if self._has(db, "parked", a.key, "start"):
            # Its start was rejected: delivering the stop alone would only earn a 404 and lose
            # the stop once the start is re-driven. It waits, parked, beside its start.
            cur = db.execute(
                "INSERT INTO outbox (cluster, job_id, start_time, kind, body, partition, "
                "rest_pending, nats_pending, created) VALUES (?, ?, ?, 'stop', ?, ?, ?, ?, ?)",
                (*values, now),
            )
            self._move_to_parked(db, [int(cur.lastrowid or 0)], None, "start was rejected", now)
            return 0, 1
        db.execute(
            "INSERT INTO outbox (cluster, job_id, start_time, kind, body, partition, "
            "rest_pending, nats_pending, created) VALUES (?, ?, ?, 'stop', ?, ?, ?, ?, ?)",
            (*values, now),
        )
        return 1, 0

    def _update_resources(self, db: sqlite3.Connection, a: UpdateResources, now: float) -> int:
        r = db.execute(
            "SELECT id, body FROM outbox WHERE cluster=? AND job_id=? AND start_time=? "
            "AND kind='start' AND rest_pending + nats_pending > 0",
            a.key,
        ).fetchone()
        if r is None:
            return 0
        body = _start_decoder.decode(r[1])
        if len(a.resources) != body.num_nodes:
            return 0  # cc-backend demands len(resources) == numNodes; keep the host list
        patched = msgspec.structs.replace(body, resources=a.resources)
        db.execute("UPDATE outbox SET body=? WHERE id=?", (encode(patched), r[0]))
        db.execute(
            "UPDATE jobs SET resources=?, resources_complete=1, updated=? WHERE cluster=? "
            "AND job_id=? AND start_time=?",
            (msgspec.json.encode(a.resources), now, *a.key),
        )
        return 1

    # --- outbox ---------------------------------------------------------------------------

    def max_id(self) -> int:
        """The highest outbox id in use (0 when empty)."""
        return int(self._db.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()[0])

    def eligible(
        self, after_id: int, limit: int, upto: int | None = None, *, newest_first: bool = False
    ) -> list[OutboxRow]:
        """Outbox rows with after_id < id <= upto that may be sent now, oldest first (or newest
        first), at most `limit` of them.

        A stop is eligible only when no start for the same job is in the outbox (pending,
        in flight, or waiting for its NATS publish): never a stop before its start.
        """
        rows = self._db.execute(
            f"SELECT {_ROW_COLS} FROM outbox o WHERE id > ? AND id <= ? AND {_SENDABLE} "
            f"ORDER BY id {'DESC' if newest_first else 'ASC'} LIMIT ?",
            (after_id, upto if upto is not None else 2**62, limit),
        ).fetchall()
        return [_row(r) for r in rows]

    def eligible_jobs(self, cluster: str, job_ids: Iterable[int]) -> list[OutboxRow]:
        """The outbox rows of these jobs that may be sent now (the rule of `eligible`), oldest
        first: what a hook lookup queued, for `Delivery.hurry`."""
        select = f"SELECT {_ROW_COLS} FROM outbox o WHERE {_SENDABLE} AND cluster=? AND job_id IN"
        found: list[OutboxRow] = []
        for query, args in _by_ids(select, cluster, job_ids):
            found.extend(_row(r) for r in self._db.execute(query, args))
        return sorted(found, key=lambda row: row.id)

    def get(self, row_id: int) -> OutboxRow | None:
        """The outbox row with this id as it is now (None once finished or parked)."""
        r = self._db.execute(f"SELECT {_ROW_COLS} FROM outbox WHERE id=?", (row_id,)).fetchone()
        return None if r is None else _row(r)

    def outbox_rows(self) -> list[OutboxRow]:
        return [_row(r) for r in self._db.execute(f"SELECT {_ROW_COLS} FROM outbox ORDER BY id")]

    def outbox_empty(self) -> bool:
        """True when nothing waits for delivery (O(1), unlike counting)."""
        return self._db.execute("SELECT 1 FROM outbox LIMIT 1").fetchone() is None

    def outbox_depth(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def rest_done(self, row: OutboxRow, *, publish_nats: bool, now: float) -> None:
        """cc-backend has the action (201/200, or 422/404 when `publish_nats` is False)."""
        with self._tx() as db:
            if publish_nats:
                db.execute(
                    "UPDATE outbox SET rest_pending=0, nats_pending=1, last_error=NULL WHERE id=?",
                    (row.id,),
                )
            else:
                db.execute("DELETE FROM outbox WHERE id=?", (row.id,))
            self._advance(db, row, now)

    def nats_done(self, row: OutboxRow, *, now: float) -> None:
        """The line-protocol event was published: the row is finished."""
        with self._tx() as db:
            db.execute("DELETE FROM outbox WHERE id=?", (row.id,))
            self._advance(db, row, now)

    @staticmethod
    def _advance(db: sqlite3.Connection, row: OutboxRow, now: float) -> None:
        if row.kind == "start":
            db.execute(
                "UPDATE jobs SET phase=CASE WHEN phase='start_queued' THEN 'started' ELSE "
                "phase END, start_delivered_at=coalesce(start_delivered_at, ?), updated=? "
                "WHERE cluster=? AND job_id=? AND start_time=?",
                (now, now, *row.key),
            )
        else:
            db.execute(
                "UPDATE jobs SET phase='stopped', updated=? WHERE cluster=? AND job_id=? "
                "AND start_time=?",
                (now, *row.key),
            )

    def failed(self, row: OutboxRow, error: str) -> None:
        """A transient failure: count it and keep the row (retried with backoff)."""
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET attempts=attempts+1, last_error=? WHERE id=?", (error, row.id)
            )

    def park(self, row: OutboxRow, status: int, reason: str, now: float) -> int:
        """Move a rejected row to `parked`; a rejected start takes its job's stops with it.

        Returns the number of rows parked.
        """
        with self._tx() as db:
            ids = [row.id]
            if row.kind == "start":
                ids += [
                    int(r[0])
                    for r in db.execute(
                        "SELECT id FROM outbox WHERE cluster=? AND job_id=? AND start_time=? "
                        "AND kind='stop'",
                        row.key,
                    )
                ]
            self._move_to_parked(db, [row.id], status, reason, now)
            if len(ids) > 1:
                note = f"start was rejected ({status}: {reason})"
                self._move_to_parked(db, ids[1:], None, note, now)
            return len(ids)

    @staticmethod
    def _move_to_parked(
        db: sqlite3.Connection, ids: Sequence[int], status: int | None, reason: str, now: float
    ) -> None:
        for rid in ids:
            db.execute(
                f"INSERT INTO parked ({_ROW_COLS}, status, reason, parked_at) "
                f"SELECT {_ROW_COLS}, ?, ?, ? FROM outbox WHERE id=?",
                (status, reason, now, rid),
            )
            db.execute("DELETE FROM outbox WHERE id=?", (rid,))

    def parked(self, limit: int | None = None) -> list[ParkedRow]:
        """Parked rows, newest first."""
        q = f"SELECT {_ROW_COLS}, status, reason, parked_at FROM parked ORDER BY parked_at DESC, id"
        rows = self._db.execute(q + (" LIMIT ?" if limit else ""), (limit,) if limit else ())
        return [ParkedRow(_row(r[:12]), r[12], r[13], r[14]) for r in rows]

    def parked_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM parked").fetchone()[0])

    def re_drive(self, ids: Iterable[int] | None = None) -> int:
        """Move parked rows (all, or these ids plus the stops parked with them) back.

        The rows keep their ids, so a start is sent before its stop again.
        """
        with self._tx() as db:
            if ids is None:
                chosen = [int(r[0]) for r in db.execute("SELECT id FROM parked")]
            else:
                chosen = []
                for rid in ids:
                    r = db.execute(
                        "SELECT cluster, job_id, start_time, kind FROM parked WHERE id=?", (rid,)
                    ).fetchone()
                    if r is None:
                        continue
                    chosen.append(rid)
                    if r[3] == "start":
                        chosen += [
                            int(x[0])
                            for x in db.execute(
                                "SELECT id FROM parked WHERE cluster=? AND job_id=? AND "
                                "start_time=? AND kind='stop' AND status IS NULL",
                                r[:3],
                            )
                        ]
            for rid in sorted(set(chosen)):
                db.execute(
                    f"INSERT INTO outbox ({_ROW_COLS}) SELECT id, cluster, job_id, start_time, "
                    "kind, body, partition, rest_pending, nats_pending, 0, last_error, created "
                    "FROM parked WHERE id=?",
                    (rid,),
                )
                db.execute("DELETE FROM parked WHERE id=?", (rid,))
            return len(set(chosen))

    def job_phase(self, key: JobKey) -> Phase | None:
        r = self._db.execute(
            "SELECT phase FROM jobs WHERE cluster=? AND job_id=? AND start_time=?", key
        ).fetchone()
        return None if r is None else r[0]
