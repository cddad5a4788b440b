"""Optional Prometheus text endpoint (``metricsListen``): the daemon's status snapshot as metrics.

`SnapshotCollector` is a prometheus-client Collector that turns one status snapshot
(`ccsa.daemon.snapshot.StatusSnapshot`) into metric families at scrape time, so there is no
second set of counters to keep in step; `exposition` renders it with ``generate_latest``. `serve`
is a tiny HTTP/1.1 server on trio (h11 does the parsing): prometheus-client's own servers are
thread/WSGI based and would run beside the trio loop, reading the daemon's state from another
thread. Every connection is bounded (size, time, count) and answers ``GET /metrics`` only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping

import h11
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from ccsa import sockaddr
from ccsa.daemon.snapshot import ClusterStatus, SlurmStats, StatusSnapshot, TopologyStatus
from ccsa.errors import ConfigError, DaemonError

__all__ = ["CONTENT_TYPE", "SnapshotCollector", "exposition", "listen_address", "serve"]

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_REQUEST = 16 * 1024
READ_TIMEOUT = 5.0
MAX_CONNECTIONS = 16

Snapshot = Callable[[], StatusSnapshot]

#: counters of ``Stats`` exported as-is: (snapshot key, metric name, help)
_COUNTERS = (
    ("starts_delivered", "ccsa_starts_delivered", "Job starts cc-backend accepted (201)."),
    ("stops_delivered", "ccsa_stops_delivered", "Job stops cc-backend accepted (200)."),
    ("starts_done", "ccsa_starts_duplicate", "Starts cc-backend already had (422)."),
    ("stops_done", "ccsa_stops_duplicate", "Stops cc-backend already had or did not know."),
    ("without_resources", "ccsa_jobs_without_resources", "Starts delivered with host names only."),
    ("transient_failures", "ccsa_transient_failures", "Deliveries retried (5xx, timeouts)."),
    ("nats_published", "ccsa_nats_published", "Job events published on NATS."),
    ("nats_failures", "ccsa_nats_failures", "NATS publishes that failed (retried)."),
    ("starts_queued", "ccsa_starts_queued", "Starts put into the outbox."),
    ("stops_queued", "ccsa_stops_queued", "Stops put into the outbox."),
    ("sync_ticks", "ccsa_sync_ticks", "Successful per-cluster polls."),
    ("prep_events", "ccsa_prep_events", "Prolog/Epilog hook events received."),
    ("prep_dropped", "ccsa_prep_dropped", "Hook events dropped (queue or connections full)."),
    ("prep_garbage", "ccsa_prep_garbage", "Unusable hook messages."),
    ("scripts_prefetched", "ccsa_scripts_prefetched", "Job scripts fetched on a hook event."),
    ("scripts_prefetch_hits", "ccsa_scripts_prefetch_hits", "Prefetched scripts used by a start."),
    ("stuck_stopped", "ccsa_stuck_stopped", "Jobs the stuck-job checker stopped."),
    ("stuck_restarted", "ccsa_stuck_restarted", "Starts the stuck-job checker sent again."),
    ("node_state_failures", "ccsa_node_state_failures", "Node state updates that failed."),
    (
        "refused_reruns",
        "ccsa_refused_reruns",
        "Starts cc-backend refused: a rerun within 86,400 s of an earlier run (parked).",
    ),
    (
        "refused_adopted",
        "ccsa_refused_adopted",
        "Starts taken for refused reruns that cc-backend later listed running (stop sent).",
    ),
)

#: Labelled counters of `Stats` by cluster: (Stats field, metric name, help).
_BY_CLUSTER = (
    ("sync_failures", "ccsa_sync_failures", "Failed polls, by cluster."),
    (
        "sacct_window_timeouts",
        "ccsa_sacct_window_timeouts",
        "Poll sub-windows whose sacct timed out and were read again in shorter ones, by cluster.",
    ),
)


#: per-cluster gauges: (metric name, help, its value in a ClusterStatus; None = no sample)
_CLUSTER_GAUGES: tuple[tuple[str, str, Callable[[ClusterStatus], float | None]], ...] = (
    (
        "ccsa_watermark_seconds",
        "End of the last fully queued sacct window (epoch s), by cluster.",
        lambda c: c.watermark,
    ),
    (
        "ccsa_last_sync_seconds",
        "Wall time of the last successful sync (epoch s), by cluster.",
        lambda c: c.last_sync,
    ),
    (
        "ccsa_jobs_waiting",
        "Jobs not sent yet for a reason that may pass (looked up every poll), by cluster.",
        lambda c: c.waiting,
    ),
    # issue 18: slurmctld's clock, slurmdbd's queue, the start the watermark waits behind
    (
        "ccsa_slurm_clock_offset_seconds",
        "slurmctld's clock minus this host's (sdiag), by cluster.",
        lambda c: c.slurm_clock_offset,
    ),
    (
        "ccsa_dbd_agent_queue",
        "Messages slurmctld holds for slurmdbd (sdiag's DBD Agent queue size), by cluster.",
        lambda c: c.dbd_queue,
    ),
    (
        "ccsa_watermark_held_at_seconds",
        "Start (epoch s) of the job sacct lacks that the watermark waits behind, by cluster.",
        lambda c: c.held_at,
    ),
)


class SnapshotCollector(Collector):
    """Metric families built from one call of ``snapshot`` per scrape."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        for key, name, text in _COUNTERS:
            yield CounterMetricFamily(name, text, value=snap.counter(key))
        rejections = CounterMetricFamily(
            "ccsa_rejections", "Deliveries cc-backend rejected, by HTTP status.", labels=["status"]
        )
        for status, count in sorted(snap.labelled("rejections").items()):
            rejections.add_metric([status], count)
        yield rejections
        for key, name, text in _BY_CLUSTER:
            family = CounterMetricFamily(name, text, labels=["cluster"])
            for cluster, count in sorted(snap.labelled(key).items()):
                family.add_metric([cluster], count)
            yield family

        yield GaugeMetricFamily(
            "ccsa_outbox_depth", "Deliveries waiting in the outbox.", value=snap.outbox
        )
        yield GaugeMetricFamily(
            "ccsa_parked", "Rejected deliveries parked for redrive.", value=snap.parked
        )
        yield GaugeMetricFamily(
            "ccsa_in_flight", "Deliveries being sent now.", value=snap.in_flight
        )
        yield from self._waiting(snap)
        yield from self._clusters(snap.clusters)
        yield from self._slurm(snap.slurm_commands)
        yield from self._topology(snap.topology)

    @staticmethod
    def _waiting(snap: StatusSnapshot) -> Iterator[Metric]:
        """Blocked channels and the oldest waiting row (issue 17 items 2 and 8)."""
        blocked_answers = CounterMetricFamily(
            "ccsa_blocked_answers",
            "Answers that paused delivery (401/403, a proxy's page), by HTTP status.",
            labels=["status"],
        )
        for status, count in sorted(snap.labelled("blocked_answers").items()):
            blocked_answers.add_metric([status], count)
        yield blocked_answers
        dropped = CounterMetricFamily(
            "ccsa_retention_dropped",
            "Rows of clusters cc-backend does not know, dropped by unknownClusterRetention.",
            labels=["cluster"],
        )
        for cluster, count in sorted(snap.labelled("retention_dropped").items()):
            dropped.add_metric([cluster], count)
        yield dropped
        blocked = GaugeMetricFamily(
            "ccsa_channel_blocked",
            "1 while every request of the channel is refused (token, proxy, NATS down).",
            labels=["channel"],
        )
        for name, ch in sorted(snap.channels.items()):
            blocked.add_metric([name], 1.0 if ch.problem else 0.0)
        yield blocked
        w = snap.oldest_waiting
        yield GaugeMetricFamily(
            "ccsa_oldest_waiting_queued_timestamp_seconds",
            "When the oldest row still in the outbox was queued (0: outbox empty).",
            value=(w.queued_at or 0.0) if w else 0.0,
        )
        yield GaugeMetricFamily(
            "ccsa_oldest_waiting_attempts",
            "Delivery attempts of the oldest row still in the outbox.",
            value=w.attempts if w else 0,
        )

    @staticmethod
    def _clusters(clusters: Mapping[str, ClusterStatus]) -> Iterator[Metric]:
        for metric, text, value_of in _CLUSTER_GAUGES:
            family = GaugeMetricFamily(metric, text, labels=["cluster"])
            for name, info in sorted(clusters.items()):
                value = value_of(info)
                if value is not None:  # unknown (never synced, no sdiag yet): no sample
                    family.add_metric([name], value)
            yield family

    @staticmethod
    def _topology(topo: TopologyStatus | None) -> Iterator[Metric]:
        """Hosts by where their hwthread / GPU ids come from (docs/resources.md)."""
        hosts = GaugeMetricFamily(
            "ccsa_hwthread_source_hosts",
            "Hosts by the source of their hwthread ids: topology (cc-backend), slurm "
            "(Slurm's shape and siblingNumbering), slurm (topology disagrees).",
            labels=["cluster", "source"],
        )
        gpus = GaugeMetricFamily(
            "ccsa_gpu_source_hosts",
            "GPU hosts by the source of their accelerator ids: gpuPciAddrs, topology, none.",
            labels=["cluster", "source"],
        )
        fetched = GaugeMetricFamily(
            "ccsa_topology_fetched_timestamp_seconds",
            "When the cluster topology in use was fetched from cc-backend (0: none).",
            value=(topo.fetched_at or 0.0) if topo is not None else 0.0,
        )
        if topo is not None:
            for cluster, counts in sorted(topo.hosts.items()):
                for source, n in sorted(counts.items()):
                    hosts.add_metric([cluster, source], n)
            for cluster, counts in sorted(topo.gpus.items()):
                for source, n in sorted(counts.items()):
                    gpus.add_metric([cluster, source], n)
        yield hosts
        yield gpus
        yield fetched

    @staticmethod
    def _slurm(slurm: SlurmStats) -> Iterator[Metric]:
        latency = SummaryMetricFamily(
            "ccsa_slurm_command_seconds",
            "Slurm command run time, by command.",
            labels=["command"],
        )
        errors = CounterMetricFamily(
            "ccsa_slurm_command_errors", "Failed Slurm commands, by command.", labels=["command"]
        )
        timeouts = CounterMetricFamily(
            "ccsa_slurm_command_timeouts", "Slurm commands killed on timeout.", labels=["command"]
        )
        longest = GaugeMetricFamily(
            "ccsa_slurm_command_max_seconds",
            "Longest Slurm command run time, by command.",
            labels=["command"],
        )
        for cmd, stats in sorted(slurm.commands.items()):
            latency.add_metric([cmd], stats.count, stats.total_latency)
            errors.add_metric([cmd], stats.errors)
            timeouts.add_metric([cmd], stats.timeouts)
            longest.add_metric([cmd], stats.max_latency)
        yield latency
        yield errors
        yield timeouts
        yield longest
        limiter = slurm.limiter
        yield GaugeMetricFamily(
            "ccsa_slurm_limiter_capacity",
            "slurmMaxConcurrent.",
            value=limiter.capacity or 0,
        )
        yield GaugeMetricFamily(
            "ccsa_slurm_limiter_in_use", "Slurm commands running now.", value=limiter.in_use
        )
        yield GaugeMetricFamily(
            "ccsa_slurm_limiter_waiting",
            "Slurm commands waiting for the limiter.",
            value=limiter.waiting,
        )


