"""The stand-in cc-backend accepts and rejects exactly what docs/ccbackend.md says v1.5.4 does.

Model rules are table-driven against ``Backend`` (no sockets); routing, auth, headers and faults
run over real HTTP on loopback. Expected texts are copied from the spec, not from the code.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from functools import partial
from pathlib import Path
from subprocess import PIPE
from typing import Any

import httpx
import jwt as pyjwt
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from standin_helpers import (
    T0,
    FakeClock,
    example_clusters,
    generated_clusters,
    raw,
    serving,
    start_body,
    stop_body,
)

from ccsa.errors import ConfigError
from ccsa.sim.ccbackend import clusters
from ccsa.sim.ccbackend.__main__ import main as cli_main
from ccsa.sim.ccbackend.auth import AuthConfig
from ccsa.sim.ccbackend.state import Backend, Reply

SPEC_400 = "Bad Request"


def err(reply: Reply) -> tuple[int, str | None]:
    return reply.status, reply.error


@pytest.fixture
def spec_dir(shared: Path) -> Path:
    return shared / "spec" / "cc-backend"


@pytest.fixture
def example(shared: Path) -> Backend:
    return Backend(example_clusters(shared), clock=FakeClock(1_649_800_000))


# --------------------------------------------------------------------------- cluster configs


def test_example_cluster_configs_load_and_assign(shared: Path) -> None:
    cfg = example_clusters(shared)
    assert set(cfg) == {"alex", "fritz"}
    assert cfg["fritz"].assign("f0726").name == "main"  # type: ignore[union-attr]
    assert cfg["fritz"].assign("f2160").name == "spr1tb"  # type: ignore[union-attr]
    assert cfg["fritz"].assign("f2189") is None
    assert cfg["alex"].assign("a0905").name == "a100"  # type: ignore[union-attr]
    assert cfg["alex"].assign("a0831").name == "a100m80"  # type: ignore[union-attr]
    assert cfg["alex"].assign("a0832") is None
    assert "00000000:0E:00.0" in cfg["alex"].sub_cluster("a100").accelerators  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("expr", "inside", "outside"),
    [
        ("n[1-10]", ["n1", "n10", "n5"], ["n0", "n11", "n01", "m1"]),
        ("n[001-010]", ["n001", "n010"], ["n1", "n011", "n0010"]),
        ("a[01-02]b[1-2],c", ["a01b1", "a02b2", "c"], ["a01b3", "cc", "a01"]),
        ("big[0-999999]", ["big123456", "big0"], ["big1000000"]),
    ],
)
def test_hostlist_membership(expr: str, inside: list[str], outside: list[str]) -> None:
    hosts = clusters.HostList.parse(expr)
    assert all(h in hosts for h in inside)
    assert not any(h in hosts for h in outside)


def test_bad_cluster_config_names_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "x.cluster.json"
    bad.write_text('{"name": "x", "subClusters": [{"name": "a", "nodes": "n[5-1]"}]}')
    with pytest.raises(ConfigError) as info:
        clusters.load([tmp_path])
    assert str(bad) in str(info.value)
    assert "subClusters[0].nodes" in str(info.value)


# --------------------------------------------------------------------------- start_job


def test_spec_payloads_accepted(example: Backend, spec_dir: Path) -> None:
    start = (spec_dir / "startJobPayload.json").read_bytes()
    stop = (spec_dir / "stopJobPayload.json").read_bytes()
    assert example.start_job(start) == Reply(201, b'{"msg":"success"}\n')
    reply = example.stop_job(stop)
    assert reply.status == 200
    job = json.loads(reply.body)
    assert job["jobState"] == "completed"
    assert job["duration"] == 1649763839 - 1649723812
    assert job["subCluster"] == "main"
    assert "submitTime" not in job
    assert "requestedMemory" not in job


def _spec_start(spec_dir: Path, **over: Any) -> bytes:
    body = json.loads((spec_dir / "startJobPayload.json").read_bytes())
    for key, value in over.items():
        if value is ...:
            body.pop(key, None)
        else:
            body[key] = value
    return json.dumps(body).encode()


START_CASES: list[tuple[str, dict[str, Any], int, str | None]] = [
    ("unknown field", {"foo": 1}, 400, 'parsing request body failed: json: unknown field "foo"'),
    (
        "v1.4 exclusive",
        {"exclusive": 1},
        400,
        'parsing request body failed: json: unknown field "exclusive"',
    ),
    (
        "string for int",
        {"jobId": "7"},
        400,
        "parsing request body failed: json: cannot unmarshal string into Go struct field "
        "Job.jobId of type int64",
    ),
    (
        "float for int",
        {"numNodes": 1.0},
        400,
        "parsing request body failed: json: cannot unmarshal number 1.0 into Go struct field "
        "Job.numNodes of type int32",
    ),
    ("no such cluster", {"cluster": "nope"}, 400, "no such cluster: nope"),
    (
        "unknown subcluster",
        {"subCluster": "gpu"},
        400,
        "ARCHIVE/CLUSTERCONFIG > already assigned subcluster gpu unkown (cluster: fritz)",
    ),
    (
        "no resources to assign",
        {"subCluster": "", "resources": []},
        400,
        "ARCHIVE/CLUSTERCONFIG > job without any resources/hosts",
    ),
    (
        "host in no subcluster",
        {"subCluster": "", "resources": [{"hostname": "x1"}]},
        400,
        "ARCHIVE/CLUSTERCONFIG > no subcluster found for cluster fritz and host x1",
    ),
    ("empty user", {"user": ""}, 400, "'resources' and 'user' should not be empty"),
    (
        "given subcluster, no resources",
        {"resources": []},
        400,
        "'resources' and 'user' should not be empty",
    ),
    ("numNodes 0", {"numNodes": 0}, 400, "'numNodes', 'numAcc' or 'numHWThreads' invalid"),
    ("numAcc -1", {"numAcc": -1}, 400, "'numNodes', 'numAcc' or 'numHWThreads' invalid"),
    (
        "numHwthreads -1",
        {"numHwthreads": -1},
        400,
        "'numNodes', 'numAcc' or 'numHWThreads' invalid",
    ),
    ("numNodes mismatch", {"numNodes": 2}, 400, "len(resources) does not equal numNodes (1 vs 2)"),
    ("any jobState", {"jobState": "whatever"}, 201, None),
    ("null leaves default", {"numHwthreads": None, "metaData": None}, 201, None),
    (
        "server-computed keys",
        {
            "id": 9,
            "energy": 0,
            "footprint": None,
            "statistics": None,
            "concurrentJobs": {"items": None, "count": 0},
        },
        201,
        None,
    ),
    ("derived subcluster", {"subCluster": "", "resources": [{"hostname": "f2160"}]}, 201, None),
    ("jobId 0 accepted", {"jobId": 0}, 201, None),
    ("shared defaults to none", {"shared": ...}, 201, None),
]


@pytest.mark.parametrize(
    ("over", "status", "error"),
    [pytest.param(o, s, e, id=name) for name, o, s, e in START_CASES],
)
def test_start_job_table(
    example: Backend, spec_dir: Path, over: dict[str, Any], status: int, error: str | None
) -> None:
    assert err(example.start_job(_spec_start(spec_dir, **over))) == (status, error)
    stored = [j for j in example.jobs if j.cluster == "fritz"]
    assert len(stored) == (1 if status == 201 else 0)
    if stored:
        assert stored[0].state == "running"
        assert stored[0].shared == "none"
        assert stored[0].monitoring_status == 1


@pytest.mark.parametrize(
    ("over", "fragment"),
    [
        ({"shared": "exclusive"}, "CHECK constraint failed: shared"),
        ({"monitoringStatus": 4}, "CHECK constraint failed: monitoring_status"),
        ({"smt": 2}, "CHECK constraint failed: smt"),
    ],
)
def test_db_constraints_give_500(
    example: Backend, spec_dir: Path, over: dict[str, Any], fragment: str
) -> None:
    reply = example.start_job(_spec_start(spec_dir, **over))
    assert reply.status == 500
    assert reply.error is not None
    assert reply.error.startswith("insert into database failed: " + fragment)


def test_smt_2_with_tags_bypasses_the_cache_check(example: Backend, spec_dir: Path) -> None:
    tags = [{"type": "t", "name": "n", "scope": "global"}]
    assert example.start_job(_spec_start(spec_dir, smt=2, tags=tags)).status == 201


def test_empty_and_trailing_bodies(example: Backend, spec_dir: Path) -> None:
    assert err(example.start_job(b"")) == (400, "parsing request body failed: EOF")
    assert example.start_job(b"[1]").status == 400
    assert example.start_job(_spec_start(spec_dir) + b" trailing junk").status == 201


def test_keys_match_case_insensitively(example: Backend, spec_dir: Path) -> None:
    body = json.loads(_spec_start(spec_dir))
    body["JOBID"] = body.pop("jobId")
    assert example.start_job(json.dumps(body).encode()).status == 201
    assert example.jobs[0].job_id == 123000


def test_go_html_escaping_in_bodies(example: Backend, spec_dir: Path) -> None:
    assert example.start_job(_spec_start(spec_dir, cluster="<&>")).body == (
        b'{"status":"Bad Request","error":"no such cluster: \\u003c\\u0026\\u003e"}\n'
    )


@pytest.mark.parametrize(
    ("delta", "status"),
    [(0, 422), (86399, 422), (86400, 201), (-1, 422), (-10 * 365 * 86400, 422)],
)
def test_duplicate_window_is_signed(delta: int, status: int) -> None:
    backend = Backend(generated_clusters())
    assert backend.start_job(raw(start_body(7, T0))).status == 201
    reply = backend.start_job(raw(start_body(7, T0 + delta)))
    assert reply.status == status
    if status == 422:
        assert reply.error == (
            "a job with that jobId, cluster and startTime already exists: dbid: 1, jobid: 7"
        )


def test_duplicate_rule_is_per_cluster() -> None:
    backend = Backend(generated_clusters())
    assert backend.start_job(raw(start_body(7))).status == 201
    body = start_body(7, cluster="sub", resources=[{"hostname": "gx"}])
    assert backend.start_job(raw(body)).status == 201
    assert backend.find("sub", 7)[0].sub_cluster == "gpu"


def test_job_cache_invisible_to_get_and_duplicate_check() -> None:
    clock = FakeClock(T0 + 100)
    backend = Backend(generated_clusters(), clock=clock, commit_interval=120)
    assert backend.start_job(raw(start_body(1, T0))).status == 201
    running = [("state", "running")]
    assert json.loads(backend.get_jobs(running).body)["jobs"] == []
    # same triple while uncommitted: the cache's UNIQUE gives 500, not 422 (§6)
    same = backend.start_job(raw(start_body(1, T0)))
    assert same.status == 500
    assert same.error == (
        "insert into database failed: UNIQUE constraint failed: job_cache.job_id, "
        "job_cache.cluster, job_cache.start_time"
    )
    # a different start a few seconds later is a second row: a real duplicate
    assert backend.start_job(raw(start_body(1, T0 + 5))).status == 201
    assert [j.committed for j in backend.jobs] == [False, False]
    clock.advance(120)  # the commit worker runs
    jobs = json.loads(backend.get_jobs(running).body)["jobs"]
    assert [j["startTime"] for j in jobs] == [T0 + 5, T0]
    assert backend.start_job(raw(start_body(1, T0))).status == 422


def test_tags_bypass_the_cache_and_commit_now() -> None:
    backend = Backend(generated_clusters(), clock=FakeClock(), commit_interval=120)
    tags = [{"type": "app", "name": "x", "scope": "global"}]
    assert backend.start_job(raw(start_body(1, tags=tags))).status == 201
    assert backend.start_job(raw(start_body(2))).status == 201
    listed = json.loads(backend.get_jobs([]).body)["jobs"]
    assert [j["jobId"] for j in listed] == [1]
    assert listed[0]["tags"] == [{"type": "app", "name": "x", "scope": "global", "id": 1}]
    assert backend.commit_now() == 1
    assert len(json.loads(backend.get_jobs([]).body)["jobs"]) == 2


def test_restart_drops_or_keeps_the_cache() -> None:
    backend = Backend(generated_clusters(), clock=FakeClock(), commit_interval=120)
    backend.start_job(raw(start_body(1)))
    assert backend.restart(drop_uncommitted=False) == 0
    assert len(backend.jobs) == 1
    assert backend.restart(drop_uncommitted=True) == 1
    assert backend.jobs == []
    assert backend.stop_job(raw(stop_body(1, T0 + 10))).status == 404


# --------------------------------------------------------------------------- stop_job


@pytest.fixture
def running() -> Backend:
    backend = Backend(generated_clusters(), clock=FakeClock())
    assert backend.start_job(raw(start_body(5, T0))).status == 201
    return backend


STOP_CASES: list[tuple[str, dict[str, Any], int, str | None]] = [
    ("unknown job", {"jobId": 6}, 404, "finding job failed: sql: no rows in result set"),
    ("other cluster", {"cluster": "sub"}, 404, "finding job failed: sql: no rows in result set"),
    (
        "startTime filter",
        {"startTime": T0 + 1},
        404,
        "finding job failed: sql: no rows in result set",
    ),
    ("jobId missing", {"jobId": ...}, 400, "the field 'jobId' is required"),
    ("jobId null", {"jobId": None}, 400, "the field 'jobId' is required"),
    (
        "partition rejected",
        {"partition": "main"},
        400,
        'parsing request body failed: json: unknown field "partition"',
    ),
    (
        "stop before start",
        {"stopTime": T0 - 1},
        400,
        f"jobId 5 (id 1) on test : stopTime {T0 - 1} must be larger/equal than startTime {T0}",
    ),
    (
        "requeued invalid",
        {"jobState": "requeued"},
        400,
        'jobId 5 (id 1) on test : invalid requested job state: "requeued"',
    ),
    (
        "stopped invalid on v1.5",
        {"jobState": "stopped"},
        400,
        'jobId 5 (id 1) on test : invalid requested job state: "stopped"',
    ),
    ("stop == start ok", {"stopTime": T0}, 200, None),
    ("node_fail ok on v1.5", {"jobState": "node_fail"}, 200, None),
    ("with startTime", {"startTime": T0}, 200, None),
    ("no cluster", {"cluster": ...}, 200, None),
]


@pytest.mark.parametrize(
    ("over", "status", "error"),
    [pytest.param(o, s, e, id=name) for name, o, s, e in STOP_CASES],
)
def test_stop_job_table(
    running: Backend, over: dict[str, Any], status: int, error: str | None
) -> None:
    body = stop_body(5, T0 + 60)
    for key, value in over.items():
        if value is ...:
            body.pop(key, None)
        else:
            body[key] = value
    assert err(running.stop_job(raw(body))) == (status, error)
    assert (running.jobs[0].state == "running") == (status != 200)


def test_stop_twice_is_422_before_the_state_check(running: Backend) -> None:
    reply = running.stop_job(raw(stop_body(5, T0 + 60, jobState="")))
    assert reply.status == 200
    job = json.loads(reply.body)
    assert (job["jobState"], job["duration"], job["monitoringStatus"]) == ("completed", 60, 1)
    again = running.stop_job(raw(stop_body(5, T0 + 70, jobState="requeued")))
    assert err(again) == (
        422,
        "jobId 5 (id 1) on test : job has already been stopped (state is: completed)",
    )


def test_legacy_v14_switch() -> None:
    backend = Backend(generated_clusters(), clock=FakeClock(), legacy_v14=True)
    assert backend.stop_job(raw(stop_body(9, T0))).status == 422
    backend.start_job(raw(start_body(9)))
    assert backend.stop_job(raw(stop_body(9, T0 + 1, jobState="node_fail"))).status == 400
    assert backend.stop_job(raw(stop_body(9, T0 + 1, jobState="stopped"))).status == 200


def test_stop_prefers_the_cached_job_with_a_reused_id() -> None:
    clock = FakeClock(T0 + 200_000)
    backend = Backend(generated_clusters(), clock=clock, commit_interval=120)
    backend.start_job(raw(start_body(3, T0)))
    backend.commit_now()
    backend.stop_job(raw(stop_body(3, T0 + 100)))
    new_start = T0 + 100_000
    assert backend.start_job(raw(start_body(3, new_start))).status == 201  # > 1 day later
    reply = backend.stop_job(raw(stop_body(3, new_start + 50)))
    assert reply.status == 200  # the cache row, not the old finished job (commit 82e79b07)
    assert json.loads(reply.body)["startTime"] == new_start
    assert {j.state for j in backend.find("test", 3)} == {"completed"}


def test_delete_and_sweep_undead() -> None:
    clock = FakeClock(T0 + 10)
    backend = Backend(generated_clusters(), clock=clock)
    backend.start_job(raw(start_body(1, walltime=100)))
    backend.start_job(raw(start_body(2, walltime=100)))
    clock.advance(200)
    assert backend.sweep_undead() == 2
    assert backend.stop_job(raw(stop_body(1, T0 + 50))).status == 422
    assert backend.delete_job("test", 2) == 1
    assert backend.stop_job(raw(stop_body(2, T0 + 50))).status == 404


# --------------------------------------------------------------------------- GET /api/jobs/


@pytest.fixture
def listing() -> Backend:
    clock = FakeClock(T0 + 1000)
    backend = Backend(generated_clusters(), clock=clock)
    for i in range(6):
        body = start_body(100 + i, T0 + i, project="even" if i % 2 == 0 else "odd")
        assert backend.start_job(raw(body)).status == 201
    assert backend.stop_job(raw(stop_body(100, T0 + 500))).status == 200
    return backend


def jobs_of(backend: Backend, query: list[tuple[str, str]]) -> list[dict[str, Any]]:
    reply = backend.get_jobs(query)
    assert reply.status == 200, reply.body
    jobs: list[dict[str, Any]] = json.loads(reply.body)["jobs"]
    return jobs


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ([("foo", "1")], "invalid query parameter: foo"),
        ([("state", "stopped")], "invalid query parameter value: state"),
        ([("page", "0")], "page must be >= 1"),
        ([("items-per-page", "0")], "items-per-page must be >= 1"),
        ([("page", "x")], 'strconv.Atoi: parsing "x": invalid syntax'),
        ([("start-time", "5")], "invalid query parameter value: startTime"),
        ([("start-time", "a-5")], 'strconv.ParseInt: parsing "a": invalid syntax'),
    ],
)
def test_get_jobs_rejects(listing: Backend, query: list[tuple[str, str]], error: str) -> None:
    assert err(listing.get_jobs(query)) == (400, error)


def test_get_jobs_filters_sorting_paging(listing: Backend) -> None:
    running = jobs_of(listing, [("state", "running")])
    assert [j["jobId"] for j in running] == [105, 104, 103, 102, 101]
    assert running[0]["duration"] == 1000 - 5  # now - startTime
    both = jobs_of(listing, [("state", "running"), ("state", "completed")])
    assert len(both) == 6
    assert [j["jobId"] for j in jobs_of(listing, [("project", "odd")])] == [105, 103, 101]
    assert [j["jobId"] for j in jobs_of(listing, [("start-time", f"{T0 + 1}-{T0 + 2}")])] == [
        102,
        101,
    ]
    assert jobs_of(listing, [("cluster", "sub")]) == []
    page2 = listing.get_jobs([("items-per-page", "4"), ("page", "2")])
    body = json.loads(page2.body)
    assert (body["items"], body["page"], [j["jobId"] for j in body["jobs"]]) == (4, 2, [101, 100])
    assert json.loads(listing.get_jobs([("page", "9")]).body)["jobs"] == []
    huge = json.loads(listing.get_jobs([("items-per-page", "9999999")]).body)
    assert huge["items"] == 9999999
    assert len(huge["jobs"]) == 6


def test_with_metadata_is_presence_based(listing: Backend) -> None:
    assert all(j["metaData"] is None for j in jobs_of(listing, []))
    meta = jobs_of(listing, [("with-metadata", "false")])
    assert meta[0]["metaData"] == {"jobName": "sim", "submitTime": str(T0 + 5 - 10)}
    assert "submitTime" not in meta[0]


def test_job_json_key_order(listing: Backend) -> None:
    (job,) = [j for j in jobs_of(listing, []) if j["jobId"] == 101]
    assert list(job) == [
        "cluster", "subCluster", "partition", "project", "user", "shared", "jobState",
        "resources", "energyFootprint", "footprint", "metaData", "concurrentJobs", "energy",
        "walltime", "jobId", "duration", "monitoringStatus", "numHwthreads", "numNodes",
        "statistics", "id", "startTime",
    ]  # fmt: skip


# --------------------------------------------------------------------------- nodestate


def test_nodestate() -> None:
    backend = Backend(generated_clusters())
    body = {
        "cluster": "test",
        "nodes": [
            {"hostname": "c001", "states": ["IDLE", "DOWN"], "cpusAllocated": 0,
             "memoryAllocated": 0, "gpusAllocated": 0, "jobsRunning": 0},
            {"hostname": "c002", "states": ["mixed"], "cpusAllocated": 4},
        ],
    }  # fmt: skip
    assert backend.node_state(raw(body)) == Reply(200, b"", "")
    nodes = backend.node_states["test"]["nodes"]
    assert [n["state"] for n in nodes] == ["down", "mixed"]
    bad = backend.node_state(b'{"cluster":"test","nodes":[{"hostname":"x","state":"idle"}]}')
    assert err(bad) == (400, 'parsing request body failed: json: unknown field "state"')


# --------------------------------------------------------------------------- exactly once


def test_check_exactly_once_reports_offenders() -> None:
    backend = Backend(generated_clusters(), clock=FakeClock())
    for i in (1, 2, 3):
        backend.start_job(raw(start_body(i)))
    backend.start_job(raw(start_body(1)))  # 422, not a second start
    backend.stop_job(raw(stop_body(1, T0 + 10)))
    backend.stop_job(raw(stop_body(1, T0 + 11)))  # 422, not a second stop
    backend.stop_job(raw(stop_body(2, T0 + 10)))
    backend.start_job(raw(start_body(4, resources=[{"hostname": "c9"}])))
    backend.stop_job(raw(stop_body(4, T0 + 10)))
    report = backend.check_exactly_once([("test", 1), ("test", 2), ("test", 3), ("test", 4)],
                                        hwthreads=True)  # fmt: skip
    problems = {(o.job_id, o.problem) for o in report.offenders}
    assert problems == {
        (3, "stopped 0 times"),
        (3, "still running"),
        (4, "resources without hwthreads"),
    }
    assert (report.started_once, report.stopped_once, report.still_running) == (4, 3, 1)
    assert not report.ok
    assert "3 stopped once" in report.summary()
    ok = backend.check_exactly_once([("test", 1), ("test", 2)], allow_unexpected=True)
    assert ok.ok, ok.summary()
    assert [e.status for e in backend.events if e.job_id == 1] == [201, 422, 200, 422]


# --------------------------------------------------------------------------- HTTP surface


async def test_http_routes_and_bodies() -> None:
    async with serving() as standin, httpx.AsyncClient(base_url=standin.url) as http:
        resp = await http.post("/api/jobs/start_job/", content=raw(start_body(1)))
        assert (resp.status_code, resp.content) == (201, b'{"msg":"success"}\n')
        assert resp.headers["content-type"] == "application/json"
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["x-frame-options"] == "DENY"
        assert resp.headers["referrer-policy"] == "same-origin"
        resp = await http.put("/api/jobs/start_job/", content=b'{"foo":1}')
        assert resp.content == (
            b'{"status":"Bad Request","error":"parsing request body failed: '
            b'json: unknown field \\"foo\\""}\n'
        )
        resp = await http.post("/api/jobs/start_job", content=raw(start_body(2)))
        assert resp.status_code == 400
        assert resp.json()["error"] == (
            'integer expected in path for id: strconv.ParseInt: parsing "start_job": invalid syntax'
        )
        not_found = (
            b'{"error":"the requested endpoint does not exist","status":"Resource not found"}\n'
        )
        for path in ("/api/jobs", "/api/v1/jobs/", "/api/nodestats/"):
            resp = await http.get(path)
            assert (resp.status_code, resp.content) == (404, not_found), path
        assert (await http.get("/api/jobs/start_job/")).status_code == 405
        resp = await http.get("/api/jobs/", params={"state": "running"})
        assert [j["jobId"] for j in resp.json()["jobs"]] == [1]
        resp = await http.post("/api/jobs/stop_job/", content=raw(stop_body(1, T0 + 5)))
        assert resp.status_code == 200
        assert resp.json()["jobState"] == "completed"
        resp = await http.post("/api/nodestate/", content=b'{"cluster":"test","nodes":[]}')
        assert (resp.status_code, resp.content) == (200, b"")
        assert [r.endpoint for r in standin.request_log][:2] == ["start_job", "start_job"]
        assert standin.requests("stop_job")[0].status == 200


async def test_nats_mode_hides_rest_start_stop() -> None:
    backend = Backend(generated_clusters(), nats_mode=True)
    async with serving(backend) as standin, httpx.AsyncClient(base_url=standin.url) as http:
        for path in ("/api/jobs/start_job/", "/api/jobs/stop_job/"):
            resp = await http.post(path, content=raw(start_body(1)))
            assert resp.status_code == 404
            assert resp.json()["status"] == "Resource not found"
        assert (await http.get("/api/jobs/")).status_code == 200
        nodes = b'{"cluster":"test","nodes":[]}'
        assert (await http.post("/api/nodestate/", content=nodes)).status_code == 200
    assert backend.start_job(raw(start_body(1)), source="nats").status == 201


async def test_gzip_when_accepted() -> None:
    async with serving(gzip=True) as standin, httpx.AsyncClient(base_url=standin.url) as http:
        resp = await http.get("/api/jobs/", headers={"accept-encoding": "gzip"})
        assert resp.headers["content-encoding"] == "gzip"
        assert resp.json() == {"jobs": [], "items": 25, "page": 1}  # httpx decompressed
        plain = await http.get("/api/jobs/", headers={"accept-encoding": "identity"})
        assert "content-encoding" not in plain.headers


# --------------------------------------------------------------------------- auth


def _hs256() -> str:
    return pyjwt.encode({"sub": "x", "roles": ["api"]}, "secret-key-of-32-bytes-or-more!!", "HS256")


def _other_key() -> str:
    return pyjwt.encode({"sub": "x", "roles": ["api"]}, Ed25519PrivateKey.generate(), "EdDSA")


AUTH_CASES: list[tuple[str, Any, int, str | None]] = [
    ("no token", lambda a: {}, 401, "no user for secured check"),
    ("valid", lambda a: {"X-Auth-Token": a.issue()}, 200, None),
    ("bearer", lambda a: {"Authorization": "Bearer " + a.issue()}, 200, None),
    (
        "bearer without prefix",
        lambda a: {"Authorization": a.issue()},
        401,
        "no user for secured check",
    ),
    (
        "other key",
        lambda a: {"X-Auth-Token": _other_key()},
        401,
        "token signature is invalid: ed25519: verification error",
    ),
    (
        "HS256",
        lambda a: {"X-Auth-Token": _hs256()},
        401,
        "token is unverifiable: error while executing keyfunc: only Ed25519/EdDSA supported",
    ),
    (
        "expired",
        lambda a: {"X-Auth-Token": a.issue(exp=time.time() - 60)},
        401,
        "token has invalid claims: token is expired",
    ),
    (
        "not yet valid",
        lambda a: {"X-Auth-Token": a.issue(nbf=time.time() + 3600)},
        401,
        "token has invalid claims: token is not valid yet",
    ),
    ("future exp ok", lambda a: {"X-Auth-Token": a.issue(exp=time.time() + 3600)}, 200, None),
    ("no sub", lambda a: {"X-Auth-Token": a.issue(sub=None)}, 401, "missing 'sub' claim in JWT"),
    ("role user", lambda a: {"X-Auth-Token": a.issue(roles=["user"])}, 401, "unauthorized"),
    ("api+user", lambda a: {"X-Auth-Token": a.issue(roles=["api", "user"])}, 401, "unauthorized"),
    ("no roles", lambda a: {"X-Auth-Token": a.issue(roles=None)}, 401, "unauthorized"),
    ("admin+api", lambda a: {"X-Auth-Token": a.issue(roles=["admin", "api"])}, 200, None),
    ("admin+api+x", lambda a: {"X-Auth-Token": a.issue(roles=["x", "api", "admin"])}, 200, None),
    ("garbage", lambda a: {"X-Auth-Token": "abc"}, 401, None),
]


async def test_auth_rules() -> None:
    auth = AuthConfig.generate()
    async with serving(auth=auth) as standin, httpx.AsyncClient(base_url=standin.url) as http:
        for name, headers, status, error in AUTH_CASES:
            resp = await http.get("/api/jobs/", headers=headers(auth))
            assert resp.status_code == status, name
            if status == 401:
                body = resp.json()
                assert list(body) == ["error", "status"], name
                assert body["status"] == "Unauthorized", name
                if error is not None:
                    assert body["error"] == error, name
                else:
                    assert body["error"].startswith("token is malformed"), name
        # auth runs before routing answers inside /api, including the 404 and start_job
        assert (await http.get("/api/nope")).status_code == 401
        assert (await http.post("/api/jobs/start_job/", content=b"")).status_code == 401
        ok = {"X-Auth-Token": auth.issue()}
        assert (await http.get("/api/nope", headers=ok)).status_code == 404


async def test_ip_allow_list() -> None:
    auth = AuthConfig.generate()
    async with (
        serving(auth=auth, allowed_ips=["10.1.2.3"]) as standin,
        httpx.AsyncClient(base_url=standin.url) as http,
    ):
        resp = await http.get("/api/jobs/", headers={"X-Auth-Token": auth.issue()})
        assert (resp.status_code, resp.json()["error"]) == (401, "unknown ip: 127.0.0.1")
        via_proxy = {"X-Auth-Token": auth.issue(), "X-Real-Ip": "10.1.2.3"}
        assert (await http.get("/api/jobs/", headers=via_proxy)).status_code == 200


def test_auth_tokens_interoperate_with_pyjwt() -> None:
    """The stand-in's hand-written JWS (PyNaCl) against PyJWT + cryptography, both directions."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    auth = AuthConfig.generate()
    public = Ed25519PublicKey.from_public_bytes(bytes(auth.public_key))
    claims = pyjwt.decode(auth.issue(sub="alice", exp=time.time() + 60), public, ["EdDSA"])
    assert (claims["sub"], claims["roles"]) == ("alice", ["api"])
    env = {"JWT_PUBLIC_KEY": auth.public_key_b64, "JWT_PRIVATE_KEY": auth.private_key_b64}
    seed = base64.b64decode(env["JWT_PRIVATE_KEY"])[:32]
    private = Ed25519PrivateKey.from_private_bytes(seed)
    token = pyjwt.encode({"sub": "bob", "roles": ["admin", "api"]}, private, "EdDSA")
    assert auth.check({"x-auth-token": token}, "127.0.0.1") == "bob"


