"""ccsa's REST client for cc-backend: keep-alive connections on trio, answers classified.

``classify`` (pure) turns an HTTP status and body into an ``Outcome``: delivered, done (cc-backend
already has it: 422 on start, 422/404 on stop), rejected (a 4xx that retrying will not change,
with cc-backend's ``error`` text) or transient (5xx, timeouts, refused or reset connections).
``BackendClient`` only does the I/O. The JWT goes into the ``X-Auth-Token`` header and nowhere
else: not into ``repr``, log lines or exception texts (every message we build is scrubbed).

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

A caller-supplied ``httpx.AsyncBaseTransport`` (``transport=``) is used as is, instead of the pool.
Semantics kept from the httpx client: connect/read/write/pool timeouts of ``timeout`` seconds
each, at most 64 connections, idle ones closed after 5 s, no proxy or CA from the environment,
the same httpcore exception types (so the same messages).
"""

from __future__ import annotations

import json
import logging
import math
import ssl
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import urlencode

import httpcore
import httpx
import msgspec
import trio

import ccsa
from ccsa.ccbackend.models import NodeStateRequest, StartJob, StopJob, encode
from ccsa.errors import BackendRejected, BackendUnavailable, ConfigError

__all__ = ["BackendClient", "Outcome", "RunningJob", "classify"]

log = logging.getLogger("ccsa.ccbackend")

Kind = Literal["delivered", "done", "rejected", "transient"]
Endpoint = Literal["start_job", "stop_job", "nodestate", "get_jobs"]

PATHS: dict[Endpoint, str] = {
    "start_job": "/api/jobs/start_job/",  # the trailing slash matters (ccbackend.md §1.1)
    "stop_job": "/api/jobs/stop_job/",
    "nodestate": "/api/nodestate/",
    "get_jobs": "/api/jobs/",
}
_DELIVERED: dict[Endpoint, int] = {
    "start_job": 201,
    "stop_job": 200,
    "nodestate": 200,
    "get_jobs": 200,
}
_DONE: dict[Endpoint, frozenset[int]] = {
    "start_job": frozenset({422}),  # duplicate: cc-backend already has the job
    "stop_job": frozenset({404, 422}),  # unknown (v1.5) or already stopped
    "nodestate": frozenset(),
    "get_jobs": frozenset(),
}
_HINT_401 = (
    "check ccRestJwt: cc-backend wants an EdDSA-signed token with a 'sub' claim, roles exactly "
    "['api'] (or both 'admin' and 'api'), not expired, and this host in api-allowed-ips"
)
MAX_CONNECTIONS = 64
KEEPALIVE_EXPIRY = 5.0  # seconds an idle connection is kept (httpx's default)

#: What a request can fail with below HTTP: httpx's errors (``transport=``) and httpcore's.
_TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    httpx.TransportError,
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpcore.ProxyError,
)
_TIMEOUTS: tuple[type[Exception], ...] = (httpx.TimeoutException, httpcore.TimeoutException)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one request ended. ``status`` is None when no HTTP answer arrived."""

    kind: Kind
    status: int | None
    message: str

    @property
    def ok(self) -> bool:
        """True for delivered and done: nothing left to do for this request."""
        return self.kind in ("delivered", "done")


class RunningJob(msgspec.Struct, rename="camel"):
    """The fields of a ``GET /api/jobs/`` row ccsa uses (decoded leniently)."""

    cluster: str = ""
    job_id: int = 0
    start_time: int = 0
    job_state: str = ""
    id: int | None = None


class _JobsPage(msgspec.Struct):
    jobs: list[RunningJob] | None = None
    items: int = 0
    page: int = 0


_page_decoder = msgspec.json.Decoder(_JobsPage)


def error_text(body: bytes, limit: int = 300) -> str:
    """cc-backend's ``error`` text from an error body, else the start of the body."""
    try:
        value = json.loads(body)
    except ValueError:
        value = None
    if isinstance(value, dict) and isinstance(value.get("error"), str):
        return str(value["error"])
    text = body.decode("utf-8", "replace").strip()
    return text[:limit] + ("..." if len(text) > limit else "") if text else "(empty body)"


