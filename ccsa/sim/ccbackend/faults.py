"""Fault injection for the stand-in: scripted answers, per-job rules, latency, connection resets.

``Faults.decide`` is pure: given the endpoint and the raw body it returns a ``Plan`` (delay,
canned reply or normal processing, reset before or after processing). The server carries the plan
out with trio (``trio.sleep`` for the delay, so autojump-clock tests work); "down"/"up" belong to
the server, which owns the listener.

Endpoints are ``start_job``, ``stop_job``, ``get_jobs``, ``nodestate`` or ``*`` (any).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal

from ccsa.sim.ccbackend.state import Reply, error_reply

__all__ = ["ENDPOINTS", "Faults", "Plan", "Rule"]

ENDPOINTS = ("start_job", "stop_job", "get_jobs", "nodestate")
Reset = Literal["before", "after"]
ScriptEntry = int | tuple[int, bytes | str | None]


def _check(endpoint: str) -> str:
    if endpoint != "*" and endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}: use one of {', '.join(ENDPOINTS)} or *")
    return endpoint


def canned(status: int, body: bytes | str | None = None) -> Reply:
    """A scripted answer: bytes verbatim, str as cc-backend's error text, None = status text."""
    if isinstance(body, bytes):
        return Reply(status, body)
    if status < 400:
        return Reply(status, (body or "").encode())
    return error_reply(status, body if body is not None else HTTPStatus(status).phrase)


@dataclass
class Rule:
    """Answer ``reply`` for requests to ``endpoint`` whose body matches; ``times`` None = always."""

    endpoint: str
    reply: Reply
    job_id: int | None = None
    predicate: Callable[[dict[str, Any]], bool] | None = None
    times: int | None = None
    hits: int = 0

    def matches(self, endpoint: str, body: dict[str, Any]) -> bool:
        """True if this rule applies to a request with decoded ``body``."""
        if self.endpoint not in ("*", endpoint):
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        if self.job_id is not None and body.get("jobId") != self.job_id:
            return False
        return self.predicate is None or bool(self.predicate(body))


@dataclass(frozen=True)
class Plan:
    """What the server does with one request."""

    delay: float = 0.0
    reply: Reply | None = None  # None = let the Backend answer
    reset: Reset | None = None  # close the connection before answering (after processing or not)


@dataclass
class _Latency:
    seconds: float
    remaining: int | None


@dataclass
class Faults:
    """The fault programme of one stand-in; every method may be called while it serves."""

    _scripts: dict[str, deque[Reply]] = field(default_factory=dict)
    _rules: list[Rule] = field(default_factory=list)
    _latency: dict[str, _Latency] = field(default_factory=dict)
    _resets: dict[str, deque[Reset]] = field(default_factory=dict)

    def script(self, endpoint: str, responses: Iterable[ScriptEntry]) -> None:
        """The next calls of ``endpoint`` answer these, in order: ``500`` or ``(502, body)``."""
        queue = self._scripts.setdefault(_check(endpoint), deque())
        for entry in responses:
            status, body = (entry, None) if isinstance(entry, int) else entry
            queue.append(canned(status, body))

    def rule(
        self,
        endpoint: str,
        job_id: int | None = None,
        status: int = 500,
        message: str | bytes | None = None,
        *,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        times: int | None = None,
    ) -> Rule:
        """Answer ``status``/``message`` for ``jobId == job_id`` and/or when ``predicate(body)``."""
        rule = Rule(_check(endpoint), canned(status, message), job_id, predicate, times)
        self._rules.append(rule)
        return rule

    def latency(self, endpoint: str, seconds: float, n: int | None = None) -> None:
        """Delay answers of ``endpoint`` by ``seconds`` (the next ``n`` calls, or all)."""
        self._latency[_check(endpoint)] = _Latency(seconds, n)

    def reset_next(self, endpoint: str, n: int = 1, *, after_processing: bool = False) -> None:
        """Close the connection without an answer on the next ``n`` calls.

        With ``after_processing`` the Backend applies the request first (the answer is lost),
        the case that makes a client retry something that already happened.
        """
        queue = self._resets.setdefault(_check(endpoint), deque())
        queue.extend(["after" if after_processing else "before"] * n)

    def clear(self) -> None:
        """Forget every fault."""
        self._scripts.clear()
        self._rules.clear()
        self._latency.clear()
        self._resets.clear()

    def _pop(self, table: dict[str, deque[Any]], endpoint: str) -> Any:
        for key in (endpoint, "*"):
            queue = table.get(key)
            if queue:
                return queue.popleft()
        return None

    def decide(self, endpoint: str, body: bytes) -> Plan:
        """The plan for one request of ``endpoint`` (consumes scripted entries)."""
        delay = 0.0
        for key in (endpoint, "*"):
            lat = self._latency.get(key)
            if lat is not None and (lat.remaining is None or lat.remaining > 0):
                delay = lat.seconds
                if lat.remaining is not None:
                    lat.remaining -= 1
                break
        reset: Reset | None = self._pop(self._resets, endpoint)
        if reset is not None:
            return Plan(delay, None, reset)
        scripted: Reply | None = self._pop(self._scripts, endpoint)
        if scripted is not None:
            return Plan(delay, scripted)
        if self._rules:
            try:
                decoded = json.loads(body) if body else {}
            except ValueError:
                decoded = {}
            if not isinstance(decoded, dict):
                decoded = {}
            for rule in self._rules:
                if rule.matches(endpoint, decoded):
                    rule.hits += 1
                    return Plan(delay, rule.reply)
        return Plan(delay)
