"""PrEp listener: message parsing, coalescing timer (trio clock), real Unix and TCP sockets."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from ccsa.daemon.prep import (
    Coalescer,
    PrepEvent,
    PrepMessageError,
    PrepServer,
    StatusRequest,
    bind_unix,
    parse_message,
)
from ccsa.daemon.store import ApplyResult
from ccsa.daemon.sync import LookupResult
from ccsa.errors import DaemonError, SlurmCommandError
from ccsa.sockaddr import TcpAddr, UnixAddr


def msg(job_id: object = "42", cluster: str = "c1", ctx: str = "prolog_slurmctld") -> bytes:
    return json.dumps(
        {"SLURM_JOB_ID": job_id, "SLURM_CLUSTER_NAME": cluster, "SLURM_SCRIPT_CONTEXT": ctx,
         "SLURM_JOB_NODELIST": "n[1-2]", "SLURM_ARRAY_JOB_ID": "40"}
    ).encode()  # fmt: skip


def test_parse_message() -> None:
    assert parse_message(msg()) == PrepEvent("c1", 42, "prolog")
    assert parse_message(msg(ctx="epilog_slurmctld")) == PrepEvent("c1", 42, "epilog")
    assert parse_message(b'{"ccsa": "status"}') == StatusRequest()
    for bad, why in [
        (b"\x00\xff garbage", "not a JSON object"),
        (b"[1, 2]", "not a JSON object"),
        (msg(job_id="abc"), "SLURM_JOB_ID"),
        (msg(cluster=""), "SLURM_CLUSTER_NAME"),
        (msg(ctx="prolog"), "SLURM_SCRIPT_CONTEXT"),
    ]:
        with pytest.raises(PrepMessageError, match=why):
            parse_message(bad)


class FakeSlurm:
    """Answers lookups like sacct would: jobs appear once they are 'visible'."""

    def __init__(self) -> None:
        self.started: set[int] = set()
        self.finished: set[int] = set()
        self.calls: list[tuple[float, str, list[int]]] = []
        self.fail = 0

    async def lookup(self, cluster: str, ids: Collection[int]) -> LookupResult:
        self.calls.append((trio.current_time(), cluster, sorted(ids)))
        await trio.sleep(0.5)  # a sacct call takes a while
        if self.fail:
            self.fail -= 1
            raise SlurmCommandError(["sacct"], 1, "slurmdbd down")
        started, finished = self.started & set(ids), self.finished & set(ids)
        return LookupResult(frozenset(started), frozenset(finished), ApplyResult())


async def test_flood_cannot_postpone_the_first_lookup(
    autojump_clock: trio.testing.MockClock,
) -> None:
    slurm = FakeSlurm()
    slurm.started = set(range(1000))
    co = Coalescer(slurm.lookup, delay=2.0, max_retries=3, clusters={"c1"})
    async with trio.open_nursery() as nursery:
        await nursery.start(co.run)
        t0 = trio.current_time()
        for i in range(100):  # an event every 0.1 s for 10 s
            co.put(PrepEvent("c1", i, "prolog"))
            await trio.sleep(0.1)
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    first_time, _, first_ids = slurm.calls[0]
    assert first_time - t0 == pytest.approx(2.0)  # armed by the first event, not re-armed
    assert first_ids == list(range(20))  # everything that arrived within the delay, one batch
    assert sorted(i for _, _, ids in slurm.calls for i in ids) == list(range(100))
    assert len(slurm.calls) <= 6  # batched, not one lookup per event


async def test_retry_until_visible_then_give_up(autojump_clock: trio.testing.MockClock) -> None:
    slurm = FakeSlurm()
    co = Coalescer(slurm.lookup, delay=1.0, max_retries=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(co.run)
        co.put(PrepEvent("c1", 7, "prolog"))  # Slurm shows it on the 2nd lookup
        co.put(PrepEvent("c1", 8, "prolog"))  # a job sacct never returns
        await trio.sleep(1.7)  # after the first lookup answered
        slurm.started.add(7)
        await trio.sleep(30)
        nursery.cancel_scope.cancel()
    tried = [ids for _, _, ids in slurm.calls]
    assert sum(7 in ids for ids in tried) == 2
    assert sum(8 in ids for ids in tried) == 4  # first try + slurmMaxRetries
    assert co.stats.prep_given_up == 1
    assert co.pending == 0


async def test_epilog_waits_for_the_end_and_errors_are_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    slurm = FakeSlurm()
    slurm.started = {5}
    slurm.fail = 1
    co = Coalescer(slurm.lookup, delay=1.0, max_retries=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(co.run)
        co.put(PrepEvent("c1", 5, "epilog"))
        await trio.sleep(5)
        assert co.pending == 1  # started but not finished yet: still waiting
        slurm.finished = {5}
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    assert co.pending == 0
    assert co.stats.prep_given_up == 0


async def test_unknown_cluster_and_full_queue_are_dropped() -> None:
    slurm = FakeSlurm()
    co = Coalescer(slurm.lookup, delay=1.0, max_retries=1, clusters={"c1"}, max_pending=2)
    assert not co.put(PrepEvent("other", 1, "prolog"))
    assert co.put(PrepEvent("c1", 1, "prolog"))
    assert co.put(PrepEvent("c1", 1, "epilog"))  # same job: merged, not a new slot
    assert co.put(PrepEvent("c1", 2, "prolog"))
    assert not co.put(PrepEvent("c1", 3, "prolog"))
    assert co.pending == 2
    assert co.stats.prep_dropped == 2


async def _send(path_or_addr: str | tuple[str, int], data: bytes) -> bytes:
    if isinstance(path_or_addr, str):
        stream: trio.SocketStream = await trio.open_unix_socket(path_or_addr)
    else:
        stream = await trio.open_tcp_stream(*path_or_addr)
    async with stream:
        await stream.send_all(data)
        await stream.send_eof()
        out = bytearray()
        while chunk := await stream.receive_some(65536):
            out += chunk
        return bytes(out)


@pytest.fixture
def sock_path(tmp_path: Path) -> Iterator[str]:
    # AF_UNIX paths are limited to ~107 bytes; pytest's tmp_path can be long
    short = Path(f"/tmp/ccsa-prep-{os.getpid()}-{abs(hash(str(tmp_path))) % 10**8}")
    short.mkdir(exist_ok=True)
    yield str(short / "d.sock")
    for p in short.iterdir():
        p.unlink()
    short.rmdir()


async def test_unix_socket_mode_events_status_and_garbage(
    sock_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[PrepEvent] = []
    server = PrepServer(events.append, lambda: {"outbox": 3}, read_timeout=0.5)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(server.serve, UnixAddr(sock_path))
            assert bound == [sock_path]
            st = os.stat(sock_path)
            assert stat.S_ISSOCK(st.st_mode)
            assert stat.S_IMODE(st.st_mode) == 0o660
            assert not [p for p in os.listdir(os.path.dirname(sock_path)) if "tmp" in p]
            await _send(sock_path, msg("77"))
            with caplog.at_level(logging.WARNING):
                await _send(sock_path, b"this is no json")
                await _send(sock_path, b" " * 70_000 + b"{}")
                # a slow peer that never finishes is cut off after read_timeout
                slow = await trio.open_unix_socket(sock_path)
                await slow.send_all(b'{"SLURM_JOB_ID": ')
                with trio.fail_after(5):
                    assert await slow.receive_some(10) == b""
                await slow.aclose()
            answer = await _send(sock_path, b'{"ccsa": "status"}')
            assert json.loads(answer) == {"outbox": 3}
            await _send(sock_path, msg("78", ctx="epilog_slurmctld"))
            await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    assert events == [PrepEvent("c1", 77, "prolog"), PrepEvent("c1", 78, "epilog")]
    assert "not a JSON object" in caplog.text
    assert "larger than 65536 bytes" in caplog.text
    assert "no complete message within 0.5 s" in caplog.text
    assert "peer pid" in caplog.text
    assert server.stats.prep_garbage == 3
    assert not await trio.Path(sock_path).exists()  # removed on exit


def test_refuses_when_another_daemon_answers(sock_path: str) -> None:
    live = bind_unix(sock_path)
    try:
        with pytest.raises(DaemonError, match="another daemon is answering"):
            bind_unix(sock_path)
    finally:
        live.close()
    # now only a stale socket file is left: it is replaced
    assert os.path.exists(sock_path)
    bind_unix(sock_path).close()
    os.unlink(sock_path)
    Path(sock_path).write_text("not a socket")
    with pytest.raises(DaemonError, match="is not a socket"):
        bind_unix(sock_path)


async def test_tcp_listener_on_loopback() -> None:
    events: list[PrepEvent] = []
    server = PrepServer(events.append)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            (bound,) = await nursery.start(server.serve, TcpAddr("127.0.0.1", 0))
            host, port = bound.rsplit(":", 1)
            await _send((host, int(port)), msg("9"))
            await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    assert events == [PrepEvent("c1", 9, "prolog")]


def test_socket_is_never_reachable_with_another_mode(sock_path: str) -> None:
    # Before the rename the configured path does not exist; after it, the mode is final.
    old = os.umask(0o000)
    try:
        s = bind_unix(sock_path)
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o660
        c = socket.socket(socket.AF_UNIX)
        c.connect(sock_path)
        c.close()
    finally:
        s.close()
