"""Keep-alive HTTP/1.1 connections to cc-backend on trio: httpcore's connection, our own pool.

Why httpcore's connections under a small pool of our own instead of ``httpx.AsyncClient``
(benchmarks/bench_client.py, issue 4): the client's CPU per request was the bottleneck. Per
request ``httpx.AsyncClient`` parses the URL, merges headers and cookies, runs the auth and
redirect machinery and builds two Request and two Response objects (~2 ms), and httpcore's
``AsyncConnectionPool`` rescans every pooled connection on each request and each release,
polling each idle socket for readability: with 64 requests in flight that is O(connections)
syscalls per request (~6,000 Python calls per request; 3.2-3.7 ms). So ccsa keeps httpx's
HTTP/1.1 engine, ``httpcore.AsyncHTTPConnection`` (h11 framing, TLS handshake with our
``SSLContext``, SNI and ALPN, per-phase timeouts, keep-alive expiry, stale-connection detection),
and replaces only what sits around it with what one fixed origin needs (~1,100 calls, ~0.55 ms):

- ``_Pool``: a LIFO list of idle connections behind a ``trio.Semaphore``; only the connection
  taken is checked for staleness, plus the longest-idle one for expiry.
- headers and URLs built once per client, not per request.
- ``_Backend``/``_Stream``: httpcore's documented network-backend hook over trio streams, which
  holds writes back until the next read, so head and body of a request leave in one ``send``
  (one TCP segment, one wake-up of cc-backend: its CPU per request halves too) instead of two.
- ``Accept-Encoding: identity``: ccsa's answers are small and gzip costs CPU on both ends
  (gzip/deflate answers are still decoded).

Semantics kept from the httpx client: connect/read/write/pool timeouts of the client's
``timeout`` seconds each, at most 64 connections, idle ones closed after 5 s, no proxy or CA from
the environment, the same httpcore exception types (so the same messages).
"""

from __future__ import annotations

import math
import ssl
import zlib
from collections.abc import Sequence
from typing import Any

import httpcore
import trio

from ccsa.errors import ConfigError

__all__ = [
    "KEEPALIVE_EXPIRY",
    "MAX_CONNECTIONS",
    "Pool",
    "decoded",
    "insecure_context",
    "ssl_context",
]

MAX_CONNECTIONS = 64
KEEPALIVE_EXPIRY = 5.0  # seconds an idle connection is kept (httpx's default)


class _Stream(httpcore.AsyncNetworkStream):
    """httpcore's view of one trio stream (TCP, or TLS over TCP), writes held until a read.

    httpcore's HTTP/1.1 connection writes a request's head and body separately; sent as they
    come (TCP_NODELAY) that is two segments and two wake-ups of the server per request. An
    HTTP/1.1 client always reads after writing a request, so flushing before each read sends
    the same bytes, in order, in one ``send_all``. A failing flush raises that write's error
    (``WriteError``/``WriteTimeout``), as it would have without the delay. Errors and timeouts
    map to httpcore's exceptions exactly as its own ``TrioBackend`` maps them; deadlines are
    plain ``trio.CancelScope``s (``trio.fail_after`` is a generator context manager per call).
    """

    def __init__(self, stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]) -> None:
        self._stream = stream
        self._pending: list[bytes] = []
        self._write_timeout: float | None = None

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            self._pending.append(buffer)
            self._write_timeout = timeout

    async def _flush(self) -> None:
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        try:
            with trio.CancelScope(deadline=_deadline(self._write_timeout)) as scope:
                await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise httpcore.WriteError(str(exc)) from exc
        if scope.cancelled_caught:
            raise httpcore.WriteTimeout("write timed out")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._pending:
            await self._flush()
        try:
            with trio.CancelScope(deadline=_deadline(timeout)) as scope:
                return bytes(await self._stream.receive_some(max_bytes))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise httpcore.ReadError(str(exc)) from exc
        assert scope.cancelled_caught  # only our own deadline leaves the block without a return
        raise httpcore.ReadTimeout("read timed out")

    async def aclose(self) -> None:
        self._pending.clear()  # closing mid-request (cancelled, failed): nothing may follow
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = self._stream
        assert isinstance(stream, trio.SocketStream)
        tls = trio.SSLStream(
            stream, ssl_context, server_hostname=server_hostname, https_compatible=True
        )
        try:
            with trio.CancelScope(deadline=_deadline(timeout)) as scope:
                await tls.do_handshake()
        except trio.BrokenResourceError as exc:
            await stream.aclose()
            raise httpcore.ConnectError(str(exc)) from exc
        if scope.cancelled_caught:
            await stream.aclose()
            raise httpcore.ConnectTimeout("TLS handshake timed out")
        return _Stream(tls)

    def get_extra_info(self, info: str) -> Any:
        stream = self._stream
        sock = (stream.transport_stream if isinstance(stream, trio.SSLStream) else stream).socket
        if info == "is_readable":
            return sock.is_readable()
        if info == "ssl_object":
            return stream._ssl_object if isinstance(stream, trio.SSLStream) else None
        if info == "socket":
            return sock
        if info == "client_addr":
            return sock.getsockname()
        if info == "server_addr":
            return sock.getpeername()
        return None


