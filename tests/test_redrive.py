"""`cc-slurm-adapter redrive` end to end: a running daemon parks a rejected job; the operator
fixes cc-backend and re-drives it from another process (the real CLI, on the shared SQLite state);
the running daemon delivers it, start before stop, without any further poke."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from standin_helpers import serving

from ccsa.ccbackend.client import BackendClient
from ccsa.ccbackend.models import Resource, StartJob, StopJob
from ccsa.config import load
from ccsa.daemon.delivery import Delivery
from ccsa.daemon.plan import Action, JobKey, QueueStart, QueueStop
from ccsa.daemon.store import Store
from ccsa.daemon.supervisor import Daemon, main
from ccsa.redrive import list_parked
from ccsa.sim.ccbackend.clusters import minimal
from ccsa.sim.ccbackend.server import StandIn
from ccsa.sim.ccbackend.state import Backend
from ccsa.sim.slurm import JobSpec, SimCluster

T0 = 1_700_000_000.0


async def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "ccsa", *args], capture_stdout=True, capture_stderr=True, check=False
    )


def write_config(tmp: Path, sock: Path, url: str, sim: SimCluster) -> str:
    path = tmp / "config.json"
    raw = {
        "ccRestUrl": url,
        "ccRestJwt": "test-jwt",
        "pidFilePath": str(tmp / "run" / "daemon.pid"),
        "prepSockListenPath": str(sock),
        "prepSockConnectPath": str(sock),
        "lastRunPath": str(tmp / "lib" / "lastrun"),
        "slurmBinDir": str(sim.bin_dir),
        "slurmPollInterval": 1,
        "slurmQueryDelay": 1,
    }
    path.write_text(json.dumps(raw))
    path.chmod(0o600)
    return str(path)


async def test_redrive_while_the_daemon_runs(tmp_path: Path, short_dir: Path) -> None:
    sim = SimCluster.create(tmp_path / "sim", clusters=("c1",), start=T0)
    ids = sim.submit_many(
        [JobSpec(user="alice", submit=T0 - 3000 + 10 * i, duration=60) for i in range(4)]
    )
    bad = ids[1]
    backend = Backend({"c1": minimal("c1")}, clock=lambda: sim.now)
    standin = StandIn(backend)
    standin.faults.rule("start_job", job_id=bad, status=400, message="no subcluster found")
    async with trio.open_nursery() as nursery:
        await nursery.start(standin.serve)
        conf = write_config(tmp_path, short_dir / "d.sock", standin.url, sim)
        cfg = load(conf)
        d: Daemon = await nursery.start(
            lambda task_status: main(cfg, now=lambda: sim.now, task_status=task_status)
        )
        with trio.fail_after(60):
            while d.store.parked_count() < 2 or d.store.outbox_depth():
                await trio.sleep(0.05)
        listing = await cli("redrive", "-config", conf)
        assert listing.returncode == 0, listing.stderr.decode()
        rows = [line.split() for line in listing.stdout.decode().splitlines()[1:]]
        start_row = next(r for r in rows if r[2] == str(bad) and r[3] == "start")
        assert start_row[4] == "400"
        assert "no subcluster found" in listing.stdout.decode()
        assert not any(e.job_id == bad and e.status == 201 for e in backend.events)

        standin.faults.clear()  # the operator fixed cc-backend's cluster.json
        done = await cli("redrive", "--id", start_row[0], "-config", conf)
        out = done.stdout.decode()
        assert done.returncode == 0, done.stderr.decode()
        assert out.startswith("2 row(s) moved back to the outbox")  # the start took its stop
        assert re.search(r"the running daemon \(pid \d+\) sends them after its next poll", out)
        with trio.fail_after(60):
            while not backend.check_exactly_once([("c1", i) for i in ids]).ok:
                await trio.sleep(0.05)
        assert d.store.parked_count() == 0

        unknown = await cli("redrive", "--id", "999999", "-config", conf)
        assert unknown.returncode == 1
        assert "no parked row with id 999999" in unknown.stderr.decode()
        both = await cli("redrive", "--id", "1", "--all", "-config", conf)
        assert both.returncode == 2
        nursery.cancel_scope.cancel()
    events = [(e.kind, e.status) for e in backend.events if e.job_id == bad]
    assert events == [("start", 201), ("stop", 200)]
    seen = [
        (r.endpoint, r.status)
        for r in standin.request_log
        if r.endpoint in ("start_job", "stop_job") and json.loads(r.body)["jobId"] == bad
    ]
    assert seen == [("start_job", 400), ("start_job", 201), ("stop_job", 200)]


async def test_redrive_all_without_daemon_and_missing_db(tmp_path: Path, short_dir: Path) -> None:
    from ccsa.ccbackend.models import Resource, StartJob
    from ccsa.daemon.plan import JobKey, QueueStart
    from ccsa.daemon.store import Store

    sim = SimCluster.create(tmp_path / "sim", clusters=("c1",), start=T0)
    conf = write_config(tmp_path, short_dir / "d.sock", "http://127.0.0.1:9", sim)
    missing = await cli("redrive", "--all", "-config", conf)
    assert missing.returncode == 1
    assert "state database" in missing.stderr.decode()
    assert "does not exist" in missing.stderr.decode()
    assert missing.stderr.decode().count("\n") == 1

    db = load(conf).state_db_path
    with Store.open(db) as store:
        body = StartJob(
            job_id=5, cluster="c1", partition="main", project="p", user="u", num_nodes=1,
            num_hwthreads=1, num_acc=0, shared="none", walltime=60, start_time=int(T0),
            resources=[Resource(hostname="ccn001")],
        )  # fmt: skip
        key = JobKey("c1", 5, int(T0))
        store.apply("c1", [QueueStart(key, body, "main", True)], now=T0, rest=True, nats=False)
        (row,) = store.outbox_rows()
        store.park(row, 400, "bad", now=T0)
    done = await cli("redrive", "--all", "-config", conf)
    assert done.returncode == 0, done.stderr.decode()
    assert "the daemon is not running: they are sent when it starts" in done.stdout.decode()
    with Store.open(db) as store:
        assert [r.key.job_id for r in store.outbox_rows()] == [5]
        assert store.parked_count() == 0
    empty = await cli("redrive", "--list", "-config", conf)
    assert empty.stdout.decode() == "no parked rejections\n"


def _run(job_id: int, start: int, stop: int) -> list[Action]:
    key = JobKey("test", job_id, start)
    body = StartJob(
        job_id=job_id,
        cluster="test",
        user="alice",
        project="p",
        num_nodes=1,
        resources=[Resource(hostname="c001", hwthreads=[0, 1])],
        start_time=start,
        shared="none",
    )
    end = StopJob(
        job_id=job_id, cluster="test", job_state="cancelled", stop_time=stop, start_time=start
    )
    return [QueueStart(key, body, "batch", True), QueueStop(key, end, "batch")]


async def _deliver(store: Store, standin: StandIn) -> Delivery:
    async with BackendClient(standin.url, "token-for-a-standin-without-auth") as client:
        delivery = Delivery(store, client=client, now=lambda: T0 + 5000)
        async with trio.open_nursery() as nursery:
            await nursery.start(delivery.run)
            with trio.fail_after(60):
                await delivery.wait_empty()
            nursery.cancel_scope.cancel()
    return delivery


async def test_a_refused_rerun_is_counted_warned_and_listed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 18 item 1: cc-backend v1.5.4 answers 422 to a start of a job id it has from a run
    that started less than 86,400 s before (internal/api/job.go startJob; the stand-in does the
    same). The second run of a requeued job is then missing from cc-backend: ccsa counts it,
    warns once naming both runs, and parks it with its stop so ``redrive --list`` shows it.
    A start delivered twice (same startTime) is the ordinary 422: done, not a refusal."""
    t = int(T0)
    store = Store.open(tmp_path / "state.sqlite3")
    async with serving() as standin:
        store.apply("test", _run(7, t, t + 300) + _run(8, t, t + 50), now=T0, rest=True, nats=False)
        first = await _deliver(store, standin)
        assert first.stats.starts_delivered == 2
        # job 7 is requeued and runs again 10 min later; job 8's start is sent once more (the
        # stuck-job checker's resend after a lost answer)
        rerun = _run(7, t + 600, t + 900)
        again = QueueStart(JobKey("test", 8, t), _run(8, t, t + 50)[0].body, "batch", True, True)
        store.apply("test", [*rerun, again], now=T0, rest=True, nats=False)
        second = await _deliver(store, standin)
    assert second.stats.refused_reruns == 1
    assert second.stats.starts_done == 1  # job 8: the ordinary 422 of a start sent twice
    assert [s.status for s in standin.requests("start_job")][-2:] == [422, 422]
    warned = [r.getMessage() for r in caplog.records if "refused run" in r.getMessage()]
    assert len(warned) == 1
    assert f"refused run {t + 600} of job 7" in warned[0]
    assert f"it has run {t} of that job id" in warned[0]
    parked = store.parked()
    assert {(p.row.key.job_id, p.row.kind, p.status) for p in parked} == {
        (7, "start", 422),
        (7, "stop", None),
    }
    out = io.StringIO()
    list_parked(parked, out)
    listed = out.getvalue()
    assert "refused run" in listed
    assert "86400 s" in listed
    assert "internal/api/job.go" in listed
    store.close()
