"""One delivery channel's health (REST or NATS): pause with backoff, probe, and why it waits.

Pure bookkeeping (no I/O, no trio): the caller passes the trio clock (``now``) for pausing and
the wall clock (``wall``) for what ``status`` shows. A channel pauses after a failure that every
request would get (no answer, a gateway's 502/503/504, 401/403, a proxy's page instead of
cc-backend's answer, NATS not connected), then lets one probe row through at a time until
something succeeds, so a down or refusing peer is not hammered with every pending row. While a
*problem* is set (issue 17 item 2: the token or a proxy, not the job) the channel says why, since
when, and how many answers it got, and `Channel.should_log` lets the caller log it at most once
per `LOG_EVERY` seconds.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

__all__ = ["LOG_EVERY", "Backoff", "Channel", "ChannelState"]

#: Seconds between two log lines about the same blocked channel ("once per few minutes").
LOG_EVERY = 300.0


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter: base * 2**(n-1), at most cap, times U(0.5, 1)."""

    base: float = 1.0
    cap: float = 300.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, failures: int) -> float:
        raw = min(self.cap, self.base * 2.0 ** max(0, min(failures - 1, 60)))
        return raw * (0.5 + 0.5 * self.rng.random())


@dataclass(frozen=True, slots=True)
class ChannelState:
    """What ``status`` shows of a channel: paused for how long, and why it is blocked."""

    paused_for: float
    problem: str | None
    blocked_since: float | None
    blocked_answers: int


@dataclass
class Channel:
    """A channel that pauses after channel-level failures, then probes one row at a time."""

    backoff: Backoff
    failures: int = 0
    pause_until: float = -math.inf
    in_flight: int = 0
    problem: str | None = None
    blocked_since: float | None = None
    blocked_answers: int = 0
    _logged_at: float = -math.inf

    @property
    def probing(self) -> bool:
        return self.failures > 0

    def open(self, now: float) -> bool:
        if now < self.pause_until:
            return False
        return not (self.probing and self.in_flight > 0)

    def failure(self, now: float) -> None:
        if now < self.pause_until:
            # Rows sent together before the pause fail together: one failed attempt, not N
            # (8 workers timing out at once would otherwise pause for 2**7 s straight away).
            return
        self.failures += 1
        self.pause_until = now + self.backoff.delay(self.failures)

    def blocked(self, problem: str, now: float, wall: float) -> None:
        """An answer about the channel, not the row (401/403, a proxy's page): pause, and
        remember why and since when."""
        self.failure(now)
        self.problem = problem
        self.blocked_answers += 1
        if self.blocked_since is None:
            self.blocked_since = wall

    def should_log(self, now: float) -> bool:
        """True at most once per `LOG_EVERY` seconds (the caller then logs the problem)."""
        if now - self._logged_at < LOG_EVERY:
            return False
        self._logged_at = now
        return True

    def success(self) -> float | None:
        """Something went through. Returns the wall time the channel was blocked since (the
        caller logs the recovery), else None."""
        since = self.blocked_since
        self.failures = 0
        self.pause_until = -math.inf
        self.problem = None
        self.blocked_since = None
        self.blocked_answers = 0
        # _logged_at stays: an answer to a request sent before the recovery may block the
        # channel again for a moment, and that is no reason for a second ERROR.
        return since

    def state(self, now: float) -> ChannelState:
        return ChannelState(
            paused_for=max(0.0, self.pause_until - now),
            problem=self.problem,
            blocked_since=self.blocked_since,
            blocked_answers=self.blocked_answers,
        )
