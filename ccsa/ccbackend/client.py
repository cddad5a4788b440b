"""ccsa's REST client for cc-backend: one keep-alive pool for the daemon's life, answers classified.

Error protocol (one for every request): a method returns only what succeeded (an ``Outcome``
``delivered``/``done`` for a POST, the list of running jobs for the GET) and raises
``BackendUnavailable`` (transport error, timeout, 5xx/408/429: retry later) or
``BackendRejected`` (a 4xx that retrying will not change) otherwise; ``ccsa.ccbackend.answers``
decides which. ``post`` sends the bytes it is given (the outbox stores encoded bodies).

The JWT goes into the ``X-Auth-Token`` header and nowhere else: not into ``repr``, log lines or
exception texts (every message we build, and every answer body, is scrubbed). Connections come
from ``ccsa.ccbackend.pool`` (why not ``httpx.AsyncClient``: see there); a caller-supplied
``httpx.AsyncBaseTransport`` (``transport=``) is used as is instead of the pool.
"""

from __future__ import annotations

import logging
import ssl
import zlib
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlencode

import httpcore
import httpx
import msgspec

import ccsa
from ccsa.ccbackend.answers import DELIVERED, PATHS, Endpoint, Outcome, classify, reason
from ccsa.ccbackend.pool import MAX_CONNECTIONS, Pool, insecure_context, ssl_context
from ccsa.errors import BackendUnavailable, ConfigError

__all__ = ["BackendClient", "Outcome", "RunningJob"]

log = logging.getLogger("ccsa.ccbackend")

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
        self._pool = Pool(
            httpcore.Origin(self._scheme, self._host, self._port),
            context if isinstance(context, ssl.SSLContext) else insecure_context(),
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

    def _scrub_body(self, body: bytes) -> bytes:
        jwt = self._jwt.encode("ascii")
        return body.replace(jwt, b"<jwt>") if len(jwt) >= 16 else body

    async def _request(
        self, method: bytes, url: httpcore.URL, body: bytes, what: str
    ) -> tuple[int, bytes]:
        """One request; returns (status, scrubbed body). Raises ``BackendUnavailable`` when no
        HTTP answer arrived (transport error, timeout, undecodable compression)."""
        try:
            status, content = await self._exchange(method, url, body)
        except _TRANSPORT_ERRORS as exc:
            raise BackendUnavailable(what, self._transport_message("request", exc)) from None
        except zlib.error as exc:
            raise BackendUnavailable(what, f"undecodable compressed answer: {exc}") from None
        return status, self._scrub_body(content)

    async def post(self, endpoint: Endpoint, body: bytes) -> Outcome:
        """POST the encoded ``body`` (exactly these bytes) to ``endpoint``.

        Returns ``delivered`` (201/200) or ``done`` (cc-backend already has it).

        Raises:
            BackendUnavailable: no answer, timeout, 5xx, 408, 429.
            BackendRejected: any other 4xx (status + cc-backend's text).
        """
        what = f"POST {PATHS[endpoint]}"
        status, content = await self._request(b"POST", self._urls[endpoint], body, what)
        if status == DELIVERED[endpoint]:
            outcome = _DELIVERED_OUTCOMES[endpoint]
        else:
            outcome = classify(endpoint, status, content, what)
        log.debug("%s -> %s (%s)", what, status, outcome.kind)
        return outcome

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
            status, content = await self._request(b"GET", self._url(target), b"", what)
            if status != 200:
                classify("get_jobs", status, content, what)  # raises for every non-200
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

    async def clusters(self) -> bytes:
        """``GET /api/clusters/``: the answer's bytes (decoded by ``ccsa.topology``).

        Raises:
            BackendUnavailable: transport error, timeout, 5xx.
            BackendRejected: any other non-200 answer (404: a cc-backend without the route).
        """
        what = "GET /api/clusters/"
        status, content = await self._request(b"GET", self._url(b"/api/clusters/"), b"", what)
        if status != 200:
            classify("get_jobs", status, content, what)  # raises for every non-200
        return content


_DELIVERED_OUTCOMES: dict[Endpoint, Outcome] = {
    endpoint: Outcome("delivered", status, f"{status} {reason(status)}")
    for endpoint, status in DELIVERED.items()
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
