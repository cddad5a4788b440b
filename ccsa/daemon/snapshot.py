"""The daemon's status snapshot: one typed contract for the daemon, ``status``, metrics, demo.

`StatusSnapshot` is what the daemon answers to ``{"ccsa": "status"}`` on its PrEp socket (JSON,
msgspec-encoded), what ``cc-slurm-adapter status`` decodes and prints, what the Prometheus
endpoint turns into metric families, and what the demo polls. Every field has a default, so an
answer from an older or newer daemon decodes (missing fields take the default, unknown ones are
ignored). ``counters`` is `ccsa.daemon.stats.Stats.as_dict` (plain numbers, or ``{label: count}``
for the labelled counters) so a counter added to `Stats` appears here without a second list.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "ChannelStatus",
    "ClusterStatus",
    "CommandStats",
    "LimiterStats",
    "ParkedEntry",
    "SlurmStats",
    "StatusSnapshot",
    "TopologyStatus",
    "WaitingEntry",
    "decode",
    "encode",
]


class ClusterStatus(msgspec.Struct, kw_only=True):
    """One cluster's watermark (end of the last fully queued sacct window) and sync health.

    ``waiting``: jobs not sent yet for a reason that may pass (an empty user name, a node list
    that does not expand), looked up again on every poll; ``waiting_since``: when the oldest
    of them began to wait (each is parked for ``redrive`` after ``plan.WAIT_LIMIT``).
    ``slurm_clock_offset``/``dbd_queue``/``held_*``: `ccsa.daemon.dbdlag` (issue 18).
    """

    watermark: float | None = None
    last_sync: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    waiting: int = 0
    waiting_since: float | None = None
    #: slurmctld's clock minus this host's, seconds (``sdiag``; None: not measured)
    slurm_clock_offset: float | None = None
    #: messages slurmctld holds for slurmdbd (``sdiag``'s DBD Agent queue size)
    dbd_queue: int | None = None
    #: the watermark waits behind the start of this job, which sacct does not have yet
    held_for_job: int | None = None
    held_at: float | None = None
    #: records of the last poll that did not decode ("sacct job 12: time.start: reason"); the
    #: sacct ones wait (``waiting``) and are looked up again (`ccsa.daemon.undecodable`)
    undecodable: list[str] = msgspec.field(default_factory=list)


class ParkedEntry(msgspec.Struct, kw_only=True):
    """One parked (rejected) delivery, as ``redrive --id`` names it."""

    id: int
    cluster: str
    job_id: int
    start_time: int | None = None
    kind: str = ""
    status: int | None = None
    reason: str = ""
    parked_at: float | None = None


class ChannelStatus(msgspec.Struct, kw_only=True):
    """A delivery channel (``rest``, ``nats``): paused for how long, and while every request is
    refused (401/403, a proxy's page; NATS down) why, since when (wall time) and how often."""

    paused_for: float = 0.0
    problem: str | None = None
    blocked_since: float | None = None
    blocked_answers: int = 0


class WaitingEntry(msgspec.Struct, kw_only=True):
    """The oldest row still waiting in the outbox, its attempts and its last answer."""

    cluster: str
    job_id: int
    start_time: int | None = None
    kind: str = ""
    attempts: int = 0
    last_error: str | None = None
    queued_at: float | None = None


class CommandStats(msgspec.Struct, kw_only=True):
    """Counters and latencies of one Slurm command (``SlurmRunner.stats``)."""

    count: int = 0
    errors: int = 0
    timeouts: int = 0
    deferred: int = 0
    total_latency: float = 0.0
    last_latency: float = 0.0
    max_latency: float = 0.0


class LimiterStats(msgspec.Struct, kw_only=True):
    """The Slurm command limiter's occupancy (``slurmMaxConcurrent``)."""

    capacity: int | None = None
    in_use: int = 0
    waiting: int = 0
    urgent_scopes: int = 0


class SlurmStats(msgspec.Struct, kw_only=True):
    """Per-command statistics and the limiter."""

    commands: dict[str, CommandStats] = msgspec.field(default_factory=dict)
    limiter: LimiterStats = msgspec.field(default_factory=LimiterStats)


Counters = dict[str, int | dict[str, int]]


class TopologyStatus(msgspec.Struct, kw_only=True):
    """cc-backend's cluster topology in use (``ccsa.daemon.topocache``) and each host's source.

    ``origin``: ``cc-backend`` (fetched this run), ``state DB`` (kept from an earlier run) or
    ``""`` (none). ``hosts``: cluster -> {source: hosts} over the hosts sinfo reported, source
    ``topology``, ``slurm`` or ``slurm (topology disagrees)`` (``ccsa.layout``); ``gpus``:
    cluster -> {``gpuPciAddrs`` | ``topology`` | ``none``: GPU hosts}.
    """

    origin: str = ""
    fetched_at: float | None = None
    last_error: str | None = None
    problems: list[str] = msgspec.field(default_factory=list)
    mismatches: list[str] = msgspec.field(default_factory=list)
    hosts: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)
    gpus: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)


class StatusSnapshot(msgspec.Struct, kw_only=True):
    """The daemon's state at one moment (see the module docstring for who reads it)."""

    version: str = "?"
    pid: int | None = None
    started_at: float | None = None
    clusters: dict[str, ClusterStatus] = msgspec.field(default_factory=dict)
    outbox: int = 0
    in_flight: int = 0
    waiting_retry: int = 0
    rest_paused_for: float = 0.0
    channels: dict[str, ChannelStatus] = msgspec.field(default_factory=dict)
    oldest_waiting: WaitingEntry | None = None
    parked: int = 0
    parked_latest: list[ParkedEntry] = msgspec.field(default_factory=list)
    prep_pending: int = 0
    prep_listen: list[str] = msgspec.field(default_factory=list)
    slurm_commands: SlurmStats = msgspec.field(default_factory=SlurmStats)
    counters: Counters = msgspec.field(default_factory=dict)
    topology: TopologyStatus | None = None

    def counter(self, name: str) -> int:
        """A plain counter's value (0 when absent or labelled)."""
        value = self.counters.get(name, 0)
        return value if isinstance(value, int) else 0

    def labelled(self, name: str) -> dict[str, int]:
        """A labelled counter (``{label: count}``; empty when absent or plain)."""
        value = self.counters.get(name)
        return value if isinstance(value, dict) else {}


_decoder = msgspec.json.Decoder(StatusSnapshot)


def decode(data: bytes) -> StatusSnapshot:
    """A snapshot from JSON. Raises msgspec.DecodeError / msgspec.ValidationError."""
    return _decoder.decode(data)


def encode(snap: StatusSnapshot) -> bytes:
    """The snapshot as compact JSON."""
    return msgspec.json.encode(snap)
