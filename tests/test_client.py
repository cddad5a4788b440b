"""BackendClient against the stand-in over real loopback sockets (HTTP and HTTPS via trustme)."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trustme
from standin_helpers import T0, Seen, generated_clusters, post, serving, start_job, stop_job

from ccsa.ccbackend.answers import classify
from ccsa.ccbackend.client import BackendClient
from ccsa.ccbackend.models import NodePayload, NodeStateRequest, Resource, StartJob, StopJob
from ccsa.errors import BackendBlocked, BackendRejected, BackendUnavailable, ConfigError
from ccsa.sim.ccbackend.auth import AuthConfig
from ccsa.sim.ccbackend.state import Backend


def start(job_id: int, cluster: str = "test", start_time: int = T0) -> StartJob:
    return StartJob(
        job_id=job_id,
        cluster=cluster,
        user="alice",
        project="p",
        num_nodes=1,
        resources=[Resource(hostname="c001", hwthreads=[0, 1])],
        start_time=start_time,
        shared="none",
        num_hwthreads=2,
    )


def stop(job_id: int, stop_time: int = T0 + 60, **kw: Any) -> StopJob:
    return StopJob(job_id=job_id, cluster="test", job_state="completed", stop_time=stop_time, **kw)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


# --------------------------------------------------------------------------- pure classification


@pytest.mark.parametrize(
    ("endpoint", "status", "kind"),
    [
        ("start_job", 201, "delivered"),
        ("start_job", 200, "rejected"),
        ("start_job", 422, "done"),
        ("start_job", 404, "rejected"),
        ("stop_job", 200, "delivered"),
        ("stop_job", 404, "done"),
        ("stop_job", 422, "done"),
        ("stop_job", 400, "rejected"),
        ("nodestate", 200, "delivered"),
        ("nodestate", 422, "rejected"),
        ("start_job", 401, "blocked"),
        ("start_job", 403, "blocked"),
        ("start_job", 500, "transient"),
        ("stop_job", 503, "transient"),
        ("stop_job", 429, "transient"),
    ],
)
def test_classify(endpoint: Any, status: int, kind: str) -> None:
    text = "finding job failed: sql: no rows in result set" if status == 404 else "the text"
    body = b'{"status":"x","error":"' + text.encode() + b'"}\n'
    errors = {
        "transient": BackendUnavailable,
        "rejected": BackendRejected,
        "blocked": BackendBlocked,
    }
    if kind in errors:
        with pytest.raises(errors[kind]) as info:
            classify(endpoint, status, body, "POST x")
        assert isinstance(info.value, (BackendUnavailable, BackendRejected))
        assert info.value.status == status
        assert isinstance(info.value, BackendBlocked) == (kind == "blocked")
        assert text in info.value.reason
        return
    outcome = classify(endpoint, status, body, "POST x")
    assert (outcome.kind, outcome.status) == (kind, status)
    if kind == "done":
        assert text in outcome.message


#: cc-backend's router answer to an unknown path (docs/ccbackend.md §1.1)
ROUTER_404 = b'{"error":"the requested endpoint does not exist","status":"Resource not found"}'


@pytest.mark.parametrize(
    ("endpoint", "status", "body"),
    [
        ("start_job", 502, b"<html><h1>502 Bad Gateway</h1></html>"),
        ("start_job", 422, b"<html>Unprocessable</html>"),
        ("stop_job", 404, b"<html>404 Not Found</html>"),
        # cc-backend's router, not its stop handler: the URL is wrong, the job says nothing
        (
            "stop_job",
            404,
            b'{"error":"the requested endpoint does not exist","status":"Resource not found"}',
        ),
        ("stop_job", 400, b"Bad Request"),
        ("start_job", 500, b""),
        ("start_job", 413, b'["not", "an", "error", "body"]'),
    ],
)
def test_answers_that_are_not_cc_backends_block_the_channel(
    endpoint: Any, status: int, body: bytes
) -> None:
    """Issue 17 item 2: an error answer without cc-backend's JSON error body (§1.4: both
    ``status`` and ``error`` strings), or a stop's 404 that is not its "finding job failed",
    says nothing about the job: BackendBlocked, never done or rejected."""
    with pytest.raises(BackendBlocked) as info:
        classify(endpoint, status, body, "POST x")
    assert info.value.status == status


# --------------------------------------------------------------------------- over HTTP


async def test_each_classification_against_the_standin() -> None:
    auth = AuthConfig.generate()
    token = auth.issue()
    async with serving(auth=auth) as standin, BackendClient(standin.url, token) as client:
        assert await start_job(client, start(1)) == Seen("delivered", 201, "201 Created")
        dup = await start_job(client, start(1))
        assert (dup.kind, dup.status) == ("done", 422)
        assert dup.message.startswith("a job with that jobId, cluster and startTime already exists")
        bad = await start_job(client, start(2, cluster="nope"))
        assert (bad.kind, bad.status, bad.message) == (
            "rejected",
            400,
            "400 Bad Request: no such cluster: nope",
        )
        assert (await stop_job(client, stop(1))).kind == "delivered"
        again = await stop_job(client, stop(1))
        assert (again.kind, again.status) == ("done", 422)
        unknown = await stop_job(client, stop(99))
        assert (unknown.kind, unknown.status) == ("done", 404)
        standin.faults.script("stop_job", [500, 502, (403, "forbidden by proxy")])
        assert (await stop_job(client, stop(1))).kind == "transient"
        assert (await stop_job(client, stop(1))).kind == "transient"
        forbidden = await stop_job(client, stop(1))
        assert (forbidden.kind, forbidden.status) == ("blocked", 403)
        assert "forbidden by proxy" in forbidden.message
        nodes = NodeStateRequest(cluster="test", nodes=[NodePayload("c001", ["idle"])])
        assert (await post(client, "nodestate", nodes)).kind == "delivered"
        assert standin.backend.node_states["test"]["nodes"][0]["hostname"] == "c001"
        # what went over the wire
        req = standin.requests("start_job")[0]
        assert req.path == "/api/jobs/start_job/"
        assert req.method == "POST"
        assert req.headers["x-auth-token"] == token
        assert req.headers["content-type"] == "application/json"
        assert "authorization" not in req.headers
        assert standin.requests("stop_job")[0].path == "/api/jobs/stop_job/"
        assert standin.requests("nodestate")[0].path == "/api/nodestate/"


async def test_401_blocks_with_a_hint() -> None:
    auth = AuthConfig.generate()
    expired = auth.issue(exp=T0)
    async with serving(auth=auth) as standin, BackendClient(standin.url, expired) as client:
        outcome = await start_job(client, start(1))
    assert (outcome.kind, outcome.status) == ("blocked", 401)
    assert "token is expired" in outcome.message
    assert "'api'" in outcome.message
    assert "ccRestJwt" in outcome.message


async def test_timeout_is_transient() -> None:
    async with serving() as standin, BackendClient(standin.url, "t", timeout=0.5) as client:
        standin.faults.latency("start_job", 30, n=1)
        outcome = await start_job(client, start(1))
        assert (outcome.kind, outcome.status) == ("transient", None)
        assert "no answer within 0.5 s" in outcome.message
        # the request still reaches cc-backend later; the next call is not delayed
        assert (await start_job(client, start(2))).kind == "delivered"


async def test_reset_is_transient() -> None:
    async with serving() as standin, BackendClient(standin.url, "t") as client:
        standin.faults.reset_next("start_job")
        outcome = await start_job(client, start(1))
        assert (outcome.kind, outcome.status) == ("transient", None)
        standin.faults.reset_next("stop_job", after_processing=True)
        assert (await start_job(client, start(1))).kind == "delivered"
        lost = await stop_job(client, stop(1))
        assert lost.kind == "transient"
        retry = await stop_job(client, stop(1))  # the stop was applied; the retry is "done"
        assert (retry.kind, retry.status) == ("done", 422)


async def test_refused_when_down_then_recovers() -> None:
    async with serving() as standin, BackendClient(standin.url, "t") as client:
        assert (await start_job(client, start(1))).kind == "delivered"
        standin.down()
        outcome = await start_job(client, start(2))
        assert (outcome.kind, outcome.status) == ("transient", None)
        outcome = await start_job(client, start(2))
        assert "ConnectError" in outcome.message
        with pytest.raises(BackendUnavailable):
            await client.running_jobs()
        standin.up()
        assert (await start_job(client, start(2))).kind == "delivered"


async def test_running_jobs_pages_until_a_short_page() -> None:
    backend = Backend(generated_clusters(), clock=lambda: T0 + 10_000)
    async with serving(backend) as standin, BackendClient(standin.url, "t") as client:
        for i in range(23):
            assert (await start_job(client, start(i, start_time=T0 + i))).kind == "delivered"
        for i in range(3):
            assert (await stop_job(client, stop(i))).kind == "delivered"
        jobs = await client.running_jobs(page_size=4)
        assert sorted(j.job_id for j in jobs) == list(range(3, 23))
        assert all(j.cluster == "test" and j.job_state == "running" for j in jobs)
        assert {j.start_time - j.job_id for j in jobs} == {T0}
        gets = standin.requests("get_jobs")
        assert [dict(r.query)["page"] for r in gets] == ["1", "2", "3", "4", "5", "6"]
        for r in gets:
            assert ("state", "running") in r.query
            assert ("items-per-page", "4") in r.query
            assert all(k != "with-metadata" for k, _ in r.query)
        standin.request_log.clear()
        assert len(await client.running_jobs(cluster="test", page_size=500)) == 20
        assert ("cluster", "test") in standin.requests("get_jobs")[0].query
        assert await client.running_jobs(cluster="sub") == []


async def test_running_jobs_errors() -> None:
    async with serving() as standin, BackendClient(standin.url, "t") as client:
        standin.faults.script("get_jobs", [500, (401, "token is expired"), (200, b"<html>")])
        with pytest.raises(BackendUnavailable) as unavailable:
            await client.running_jobs()
        assert unavailable.value.status == 500
        with pytest.raises(BackendBlocked) as rejected:
            await client.running_jobs()
        assert rejected.value.status == 401
        assert "token is expired" in str(rejected.value)
        with pytest.raises(BackendUnavailable, match="undecodable"):
            await client.running_jobs()


# --------------------------------------------------------------------------- TLS


async def test_https_with_ca_file(ca: trustme.CA, tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    async with serving(ssl_context=server_context(ca)) as standin:
        assert standin.url.startswith("https://127.0.0.1:")
        async with BackendClient(standin.url, "t", verify=str(bundle)) as client:
            assert (await start_job(client, start(1))).kind == "delivered"
            assert len(await client.running_jobs()) == 1


async def test_https_wrong_ca_fails_transiently_with_a_hint(ca: trustme.CA, tmp_path: Path) -> None:
    other = tmp_path / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    async with serving(ssl_context=server_context(ca)) as standin:
        async with BackendClient(standin.url, "t", verify=str(other)) as client:
            outcome = await start_job(client, start(1))
        async with BackendClient(standin.url, "t") as system_cas:
            assert (await start_job(system_cas, start(1))).kind == "transient"
        assert standin.backend.jobs == []
    assert outcome.kind == "transient"
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.message
    assert "ccRestCaFile" in outcome.message


async def test_https_insecure_opt_out_warns(
    ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(ssl_context=server_context(ca)) as standin:
        with caplog.at_level(logging.WARNING, logger="ccsa.ccbackend"):
            client = BackendClient(standin.url, "t", verify=False)
        async with client:
            assert (await start_job(client, start(1))).kind == "delivered"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "DISABLED" in warnings[0].getMessage()
    assert standin.url in warnings[0].getMessage()


def test_missing_ca_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        BackendClient("https://x", "t", verify=str(tmp_path / "nope.pem"))
    assert "ccRestCaFile" in str(info.value)
    assert "nope.pem" in str(info.value)


# --------------------------------------------------------------------------- config, secrecy


class _Secret:
    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"


async def test_from_config(ca: trustme.CA, tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    auth = AuthConfig.generate()
    async with serving(auth=auth, ssl_context=server_context(ca)) as standin:
        cfg = SimpleNamespace(
            cc_rest_url=standin.url + "/",
            cc_rest_jwt=_Secret(auth.issue()),
            cc_rest_timeout=5.0,
            cc_rest_ca_file=str(bundle),
            cc_rest_insecure=False,
        )
        async with BackendClient.from_config(cfg) as client:
            assert client.base_url == standin.url
            assert client.timeout == 5.0
            assert (await start_job(client, start(1))).kind == "delivered"
        minimal = SimpleNamespace(cc_rest_url=standin.url, cc_rest_jwt=auth.issue())
        async with BackendClient.from_config(minimal) as client:  # system CAs: fails
            assert (await start_job(client, start(2))).kind == "transient"


async def test_jwt_never_leaks(caplog: pytest.LogCaptureFixture, ca: trustme.CA) -> None:
    auth = AuthConfig.generate()
    token = auth.issue(sub="leak-check")
    texts: list[str] = []
    caplog.set_level(logging.DEBUG)
    async with serving(auth=auth) as standin:
        client = BackendClient(standin.url, token, timeout=0.5)
        texts.append(repr(client))
        async with client:
            # a server (or proxy) that echoes the token back must not get it into our texts
            standin.faults.rule("start_job", job_id=1, status=400, message=f"bad token {token}")
            standin.faults.rule("start_job", job_id=2, status=500, message=f"oops {token}")
            for job_id in (1, 2):
                texts.append((await start_job(client, start(job_id))).message)
            standin.faults.latency("stop_job", 30, n=1)
            texts.append((await stop_job(client, stop(1))).message)
            standin.faults.script("get_jobs", [(401, f"no {token}"), (503, token)])
            for _ in range(2):
                with pytest.raises((BackendRejected, BackendUnavailable)) as info:
                    await client.running_jobs()
                texts += [str(info.value), repr(info.value)]
            standin.down()
            texts.append((await start_job(client, start(3))).message)
            with pytest.raises(BackendUnavailable) as down:
                await client.running_jobs()
            texts.append(str(down.value))
    async with (
        serving(ssl_context=server_context(ca)) as tls,
        BackendClient(tls.url, token) as client,
    ):
        texts.append((await start_job(client, start(4))).message)
    assert any("bad token <jwt>" in t for t in texts)
    assert len(texts) >= 10
    for text in [*texts, caplog.text]:
        assert token not in text
        assert token.split(".")[2] not in text  # not even the signature part
