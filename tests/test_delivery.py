"""Outbox delivery: ordering, idempotent outcomes, parking, backoff, NATS, dry-run (trio clock)."""

from __future__ import annotations

import io
import itertools
import json
import random
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

from ccsa.ccbackend.models import Resource, StartJob, StopJob
from ccsa.daemon.delivery import Backoff, Delivery
from ccsa.daemon.plan import JobKey, QueueStart, QueueStop
from ccsa.daemon.store import OutboxRow, Store
from ccsa.errors import BackendRejected, BackendUnavailable, PublishError


@dataclass(frozen=True)
class Outcome:
    kind: str
    status: int | None
    message: str = ""


@dataclass
class Backend:
    """A small in-memory cc-backend with cc-backend's answers (ccbackend.md §2, §3)."""

    running: set[tuple[int, int]] = field(default_factory=set)
    stopped: set[tuple[int, int]] = field(default_factory=set)
    calls: list[tuple[str, int, float]] = field(default_factory=list)
    reject: dict[int, tuple[int, str]] = field(default_factory=dict)  # job id -> status, text
    flaky: dict[int, int] = field(default_factory=dict)  # job id -> 500s left
    down_until: float = -1.0

    def _common(self, what: str, job_id: int) -> Outcome | None:
        self.calls.append((what, job_id, trio.current_time()))
        if trio.current_time() < self.down_until:
            return Outcome("transient", None, "connection refused")
        if job_id in self.reject:
            status, text = self.reject[job_id]
            return Outcome("rejected", status, text)
        if self.flaky.get(job_id, 0) > 0:
            self.flaky[job_id] -= 1
            return Outcome("transient", 500, "insert into database failed")
        return None

    async def start_job(self, body: StartJob) -> Outcome:
        await trio.sleep(0.01)
        early = self._common("start", body.job_id)
        if early:
            return early
        key = (body.job_id, body.start_time)
        if key in self.running or key in self.stopped:
            return Outcome("done", 422, "a job with that jobId, cluster and startTime exists")
        self.running.add(key)
        return Outcome("delivered", 201)

    async def stop_job(self, body: StopJob) -> Outcome:
        await trio.sleep(0.01)
        early = self._common("stop", body.job_id)
        if early:
            return early
        key = (body.job_id, body.start_time or 0)
        if key in self.stopped:
            return Outcome("done", 422, "job has already been stopped")
        if key not in self.running:
            return Outcome("done", 404, "finding job failed: sql: no rows in result set")
        self.running.discard(key)
        self.stopped.add(key)
        return Outcome("delivered", 200)

    async def post(self, endpoint: str, body: bytes) -> Outcome:
        """``BackendClient.post``'s protocol: an Outcome when done, else the error it raises."""
        if endpoint == "start_job":
            outcome = await self.start_job(msgspec.json.decode(body, type=StartJob))
        else:
            outcome = await self.stop_job(msgspec.json.decode(body, type=StopJob))
        if outcome.kind == "transient":
            raise BackendUnavailable(f"POST {endpoint}", outcome.message, outcome.status)
        if outcome.kind == "rejected":
            assert outcome.status is not None
            raise BackendRejected(f"POST {endpoint}", outcome.status, outcome.message)
        return outcome


@dataclass
class Publisher:
    sent: list[bytes] = field(default_factory=list)
    fail: int = 0

    async def publish(self, payload: bytes) -> None:
        await trio.sleep(0.001)
        if self.fail > 0:
            self.fail -= 1
            raise PublishError("nats: connection closed")
        self.sent.append(payload)


def _start(job_id: int, st: int = 100) -> QueueStart:
    body = StartJob(
        job_id=job_id,
        cluster="c1",
        user="u",
        project="p",
        num_nodes=1,
        resources=[Resource(hostname="n1", hwthreads=[0])],
        start_time=st,
        shared="none",
    )
    return QueueStart(JobKey("c1", job_id, st), body, "batch", True)


def _stop(job_id: int, st: int = 100) -> QueueStop:
    body = StopJob(
        job_id=job_id, cluster="c1", job_state="completed", stop_time=st + 50, start_time=st
    )
    return QueueStop(JobKey("c1", job_id, st), body, "batch")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "s.sqlite3")
    yield s
    s.close()


