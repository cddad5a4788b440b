"""The state database's outbox (starts and stops waiting for cc-backend and NATS) and the rows
cc-backend refused (``parked``, for ``redrive``).

A row carries what is still to do with it: ``rest_pending`` (POST it), ``nats_pending`` (publish
it); it leaves the outbox when both are done, or moves to ``parked`` with cc-backend's reason. Ids
grow and are never reused (AUTOINCREMENT), so a start always has a smaller id than its stop, also
after a re-drive (rows keep their ids).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ccsa.daemon.plan import JobKey
from ccsa.daemon.statedb import StateDB, by_ids

__all__ = ["ROW_COLS", "Kind", "Outbox", "OutboxRow", "ParkedRow", "move_to_parked"]

Kind = Literal["start", "stop"]

ROW_COLS = (
    "id, cluster, job_id, start_time, kind, body, partition, rest_pending, nats_pending, "
    "attempts, last_error, created"
)

#: An outbox row (alias ``o``) that may be sent now: stop-after-start holds per channel only
#: (issue 17 item 1). A stop that still owes its POST waits for its start's POST only; a stop
#: that owes only its NATS publish waits until its start's row is gone (POSTed and published).
#: So a NATS outage never holds back a stop's POST, and a stop is never published before its
#: start.
_SENDABLE = (
    "(o.kind='start' OR NOT EXISTS (SELECT 1 FROM outbox s WHERE s.cluster=o.cluster AND "
    "s.job_id=o.job_id AND s.start_time=o.start_time AND s.kind='start' AND "
    "(s.rest_pending=1 OR o.rest_pending=0)))"
)


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


def move_to_parked(
    db: sqlite3.Connection, ids: Sequence[int], status: int | None, reason: str, now: float
) -> None:
    """Move outbox rows ``ids`` to ``parked`` with cc-backend's status and the reason."""
    for rid in ids:
        db.execute(
            f"INSERT INTO parked ({ROW_COLS}, status, reason, parked_at) "
            f"SELECT {ROW_COLS}, ?, ?, ? FROM outbox WHERE id=?",
            (status, reason, now, rid),
        )
        db.execute("DELETE FROM outbox WHERE id=?", (rid,))


#: A parked row that stands for a job parked after waiting (`Store.park_waiting`): the only
#: parked start without an HTTP status (rejected starts carry theirs; stops parked with their
#: start have none).
_PARKED_WAIT = "kind='start' AND status IS NULL"


def _rearm_waiting(db: sqlite3.Connection, rid: int) -> bool:
    """A parked waiting job goes back to waiting: the next poll looks it up once more, sends it
    if it can, else parks it again (its wait keeps its beginning). False for other rows."""
    r = db.execute(
        f"SELECT cluster, job_id, start_time FROM parked WHERE id=? AND {_PARKED_WAIT}", (rid,)
    ).fetchone()
    if r is None:
        return False
    db.execute(
        "UPDATE jobs SET phase='waiting' WHERE cluster=? AND job_id=? AND start_time=? "
        "AND phase='parked'",
        r,
    )
    db.execute("DELETE FROM parked WHERE id=?", (rid,))
    return True


def _unpark(db: sqlite3.Connection, rid: int) -> None:
    """Move parked row `rid` back to the outbox under its own id (a start stays before its
    stops)."""
    db.execute(
        f"INSERT INTO outbox ({ROW_COLS}) SELECT id, cluster, job_id, start_time, "
        "kind, body, partition, rest_pending, nats_pending, 0, last_error, created "
        "FROM parked WHERE id=?",
        (rid,),
    )
    db.execute("DELETE FROM parked WHERE id=?", (rid,))