def classify(endpoint: Endpoint, status: int, body: bytes) -> Outcome:
    """Classify an HTTP answer of ``endpoint`` (pure)."""
    if status == _DELIVERED[endpoint]:
        return Outcome("delivered", status, f"{status} {_reason(status)}")
    text = error_text(body)
    if status in _DONE[endpoint]:
        return Outcome("done", status, text)
    if status >= 500 or status in (408, 429):
        return Outcome("transient", status, f"{status} {_reason(status)}: {text}")
    if status == 401:
        return Outcome("rejected", status, f"401 Unauthorized: {text} ({_HINT_401})")
    if status == 403:
        hint = "the token's user lacks the role 'api' or the request was blocked"
        return Outcome("rejected", status, f"403 Forbidden: {text} ({hint})")
    return Outcome("rejected", status, f"{status} {_reason(status)}: {text}")


def _reason(status: int) -> str:
    return httpx.codes.get_reason_phrase(status) or "Unknown"


# --------------------------------------------------------------------------- the connection pool


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


class _Pool:
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
        return response.status, _decoded(response.headers, content)

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


def _decoded(headers: Sequence[tuple[bytes, bytes]], content: bytes) -> bytes:
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


# --------------------------------------------------------------------------- the client


class BackendClient:
    """cc-backend's REST API over one connection pool for the daemon's life.

    Args:
        base_url: ``ccRestUrl`` (``http(s)://host:port``; a trailing ``/`` is dropped).
        jwt: the raw API token, sent as ``X-Auth-Token``.
        timeout: seconds for connect, each read and each write.
        verify: True = system CAs; a path = that CA bundle; an SSLContext; False = no
            verification (logged as a WARNING).
        transport: an httpx transport (tests); requests then go through it instead of the pool.

    Resource handling: use ``async with BackendClient(...) as client:``; it closes the pool.
    """

    def __init__(
        self,
        base_url: str,
        jwt: str,
        *,
        timeout: float = 30.0,
        verify: bool | str | ssl.SSLContext = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._jwt = jwt
        if not jwt.isascii() or not jwt.isprintable() or " " in jwt:
            raise ConfigError("ccRestJwt", "the token has blanks, control or non-ASCII characters")
        try:
            url = httpx.URL(self.base_url)
        except httpx.InvalidURL as exc:
            raise ConfigError("ccRestUrl", f"{self.base_url!r}: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError("ccRestUrl", f"{self.base_url!r} is not an http(s)://HOST URL")
        if verify is False:
            log.warning(
                "TLS certificate verification for cc-backend at %s is DISABLED (ccRestInsecure)",
                self.base_url,
            )
        context = ssl_context(verify)
        self._scheme = url.scheme.encode("ascii")
        self._host = url.raw_host
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._origin_text = f"{url.scheme}://{url.netloc.decode('ascii')}"
        self._prefix = url.raw_path.rstrip(b"/")  # a reverse proxy's path, usually empty
        self._timeouts = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
        self._headers: list[tuple[bytes, bytes]] = [
            (b"Host", url.netloc),
            (b"User-Agent", f"ccsa/{ccsa.__version__}".encode("ascii")),
            (b"Accept", b"application/json"),
            (b"Accept-Encoding", b"identity"),
            (b"Content-Type", b"application/json"),
            (b"X-Auth-Token", jwt.encode("ascii")),
        ]
        self._urls = {endpoint: self._url(path.encode("ascii")) for endpoint, path in PATHS.items()}
        self._transport = transport
        self._pool = _Pool(
            httpcore.Origin(self._scheme, self._host, self._port),
            context if isinstance(context, ssl.SSLContext) else _insecure_context(),
            MAX_CONNECTIONS,
        )

    @classmethod
    def from_config(cls, cfg: Any, *, transport: httpx.AsyncBaseTransport | None = None) -> Self:
        """Build from ``ccsa.config.Config`` (``cc_rest_url``, ``cc_rest_jwt``, timeout, TLS)."""
        secret = cfg.cc_rest_jwt
        jwt = secret.get() if hasattr(secret, "get") else str(secret)
        ca_file = getattr(cfg, "cc_rest_ca_file", "") or ""
        verify: bool | str = False if getattr(cfg, "cc_rest_insecure", False) else ca_file or True
        timeout = float(getattr(cfg, "cc_rest_timeout", 30.0))
        return cls(cfg.cc_rest_url, jwt, timeout=timeout, verify=verify, transport=transport)

    def __repr__(self) -> str:
        return f"BackendClient({self.base_url!r}, timeout={self.timeout:g})"

    async def __aenter__(self) -> Self:
        if self._transport is not None:
            await self._transport.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (and a caller-supplied transport)."""
        await self._pool.aclose()
        if self._transport is not None:
            await self._transport.aclose()

    @property
    def connections_opened(self) -> int:
        """TCP connections the pool has opened so far (keep-alive reuse keeps this small)."""
        return self._pool.opened

    # ------------------------------------------------------------------ requests

    def _url(self, target: bytes) -> httpcore.URL:
        return httpcore.URL(
            scheme=self._scheme, host=self._host, port=self._port, target=self._prefix + target
        )

    async def _exchange(self, method: bytes, url: httpcore.URL, body: bytes) -> tuple[int, bytes]:
        """One request; returns (status, body). Raises one of ``_TRANSPORT_ERRORS``."""
        headers = self._headers
        if body:
            headers = [*headers, (b"Content-Length", str(len(body)).encode("ascii"))]
        if self._transport is not None:
            return await self._via_transport(method, url, headers, body)
        request = httpcore.Request(
            method, url, headers=headers, content=body, extensions={"timeout": self._timeouts}
        )
        return await self._pool.request(request, self.timeout)

    async def _via_transport(
        self, method: bytes, url: httpcore.URL, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> tuple[int, bytes]:
        assert self._transport is not None
        request = httpx.Request(
            method.decode("ascii"),
            httpx.URL(self._origin_text + url.target.decode("ascii")),
            headers=headers,
            content=body,
            extensions={"timeout": self._timeouts},
        )
        response = await self._transport.handle_async_request(request)
        try:
            content = await response.aread()  # httpx undoes any Content-Encoding
        finally:
            await response.aclose()
        return response.status_code, content

    def _scrub(self, text: str) -> str:
        # A real token is long; a toy one ("t") would mangle every message.
        return text.replace(self._jwt, "<jwt>") if len(self._jwt) >= 16 else text

    def _transport_message(self, what: str, exc: Exception) -> str:
        if isinstance(exc, _TIMEOUTS):
            return self._scrub(
                f"{what}: no answer within {self.timeout:g} s ({type(exc).__name__})"
            )
        detail = _describe(exc)
        if "CERTIFICATE_VERIFY_FAILED" in detail:
            detail += (
                " (TLS: set ccRestCaFile to the CA bundle that signed cc-backend's certificate)"
            )
        return self._scrub(f"{what}: {type(exc).__name__}: {detail}")

    async def _post(self, endpoint: Endpoint, body: bytes) -> Outcome:
        path = PATHS[endpoint]
        try:
            status, content = await self._exchange(b"POST", self._urls[endpoint], body)
        except _TRANSPORT_ERRORS as exc:
            return Outcome("transient", None, self._transport_message(f"POST {path}", exc))
        except zlib.error as exc:
            return Outcome("transient", None, f"POST {path}: undecodable compressed answer: {exc}")
        if status == _DELIVERED[endpoint]:
            outcome = _DELIVERED_OUTCOMES[endpoint]
        else:
            outcome = classify(endpoint, status, content)
            outcome = Outcome(outcome.kind, outcome.status, self._scrub(outcome.message))
        log.debug("POST %s -> %s (%s)", path, status, outcome.kind)
        return outcome

    async def start_job(self, body: StartJob) -> Outcome:
        """``POST /api/jobs/start_job/``: 201 delivered, 422 done."""
        return await self._post("start_job", encode(body))

    async def stop_job(self, body: StopJob) -> Outcome:
        """``POST /api/jobs/stop_job/``: 200 delivered, 404/422 done."""
        return await self._post("stop_job", encode(body))

    async def node_state(self, body: NodeStateRequest) -> Outcome:
        """``POST /api/nodestate/``: 200 delivered."""
        return await self._post("nodestate", encode(body))

    async def running_jobs(
        self, cluster: str | None = None, page_size: int = 500
    ) -> list[RunningJob]:
        """Every running job cc-backend lists, paging ``GET /api/jobs/`` until a short page.

        Rows seen twice (jobs shift between pages while paging) are returned once; rows whose
        ``jobState`` is not ``running`` are dropped with a warning. ``with-metadata`` is never
        sent: its mere presence makes cc-backend ship every job script (ccbackend.md §4.1).

        Raises:
            BackendUnavailable: transport error, timeout, 5xx, or an undecodable answer.
            BackendRejected: any other non-200 answer (401, 400, ...).
        """
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        what = f"GET {PATHS['get_jobs']}"
        found: dict[tuple[str, int, int], RunningJob] = {}
        page = 1
        while True:
            params: list[tuple[str, str]] = [
                ("state", "running"),
                ("items-per-page", str(page_size)),
                ("page", str(page)),
            ]
            if cluster is not None:
                params.append(("cluster", cluster))
            target = f"{PATHS['get_jobs']}?{urlencode(params)}".encode("ascii")
            try:
                status, content = await self._exchange(b"GET", self._url(target), b"")
            except _TRANSPORT_ERRORS as exc:
                raise BackendUnavailable(what, self._transport_message("request", exc)) from None
            except zlib.error as exc:
                raise BackendUnavailable(what, f"undecodable compressed answer: {exc}") from None
            if status != 200:
                outcome = classify("get_jobs", status, content)
                message = self._scrub(outcome.message)
                if outcome.kind == "transient":
                    raise BackendUnavailable(what, message, status)
                raise BackendRejected(what, status, message)
            try:
                rows = _page_decoder.decode(content).jobs or []
            except msgspec.DecodeError as exc:
                raise BackendUnavailable(
                    what, f"undecodable answer on page {page}: {exc}"
                ) from None
            for row in rows:
                if row.job_state != "running":
                    log.warning(
                        "cc-backend listed job %s on %s as %r in a running-jobs query; ignored",
                        row.job_id,
                        row.cluster,
                        row.job_state,
                    )
                    continue
                found.setdefault((row.cluster, row.job_id, row.start_time), row)
            if len(rows) < page_size:
                return list(found.values())
            page += 1


_DELIVERED_OUTCOMES: dict[Endpoint, Outcome] = {
    endpoint: Outcome("delivered", status, f"{status} {_reason(status)}")
    for endpoint, status in _DELIVERED.items()
}


def _describe(exc: BaseException) -> str:
    """The distinct texts along the ``__cause__`` chain (httpx often wraps an empty one)."""
    seen: set[int] = set()
    texts: list[str] = []
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, BaseExceptionGroup):
            current = current.exceptions[0]
            continue
        text = str(current)
        if isinstance(current, ssl.SSLCertVerificationError):
            text = f"{current.verify_message or text} (CERTIFICATE_VERIFY_FAILED)"
        if text and text != type(current).__name__ and text not in texts:
            texts.append(text)
        current = current.__cause__ or current.__context__
    return ": ".join(texts[:3]) or type(exc).__name__


def _insecure_context() -> ssl.SSLContext:
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
