"""The SQLite state store: schema, atomic watermark + outbox, ordering, parking, crash safety."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from ccsa.ccbackend.models import Resource, StartJob, StopJob
from ccsa.daemon.plan import (
    Ignore,
    JobKey,
    MarkStale,
    QueueStart,
    QueueStop,
    UpdateResources,
)
from ccsa.daemon.store import SCHEMA_VERSION, Store
from ccsa.errors import StateError


def start(job_id: int, st: int = 100, hosts: tuple[str, ...] = ("n1",)) -> QueueStart:
    body = StartJob(
        job_id=job_id,
        cluster="c1",
        user="u",
        project="p",
        num_nodes=len(hosts),
        resources=[Resource(hostname=h) for h in hosts],
        start_time=st,
        shared="none",
    )
    return QueueStart(JobKey("c1", job_id, st), body, "batch", False)


def stop(job_id: int, st: int = 100, end: int = 200) -> QueueStop:
    body = StopJob(job_id=job_id, cluster="c1", job_state="completed", stop_time=end, start_time=st)
    return QueueStop(JobKey("c1", job_id, st), body, "batch")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "state" / "state.sqlite3")
    yield s
    s.close()


def test_created_private_with_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.sqlite3"
    Store.open(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    Store.open(path).close()  # reopening an existing state works


def test_newer_schema_and_foreign_database_are_refused(tmp_path: Path) -> None:
    newer = tmp_path / "newer.sqlite3"
    db = sqlite3.connect(newer)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StateError, match=r"newer\.sqlite3.*newer than"):
        Store.open(newer)
    foreign = tmp_path / "foreign.sqlite3"
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE x (y)")
    db.close()
    with pytest.raises(StateError, match="not a ccsa state database"):
        Store.open(foreign)
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StateError, match=r"garbage\.sqlite3"):
        Store.open(garbage)


def test_apply_moves_watermark_with_actions(store: Store) -> None:
    assert store.watermark("c1") is None
    res = store.apply(
        "c1", [start(1), stop(1), start(2)], now=5.0, rest=True, nats=False, watermark=1000.0
    )
    assert (res.starts, res.stops) == (2, 1)
    assert store.watermark("c1") == 1000.0
    assert store.outbox_depth() == 3
    assert store.job(JobKey("c1", 1, 100)).phase == "stop_queued"
    assert store.job(JobKey("c1", 2, 100)).phase == "start_queued"
    # applying the same plan again (overlap window) queues nothing twice
    res = store.apply("c1", [start(2)], now=6.0, rest=True, nats=False, watermark=1100.0)
    assert res.starts == 0
    assert store.outbox_depth() == 3


def test_failed_apply_rolls_back_watermark_and_actions(store: Store) -> None:
    store.apply("c1", [start(1)], now=1.0, rest=True, nats=False, watermark=10.0)
    bad = QueueStart(JobKey("c1", 2, 100), "not a body", "p", False)  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        store.apply("c1", [start(3), bad], now=2.0, rest=True, nats=False, watermark=20.0)
    assert store.watermark("c1") == 10.0
    assert [r.key.job_id for r in store.outbox_rows()] == [1]


def test_ten_thousand_actions_in_one_transaction(store: Store) -> None:
    actions = [start(i) for i in range(10_000)] + [stop(i) for i in range(10_000)]
    res = store.apply("c1", actions, now=1.0, rest=True, nats=False, watermark=50.0)
    assert (res.starts, res.stops) == (10_000, 10_000)
    assert store.outbox_depth() == 20_000


def test_stop_is_not_eligible_before_its_start_is_done_per_channel(store: Store) -> None:
    """Stop-after-start holds per channel (issue 17 item 1): a stop's POST waits for its
    start's POST only; its NATS publish waits until the start's row is gone."""
    store.apply("c1", [start(1), stop(1), stop(2, 100)], now=1.0, rest=True, nats=True)
    rows = store.eligible(0, 100)
    assert [(r.key.job_id, r.kind) for r in rows] == [(1, "start"), (2, "stop")]
    (s1,) = [r for r in rows if r.kind == "start"]
    # The start is POSTed, its NATS publish still pending: the stop may be POSTed now.
    store.rest_done(s1, publish_nats=True, now=2.0)
    eligible = store.eligible(0, 100)
    assert [(r.key.job_id, r.kind) for r in eligible] == [(1, "start"), (1, "stop"), (2, "stop")]
    pending, stop1 = eligible[0], eligible[1]
    assert not pending.rest_pending
    assert pending.nats_pending
    assert store.job(JobKey("c1", 1, 100)).phase == "stop_queued"
    # The stop is POSTed too: its publish waits for the start's publish.
    store.rest_done(stop1, publish_nats=True, now=2.5)
    assert [(r.key.job_id, r.kind) for r in store.eligible(0, 100)] == [(1, "start"), (2, "stop")]
    store.nats_done(pending, now=3.0)
    assert [(r.key.job_id, r.kind) for r in store.eligible(0, 100)] == [(1, "stop"), (2, "stop")]
    assert store.eligible(rows[-1].id, 100) == [
        r for r in store.eligible(0, 100) if r.id > rows[-1].id
    ]


def test_rest_done_advances_phases(store: Store) -> None:
    store.apply("c1", [start(1)], now=1.0, rest=True, nats=False)
    (row,) = store.eligible(0, 10)
    store.rest_done(row, publish_nats=False, now=7.0)
    assert store.outbox_depth() == 0
    job = store.job(JobKey("c1", 1, 100))
    assert job is not None
    assert job.phase == "started"
    assert job.start_delivered_at == 7.0
    store.apply("c1", [stop(1)], now=8.0, rest=True, nats=False)
    (row,) = store.eligible(0, 10)
    store.rest_done(row, publish_nats=False, now=9.0)
    assert store.job(JobKey("c1", 1, 100)).phase == "stopped"


def test_nats_only_rows(store: Store) -> None:
    store.apply("c1", [start(1)], now=1.0, rest=False, nats=True)
    (row,) = store.eligible(0, 10)
    assert not row.rest_pending
    assert row.nats_pending


def test_park_takes_stops_along_and_re_drive_restores_order(store: Store) -> None:
    store.apply("c1", [start(1), stop(1), start(2)], now=1.0, rest=True, nats=False)
    s1 = store.eligible(0, 10)[0]
    assert store.park(s1, 400, "no such cluster: c1", 2.0) == 2
    assert [r.key.job_id for r in store.outbox_rows()] == [2]
    parked = store.parked()
    assert {(p.row.kind, p.status) for p in parked} == {("start", 400), ("stop", None)}
    assert any("start was rejected (400: no such cluster" in p.reason for p in parked)
    # a stop planned later for the rejected job goes straight to parked
    store.apply("c1", [stop(1, end=300)], now=3.0, rest=True, nats=False)  # already there
    assert store.parked_count() == 2
    # re-driving the start brings its stop back too, ids kept (start first)
    start_id = next(p.row.id for p in parked if p.row.kind == "start")
    assert store.re_drive([start_id]) == 2
    assert store.parked_count() == 0
    rows = store.eligible(0, 10)
    assert [(r.key.job_id, r.kind, r.attempts) for r in rows] == [(1, "start", 0), (2, "start", 0)]


def test_stop_for_parked_start_is_parked_on_arrival(store: Store) -> None:
    store.apply("c1", [start(1)], now=1.0, rest=True, nats=False)
    store.park(store.eligible(0, 1)[0], 403, "forbidden", 2.0)
    res = store.apply("c1", [stop(1)], now=3.0, rest=True, nats=False)
    assert res.parked_stops == 1
    assert store.outbox_depth() == 0
    assert store.re_drive() == 2
    assert [r.kind for r in store.outbox_rows()] == ["start", "stop"]


def test_a_refused_start_cc_backend_lists_running_is_adopted_with_its_stop(
    store: Store,
) -> None:
    """After a lost state database the re-read sends a requeued job's second run first:
    cc-backend answers 422 (it has the first run), taken for a start delivered twice; then the
    first run's start, 422 again, now taken for a refused rerun and parked with its stop. The
    first run stayed "running" in cc-backend for good (long soak 2026-12-06, job 14531:
    parked start 1796536608 while cc-backend listed exactly that run). cc-backend's running
    list proves which start it has: that parked start is delivered, its stop goes out."""
    store.apply("c1", [start(7, st=100), stop(7, st=100, end=130), start(8, st=100)],
                now=1.0, rest=True, nats=False)  # fmt: skip
    first = next(r for r in store.eligible(0, 10) if r.key.job_id == 7)
    assert store.park(first, 422, "a job with that jobId, cluster and startTime already "
                      "exists", 2.0) == 2  # fmt: skip
    eight = next(r for r in store.eligible(0, 10) if r.key.job_id == 8)
    store.park(eight, 422, "refused rerun", 2.0)
    adopted = store.adopt_parked_starts("c1", {(7, 100), (9, 50)}, now=3.0)
    assert adopted == [JobKey("c1", 7, 100)]
    assert [(r.key.job_id, r.kind) for r in store.eligible(0, 10)] == [(7, "stop")]
    row = store.job(JobKey("c1", 7, 100))
    assert row is not None
    assert (row.phase, row.start_delivered_at) == ("stop_queued", 3.0)  # its stop is queued
    assert [p.row.key.job_id for p in store.parked()] == [8]  # not listed: stays parked
    assert store.adopt_parked_starts("c1", {(7, 100)}, now=4.0) == []  # once


def test_update_resources_patches_pending_start(store: Store) -> None:
    store.apply("c1", [start(1, hosts=("a", "b"))], now=1.0, rest=True, nats=False)
    full = [Resource(hostname="a", hwthreads=[0, 1]), Resource(hostname="b", hwthreads=[2])]
    res = store.apply(
        "c1", [UpdateResources(JobKey("c1", 1, 100), full)], now=2.0, rest=True, nats=False
    )
    assert res.resource_updates == 1
    (row,) = store.outbox_rows()
    body = msgspec.json.decode(row.body, type=StartJob)
    assert body.resources == full
    assert store.resources(JobKey("c1", 1, 100)) == full
    job = store.job(JobKey("c1", 1, 100))
    assert job is not None
    assert job.resources_complete
    # wrong node count (would earn a 400) is not applied
    short = [Resource(hostname="a", hwthreads=[0])]
    res = store.apply(
        "c1", [UpdateResources(JobKey("c1", 1, 100), short)], now=3.0, rest=True, nats=False
    )
    assert res.resource_updates == 0


def test_stale_marks_ignore_and_prune(store: Store) -> None:
    store.apply(
        "c1",
        [start(1), Ignore(JobKey("c1", 2, 100), "ignoreHosts")],
        now=1.0,
        rest=True,
        nats=False,
    )
    store.apply("c1", [MarkStale(JobKey("c1", 1, 100), True)], now=2.0, rest=True, nats=False)
    jobs = store.known_jobs("c1")
    assert jobs[(1, 100)].stale
    assert jobs[(2, 100)].phase == "ignored"
    assert store.known_jobs_for("c1", [2]).keys() == {(2, 100)}
    store.apply("c1", [stop(1, end=150)], now=3.0, rest=True, nats=False)
    for _ in range(2):  # the stop becomes eligible once its start is done
        for row in store.eligible(0, 10):
            store.rest_done(row, publish_nats=False, now=4.0)
    assert store.outbox_depth() == 0
    assert store.prune("c1", before=0.5) == 0
    assert store.prune("c1", before=100) == 1  # the ignored job (seen at 1.0)
    assert store.prune("c1", before=160) == 1  # the job stopped at 150
    assert store.known_jobs("c1") == {}


def test_known_jobs_for_some_ids_plus_the_running_ones(store: Store) -> None:
    """One sub-window reads the rows of its own jobs (in chunks), and the last one also every
    row ccsa believes running (the stale check), never the whole table."""
    store.apply("c1", [start(j) for j in range(1, 1301)], now=1.0, rest=True, nats=False)
    store.apply("c1", [stop(j) for j in range(1, 1201)], now=2.0, rest=True, nats=False)
    store.apply("c1", [start(5000, st=300)], now=2.0, rest=True, nats=False)  # requeued run
    store.apply("c2", [start(7)], now=1.0, rest=True, nats=False)
    wanted = [*range(1, 1101, 2), 5000, 99_999]  # 552 ids: two chunks
    rows = store.known_jobs_for("c1", wanted)
    assert rows.keys() == {(j, 100) for j in range(1, 1101, 2)} | {(5000, 300)}
    assert {r.phase for k, r in rows.items() if k[0] < 1101} == {"stop_queued"}
    everything = store.known_jobs("c1")
    with_running = store.known_jobs_for("c1", [3], running=True)
    running = {k for k, r in everything.items() if r.phase in ("start_queued", "started")}
    assert with_running.keys() == {(3, 100)} | running
    assert len(running) == 101  # jobs 1201..1300 and 5000; nothing of cluster c2
    assert all(with_running[k] == everything[k] for k in with_running)


def test_error_recorded_then_cleared_by_sync(store: Store) -> None:
    store.record_error("c2", "sacct exited 1", 5.0)
    (wm,) = store.watermarks()
    assert wm.cluster == "c2"
    assert wm.ts is None
    assert wm.last_error == "sacct exited 1"
    store.apply("c2", [], now=6.0, rest=True, nats=False, watermark=60.0)
    (wm,) = store.watermarks()
    assert wm.ts == 60.0
    assert wm.last_error is None
    assert wm.last_sync == 6.0


def test_dry_run_copy_leaves_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    with Store.open(path) as s:
        s.apply("c1", [start(1)], now=1.0, rest=True, nats=False, watermark=10.0)
    with Store.open(path, in_memory_copy=True) as copy:
        assert copy.watermark("c1") == 10.0
        assert copy.outbox_depth() == 1
        copy.apply("c1", [start(2)], now=2.0, rest=True, nats=False, watermark=20.0)
    with Store.open(path) as s:
        assert s.watermark("c1") == 10.0
        assert s.outbox_depth() == 1


_WRITER = textwrap.dedent(
    """
    import os, sys
    from ccsa.ccbackend.models import Resource, StartJob
    from ccsa.daemon.plan import JobKey, QueueStart
    from ccsa.daemon.store import Store
    s = Store.open(sys.argv[1])
    for n in range(1, 1_000_000):
        body = StartJob(job_id=n, cluster="c1", user="u", project="p", num_nodes=1,
                        resources=[Resource(hostname="n1")], start_time=5, shared="none")
        s.apply("c1", [QueueStart(JobKey("c1", n, 5), body, "p", False)], now=1.0,
                rest=True, nats=False, watermark=float(n))
        if n == 50:
            print("ready", flush=True)
    """
)


def test_kill_minus_nine_keeps_every_committed_watermark_and_action(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with Store.open(path) as s:
        wm = s.watermark("c1")
        assert wm is not None
        assert wm >= 50
        ids = sorted(r.key.job_id for r in s.outbox_rows())
        # invariant: the watermark never runs ahead of (or behind) the queued actions
        assert ids == list(range(1, int(wm) + 1))


def test_stale_plans_do_not_resend_what_is_done(store: Store) -> None:
    # A poll planned on knowledge older than the hook path's delivery must not send again.
    store.apply("c1", [start(1)], now=1.0, rest=True, nats=False)
    store.rest_done(store.eligible(0, 10)[0], publish_nats=False, now=2.0)
    assert store.apply("c1", [start(1)], now=3.0, rest=True, nats=False).starts == 0
    assert store.job(JobKey("c1", 1, 100)).phase == "started"
    # ... unless it is an explicit re-send (cc-backend lost the job)
    again = QueueStart(JobKey("c1", 1, 100), start(1).body, "batch", True, resend=True)
    assert store.apply("c1", [again], now=4.0, rest=True, nats=False).starts == 1
    store.rest_done(store.eligible(0, 10)[0], publish_nats=False, now=5.0)
    store.apply("c1", [stop(1)], now=6.0, rest=True, nats=False)
    store.rest_done(store.eligible(0, 10)[0], publish_nats=False, now=7.0)
    assert store.apply("c1", [stop(1)], now=8.0, rest=True, nats=False).stops == 0
    assert store.outbox_depth() == 0


def test_live_records_survive_reopen_and_expire(tmp_path: Path) -> None:
    """squeue's live records are durable (a kill -9 right after the squeue answer keeps them)
    and are forgotten after `keep` seconds."""
    path = tmp_path / "live.sqlite3"
    with Store.open(path) as s:
        s.remember_live("c1", [(7, 100, b'{"job_id":7}'), (8, 100, b'{"job_id":8}')], now=1000.0,
                        keep=60.0)  # fmt: skip
    with Store.open(path) as s:
        assert s.live_records("c1", [7, 9]) == {(7, 100): b'{"job_id":7}'}
        assert s.live_records("c2", [7]) == {}
        s.remember_live("c1", [(8, 100, b'{"job_id":8,"x":1}')], now=1100.0, keep=60.0)
        assert s.live_records("c1", [7, 8]) == {(8, 100): b'{"job_id":8,"x":1}'}


def test_a_corrupt_state_database_is_moved_aside_with_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 17 item 4: a state database SQLite reports corrupt is renamed (never deleted),
    an ERROR names the moved file, and the daemon starts with a new one (from lastrun)."""
    path = tmp_path / "state.sqlite3"
    with Store.open(path) as s:
        s.apply("c1", [start(1)], now=1.0, rest=True, nats=False, watermark=10.0)
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # the schema page is garbage now
    path.write_bytes(bytes(data))
    with pytest.raises(StateError, match=r"state\.sqlite3"):
        Store.open(path).close()  # redrive/backfill: a clear error, the file left alone
    with Store.open(path, move_corrupt=True) as fresh:  # the daemon
        assert fresh.watermark("c1") is None
        assert fresh.outbox_depth() == 0
    (moved,) = tmp_path.glob("state.sqlite3.corrupt-*")
    assert moved.read_bytes()[:16] == b"SQLite format 3\x00"
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert str(moved) in errors[0]