class Outbox(StateDB):
    """The outbox and parked rows of the state database."""

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
            f"SELECT {ROW_COLS} FROM outbox o WHERE id > ? AND id <= ? AND {_SENDABLE} "
            f"ORDER BY id {'DESC' if newest_first else 'ASC'} LIMIT ?",
            (after_id, upto if upto is not None else 2**62, limit),
        ).fetchall()
        return [_row(r) for r in rows]

    def eligible_jobs(self, cluster: str, job_ids: Iterable[int]) -> list[OutboxRow]:
        """The outbox rows of these jobs that may be sent now (the rule of `eligible`), oldest
        first: what a hook lookup queued, for `Delivery.hurry`."""
        select = f"SELECT {ROW_COLS} FROM outbox o WHERE {_SENDABLE} AND cluster=? AND job_id IN"
        found: list[OutboxRow] = []
        for query, args in by_ids(select, cluster, job_ids):
            found.extend(_row(r) for r in self._db.execute(query, args))
        return sorted(found, key=lambda row: row.id)

    def get(self, row_id: int) -> OutboxRow | None:
        """The outbox row with this id as it is now (None once finished or parked)."""
        r = self._db.execute(f"SELECT {ROW_COLS} FROM outbox WHERE id=?", (row_id,)).fetchone()
        return None if r is None else _row(r)

    def outbox_rows(self, limit: int | None = None) -> list[OutboxRow]:
        """The outbox, oldest first (at most ``limit`` rows)."""
        q = f"SELECT {ROW_COLS} FROM outbox ORDER BY id" + (" LIMIT ?" if limit else "")
        return [_row(r) for r in self._db.execute(q, (limit,) if limit else ())]

    def without_rest(self) -> int:
        """REST submission is off (it was on when these rows were queued): every row that still
        owes its POST owes a NATS publish instead, so the NATS channel's order rule applies to
        it. Returns the rows changed."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE outbox SET rest_pending=0, nats_pending=1 WHERE rest_pending=1"
            )
            return cur.rowcount

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
            move_to_parked(db, [row.id], status, reason, now)
            if len(ids) > 1:
                note = f"start was rejected ({status}: {reason})"
                move_to_parked(db, ids[1:], None, note, now)
            return len(ids)

    def parked(self, limit: int | None = None) -> list[ParkedRow]:
        """Parked rows, newest first."""
        q = f"SELECT {ROW_COLS}, status, reason, parked_at FROM parked ORDER BY parked_at DESC, id"
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
                if not _rearm_waiting(db, rid):
                    _unpark(db, rid)
            return len(set(chosen))

    def adopt_parked_starts(
        self, cluster: str, running: Collection[tuple[int, int]], now: float
    ) -> list[JobKey]:
        """cc-backend lists these (job id, start time) runs of `cluster` as running, so their
        starts reached it, whatever its answer said: a start parked as a refused rerun among
        them was taken for the wrong run. That happens when ccsa sent a later run of the job
        first without knowing cc-backend already had the earlier one (after a lost state
        database, or two planners that raced): cc-backend's 422 names no start time
        (v1.5.4 internal/api/job.go startJob). Such a start is recorded as delivered and the
        stops parked with it go back to the outbox, so the run cc-backend holds is stopped.
        Returns the keys adopted."""
        adopted: list[JobKey] = []
        with self._tx() as db:
            parked = db.execute(
                "SELECT id, job_id, start_time FROM parked WHERE cluster=? AND kind='start' "
                "AND status=422",
                (cluster,),
            ).fetchall()
            for rid, job_id, start in parked:
                if (job_id, start) not in running:
                    continue
                key = JobKey(cluster, int(job_id), int(start))
                db.execute("DELETE FROM parked WHERE id=?", (rid,))
                db.execute(
                    "UPDATE jobs SET phase=CASE WHEN phase IN ('start_queued', 'parked') THEN "
                    "'started' ELSE phase END, start_delivered_at=coalesce(start_delivered_at, "
                    "?), updated=? WHERE cluster=? AND job_id=? AND start_time=?",
                    (now, now, *key),
                )
                stops = db.execute(
                    "SELECT id FROM parked WHERE cluster=? AND job_id=? AND start_time=? AND "
                    "kind='stop'",
                    key,
                ).fetchall()
                for (sid,) in stops:
                    _unpark(db, int(sid))
                adopted.append(key)
        return adopted