def encode_nats(row: OutboxRow) -> bytes:
    return f"{row.kind}:{row.key.job_id}".encode()


async def drain(d: Delivery, timeout: float = 3600) -> bool:
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        with trio.move_on_after(timeout) as scope:
            await d.wait_empty()
        nursery.cancel_scope.cancel()
    return not scope.cancelled_caught


def make(store: Store, backend: Backend | None, **kw: object) -> Delivery:
    kw.setdefault("backoff", Backoff(base=1.0, cap=60.0, rng=random.Random(1)))
    return Delivery(store, client=backend, now=lambda: 1_700_000_000.0, **kw)  # type: ignore[arg-type]


def _order_ok(calls: list[tuple[str, int, float]]) -> None:
    first_start: dict[int, int] = {}
    for i, (what, jid, _) in enumerate(calls):
        if what == "start":
            first_start.setdefault(jid, i)
        else:
            assert jid in first_start, f"stop of job {jid} before its start"


async def test_every_job_started_and_stopped_once_in_order(
    store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    store.apply(
        "c1",
        [a for j in range(1, 41) for a in (_start(j), _stop(j))],
        now=1.0,
        rest=True,
        nats=False,
    )
    backend = Backend()
    d = make(store, backend)
    assert await drain(d)
    assert backend.stopped == {(j, 100) for j in range(1, 41)}
    assert not backend.running
    assert len(backend.calls) == 80  # exactly once each
    _order_ok(backend.calls)
    assert d.stats.starts_delivered == 40
    assert d.stats.stops_delivered == 40
    assert store.job(JobKey("c1", 7, 100)).phase == "stopped"


async def test_one_rejected_job_in_a_thousand_does_not_block_the_rest(
    store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    # Upstream aborts the whole batch at the first 400 and re-polls the same window forever.
    store.apply(
        "c1",
        [a for j in range(1000) for a in (_start(j), _stop(j))],
        now=1.0,
        rest=True,
        nats=False,
    )
    backend = Backend(reject={500: (400, "no subcluster found for cluster c1 and host x9")})
    d = make(store, backend)
    assert await drain(d)
    assert len(backend.stopped) == 999
    assert (500, 100) not in backend.stopped
    assert [c for c in backend.calls if c[1] == 500] == [
        c for c in backend.calls if c[1] == 500 and c[0] == "start"
    ]
    assert d.stats.rejections[400] == 1
    parked = store.parked()
    assert {p.row.kind for p in parked} == {"start", "stop"}
    (p_start,) = [p for p in parked if p.row.kind == "start"]
    assert p_start.status == 400
    assert "no subcluster" in p_start.reason
    # operator fixes cluster.json and re-drives: start then stop arrive
    backend.reject.clear()
    store.re_drive()
    assert await drain(make(store, backend))
    assert (500, 100) in backend.stopped
    _order_ok(backend.calls)


async def test_stop_answered_404_is_done(
    store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    # a stop of a job cc-backend does not have (deleted, DB reset): upstream retries forever
    store.apply("c1", [_stop(5), _start(6), _stop(6)], now=1.0, rest=True, nats=False)
    backend = Backend()
    d = make(store, backend)
    assert await drain(d)
    assert d.stats.stops_done == 1
    assert d.stats.stops_delivered == 1
    assert store.parked_count() == 0
    assert store.job(JobKey("c1", 5, 100)).phase == "stopped"


async def test_duplicate_start_422_is_done_and_not_published(
    store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    store.apply("c1", [_start(1), _start(2)], now=1.0, rest=True, nats=True)
    backend = Backend(running={(1, 100)})
    pub = Publisher()
    d = make(store, backend, publisher=pub, nats_encode=encode_nats)
    assert await drain(d)
    assert d.stats.starts_done == 1
    assert d.stats.starts_delivered == 1
    assert pub.sent == [b"start:2"]  # with REST on: NATS only after 201/200


async def test_transient_500_retried_with_backoff(
    store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    # cc-backend answers 500 for a duplicate start while the job sits in job_cache
    store.apply("c1", [_start(1), _stop(1), _start(2)], now=1.0, rest=True, nats=False)
    backend = Backend(flaky={1: 3})
    d = make(store, backend)
    t0 = trio.current_time()
    assert await drain(d)
    times = [t for what, jid, t in backend.calls if jid == 1 and what == "start"]
    assert len(times) == 4
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(g >= 0.5 for g in gaps)
    assert gaps[2] > gaps[0]
    # job 2 was not held up by job 1's retries
    first_2 = next(t for what, jid, t in backend.calls if jid == 2)
    assert first_2 - t0 < 1
    assert [w for w, jid, _ in backend.calls if jid == 1][-1] == "stop"
    assert d.stats.transient_failures == 3


async def test_a_job_failing_for_an_hour_is_counted_shown_and_warned_once(
    store: Store, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 17 item 8: the same 5xx for one job for hours retried forever, invisibly. Now
    its attempts are counted on its row, it is the oldest waiting row (what status and the
    metrics show, with its last answer), and one WARNING names it after an hour."""
    t0 = 1_700_000_000.0
    store.apply("c1", [_start(1), _stop(1), _start(2), _stop(2)], now=t0, rest=True, nats=False)
    backend = Backend(flaky={1: 10**6})  # cc-backend answers 500 to job 1, for hours
    d = make(store, backend)
    d.now = lambda: t0 + trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        await trio.sleep(2 * 3600)
        nursery.cancel_scope.cancel()
    (oldest,) = store.outbox_rows(limit=1)
    assert (oldest.key.job_id, oldest.kind) == (1, "start")
    assert oldest.attempts == d.stats.transient_failures >= 10
    assert oldest.last_error == "500: insert into database failed"
    assert [r.key.job_id for r in store.outbox_rows()] == [1, 1]  # job 2 went on
    warned = [r.getMessage() for r in caplog.records if "has waited" in r.getMessage()]
    assert len(warned) == 1
    assert "start_job of job 1 on c1 has waited 6" in warned[0]  # 60-odd minutes
    assert "insert into database failed" in warned[0]


async def test_down_backend_is_not_hammered(
    store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    store.apply("c1", [_start(j) for j in range(200)], now=1.0, rest=True, nats=False)
    backend = Backend(down_until=trio.current_time() + 600)
    d = make(store, backend)
    assert await drain(d)
    during = [c for c in backend.calls if c[2] < backend.down_until]
    assert len(during) < 30  # probes, not 200 rows x every retry
    assert len(backend.running) == 200


async def test_nats_failure_keeps_row_and_blocks_stop_until_published(
    store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    store.apply("c1", [_start(1), _stop(1)], now=1.0, rest=True, nats=True)
    backend = Backend()
    pub = Publisher(fail=3)
    d = make(store, backend, publisher=pub, nats_encode=encode_nats)
    assert await drain(d)
    assert pub.sent == [b"start:1", b"stop:1"]  # nothing dropped, start's event first
    assert d.stats.nats_failures == 3
    assert [w for w, _, _ in backend.calls] == ["start", "stop"]


async def test_rest_off_publishes_everything(
    store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    store.apply("c1", [_start(1), _stop(1)], now=1.0, rest=False, nats=True)
    pub = Publisher()
    d = make(store, None, publisher=pub, nats_encode=encode_nats)
    assert await drain(d)
    assert pub.sent == [b"start:1", b"stop:1"]


async def test_dry_run_prints_json_lines_and_sends_nothing(
    store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    store.apply("c1", [_start(1), _stop(1)], now=1.0, rest=True, nats=False)
    backend = Backend()
    out = io.StringIO()
    d = make(store, backend, dry_run=True, out=out)
    assert await drain(d)
    assert backend.calls == []
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [x["kind"] for x in lines] == ["start_job", "stop_job"]
    assert lines[0]["body"]["jobId"] == 1
    assert lines[0]["body"]["resources"][0]["hwthreads"] == [0]


async def test_cancelled_mid_delivery_loses_nothing(
    store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    store.apply(
        "c1", [a for j in range(100) for a in (_start(j), _stop(j))], now=1.0, rest=True, nats=False
    )
    backend = Backend()
    assert not await drain(make(store, backend), timeout=0.05)
    assert 0 < store.outbox_depth() < 200
    assert await drain(make(store, backend))  # "restart"
    assert len(backend.stopped) == 100


def test_backoff_is_capped_and_jittered() -> None:
    b = Backoff(base=1.0, cap=30.0, rng=random.Random(7))
    delays: Callable[[int], list[float]] = lambda n: [b.delay(n) for _ in range(200)]  # noqa: E731
    assert all(0.5 <= x <= 1.0 for x in delays(1))
    assert all(4.0 <= x <= 8.0 for x in delays(4))
    assert all(15.0 <= x <= 30.0 for x in delays(50))
    assert len(set(delays(3))) > 100


@asynccontextmanager
async def delivering_backlog(store: Store) -> AsyncIterator[tuple[Delivery, Backend]]:
    """2,000 starts queued and being delivered; on exit, waits until the outbox is empty."""
    store.apply("c1", [_start(j) for j in range(2000)], now=1.0, rest=True, nats=False)
    backend = Backend()
    d = make(store, backend)
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        await trio.sleep(0.2)
        yield d, backend
        await d.wait_empty()
        nursery.cancel_scope.cancel()


async def test_fresh_row_is_not_queued_behind_the_backlog(
    store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    async with delivering_backlog(store) as (d, backend):
        store.apply("c1", [_start(99_999)], now=2.0, rest=True, nats=False)  # a hook's start
        d.wake()
    order = [jid for what, jid, _ in backend.calls]
    assert len(order) == 2001
    # picked up at the next batch boundary, not after the 2000 older rows
    assert order.index(99_999) < 600


async def test_fresh_row_is_not_queued_behind_sub_windows_committed_meanwhile(
    store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    """A long poll commits its sub-windows while the backlog is being delivered: a hook's
    start queued after such a sub-window still goes out within a batch or two."""
    store.apply("c1", [_start(j) for j in range(2000)], now=1.0, rest=True, nats=False)
    backend = Backend()
    d = make(store, backend)
    reads: list[int] = []
    eligible = store.eligible

    def counted(
        after_id: int, limit: int, upto: int | None = None, *, newest_first: bool = False
    ) -> list[OutboxRow]:
        rows = eligible(after_id, limit, upto, newest_first=newest_first)
        reads.append(len(rows))
        return rows

    store.eligible = counted  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        await trio.sleep(0.2)
        sub_window = [_start(j) for j in range(10_000, 12_000)]
        store.apply("c1", sub_window, now=2.0, rest=True, nats=False)
        d.wake()
        await trio.sleep(0.1)
        store.apply("c1", [_start(99_999)], now=3.0, rest=True, nats=False)  # a hook's start
        d.wake()
        await d.wait_empty()
        nursery.cancel_scope.cancel()
    order = [jid for what, jid, _ in backend.calls]
    assert sorted(order) == [*range(2000), *range(10_000, 12_000), 99_999]  # each once
    before_hook = order[: order.index(99_999)]
    assert sum(1 for j in before_hook if j >= 10_000) < 600  # not behind the sub-window
    assert max(reads) <= 256  # the outbox is read in batches, never whole


async def test_hurried_jobs_go_before_a_sub_window_committed_right_after_them(
    store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    """A hook lookup commits its rows, and a poll commits a backlog's sub-window right after
    (the poll's Slurm calls waited for the lookup): the sub-window's rows are newer, so only
    `hurry` keeps the hooked job from waiting behind them. Its stop follows its start at once."""
    async with delivering_backlog(store) as (d, backend):
        store.apply("c1", [_start(99_999), _stop(99_999)], now=2.0, rest=True, nats=False)
        sub_window = [_start(j) for j in range(10_000, 12_000)]
        store.apply("c1", sub_window, now=2.0, rest=True, nats=False)  # no checkpoint between
        d.hurry("c1", [99_999])
        before = len(backend.calls)
    calls = [(what, jid) for what, jid, _ in backend.calls]
    assert len(calls) == 4002
    assert len(set(calls)) == 4002
    start, stop = calls.index(("start", 99_999)), calls.index(("stop", 99_999))
    assert start - before < 20  # not behind 2,000 newer rows, nor behind a batch of 256
    assert start < stop < start + 20  # the stop was waiting for its start, then hurried too
    _order_ok(backend.calls)
