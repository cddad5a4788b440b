"""REST and NATS are separate channels: an outage of one never holds back the other (#17).

Real components only: the stand-in cc-backend on a loopback port, a real ``nats-server``
(tests/nats_server.py) that is down, then started, and the daemon's own ``Delivery``, ``Store``,
``BackendClient`` and ``Publisher``. The production event (issue 17 item 1): with REST on (the
default) and NATS configured, NATS down or its credentials revoked for hours kept every stop
from cc-backend, because the stop waited for its start's NATS publish. Stop-after-start is a
rule *per channel*: a stop is POSTed once its start is POSTed, published once its start is
published.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from nats_server import PASSWORD, NatsServer
from standin_helpers import T0, serving
from test_natspub import SUBJECT, Subscriber

from ccsa.ccbackend.client import BackendClient
from ccsa.ccbackend.models import Resource, StartJob, StopJob
from ccsa.daemon.delivery import Backoff, Delivery
from ccsa.daemon.pipeline import nats_encoder
from ccsa.daemon.plan import Action, JobKey, QueueStart, QueueStop
from ccsa.daemon.store import Store
from ccsa.natsbus.lineproto import decode
from ccsa.natsbus.publisher import Publisher
from ccsa.sim.ccbackend.server import StandIn

JOBS = 20
#: the NATS password ccsa was given; the server still has the old one (revoked)
ROTATED = "rotated pass"


def start_stop(job_id: int) -> list[Action]:
    key = JobKey("test", job_id, T0)
    start = StartJob(
        job_id=job_id,
        cluster="test",
        user="alice",
        project="p",
        num_nodes=1,
        resources=[Resource(hostname="c001", hwthreads=[0, 1])],
        start_time=T0,
        shared="none",
    )
    stop = StopJob(
        job_id=job_id, cluster="test", job_state="completed", stop_time=T0 + 60, start_time=T0
    )
    return [QueueStart(key, start, "batch", True), QueueStop(key, stop, "batch")]


async def wait_for(cond: Callable[[], bool], timeout: float = 60.0) -> None:
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.05)


@asynccontextmanager
async def delivering(store: Store, standin: StandIn, nats: NatsServer) -> AsyncIterator[Delivery]:
    async with (
        BackendClient(standin.url, "token-for-a-standin-without-auth") as client,
        Publisher(
            nats.url,
            subject=SUBJECT,
            user=nats.user,
            password=ROTATED if nats.user else None,
            reconnect_wait=0.1,
        ) as publisher,
        trio.open_nursery() as nursery,
    ):
        delivery = Delivery(
            store,
            client=client,
            publisher=publisher,
            nats_encode=nats_encoder("ctl"),
            now=lambda: T0 + 100.0,
            backoff=Backoff(base=0.1, cap=1.0),
        )
        await nursery.start(delivery.run)
        yield delivery
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("fault", ["down", "revoked"])
async def test_nats_outage_never_holds_back_rest_stops(tmp_path: Path, fault: str) -> None:
    """NATS down, or up but refusing ccsa's credentials (the server still has the old password
    while ccsa was given the rotated one): every stop is POSTed meanwhile; once NATS takes
    ccsa again every event is published, each start before its stop."""
    nats = NatsServer(tmp_path, "user" if fault == "revoked" else "plain")
    if fault == "revoked":
        await trio.to_thread.run_sync(nats.start)
    store = Store.open(tmp_path / "state.sqlite3")
    actions = [a for job_id in range(1, JOBS + 1) for a in start_stop(job_id)]
    store.apply("test", actions, now=T0, rest=True, nats=True)
    async with serving() as standin, delivering(store, standin, nats) as delivery:
        # Every stop reaches cc-backend while NATS does not take ccsa ...
        await wait_for(lambda: delivery.stats.stops_delivered == JOBS)
        assert [r.status for r in standin.requests("stop_job")] == [200] * JOBS
        # ... and every row still owes its NATS publish (nothing dropped).
        rows = store.outbox_rows()
        assert len(rows) == 2 * JOBS
        assert all(r.nats_pending and not r.rest_pending for r in rows)
        assert delivery.channels()["nats"].problem is not None
        # NATS takes ccsa again: every event is published, each job's start before its stop.
        if fault == "revoked":
            await trio.to_thread.run_sync(nats.stop)
            text = nats.config_file.read_text()
            nats.config_file.write_text(text.replace(json.dumps(PASSWORD), json.dumps(ROTATED)))
            nats.password = ROTATED
        await trio.to_thread.run_sync(nats.start)
        try:
            with Subscriber(nats.url, **nats.client_options()) as sub:
                await wait_for(lambda: store.outbox_empty())
                messages = await sub.wait_for(2 * JOBS)
        finally:
            nats.stop()
    store.close()
    events = [e for m in messages for e in decode(m)]
    order = [(e.function, json.loads(e.event)["jobId"]) for e in events]
    assert len(order) == 2 * JOBS
    for job_id in range(1, JOBS + 1):
        assert order.index(("start_job", job_id)) < order.index(("stop_job", job_id))


@asynccontextmanager
async def rest_delivery(store: Store, standin: StandIn) -> AsyncIterator[Delivery]:
    async with (
        BackendClient(standin.url, "token-for-a-standin-without-auth") as client,
        trio.open_nursery() as nursery,
    ):
        delivery = Delivery(
            store, client=client, now=lambda: T0 + 100.0, backoff=Backoff(base=0.05, cap=0.5)
        )
        await nursery.start(delivery.run)
        yield delivery
        nursery.cancel_scope.cancel()


def queue_jobs(store: Store, jobs: int = JOBS) -> None:
    actions = [a for job_id in range(1, jobs + 1) for a in start_stop(job_id)]
    store.apply("test", actions, now=T0, rest=True, nats=False)


async def test_a_window_of_401_pauses_rest_and_parks_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 17 item 2: an expired token (or a restarted auth proxy) answers 401 to everything
    for a while. That is about the token, not the jobs: nothing is parked, the channel pauses
    and retries with backoff, one ERROR names the fix, and everything is delivered once the
    token works again (before: 20 of 20 starts parked until someone ran redrive)."""
    store = Store.open(tmp_path / "state.sqlite3")
    queue_jobs(store)
    async with serving() as standin:
        # cc-backend's auth middleware answer (docs/ccbackend.md §1.3).
        standin.faults.rule("*", status=401, message="token is expired")
        async with rest_delivery(store, standin) as delivery:
            await wait_for(lambda: delivery.channels()["rest"].blocked_answers >= 5)
            rest = delivery.channels()["rest"]
            assert rest.problem is not None
            assert "401 Unauthorized: token is expired" in rest.problem
            assert rest.blocked_answers >= 5
            assert store.parked_count() == 0
            standin.faults.clear()  # the token works again
            await wait_for(store.outbox_empty)
            assert delivery.channels()["rest"].problem is None
        assert store.parked_count() == 0
        stops = [r for r in standin.requests("stop_job") if r.status == 200]
        assert len(stops) == JOBS
        assert delivery.stats.blocked_answers["401"] >= 5
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1, [e.getMessage() for e in errors]  # once per few min, not per row
    assert "ccRestJwt" in errors[0].getMessage()
    assert "check" in errors[0].getMessage()
    store.close()


