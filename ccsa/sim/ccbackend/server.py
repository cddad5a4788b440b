"""The stand-in's HTTP(S) server: cc-backend v1.5.4's routes, auth and headers over a ``Backend``.

Built on h11 + trio streams rather than an ASGI server (hypercorn): the stand-in must misbehave
on purpose — reset a connection before or after applying a request, stop listening and re-open
the same port (``down``/``up``), delay answers on trio's clock — which needs direct control of
sockets that an ASGI application never gets. h11 does the HTTP/1.1 parsing; this module only
routes (§1.1 exact paths), authenticates (§1.3), applies faults, and writes cc-backend's headers.
"""

from __future__ import annotations

import gzip as gzip_module
import json
import socket
import ssl
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

import h11
import trio

from ccsa.sim.ccbackend.auth import AuthConfig, AuthError, check_ip
from ccsa.sim.ccbackend.faults import Faults, Plan
from ccsa.sim.ccbackend.godecode import go_json
from ccsa.sim.ccbackend.state import Backend, Reply, error_reply, map_reply

__all__ = ["LoggedRequest", "StandIn"]

MAX_BODY = 64 * 1024 * 1024

#: Fixed security headers of every v1.5 response (§1.1).
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"content-security-policy", b"default-src 'self'"),
]

#: (path, methods, endpoint name) of the four routes the adapter uses.
ROUTES: dict[str, tuple[frozenset[str], str]] = {
    "/api/jobs/start_job/": (frozenset({"POST", "PUT"}), "start_job"),
    "/api/jobs/stop_job/": (frozenset({"POST", "PUT"}), "stop_job"),
    "/api/jobs/": (frozenset({"GET"}), "get_jobs"),
    "/api/nodestate/": (frozenset({"POST", "PUT"}), "nodestate"),
    "/api/clusters/": (frozenset({"GET"}), "clusters"),  # optional (§11): used by `check`
}

_NOT_FOUND = {"error": "the requested endpoint does not exist", "status": "Resource not found"}


