"""The demo's closing summary (pure): what Slurm did, what cc-backend got, and the verdict.

`summary` returns the lines to print and the exit status: 0 when every job that finished by the
cutoff reached cc-backend exactly once with its resources, 130 when the user interrupted before
any job finished (nothing to verify yet: said so, not a failure), 1 otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ccsa.daemon.snapshot import StatusSnapshot

if TYPE_CHECKING:
    from ccsa.sim.ccbackend.state import Backend
    from ccsa.sim.slurm import JobTruth
    from ccsa.sim.verdict import Verdict

__all__ = ["summary"]


def summary(
    verdict: Verdict | None,
    truth: Sequence[JobTruth],
    backend: Backend,
    status: StatusSnapshot | None,
    cutoff: float,
    *,
    interrupted: bool,
    hooks: tuple[int, int],
) -> tuple[list[str], int]:
    """(lines, exit status) of the summary; ``hooks`` = (run, failed)."""
    until = "the interrupt" if interrupted else "the end"
    states: dict[str, int] = {}
    for j in truth:
        if j.end is not None and j.end <= cutoff:
            states[j.state] = states.get(j.state, 0) + 1
    submitted = sum(j.submit <= cutoff for j in truth)
    starts = sum(e.kind == "start" and e.status == 201 for e in backend.events)
    stops = sum(e.kind == "stop" and e.status == 200 for e in backend.events)
    out = [
        f"Slurm: {submitted} job records submitted by {until}; finished by {until}: "
        f"{', '.join(f'{k} {v}' for k, v in sorted(states.items())) or 'none'}",
        f"cc-backend: {len(backend.jobs)} jobs stored, {starts} starts and {stops} stops "
        f"accepted; hooks run: {hooks[0]} ({hooks[1]} failed)",
    ]
    if status is not None:
        out.append(
            f"daemon: {status.counter('sync_ticks')} polls, {status.counter('prep_events')} hook "
            f"events, outbox {status.outbox}, parked {status.parked}"
        )
    if verdict is None:
        return [*out, "demo FAILED: the daemon stopped early (see above)"], 1
    out.append(
        f"check: {verdict.expected} finished jobs, {verdict.exactly_once} started and "
        f"stopped exactly once, {verdict.full_resources} with exactly Slurm's hosts, "
        f"hwthreads and GPUs ({verdict.gpu_jobs_checked} GPU jobs); {verdict.running_ok}/"
        f"{verdict.running_at_cutoff} running jobs present as running"
    )
    if verdict.ok and verdict.expected:
        done = f"all {verdict.expected} finished jobs reached cc-backend with their resources"
        return [*out, f"demo OK: {done}"], 0
    if verdict.ok and interrupted:  # stopped by the user: nothing to verify yet, no failure
        started = sum(j.start is not None and j.start <= cutoff for j in truth)
        return [
            *out,
            f"demo interrupted before any job finished: {submitted} submitted, {started} "
            f"started by the interrupt, {len(backend.jobs)} in cc-backend so far (nothing to "
            "verify yet: let it run longer)",
        ], 130
    if verdict.ok:
        return [*out, "demo FAILED: no job finished (run longer: --duration)"], 1
    problems = [f"  problem: {p}" for p in verdict.problems[:20]]
    return [*out, *problems, f"demo FAILED: {len(verdict.problems)} problems"], 1