def test_delivered_before_is_the_oldest_undelivered_action_or_the_watermark(
    store: Store,
) -> None:
    """lastRunPath's mtime (issue 17 item 4): nothing undelivered is older than it."""
    assert store.delivered_before() is None
    store.apply("c1", [start(1, 50), start(2, 80)], now=1.0, rest=True, nats=False, watermark=200.0)
    assert store.delivered_before() == 50.0
    store.apply("c2", [], now=1.0, rest=True, nats=False, watermark=40.0)
    assert store.delivered_before() == 40.0  # never later than any cluster's watermark
    store.apply("c2", [], now=2.0, rest=True, nats=False, watermark=300.0)
    first = store.eligible(0, 10)[0]
    store.rest_done(first, publish_nats=False, now=3.0)
    assert store.delivered_before() == 80.0
    (second,) = store.eligible(0, 10)
    store.rest_done(second, publish_nats=False, now=3.0)
    assert store.delivered_before() == 200.0  # the outbox is empty: the oldest watermark


def on_cluster(cluster: str, action: QueueStart | QueueStop) -> QueueStart | QueueStop:
    """The same action for a job of another cluster."""
    key = JobKey(cluster, action.key.job_id, action.key.start_time)
    body = msgspec.structs.replace(action.body, cluster=cluster)
    return dataclasses.replace(action, key=key, body=body)  # type: ignore[type-var]