@dataclass
class LoggedRequest:
    """One request as the stand-in saw it, and what it answered (status None = reset)."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes
    time: float
    endpoint: str | None = None
    status: int | None = None
    response: bytes = b""


def _append_json_line(path: str, entry: LoggedRequest) -> None:
    """One answered API request as a JSON line: endpoint, status, request body, response."""
    try:
        body: object = json.loads(entry.body) if entry.body else None
    except ValueError:
        body = entry.body.decode("utf-8", "replace")
    line = {
        "endpoint": entry.endpoint,
        "status": entry.status,
        "body": body,
        "response": entry.response.decode("utf-8", "replace"),
    }
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line, sort_keys=True) + "\n")


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


@dataclass(frozen=True)
class _Route:
    fixed: Reply | None  # the answer when no endpoint handles the request
    endpoint: str | None
    needs_auth: bool = True


@dataclass
class _Answer:
    reply: Reply | None  # None = reset the connection
    extra_headers: list[tuple[bytes, bytes]] = field(default_factory=list)


class StandIn:
    """A stand-in cc-backend listening on loopback.

    Args:
        backend: the job model that answers start/stop/list/nodestate.
        host, port: where to listen; port 0 picks a free one (``self.port`` after ``serve``).
        ssl_context: a server-side context for HTTPS (tests use trustme).
        auth: JWT verification; None disables auth entirely (unit tests).
        allowed_ips: v1.5 ``api-allowed-ips`` (None or empty = no restriction).
        gzip: compress JSON answers when the client accepts gzip (chi ``Compress(5)``).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        auth: AuthConfig | None = None,
        allowed_ips: Sequence[str] | None = None,
        gzip: bool = False,
        request_file: str | None = None,
    ) -> None:
        self.backend = backend
        #: append one JSON line per start_job/stop_job answered (for tests of a stand-in process)
        self.request_file = request_file
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.auth = auth
        self.allowed_ips = list(allowed_ips or [])
        self.gzip = gzip
        self.faults = Faults()
        self.request_log: list[LoggedRequest] = []
        self._nursery: trio.Nursery | None = None
        self._listener: trio.SocketListener | None = None
        self._connections: set[trio.socket.SocketType] = set()

    @property
    def url(self) -> str:
        """``http(s)://HOST:PORT`` (valid once ``serve`` has started)."""
        scheme = "https" if self.ssl_context is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def is_up(self) -> bool:
        """True while the listener accepts connections."""
        return self._listener is not None

    def requests(self, endpoint: str | None = None) -> list[LoggedRequest]:
        """The logged requests, optionally only those of ``endpoint`` (``start_job``...)."""
        return [r for r in self.request_log if endpoint is None or r.endpoint == endpoint]

    # ------------------------------------------------------------------ lifecycle

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled; ``task_status.started()`` once the port is bound."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.up()
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self.down()

    def up(self) -> None:
        """Listen again, on the same port (no-op when already up)."""
        if self._listener is not None:
            return
        if self._nursery is None:
            raise RuntimeError("StandIn.up() needs serve() to be running")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(512)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        self._listener = listener
        self._nursery.start_soon(self._accept_loop, listener)

    def down(self) -> None:
        """Stop listening and drop every open connection: clients see refused connections."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.socket.close()
        for sock in list(self._connections):
            _abort(sock)
        self._connections.clear()

    async def _accept_loop(self, listener: trio.SocketListener) -> None:
        while True:
            try:
                stream = await listener.accept()
            except (trio.ClosedResourceError, OSError):
                return
            assert self._nursery is not None
            self._nursery.start_soon(self._connection, stream)

    # ------------------------------------------------------------------ one connection

    async def _connection(self, raw: trio.SocketStream) -> None:
        sock = raw.socket
        self._connections.add(sock)
        stream: trio.abc.Stream = raw
        try:
            peer = sock.getpeername()
            client_ip = str(peer[0])
            if self.ssl_context is not None:
                stream = trio.SSLStream(raw, self.ssl_context, server_side=True)
            await self._serve_connection(stream, sock, client_ip)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ssl.SSLError):
            pass
        finally:
            self._connections.discard(sock)
            sock.close()

    async def _serve_connection(
        self, stream: trio.abc.Stream, sock: trio.socket.SocketType, client_ip: str
    ) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            request: h11.Request | None = None
            body = bytearray()
            try:
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        conn.receive_data(bytes(data))
                        continue
                    if isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                        if len(body) > MAX_BODY:
                            await self._send(conn, stream, error_reply(413, "body too large"), [])
                            return
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                        return
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    reply = error_reply(exc.error_status_hint, f"bad request: {exc}")
                    await self._send(conn, stream, reply, [])
                return
            assert request is not None
            answer = await self._answer(request, bytes(body), client_ip)
            if answer.reply is None:
                _abort(sock)
                return
            await self._send(conn, stream, answer.reply, answer.extra_headers)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()

    async def _send(
        self,
        conn: h11.Connection,
        stream: trio.abc.Stream,
        reply: Reply,
        extra: list[tuple[bytes, bytes]],
    ) -> None:
        headers = [*SECURITY_HEADERS, *extra]
        if reply.content_type:
            headers.append((b"content-type", reply.content_type.encode()))
        headers.append((b"content-length", str(len(reply.body)).encode()))
        out = conn.send(h11.Response(status_code=reply.status, headers=headers))
        out += conn.send(h11.Data(data=reply.body)) if reply.body else b""
        out += conn.send(h11.EndOfMessage())
        await stream.send_all(out)

    # ------------------------------------------------------------------ routing

    async def _answer(self, request: h11.Request, body: bytes, client_ip: str) -> _Answer:
        method = request.method.decode("ascii", "replace")
        target = request.target.decode("latin-1")
        split = urlsplit(target)
        path = split.path
        query = parse_qsl(split.query, keep_blank_values=True)
        headers: dict[str, str] = {}
        for name, value in request.headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        entry = LoggedRequest(method, path, query, headers, body, trio.current_time())
        self.request_log.append(entry)
        route = self._route(method, path, headers)
        entry.endpoint = route.endpoint
        plan = Plan()
        if route.endpoint is not None:
            plan = self.faults.decide(route.endpoint, body)
            if plan.delay > 0:
                await trio.sleep(plan.delay)
            if plan.reset == "before":
                return _Answer(None)
        reply = plan.reply
        if reply is None and route.needs_auth:
            reply = self._authenticate(headers, client_ip)
        if reply is None:
            if route.endpoint is not None:
                reply = self._call(route.endpoint, body, query)
            else:
                assert route.fixed is not None
                reply = route.fixed
        if plan.reset == "after":
            return _Answer(None)
        entry.status, entry.response = reply.status, reply.body
        if self.request_file and route.endpoint in ("start_job", "stop_job"):
            _append_json_line(self.request_file, entry)
        extra: list[tuple[bytes, bytes]] = []
        accepts_gzip = "gzip" in headers.get("accept-encoding", "")
        if self.gzip and reply.body and reply.content_type and accepts_gzip:
            reply = Reply(reply.status, gzip_module.compress(reply.body, 5), reply.content_type)
            extra = [(b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding")]
        return _Answer(reply, extra)

    def _route(self, method: str, path: str, headers: dict[str, str]) -> _Route:
        """Route like v1.5's chi router: the ``/api`` group authenticates before any answer."""
        if headers.get("sec-fetch-site") == "cross-site" and method not in _SAFE_METHODS:
            blocked = Reply(403, b"cross-site request blocked\n", "text/plain; charset=utf-8")
            return _Route(blocked, None, needs_auth=False)
        if not path.startswith("/api/"):
            return _Route(map_reply(404, _NOT_FOUND), None, needs_auth=False)
        route = ROUTES.get(path)
        if route is not None:
            methods, endpoint = route
            if self.backend.nats_mode and endpoint in ("start_job", "stop_job"):
                return _Route(map_reply(404, _NOT_FOUND), None)  # routes not registered
            if method not in methods:
                return _Route(Reply(405, b"", ""), None)
            return _Route(None, endpoint)
        rest = path.removeprefix("/api/jobs/")
        if rest != path and rest and "/" not in rest and method in ("GET", "POST"):
            return _Route(self._job_by_id(rest), None)
        return _Route(map_reply(404, _NOT_FOUND), None)

    def _authenticate(self, headers: dict[str, str], client_ip: str) -> Reply | None:
        try:
            if self.auth is not None:
                self.auth.check(headers, client_ip, self.allowed_ips or None)
            elif self.allowed_ips:
                check_ip(headers, client_ip, self.allowed_ips)
        except AuthError as exc:
            return map_reply(401, {"error": str(exc), "status": "Unauthorized"})
        return None

    def _call(self, endpoint: str, body: bytes, query: list[tuple[str, str]]) -> Reply:
        if endpoint == "start_job":
            return self.backend.start_job(body)
        if endpoint == "stop_job":
            return self.backend.stop_job(body)
        if endpoint == "get_jobs":
            return self.backend.get_jobs(query)
        if endpoint == "clusters":
            return self.backend.list_clusters(query)
        return self.backend.node_state(body)

    def _job_by_id(self, text: str) -> Reply:
        """``/api/jobs/{id}``: where the slash-less ``start_job`` lands (§1.1)."""
        try:
            db_id = int(text, 10)
        except ValueError:
            return error_reply(
                400,
                f'integer expected in path for id: strconv.ParseInt: parsing "{text}": '
                "invalid syntax",
            )
        for job in self.backend.jobs:
            if job.committed and job.db_id == db_id:
                now = self.backend.clock()
                return Reply(200, (go_json(job.to_json(now, with_metadata=True)) + "\n").encode())
        return error_reply(404, "finding job failed: sql: no rows in result set")


def _abort(sock: trio.socket.SocketType) -> None:
    """Close with RST (SO_LINGER 0): the peer sees a reset, not an orderly close."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()