async def test_a_proxy_page_pauses_rest_and_a_stop_404_needs_cc_backend_words(
    tmp_path: Path,
) -> None:
    """An HTML 502/404/413 from a reverse proxy is the proxy's problem, not the job's: the
    channel pauses and the rows wait. A stop answered 404 counts as done only when
    cc-backend's own body says the job was not found (v1.5.4 internal/api/job.go
    stopJobByRequest: "finding job failed: ..."); a proxy's 404 page is retried."""
    store = Store.open(tmp_path / "state.sqlite3")
    queue_jobs(store, 2)
    html = b"<html><body><h1>502 Bad Gateway</h1></body></html>\n"
    async with serving() as standin:
        standin.faults.script("start_job", [(502, html), (413, b"<html>Too Large</html>")])
        standin.faults.script("stop_job", [(404, b"<html>404 Not Found</html>")])
        async with rest_delivery(store, standin) as delivery:
            await wait_for(store.outbox_empty)
        assert store.parked_count() == 0
        statuses = [r.status for r in standin.requests("stop_job")]
        assert statuses[0] == 404
        assert statuses.count(200) == 2  # the proxy's 404 was not taken for "not found"
        assert delivery.stats.stops_done == 0
        assert delivery.stats.blocked_answers == {"502": 1, "413": 1, "404": 1}
        # cc-backend's own 404 to a stop of a job it does not know is done.
        store.apply("test", [start_stop(99)[1]], now=T0, rest=True, nats=False)
        async with rest_delivery(store, standin) as delivery:
            await wait_for(store.outbox_empty)
        assert standin.requests("stop_job")[-1].status == 404
        assert delivery.stats.stops_done == 1
    store.close()
