"""The demo's live view (pure): one `Snapshot` of the flow, as a plain line or a rich layout.

`plain_line` is for a pipe or a log (one line every few seconds), `rich_view` for a terminal:
flow counts for simulated Slurm and the stand-in cc-backend, the daemon's outbox/parked/polls,
the latest jobs with their nodes and GPUs, recent errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ccsa.hostlist import compress

if TYPE_CHECKING:
    from rich.console import RenderableType

    from ccsa.sim.ccbackend.state import Backend
    from ccsa.sim.slurm import JobTruth


def gpu_text(j: JobTruth, types: Mapping[str, list[str]]) -> str:
    """``h100:0-1 h200:2`` style: the GPUs of the job's first GPU node, by type."""
    parts: list[str] = []
    for n in j.nodes:
        if not n.gpus:
            continue
        prefix = n.hostname.rstrip("0123456789")
        names = types.get(prefix, [])
        by_type: dict[str, list[int]] = {}
        for g in n.gpus:
            by_type.setdefault(names[g] if g < len(names) else "gpu", []).append(g)
        text = " ".join(f"{t}:{','.join(map(str, gs))}" for t, gs in by_type.items())
        parts.append(f"{n.hostname}[{text}]")
    return " ".join(parts[:2]) + (" …" if len(parts) > 2 else "")


def job_label(j: JobTruth) -> str:
    if j.array_task_id is not None:
        return f"{j.job_id} ({j.array_job_id}_{j.array_task_id})"
    if j.het_offset is not None:
        return f"{j.job_id} ({j.het_job_id}+{j.het_offset})"
    return str(j.job_id)


@dataclass
class Snapshot:
    """What the live view shows at one moment."""

    elapsed: float
    duration: float
    phase: str
    submitted: int = 0
    pending: int = 0
    running: int = 0
    finished: int = 0
    cc_jobs: int = 0
    cc_running: int = 0
    cc_stopped: int = 0
    cc_rejected: int = 0
    cc_duplicates: int = 0
    nats_messages: int | None = None
    outbox: int | None = None
    parked: int | None = None
    ticks: int | None = None
    hooks: int = 0
    hook_failures: int = 0
    latest: list[tuple[str, str, str, str, str, str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def snapshot_of(
    elapsed: float,
    duration: float,
    phase: str,
    truth: list[JobTruth],
    backend: Backend,
    types: Mapping[str, list[str]],
) -> Snapshot:
    """The flow counts and the latest jobs (the daemon's and the hooks' parts are added by the
    caller)."""
    s = Snapshot(elapsed=elapsed, duration=duration, phase=phase)
    s.submitted = len(truth)
    s.pending = sum(j.start is None and j.end is None for j in truth)
    s.running = sum(j.start is not None and j.end is None for j in truth)
    s.finished = sum(j.end is not None for j in truth)
    rows = backend.jobs
    by_id = {(r.cluster, r.job_id): r for r in rows}
    s.cc_jobs = len(rows)
    s.cc_running = sum(r.state == "running" for r in rows)
    s.cc_stopped = s.cc_jobs - s.cc_running
    # 422 = cc-backend already had that start/stop (a duplicate, harmless); others are errors
    s.cc_rejected = sum(e.status >= 400 and e.status != 422 for e in backend.events)
    s.cc_duplicates = sum(e.status == 422 for e in backend.events)
    recent = sorted(truth, key=lambda j: max(j.submit, j.start or 0, j.end or 0), reverse=True)
    for j in recent[:8]:
        row = by_id.get((j.cluster, j.job_id))
        nodes = compress(n.hostname for n in j.nodes) if j.nodes else ""
        cc_state = row.state if row else "-"
        s.latest.append(
            (job_label(j), j.user, j.partition, j.state, cc_state, nodes, gpu_text(j, types))
        )
    return s


def plain_line(s: Snapshot) -> str:
    """One line for a log or a pipe."""
    daemon = (
        f"outbox {s.outbox}, parked {s.parked}, polls {s.ticks}"
        if s.outbox is not None
        else "daemon starting"
    )
    nats = f", {s.nats_messages} NATS msgs" if s.nats_messages is not None else ""
    return (
        f"[{s.elapsed:5.0f}s {s.phase}] Slurm: {s.submitted} submitted, {s.pending} pending, "
        f"{s.running} running, {s.finished} finished | cc-backend: {s.cc_jobs} jobs "
        f"({s.cc_running} running, {s.cc_stopped} stopped, {s.cc_rejected} rejected, "
        f"{s.cc_duplicates} duplicates{nats}) | "
        f"{daemon} | hooks {s.hooks} ({s.hook_failures} failed) | errors {len(s.errors)}"
    )


def rich_view(s: Snapshot) -> RenderableType:
    """The live view: flow counts, latest jobs with nodes and GPUs, recent errors."""
    from rich.console import Group
    from rich.markup import escape
    from rich.panel import Panel
    from rich.table import Table

    flow = Table(title=f"ccsa demo — {s.phase} — {s.elapsed:.0f}/{s.duration:.0f} s", expand=True)
    for col in (
        "",
        "submitted",
        "pending",
        "running",
        "finished/stopped",
        "rejected",
        "dup. (422)",
    ):
        flow.add_column(col, justify="right" if col else "left")
    flow.add_row(
        "Slurm (simulated)",
        str(s.submitted),
        str(s.pending),
        str(s.running),
        str(s.finished),
        "",
        "",
    )
    flow.add_row(
        "cc-backend (stand-in)",
        "",
        "",
        str(s.cc_running),
        str(s.cc_stopped),
        str(s.cc_rejected),
        str(s.cc_duplicates),
    )
    daemon = Table.grid(padding=(0, 2))
    daemon.add_row(
        f"outbox: {s.outbox if s.outbox is not None else '-'}",
        f"parked: {s.parked if s.parked is not None else '-'}",
        f"polls: {s.ticks if s.ticks is not None else '-'}",
        f"hooks run: {s.hooks} ({s.hook_failures} failed)",
        f"NATS messages: {s.nats_messages}" if s.nats_messages is not None else "NATS: off",
    )
    latest = Table(title="latest jobs", expand=True)
    for col in ("job", "user", "partition", "Slurm", "cc-backend", "nodes", "GPUs"):
        latest.add_column(col, overflow="fold")
    for row in s.latest:  # host and GPU texts like dgpu002[h100:0,1] are not markup
        latest.add_row(*(escape(cell) for cell in row))
    errors = escape("\n".join(s.errors[-6:])) or "none"
    return Group(
        flow,
        Panel(daemon, title="daemon"),
        latest,
        Panel(errors, title="errors", style="red" if s.errors else "green"),
    )