class _Backend(httpcore.AsyncNetworkBackend):
    """Opens ``_Stream``s over TCP (trio sets TCP_NODELAY), errors mapped as httpcore's do."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with trio.CancelScope(deadline=_deadline(timeout)) as scope:
                stream = await trio.open_tcp_stream(host, port, local_address=local_address)
                for option in socket_options or ():
                    stream.setsockopt(*option)
                return _Stream(stream)
        except (OSError, trio.BrokenResourceError) as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        assert scope.cancelled_caught
        raise httpcore.ConnectTimeout(f"no connection to {host}:{port} within {timeout:g} s")

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.UnsupportedProtocol("cc-backend is reached over TCP, not a unix socket")

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


def _deadline(timeout: float | None) -> float:
    return math.inf if timeout is None else trio.current_time() + timeout


class Pool:
    """Keep-alive HTTP/1.1 connections to one origin: at most ``size`` open, idle ones LIFO.

    Each request takes the most recently used idle connection (checking only that one for
    expiry or a server-side close) or opens a new one, and gives it back when the answer has
    been read; a connection in any other state (failed, cancelled, ``Connection: close``) is
    closed instead. The longest-idle connection is retired once expired, one check per request.
    """

    def __init__(self, origin: httpcore.Origin, ssl_context: ssl.SSLContext | None, size: int):
        self._origin = origin
        self._ssl_context = ssl_context
        self._backend = _Backend()
        self._slots = trio.Semaphore(size)
        self._idle: list[httpcore.AsyncHTTPConnection] = []
        self._open: set[httpcore.AsyncHTTPConnection] = set()
        self._closed = False
        self.opened = 0  # connections opened so far (benchmarks count reuse with it)

    async def request(self, request: httpcore.Request, pool_timeout: float) -> tuple[int, bytes]:
        """Send ``request``; returns (status, decoded body)."""
        if self._closed:
            raise RuntimeError("the cc-backend client has been closed")
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            with trio.move_on_after(pool_timeout) as scope:
                await self._slots.acquire()
            if scope.cancelled_caught:
                raise httpcore.PoolTimeout("no free connection") from None
        return await self._on_slot(request)

    async def _on_slot(self, request: httpcore.Request) -> tuple[int, bytes]:
        try:
            conn = await self._checkout()
            try:
                response = await conn.handle_async_request(request)
                try:
                    content = await response.aread()
                finally:
                    await response.aclose()
            finally:
                if conn.is_available() and not self._closed:
                    self._idle.append(conn)
                else:
                    await self._close(conn)
        finally:
            self._slots.release()
        return response.status, decoded(response.headers, content)

    async def _checkout(self) -> httpcore.AsyncHTTPConnection:
        idle = self._idle
        if len(idle) > 1 and idle[0].has_expired():
            await self._close(idle.pop(0))
        while idle:
            conn = idle.pop()
            if not conn.has_expired():
                return conn
            await self._close(conn)
        conn = httpcore.AsyncHTTPConnection(
            self._origin,
            ssl_context=self._ssl_context,
            keepalive_expiry=KEEPALIVE_EXPIRY,
            network_backend=self._backend,
        )
        self._open.add(conn)
        self.opened += 1
        return conn

    async def _close(self, conn: httpcore.AsyncHTTPConnection) -> None:
        self._open.discard(conn)
        with trio.CancelScope(shield=True):
            await conn.aclose()

    async def aclose(self) -> None:
        self._closed = True
        self._idle.clear()
        for conn in list(self._open):
            await self._close(conn)


def decoded(headers: Sequence[tuple[bytes, bytes]], content: bytes) -> bytes:
    """The body with a gzip/deflate ``Content-Encoding`` undone (we ask for identity)."""
    for name, value in headers:
        if name.lower() == b"content-encoding":
            coding = value.strip().lower()
            if coding in (b"gzip", b"x-gzip"):
                return zlib.decompress(content, zlib.MAX_WBITS | 16)
            if coding == b"deflate":
                try:
                    return zlib.decompress(content)
                except zlib.error:
                    return zlib.decompress(content, -zlib.MAX_WBITS)  # raw deflate
    return content


def insecure_context() -> ssl.SSLContext:
    """``verify=False``: TLS without certificate or host name checks (ccRestInsecure)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def ssl_context(verify: bool | str | ssl.SSLContext) -> ssl.SSLContext | bool:
    """The TLS setting of ``verify`` (ccRestInsecure/ccRestCaFile); ConfigError: bad CA file."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify is False:
        return False
    if verify is True:
        return ssl.create_default_context()  # the system's CA store, not certifi's
    try:
        return ssl.create_default_context(cafile=verify)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(verify, f"cannot load CA bundle: {reason}", "ccRestCaFile") from None
