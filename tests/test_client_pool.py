"""The client's own connection pool: keep-alive reuse, pool timeout, cancellation, IPv6, gzip."""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import httpcore
import httpx
import pytest
import trio
from standin_helpers import serving, start_job
from test_client import start

import ccsa.ccbackend.client as cl
from ccsa.ccbackend.client import BackendClient
from ccsa.ccbackend.pool import decoded
from ccsa.errors import ConfigError


async def test_keepalive_reuse_sequential_and_concurrent() -> None:
    async with serving() as standin, BackendClient(standin.url, "t") as client:
        for i in range(20):
            assert (await start_job(client, start(i))).kind == "delivered"
        assert client.connections_opened == 1
        async with trio.open_nursery() as n:
            for i in range(20, 40):
                n.start_soon(start_job, client, start(i))
        assert client.connections_opened <= 20
        assert len(standin.requests("start_job")) == 40


async def test_transport_path() -> None:
    async with serving() as standin:
        async with BackendClient(standin.url, "t", transport=httpx.AsyncHTTPTransport()) as client:
            assert (await start_job(client, start(1))).kind == "delivered"
            assert (await start_job(client, start(1))).kind == "done"
            assert len(await client.running_jobs()) == 1
            assert client.connections_opened == 0
        standin.down()
        async with BackendClient(standin.url, "t", transport=httpx.AsyncHTTPTransport()) as client:
            o = await start_job(client, start(2))
            assert o.kind == "transient"
            assert "ConnectError" in o.message


def test_decoded() -> None:
    body = b'{"a":1}'
    assert decoded([(b"Content-Encoding", b"gzip")], gzip.compress(body)) == body
    assert decoded([(b"content-encoding", b"deflate")], zlib.compress(body)) == body
    assert decoded([(b"content-type", b"x")], body) == body


async def test_pool_timeout_and_cancel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cl, "MAX_CONNECTIONS", 1)
    async with serving() as standin, BackendClient(standin.url, "t", timeout=0.5) as client:
        standin.faults.latency("start_job", 0.4, n=1)
        results: dict[int, Any] = {}

        async def one(i: int) -> None:
            results[i] = await start_job(client, start(i))

        async with trio.open_nursery() as n:
            n.start_soon(one, 1)
            await trio.sleep(0.05)
            n.start_soon(one, 2)  # waits 0.35 s for the slot, then is served normally
        assert results[1].kind == results[2].kind == "delivered", results
        standin.faults.latency("start_job", 5, n=1)
        async with trio.open_nursery() as n:
            n.start_soon(one, 3)  # read times out after 0.5 s
            await trio.sleep(0.05)
            req = httpcore.Request("POST", client._urls["start_job"], headers=client._headers)
            with pytest.raises(httpcore.PoolTimeout):
                await client._pool.request(req, 0.1)
        assert results[3].kind == "transient"
        assert "ReadTimeout" in results[3].message
        # cancel mid-request: the connection is dropped, the next request works
        standin.faults.latency("start_job", 5, n=1)
        with trio.move_on_after(0.1):
            await start_job(client, start(5))
        assert (await start_job(client, start(6))).kind == "delivered"


async def test_ipv6_and_prefix() -> None:
    async with serving(host="::1") as standin, BackendClient(standin.url, "t") as client:
        assert standin.url.startswith("http://[::1]:")
        assert (await start_job(client, start(1))).kind == "delivered"
        assert standin.requests("start_job")[0].headers["host"] == standin.url.removeprefix(
            "http://"
        )
    async with serving() as standin, BackendClient(standin.url + "/prefix", "t") as client:
        o = await start_job(client, start(1))
        assert o.status == 404  # /prefix/api/... does not exist on the stand-in


def test_bad_token_and_url() -> None:
    with pytest.raises(ConfigError, match="ccRestJwt"):
        BackendClient("http://x", "abc def")
    with pytest.raises(ConfigError, match="ccRestUrl"):
        BackendClient("ftp://x", "t")
