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

from ccsa.errors import BackendRejected, BackendUnavailable

__all__ = ["PATHS", "Endpoint", "Outcome", "classify", "error_text", "reason"]

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
    "['api'] (or both 'admin' and 'api'), not expired, and this host in api-allowed-ips"
)


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


def classify(endpoint: Endpoint, status: int, body: bytes, what: str) -> Outcome:
    """Classify an HTTP answer of ``endpoint`` (pure); ``what`` names the request in errors.

    Raises:
        BackendUnavailable: 5xx, 408, 429: try again later.
        BackendRejected: any other 4xx: this request will not succeed as it is.
    """
    if status == DELIVERED[endpoint]:
        return Outcome("delivered", status, f"{status} {reason(status)}")
    text = error_text(body)
    if status in _DONE[endpoint]:
        return Outcome("done", status, text)
    if status >= 500 or status in (408, 429):
        raise BackendUnavailable(what, f"{status} {reason(status)}: {text}", status)
    if status == 401:
        raise BackendRejected(what, status, f"401 Unauthorized: {text} ({HINT_401})")
    if status == 403:
        hint = "the token's user lacks the role 'api' or the request was blocked"
        raise BackendRejected(what, status, f"403 Forbidden: {text} ({hint})")
    raise BackendRejected(what, status, f"{status} {reason(status)}: {text}")


def reason(status: int) -> str:
    """The HTTP reason phrase of ``status``."""
    return httpx.codes.get_reason_phrase(status) or "Unknown"