def test_auth_keys_in_cc_backend_env_format() -> None:
    auth = AuthConfig.generate()
    env = {"JWT_PUBLIC_KEY": auth.public_key_b64, "JWT_PRIVATE_KEY": auth.private_key_b64}
    again = AuthConfig.from_env(env)
    assert again.check({"x-auth-token": auth.issue()}, "127.0.0.1") == "ccsa"
    assert again.check({"x-auth-token": again.issue(sub="bob")}, "::1") == "bob"
    with pytest.raises(ValueError, match="JWT_PUBLIC_KEY"):
        AuthConfig.from_env({"JWT_PUBLIC_KEY": "not base64!"})


# --------------------------------------------------------------------------- faults, down/up


async def test_faults_script_rule_reset() -> None:
    async with serving() as standin, httpx.AsyncClient(base_url=standin.url) as http:
        standin.faults.script("start_job", [500, (502, b"<html>bad gateway</html>")])
        standin.faults.rule("stop_job", job_id=9, status=404, message="gone")
        r1 = await http.post("/api/jobs/start_job/", content=raw(start_body(1)))
        r2 = await http.post("/api/jobs/start_job/", content=raw(start_body(1)))
        r3 = await http.post("/api/jobs/start_job/", content=raw(start_body(1)))
        assert (r1.status_code, r1.json()["error"]) == (500, "Internal Server Error")
        assert (r2.status_code, r2.content) == (502, b"<html>bad gateway</html>")
        assert r3.status_code == 201
        resp = await http.post("/api/jobs/stop_job/", content=raw(stop_body(9, T0)))
        assert (resp.status_code, resp.json()["error"]) == (404, "gone")
        standin.faults.reset_next("start_job")
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            await http.post("/api/jobs/start_job/", content=raw(start_body(2)))
        assert standin.backend.find("test", 2) == []  # reset before processing
        standin.faults.reset_next("start_job", after_processing=True)
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            await http.post("/api/jobs/start_job/", content=raw(start_body(3)))
        assert len(standin.backend.find("test", 3)) == 1  # applied, answer lost
        retry = await http.post("/api/jobs/start_job/", content=raw(start_body(3)))
        assert retry.status_code == 422


