"""In-memory counters and gauges of the running daemon, read by `status` and the metrics endpoint.

Plain integers in one object (no prometheus_client here): the daemon is a single trio thread, so
no locking is needed, and the metrics module renders them in whatever format it likes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stats:
    """Counters since the daemon started (monotonic; never reset while running)."""

    starts_delivered: int = 0  # 201
    stops_delivered: int = 0  # 200
    starts_done: int = 0  # 422: cc-backend already had it
    stops_done: int = 0  # 422 / 404
    rejections: Counter[int] = field(default_factory=Counter)  # by HTTP status
    transient_failures: int = 0
    nats_published: int = 0
    nats_failures: int = 0
    dry_run_printed: int = 0
    without_resources: int = 0  # starts delivered (201) with host names only
    starts_queued: int = 0
    stops_queued: int = 0
    resource_updates: int = 0
    sync_ticks: int = 0
    sync_failures: Counter[str] = field(default_factory=Counter)  # by cluster
    #: sub-windows whose sacct timed out and were read again in shorter ones, by cluster
    sacct_window_timeouts: Counter[str] = field(default_factory=Counter)
    prep_events: int = 0
    prep_dropped: int = 0
    prep_garbage: int = 0
    prep_given_up: int = 0
    scripts_prefetched: int = 0  # job scripts fetched when the hook event came
    scripts_prefetch_hits: int = 0  # of those, handed to a start
    stale_marked: int = 0
    stuck_stopped: int = 0
    stuck_restarted: int = 0
    node_state_failures: int = 0
    #: starts cc-backend refused as a rerun within 86,400 s of an earlier run (issue 18 item 1)
    refused_reruns: int = 0
    #: of those, starts cc-backend later listed as running (the 422 was for another run)
    refused_adopted: int = 0
    #: rows dropped by unknownClusterRetention, by cluster (issue 17 item 7)
    retention_dropped: Counter[str] = field(default_factory=Counter)
    #: answers that paused a channel (401/403, a proxy's page), by HTTP status (issue 17 item 2)
    blocked_answers: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in vars(self).items():
            out[name] = (
                {str(k): v for k, v in sorted(value.items())}
                if isinstance(value, Counter)
                else value
            )
        return out
