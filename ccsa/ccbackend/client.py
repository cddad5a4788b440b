"""ccsa's async REST client for cc-backend: one ``httpx.AsyncClient`` on trio, answers classified.

``classify`` (pure) turns an HTTP status and body into an ``Outcome``: delivered, done (cc-backend
already has it: 422 on start, 422/404 on stop), rejected (a 4xx that retrying will not change,
with cc-backend's ``error`` text) or transient (5xx, timeouts, refused or reset connections).
``BackendClient`` only does the I/O. The JWT goes into the ``X-Auth-Token`` header and nowhere
else: not into ``repr``, log lines or exception texts (every message we build is scrubbed).
"""

from __future__ import annotations

import json
import logging
import ssl
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

import httpx
import msgspec

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


class BackendClient:
    """cc-backend's REST API over one connection pool for the daemon's life.

    Args:
        base_url: ``ccRestUrl`` (``http(s)://host:port``; a trailing ``/`` is dropped).
        jwt: the raw API token, sent as ``X-Auth-Token``.
        timeout: seconds for connect, each read and each write.
        verify: True = system CAs; a path = that CA bundle; an SSLContext; False = no
            verification (logged as a WARNING).
        transport: an httpx transport (tests).

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
        if verify is False:
            log.warning(
                "TLS certificate verification for cc-backend at %s is DISABLED (ccRestInsecure)",
                self.base_url,
            )
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers={
                "X-Auth-Token": jwt,
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            timeout=httpx.Timeout(timeout),
            verify=_ssl_context(verify),
            transport=transport,
            # keep-alive for every connection the pool may open: a smaller keep-alive limit
            # makes a burst of concurrent requests reconnect over and over
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
            trust_env=False,  # no proxy or CA from the environment: the config says all
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
        await self._client.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._client.__aexit__(exc_type, exc, tb)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    # ------------------------------------------------------------------ requests

    def _scrub(self, text: str) -> str:
        # A real token is long; a toy one ("t") would mangle every message.
        return text.replace(self._jwt, "<jwt>") if len(self._jwt) >= 16 else text

    def _transport_message(self, what: str, exc: httpx.TransportError) -> str:
        if isinstance(exc, httpx.TimeoutException):
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
            resp = await self._client.post(path, content=body)
        except httpx.TransportError as exc:
            return Outcome("transient", None, self._transport_message(f"POST {path}", exc))
        outcome = classify(endpoint, resp.status_code, resp.content)
        message = self._scrub(outcome.message)
        log.debug("POST %s -> %s (%s)", path, resp.status_code, outcome.kind)
        return Outcome(outcome.kind, outcome.status, message)

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
            params: list[tuple[str, str | int | float | bool | None]] = [
                ("state", "running"),
                ("items-per-page", str(page_size)),
                ("page", str(page)),
            ]
            if cluster is not None:
                params.append(("cluster", cluster))
            try:
                resp = await self._client.get(PATHS["get_jobs"], params=params)
            except httpx.TransportError as exc:
                raise BackendUnavailable(what, self._transport_message("request", exc)) from None
            if resp.status_code != 200:
                outcome = classify("get_jobs", resp.status_code, resp.content)
                message = self._scrub(outcome.message)
                if outcome.kind == "transient":
                    raise BackendUnavailable(what, message, resp.status_code)
                raise BackendRejected(what, resp.status_code, message)
            try:
                rows = _page_decoder.decode(resp.content).jobs or []
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


def _ssl_context(verify: bool | str | ssl.SSLContext) -> ssl.SSLContext | bool:
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