async def test_latency_uses_trio_time(autojump_clock: trio.testing.MockClock) -> None:
    backend = Backend(generated_clusters())
    async with serving(backend) as standin:
        standin.faults.latency("start_job", 3600)
        # Direct call to the server's answer path: with the autojump clock an hour passes
        # instantly in trio time, while a real socket round trip would make the clock jump.
        start = trio.current_time()
        plan = standin.faults.decide("start_job", b"")
        await trio.sleep(plan.delay)
        assert trio.current_time() - start >= 3600


async def test_down_refuses_then_up_on_same_port() -> None:
    async with serving() as standin, httpx.AsyncClient(base_url=standin.url) as http:
        port = standin.port
        assert (await http.get("/api/jobs/")).status_code == 200  # a pooled connection
        standin.down()
        with pytest.raises(httpx.TransportError):
            await http.get("/api/jobs/")
        with pytest.raises(httpx.ConnectError):
            await http.get("/api/jobs/")
        standin.up()
        assert standin.port == port
        assert (await http.get("/api/jobs/")).status_code == 200


# --------------------------------------------------------------------------- command line


def test_cli_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli_main(["--no-auth"]) == 2
    assert (
        capsys.readouterr().err
        == "error: command line: no cluster: give --cluster-config or --cluster\n"
    )
    assert cli_main(["--no-auth", "--cluster", "x=main"]) == 2
    assert "expected SUB:HOSTLIST" in capsys.readouterr().err
    assert cli_main(["--cluster", "x"]) == 2
    assert "--write-token" in capsys.readouterr().err
    assert cli_main(["--no-auth", "--cluster-config", str(tmp_path / "none.json")]) == 2
    assert "none.json" in capsys.readouterr().err