def exposition(snapshot: Snapshot) -> bytes:
    """The Prometheus text format of one snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return generate_latest(registry)


def listen_address(text: str) -> sockaddr.TcpAddr:
    """``metricsListen`` (``HOST:PORT``, ``[::1]:PORT``, ``tcp:...``) as a TcpAddr."""
    try:
        addr = sockaddr.parse(text if text.lower().startswith("tcp:") else f"tcp:{text}")
    except ValueError as exc:
        raise ConfigError("config", f"{exc} (use HOST:PORT)", "metricsListen") from None
    if not isinstance(addr, sockaddr.TcpAddr):
        raise ConfigError("config", f"{text!r} must be a TCP HOST:PORT", "metricsListen")
    return addr


async def serve(
    listen: str,
    snapshot: Snapshot,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``GET /metrics`` on ``listen`` until cancelled; reports the bound addresses."""
    addr = listen_address(listen)
    try:
        listeners = await trio.open_tcp_listeners(addr.port, host=addr.host or None)
    except OSError as exc:
        raise DaemonError(f"metricsListen {listen}: cannot listen: {exc.strerror}") from exc
    bound = []
    for ln in listeners:
        host, port = ln.socket.getsockname()[:2]
        bound.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    slots = trio.Semaphore(MAX_CONNECTIONS)

    async def handler(stream: trio.SocketStream) -> None:
        try:
            slots.acquire_nowait()
        except trio.WouldBlock:
            await stream.aclose()
            return
        try:
            with trio.move_on_after(READ_TIMEOUT):
                await _handle(stream, snapshot)
        finally:
            slots.release()
            await trio.aclose_forcefully(stream)

    log.info("metrics on http://%s/metrics", ", ".join(bound))
    task_status.started(bound)
    await trio.serve_listeners(handler, listeners)


async def _handle(stream: trio.SocketStream, snapshot: Snapshot) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
    request: h11.Request | None = None
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            await _send(stream, conn, 400, b"bad request\n")
            return
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive_some(MAX_REQUEST)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            conn.receive_data(data)
            if not data:
                return
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    if request is None:
        return
    path = request.target.split(b"?", 1)[0]
    if request.method not in (b"GET", b"HEAD"):
        await _send(stream, conn, 405, b"only GET\n")
    elif path not in (b"/metrics", b"/"):
        await _send(stream, conn, 404, b"try /metrics\n")
    else:
        body = exposition(snapshot)
        await _send(stream, conn, 200, b"" if request.method == b"HEAD" else body, CONTENT_TYPE)


async def _send(
    stream: trio.SocketStream,
    conn: h11.Connection,
    status: int,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
) -> None:
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    ]
    try:
        data = conn.send(h11.Response(status_code=status, headers=headers))
        if data:
            await stream.send_all(data)
        if body:
            data = conn.send(h11.Data(data=body))
            if data:
                await stream.send_all(data)
        data = conn.send(h11.EndOfMessage())
        if data:
            await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
        return
