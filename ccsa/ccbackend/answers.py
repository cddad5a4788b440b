"""What cc-backend's answers mean: pure classification of an HTTP status and body.

``classify`` turns an answer of one endpoint into an ``Outcome`` (delivered, or done: cc-backend
already has it) or raises the error the caller acts on (see ``ccsa.errors``). The contract is
``docs/ccbackend.md`` §1.4 (the error body), §2-§3 (start/stop answers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import httpx

from ccsa.errors import BackendBlocked, BackendRejected, BackendUnavailable

__all__ = ["PATHS", "Endpoint", "Outcome", "cc_error", "classify", "error_text", "reason"]

Kind = Literal["delivered", "done"]
Endpoint = Literal["start_job", "stop_job", "nodestate", "get_jobs"]

PATHS: dict[Endpoint, str] = {
    "start_job": "/api/jobs/start_job/",  # the trailing slash matters (ccbackend.md §1.1)
    "stop_job": "/api/jobs/stop_job/",
    "nodestate": "/api/nodestate/",
    "get_jobs": "/api/jobs/",
}
DELIVERED: dict[Endpoint, int] = {
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
HINT_401 = (
    "check ccRestJwt: cc-backend wants an EdDSA-signed token with a 'sub' claim, roles exactly "
    "['api'] (or both 'admin' and 'api'), not expired, and this host in api-allowed-ips; "
    "'cc-slurm-adapter check' tests it"
)
HINT_PROXY = (
    "without cc-backend's JSON error body (a reverse proxy's answer? check ccRestUrl and the "
    "proxy in front of cc-backend)"
)
HINT_404 = "not cc-backend's 'job not found': check ccRestUrl's path"


@dataclass(frozen=True, slots=True)
class Outcome:
    """A request that needs nothing more: ``delivered`` (201/200) or ``done`` (cc-backend
    already had it: 422 on start, 422/404 on stop), with the status and cc-backend's text."""

    kind: Kind
    status: int
    message: str


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


def cc_error(body: bytes) -> str | None:
    """The ``error`` text of cc-backend's own error body (``{"status":..,"error":..}``, both
    strings: ``handleError`` in internal/api/rest.go, the auth middleware's 401 and the router's
    404), or None for anything else: HTML or text from a reverse proxy, an empty body."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    error, status = value.get("error"), value.get("status")
    return error if isinstance(error, str) and isinstance(status, str) else None


#: The start of cc-backend's answer to a stop of a job it does not have (v1.5.4
#: internal/api/job.go ``stopJobByRequest``: ``handleError(fmt.Errorf("finding job failed:
#: %w", err), http.StatusNotFound, rw)``). Any other 404 (the router's "the requested endpoint
#: does not exist", a proxy's page) says nothing about the job.
STOP_NOT_FOUND = "finding job failed"


def classify(endpoint: Endpoint, status: int, body: bytes, what: str) -> Outcome:
    """Classify an HTTP answer of ``endpoint`` (pure); ``what`` names the request in errors.

    Raises:
        BackendBlocked: 401/403, or an error answer that is not cc-backend's JSON error body,
            or a 404 to a stop that is not cc-backend's "job not found": the channel waits.
        BackendUnavailable: 5xx, 408, 429 from cc-backend: try this request again later.
        BackendRejected: any other 4xx from cc-backend: this request will not succeed as it is.
    """
    if status == DELIVERED[endpoint]:
        return Outcome("delivered", status, f"{status} {reason(status)}")
    text = error_text(body)
    if status == 401:
        raise BackendBlocked(what, f"401 Unauthorized: {text} ({HINT_401})", status)
    if status == 403:
        hint = "the token's user lacks the role 'api' or a proxy blocked the request"
        raise BackendBlocked(what, f"403 Forbidden: {text} ({hint})", status)
    error = cc_error(body)
    if error is None:
        raise BackendBlocked(what, f"{status} {reason(status)} {HINT_PROXY}: {text}", status)
    if endpoint == "stop_job" and status == 404 and not error.startswith(STOP_NOT_FOUND):
        raise BackendBlocked(what, f"404 Not Found ({HINT_404}): {error}", status)
    if status in _DONE[endpoint]:
        return Outcome("done", status, error)
    if status >= 500 or status in (408, 429):
        raise BackendUnavailable(what, f"{status} {reason(status)}: {error}", status)
    raise BackendRejected(what, status, f"{status} {reason(status)}: {error}")


def reason(status: int) -> str:
    """The HTTP reason phrase of ``status``."""
    return httpx.codes.get_reason_phrase(status) or "Unknown"
