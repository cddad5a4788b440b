"""The state database's job tables: per-cluster watermarks, known jobs, squeue's live records.

A cluster's watermark is the end of the last Slurm window fully queued (it moves only in
``Store.apply``, in the transaction that queues that window's actions); the known-job rows carry
each run's phase (``start_queued`` .. ``stopped`` / ``ignored``), read in one way only
(`JobTable._known`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgspec

from ccsa.ccbackend.models import Resource
from ccsa.daemon.plan import RUNNING_PHASES, JobKey, KnownJob
from ccsa.daemon.statedb import StateDB, by_ids

__all__ = ["JobTable", "Watermark"]

_RUNNING_SQL = ",".join(f"'{p}'" for p in sorted(RUNNING_PHASES))
_SELECT_KNOWN = (
    "SELECT job_id, start_time, phase, resources_complete, stale, partition, start_delivered_at "
    "FROM jobs WHERE cluster=?"
)
_resources_decoder = msgspec.json.Decoder(list[Resource])


@dataclass(frozen=True, slots=True)
class Watermark:
    cluster: str
    ts: float | None
    last_sync: float | None
    last_error: str | None
    last_error_at: float | None


class JobTable(StateDB):
    """Watermarks, known jobs and live records of the state database."""

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
        """Every known row of a cluster (the stuck-job check compares them with cc-backend)."""
        return self._known(self._db, cluster, [("", (cluster,))])

    def job(self, key: JobKey) -> KnownJob | None:
        """One job's row (its phase, resources flag, ...), or None when unknown."""
        return self._job_in(self._db, key)

    def known_jobs_for(
        self, cluster: str, ids: Iterable[int], *, running: bool = False
    ) -> dict[tuple[int, int], KnownJob]:
        """Known rows of some job ids only (a hook lookup, one sub-window of a poll), read in
        chunks of 500 ids, not the whole table.

        Args:
            running: also every row ccsa believes running (start_queued / started): the rows
                the stale check compares with the full squeue answer.
        """
        queries = by_ids(" AND job_id IN", cluster, ids)
        if running:
            queries.append((f" AND phase IN ({_RUNNING_SQL})", (cluster,)))
        return self._known(self._db, cluster, queries)

    @classmethod
    def _job_in(cls, db: sqlite3.Connection, key: JobKey) -> KnownJob | None:
        """The one way to read a job's row (and phase), also inside a transaction."""
        where = " AND job_id=? AND start_time=?"
        return cls._known(db, key.cluster, [(where, tuple(key))]).get((key.job_id, key.start_time))

    @staticmethod
    def _known(
        db: sqlite3.Connection, cluster: str, queries: list[tuple[str, tuple[object, ...]]]
    ) -> dict[tuple[int, int], KnownJob]:
        """Rows of ``jobs`` of ``cluster`` matching each ``(extra WHERE, args)``; the args start
        with the cluster."""
        out: dict[tuple[int, int], KnownJob] = {}
        for where, args in queries:
            for jid, st, phase, rc, stale, part, sd in db.execute(_SELECT_KNOWN + where, args):
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
        for query, args in by_ids(select, cluster, ids):
            for jid, start, rec in self._db.execute(query, args):
                out[(jid, start)] = bytes(rec)
        return out

    def live_starts(self, cluster: str, since: float, *, not_start: int) -> dict[int, int]:
        """Job id -> start time of the live records remembered (`remember_live`) since
        ``since`` whose job id has no row (rows with start ``not_start`` do not count): jobs
        squeue showed RUNNING that ccsa has not planned. One query, however many records."""
        rows = self._db.execute(
            "SELECT job_id, start_time FROM live WHERE cluster=? AND seen >= ? AND NOT EXISTS "
            "(SELECT 1 FROM jobs WHERE jobs.cluster=live.cluster AND jobs.job_id=live.job_id "
            "AND jobs.start_time<>?)",
            (cluster, since, not_start),
        )
        return {int(jid): int(start) for jid, start in rows}

    def waiting_ids(self, cluster: str) -> list[int]:
        """Ids of the cluster's waiting jobs (`plan.Wait`; looked up again on every poll)."""
        q = "SELECT DISTINCT job_id FROM jobs WHERE cluster=? AND phase='waiting' ORDER BY 1"
        return [int(r[0]) for r in self._db.execute(q, (cluster,))]

    def drop_waits(self, cluster: str, ids: Sequence[int], start_time: int) -> int:
        """Forget the waits (`plan.Wait`) of ``ids`` at ``start_time``: the waits of records
        that did not decode, once they do (`ccsa.daemon.undecodable`)."""
        dropped = 0
        delete = (
            "DELETE FROM jobs WHERE phase='waiting' AND start_time=? AND cluster=? AND job_id IN"
        )
        with self._tx() as db:
            for query, args in by_ids(delete, cluster, ids):
                dropped += db.execute(query, (start_time, *args)).rowcount
        return dropped

    def waiting_summary(self) -> dict[str, tuple[int, float]]:
        """Per cluster with waiting jobs: (how many, when the oldest began to wait)."""
        q = (
            "SELECT cluster, count(*), min(updated) FROM jobs WHERE phase='waiting' "
            "GROUP BY cluster ORDER BY cluster"
        )
        return {c: (int(n), float(t)) for c, n, t in self._db.execute(q)}

    def prune(self, cluster: str, before: float) -> int:
        """Forget finished/ignored jobs that ended (or were seen) before `before`."""
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM jobs WHERE cluster=? AND ((phase='stopped' AND stop_time < ?) "
                "OR (phase='ignored' AND updated < ?))",
                (cluster, before, before),
            )
            return cur.rowcount

    def adopt_running(self, cluster: str, keys: Iterable[tuple[int, int]], now: float) -> int:
        """Record runs that cc-backend lists as running but this store does not know (their
        start reached cc-backend before the state database was lost) as started, so that the
        lookup which follows plans their stop from the finished record of the same run (a
        power-up's record moved to the reset time, a requeued run's REQUEUED record). Returns
        how many were recorded."""
        n = 0
        with self._tx() as db:
            for job_id, start in keys:
                cur = db.execute(
                    "INSERT INTO jobs (cluster, job_id, start_time, phase, resources_complete, "
                    "start_delivered_at, updated) VALUES (?, ?, ?, 'started', 1, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    (cluster, job_id, start, now, now),
                )
                n += cur.rowcount
        return n

    def earlier_run(self, key: JobKey, window: float) -> int | None:
        """The start time of another run of the same job id and cluster whose start reached
        cc-backend and that cc-backend's duplicate check matches (``new start - its start <
        window``, as in v1.5.4 internal/api/job.go startJob), or None. Used to tell a refused
        rerun (requeue, preemption) from a start delivered twice (same start time)."""
        r = self._db.execute(
            "SELECT start_time FROM jobs WHERE cluster=? AND job_id=? AND start_time<>? AND "
            "start_delivered_at IS NOT NULL AND ? - start_time < ? ORDER BY start_time LIMIT 1",
            (key.cluster, key.job_id, key.start_time, key.start_time, window),
        ).fetchone()
        return None if r is None else int(r[0])