def test_retention_drops_old_rows_of_clusters_cc_backend_does_not_know(store: Store) -> None:
    """Issue 17 item 7: parked rows (with their job scripts) and the job rows of a cluster
    cc-backend does not know ("no such cluster: X", v1.5.4 internal/importer/initDB.go) grew
    without bound. unknownClusterRetention drops those older than the retention; parked rows
    of known clusters stay for redrive."""
    gone = [on_cluster("gone", a) for a in (start(1), stop(1), start(2))]
    store.apply("gone", gone, now=10.0, rest=True, nats=False)
    store.apply("c1", [start(3)], now=10.0, rest=True, nats=False)
    for row in store.eligible(0, 10):
        if row.kind == "start":
            reason = "400 Bad Request: " + (
                "no such cluster: gone" if row.key.cluster == "gone" else "no subcluster"
            )
            store.park(row, 400, reason, 100.0 if row.key.job_id == 1 else 5000.0)
    assert store.parked_count() == 4  # job 1's start and stop, job 2's start, job 3's start
    assert store.drop_unknown_clusters(before=50.0) == {}
    dropped = store.drop_unknown_clusters(before=1000.0)
    assert dropped == {"gone": 3}  # job 1: start and stop parked, and its job row
    assert {(p.row.key.cluster, p.row.key.job_id) for p in store.parked()} == {
        ("gone", 2),
        ("c1", 3),
    }
    assert store.job(JobKey("gone", 1, 100)) is None
    assert store.job(JobKey("gone", 2, 100)) is not None  # still parked: kept
    assert store.drop_unknown_clusters(before=10_000.0) == {"gone": 2}
    assert [p.row.key.cluster for p in store.parked()] == ["c1"]  # a known cluster: kept