async def test_cli_process_serves_with_token(tmp_path: Path) -> None:
    token_file = tmp_path / "tok.jwt"
    argv = [
        "-m",
        "ccsa.sim.ccbackend",
        "--cluster",
        "c1=main:n[1-9]",
        "--write-token",
        str(token_file),
    ]
    async with trio.open_nursery() as nursery:
        run = partial(trio.run_process, [sys.executable, *argv], stdout=PIPE, check=False)
        proc = await nursery.start(run)
        try:
            line = b""
            with trio.fail_after(30):
                while not line.endswith(b"\n"):
                    line += await proc.stdout.receive_some(1)
            url = line.decode().strip().removeprefix("listening on ")
            token = token_file.read_text().strip()
            assert oct(token_file.stat().st_mode & 0o777) == "0o600"
            async with httpx.AsyncClient(base_url=url) as http:
                ok = await http.post(
                    "/api/jobs/start_job/",
                    content=raw(start_body(1, cluster="c1", resources=[{"hostname": "n3"}])),
                    headers={"X-Auth-Token": token},
                )
                assert ok.status_code == 201
                bad = await http.post("/api/jobs/start_job/", content=raw(start_body(1)))
                assert bad.status_code == 401
        finally:
            proc.terminate()


async def test_request_log_file_has_each_start_and_stop_with_its_answer(tmp_path: Path) -> None:
    """``--request-log``: what a test of a stand-in *process* reads to see refused bodies too."""
    log_file = tmp_path / "requests.jsonl"
    async with (
        serving(request_file=str(log_file)) as standin,
        httpx.AsyncClient(base_url=standin.url) as http,
    ):
        for _ in range(2):  # the second start of the same job is refused with 422
            await http.post("/api/jobs/start_job/", content=raw(start_body(7)))
        await http.post("/api/jobs/stop_job/", content=raw(stop_body(7, T0 + 5)))
        await http.get("/api/jobs/")  # not a start or stop: not logged
    lines = [json.loads(x) for x in log_file.read_text().splitlines()]
    assert [(x["endpoint"], x["status"]) for x in lines] == [
        ("start_job", 201),
        ("start_job", 422),
        ("stop_job", 200),
    ]
    assert lines[0]["body"] == start_body(7)
    assert lines[2]["body"] == stop_body(7, T0 + 5)
    assert "a job with that jobId, cluster and startTime already exists" in lines[1]["response"]
