"""Durable daemon state in SQLite (WAL): the `Store` the daemon, backfill and redrive open.

`Store` is the state database (``ccsa.daemon.statedb``: file, schema, transactions) with its job
tables (``ccsa.daemon.jobtable``: watermarks, known jobs, live records) and its outbox
(``ccsa.daemon.outbox``: rows waiting for cc-backend or NATS, parked rejections). This module
adds the one operation that spans them, `Store.apply`: a sync's plan becomes outbox rows and
job phases.

Invariant kept by `apply`: a cluster's watermark moves only in the same transaction that queues
the actions of the window it covers, so a crash at any point re-reads at most one window.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from ccsa.ccbackend.models import StartJob, encode
from ccsa.daemon.jobtable import JobTable, Watermark
from ccsa.daemon.outbox import Kind, Outbox, OutboxRow, ParkedRow, move_to_parked
from ccsa.daemon.plan import (
    Action,
    Ignore,
    JobKey,
    MarkStale,
    QueueStart,
    QueueStop,
    UpdateResources,
    Wait,
)
from ccsa.daemon.statedb import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "ApplyResult", "OutboxRow", "ParkedRow", "Store", "Watermark"]

_start_decoder = msgspec.json.Decoder(StartJob)

#: cc-backend's error for a start of a cluster it has no cluster.json for (v1.5.4
#: internal/importer/initDB.go: ``fmt.Errorf("no such cluster: %v", job.Cluster)``).
UNKNOWN_CLUSTER = "no such cluster"


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


class Store(JobTable, Outbox):
    """The daemon's SQLite state. Open with `Store.open`; close with `close` (or ``with``)."""

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
                        "VALUES (?, ?, ?, 'ignored', ?, ?) ON CONFLICT DO UPDATE SET "
                        "phase='ignored', note=excluded.note, updated=excluded.updated "
                        "WHERE phase='waiting'",
                        (*a.key, a.reason, now),
                    )
                elif isinstance(a, Wait):
                    # `updated` stays the time it began to wait (the WAIT_LIMIT clock)
                    db.execute(
                        "INSERT INTO jobs (cluster, job_id, start_time, phase, note, updated) "
                        "VALUES (?, ?, ?, 'waiting', ?, ?) ON CONFLICT DO UPDATE SET "
                        "note=excluded.note WHERE phase='waiting'",
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

    def park_waiting(self, cluster: str, before: float, now: float) -> list[tuple[int, str]]:
        """Park the jobs that began to wait (`plan.Wait`) before `before`: each gets a parked
        start row (no status, an empty body, the wait's reason) that ``redrive`` lists and
        re-drives by putting the job back to waiting (`Outbox.re_drive`). Returns (job id,
        reason) of each."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT job_id, start_time, note, updated FROM jobs WHERE cluster=? AND "
                "phase='waiting' AND updated < ?",
                (cluster, before),
            ).fetchall()
            for jid, start, note, since in rows:
                since_utc = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(since))
                cur = db.execute(
                    "INSERT INTO outbox (cluster, job_id, start_time, kind, body, rest_pending, "
                    "nats_pending, created) VALUES (?, ?, ?, 'start', x'', 0, 0, ?)",
                    (cluster, jid, start, now),
                )
                reason = f"waiting since {since_utc} UTC: {note}"
                move_to_parked(db, [int(cur.lastrowid or 0)], None, reason, now)
                db.execute(
                    "UPDATE jobs SET phase='parked' WHERE cluster=? AND job_id=? AND start_time=?",
                    (cluster, jid, start),
                )
        return [(int(jid), str(note)) for jid, _, note, _ in rows]

    @staticmethod
    def _has(db: sqlite3.Connection, table: str, key: JobKey, kind: Kind) -> bool:
        q = f"SELECT 1 FROM {table} WHERE cluster=? AND job_id=? AND start_time=? AND kind=?"
        return db.execute(q, (*key, kind)).fetchone() is not None

    def _queue_start(
        self, db: sqlite3.Connection, a: QueueStart, now: float, rest: int, nats: int
    ) -> int:
        if self._has(db, "outbox", a.key, "start") or self._has(db, "parked", a.key, "start"):
            return 0
        known = self._job_in(db, a.key)
        phase = None if known is None else known.phase
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
        known = self._job_in(db, a.key)
        if known is not None and known.phase in ("stopped", "ignored"):
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
            move_to_parked(db, [int(cur.lastrowid or 0)], None, "start was rejected", now)
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

    def delivered_before(self) -> float | None:
        """A time before which everything reached cc-backend, for lastRunPath's mtime (what the
        Go adapter means by it, issue 17 item 4): the oldest undelivered action's time (a
        start's start time; a stop's stop time) when the outbox holds any, never later than the
        oldest cluster watermark; None before the first sync. A lost state database (or a
        rollback to the Go adapter) then re-reads from there, and cc-backend's 422/404 absorb
        what was delivered. Parked rows do not hold it back: they wait for an operator, and a
        re-read would only park them again."""
        (oldest,) = self._db.execute(
            "SELECT min(CASE WHEN o.kind='start' THEN o.start_time "
            "ELSE coalesce(j.stop_time, o.start_time) END) FROM outbox o LEFT JOIN jobs j "
            "ON j.cluster=o.cluster AND j.job_id=o.job_id AND j.start_time=o.start_time"
        ).fetchone()
        (mark,) = self._db.execute("SELECT min(ts) FROM watermark").fetchone()
        times = [float(t) for t in (oldest, mark) if t is not None]
        return min(times) if times else None

    def drop_unknown_clusters(self, before: float) -> dict[str, int]:
        """Retention (issue 17 item 7): drop the parked rows parked before ``before`` of each
        cluster cc-backend does not know (a start of it was refused with cc-backend's "no such
        cluster", v1.5.4 internal/importer/initDB.go SanityChecks), with the job rows (their
        resources) of those jobs that nothing waits for any more. Returns the rows dropped per
        cluster (parked and job rows together)."""
        dropped: dict[str, int] = {}
        with self._tx() as db:
            clusters = [
                str(c)
                for (c,) in db.execute(
                    "SELECT DISTINCT cluster FROM parked WHERE kind='start' AND status=400 AND "
                    "reason LIKE ?",
                    (f"%{UNKNOWN_CLUSTER}%",),
                )
            ]
            for cluster in clusters:
                parked = db.execute(
                    "DELETE FROM parked WHERE cluster=? AND parked_at < ?", (cluster, before)
                ).rowcount
                jobs = db.execute(
                    "DELETE FROM jobs WHERE cluster=? AND updated < ? AND phase IN "
                    "('start_queued', 'stop_queued') AND NOT EXISTS (SELECT 1 FROM outbox o "
                    "WHERE o.cluster=jobs.cluster AND o.job_id=jobs.job_id AND "
                    "o.start_time=jobs.start_time) AND NOT EXISTS (SELECT 1 FROM parked p "
                    "WHERE p.cluster=jobs.cluster AND p.job_id=jobs.job_id AND "
                    "p.start_time=jobs.start_time)",
                    (cluster, before),
                ).rowcount
                if parked + jobs:
                    dropped[cluster] = parked + jobs
        return dropped
