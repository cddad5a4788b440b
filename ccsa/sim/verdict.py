"""Did cc-backend get what Slurm did? The one verdict of the demo and the soak.

`verify` compares the stand-in cc-backend's final state (its accepted/refused events and stored
rows, ``ccsa.sim.ccbackend.state``) with the simulated cluster's ground truth
(``ccsa.sim.slurm.JobTruth``) and counts what matches and what does not: every started job must
be stored exactly once, started once with Slurm's start time, stopped once with its end time and
the state ``ccsa.convert`` maps it to, and carry exactly Slurm's hosts, hwthreads and GPU PCI
addresses (`resource_problem`). Any mismatch is a line in ``problems``.

Two callers, two views of "finished":

* the soak (``cutoff=None``) waits until Slurm is idle: every started job is judged in full; a
  job still running in cc-backend is stuck. It passes ``polls`` (times of successful polls'
  squeue snapshots): a job no snapshot saw running may legitimately arrive with host names only.
* the demo (``cutoff=T``) stops at T: jobs that ended by T are judged in full, and every job
  running at T must be stored as running. Its hooks fire for every job, so full resources are
  required of all (``polls=None``).

Issue 18's lifecycles: a requeued or preempted job has one row in cc-backend, the first run it
accepted, stopped as cancelled (or preempted) at the requeue or at the next run's start; every
later run's start is cc-backend's 422 within 86,400 s (``internal/api/job.go``), counted as
*refused* and listed in ``refused_runs``, not lost (a later run never offered is a problem). A
powered-up job's row may keep the allocation time it was started with.
"""

from __future__ import annotations

import bisect
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from ccsa import convert
from ccsa.sim.ccbackend.state import Event, StoredJob
from ccsa.sim.slurm import JobTruth

__all__ = ["CAPTURE_MARGIN", "Verdict", "capturable", "pci_for", "resource_problem", "verify"]

#: A poll's squeue snapshot "saw" a job running when it ran this long after the start and before
#: the end (the simulator's clock and the snapshot's time are whole seconds apart at worst).
CAPTURE_MARGIN = 1.0

_Key = tuple[str, int, int]


@dataclass
class Verdict:
    """What the check found; `table` prints it, `problems` fail the run."""

    submitted: int = 0
    never_started: int = 0
    expected: int = 0
    started_once: int = 0
    stopped_once: int = 0
    exactly_once: int = 0
    right_state: int = 0
    right_stop_time: int = 0
    capturable: int = 0
    full_resources: int = 0
    host_only_uncapturable: int = 0
    cores_only_uncapturable: int = 0
    gpu_jobs_checked: int = 0
    running_at_cutoff: int = 0
    running_ok: int = 0
    lost: int = 0
    duplicated: int = 0
    stuck_running: int = 0
    missing_resources: int = 0
    unexpected: int = 0
    starts_422: int = 0
    stops_422_404: int = 0
    restarted: int = 0
    earlier_run_kept: int = 0
    powered_up: int = 0
    refused: int = 0
    refused_runs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def table(self) -> str:
        rows = [
            ("jobs submitted", self.submitted),
            ("never started (not sent)", self.never_started),
            ("expected in cc-backend", self.expected),
            ("started exactly once", self.started_once),
            ("stopped exactly once", self.stopped_once),
            ("right state (as convert maps it)", self.right_state),
            ("right stop time", self.right_stop_time),
            ("seen running by a successful poll's squeue", self.capturable),
            ("with Slurm's hwthreads + GPUs", self.full_resources),
            ("  of them with GPUs", self.gpu_jobs_checked),
            ("host names only (ccsa could not see them)", self.host_only_uncapturable),
            ("cores, no GPU indices (seen only finished)", self.cores_only_uncapturable),
            (
                "repeats answered 422 (start) / 422,404 (stop)",
                f"{self.starts_422} / {self.stops_422_404}",
            ),
            ("requeued or preempted (ran more than once)", self.restarted),
            ("  of them kept as an earlier run", self.earlier_run_kept),
            ("powered up (start time reset)", self.powered_up),
            ("refused second run (422 within 86,400 s)", self.refused),
            ("LOST", self.lost),
            ("DUPLICATED", self.duplicated),
            ("STUCK running", self.stuck_running),
            ("WITHOUT resources though capturable", self.missing_resources),
            ("UNEXPECTED (never started, yet stored)", self.unexpected),
        ]
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"  {name.ljust(width)}  {value!s:>9}" for name, value in rows)


def pci_for(host: str, pci: Mapping[str, list[str]]) -> list[str]:
    """The PCI addresses of ``host`` (first matching regex, as the daemon does)."""
    for pattern, addrs in pci.items():
        if re.search(pattern, host):
            return addrs
    return []


def resource_problem(j: JobTruth, row: StoredJob, pci: Mapping[str, list[str]]) -> str:
    """'' when the stored resources are exactly Slurm's allocation, else what differs."""
    hosts = [r.get("hostname") for r in row.resources]
    want_hosts = [n.hostname for n in j.nodes]
    if hosts != want_hosts:
        return f"hosts {hosts} != Slurm's {want_hosts}"
    for res, node in zip(row.resources, j.nodes, strict=True):
        if list(res.get("hwthreads") or []) != list(node.hwthreads):
            return f"{node.hostname}: hwthreads {res.get('hwthreads')} != {list(node.hwthreads)}"
        addrs = pci_for(node.hostname, pci)
        want = [addrs[g] for g in node.gpus if g < len(addrs)]
        if list(res.get("accelerators") or []) != want:
            return f"{node.hostname}: accelerators {res.get('accelerators')} != {want}"
    return ""


def capturable(job: JobTruth, polls: Sequence[float]) -> bool:
    """True when a successful poll's squeue snapshot saw the job running."""
    if job.start is None:
        return False
    end = job.end if job.end is not None else math.inf
    lo, hi = job.start + CAPTURE_MARGIN, end - CAPTURE_MARGIN
    i = bisect.bisect_left(polls, lo)
    return i < len(polls) and polls[i] <= hi


def verify(
    truth: Sequence[JobTruth],
    events: Iterable[Event],
    rows: Iterable[StoredJob],
    *,
    pci: Mapping[str, list[str]],
    polls: Sequence[float] | None = None,
    cutoff: float | None = None,
) -> Verdict:
    """Check cc-backend's final state against Slurm's ground truth (pure; see the module)."""
    v = Verdict(submitted=len(truth))
    starts, stops, refusals = _accepted(events, v)
    stored: dict[tuple[str, int], list[StoredJob]] = {}
    for row in rows:
        stored.setdefault((row.cluster, row.job_id), []).append(row)
    started = [j for j in truth if j.start is not None or _runs(j)]
    v.never_started = len(truth) - len(started)
    wanted = {(j.cluster, j.job_id) for j in started}
    for cluster, job_id in stored:
        if (cluster, job_id) not in wanted:
            v.unexpected += 1
            v.problems.append(f"{cluster}/{job_id}: stored, but Slurm never started it")
    if cutoff is None:
        expected = started
    else:
        expected = [j for j in started if j.end is not None and j.end <= cutoff]
        # (a job pending again after a requeue is neither: its earlier run has ended, the
        # next has not begun)
        running = [
            j for j in started if j.start is not None and j.end is None and j.start <= cutoff
        ]
        v.running_at_cutoff = len(running)
        for j in running:
            found = stored.get((j.cluster, j.job_id), [])
            if len(found) == 1 and found[0].state == "running":
                v.running_ok += 1
            else:
                v.problems.append(
                    f"{j.cluster}/{j.job_id}: running in Slurm, {len(found)} rows in cc-backend"
                )
    v.expected = len(expected)
    for j in expected:
        found = stored.get((j.cluster, j.job_id), [])
        _judge(v, j, found, _Seen(starts, stops, refusals), pci, polls)
    return v


class _Seen(NamedTuple):
    starts: Counter[_Key]  # accepted starts (201)
    stops: Counter[_Key]  # accepted stops (200)
    refusals: set[_Key]  # starts answered 422


class _JobRun(NamedTuple):
    """One run of a job as cc-backend should see it: start, end, Slurm state, hosts."""

    start: int
    end: int
    state: str
    hosts: list[str]


def _runs(j: JobTruth) -> list[_JobRun]:
    """The runs of a job, oldest first: the records a requeue or preemption ended, then the
    current one (none when it was cancelled while it pended again)."""
    out = [
        _JobRun(e.start, e.end, e.state, list(e.hosts))
        for e in j.earlier
        if e.state in ("REQUEUED", "PREEMPTED")
    ]
    if j.start is None:
        return out
    end = max(int(j.end or 0), j.start)
    return [*out, _JobRun(j.start, end, j.state, [n.hostname for n in j.nodes])]


def _run_of(row: StoredJob, j: JobTruth, runs: Sequence[_JobRun]) -> int | None:
    """Which run a cc-backend row is: its startTime is that run's start (the current run may
    also keep the allocation time of a power-up, issue 18 item 2)."""
    for i, r in enumerate(runs):
        if row.start_time == r.start:
            return i
    if j.start is not None and j.allocated is not None and row.start_time == j.allocated:
        return len(runs) - 1
    return None


def _accepted(
    events: Iterable[Event], v: Verdict
) -> tuple[Counter[_Key], Counter[_Key], set[_Key]]:
    """Accepted starts (201) and stops (200) per job, and the starts answered 422; counts the
    repeats cc-backend absorbed."""
    starts: Counter[_Key] = Counter()
    stops: Counter[_Key] = Counter()
    refusals: set[_Key] = set()
    for e in events:
        key = (e.cluster or "", e.job_id or 0, e.start_time or 0)
        if e.kind == "start" and e.status == 201:
            starts[key] += 1
        elif e.kind == "stop" and e.status == 200:
            stops[key] += 1
        elif e.kind == "start" and e.status == 422:
            v.starts_422 += 1
            refusals.add(key)
        elif e.kind == "stop" and e.status in (404, 422):
            v.stops_422_404 += 1
    return starts, stops, refusals


def _judge(
    v: Verdict,
    j: JobTruth,
    found: list[StoredJob],
    seen: _Seen,
    pci: Mapping[str, list[str]],
    polls: Sequence[float] | None,
) -> None:
    """One finished job: stored once, started and stopped once, its state, stop time and
    resources; for a job that ran more than once, the run cc-backend kept and the refusals of
    the later ones."""
    name = f"{j.cluster}/{j.job_id}"
    runs = _runs(j)
    n_starts = sum(c for k, c in seen.starts.items() if k[:2] == (j.cluster, j.job_id))
    v.restarted += len(runs) > 1
    v.powered_up += j.allocated is not None and j.start is not None and j.allocated != j.start
    if not found:
        v.lost += 1
        v.problems.append(f"{name}: LOST (never reached cc-backend)")
        return
    if len(found) > 1 or n_starts > 1:
        v.duplicated += 1
        v.problems.append(f"{name}: {len(found)} rows, {n_starts} accepted starts")
        return
    row = found[0]
    i = _run_of(row, j, runs)
    if i is None:
        v.problems.append(
            f"{name}: start time {row.start_time}, Slurm says {[r.start for r in runs]}"
        )
        return
    key = (j.cluster, j.job_id, row.start_time)
    once = seen.starts[key] == 1
    if once:
        v.started_once += 1
    else:
        v.problems.append(f"{name}: start {row.start_time} accepted {seen.starts[key]} times")
    for later in runs[i + 1 :]:
        if (j.cluster, j.job_id, later.start) in seen.refusals:
            v.refused += 1
            v.refused_runs.append(
                f"{name}: run of {later.start} refused (422), cc-backend keeps {row.start_time}"
            )
        else:
            v.problems.append(f"{name}: run of {later.start} never offered to cc-backend")
    if row.state == "running":
        v.stuck_running += 1
        v.problems.append(f"{name}: still running in cc-backend (Slurm: {j.state})")
        return
    if seen.stops[key] == 1:
        v.stopped_once += 1
        v.exactly_once += once
    else:
        v.problems.append(f"{name}: stopped {seen.stops[key]} times")
    run = runs[i]
    current = i == len(runs) - 1 and j.start is not None
    want_states = {convert.job_state([run.state])} | (set() if current else {"cancelled"})
    if row.state in want_states:
        v.right_state += 1
    else:
        v.problems.append(f"{name}: state {row.state}, expected {want_states} ({run.state})")
    want_stops = {run.end} | ({runs[i + 1].start} if i + 1 < len(runs) else set())
    if row.start_time + row.duration in {max(t, row.start_time) for t in want_stops}:
        v.right_stop_time += 1
    else:
        v.problems.append(
            f"{name}: stop time {row.start_time + row.duration}, Slurm says {sorted(want_stops)}"
        )
    if current:
        _judge_resources(v, j, row, pci, polls)
        return
    v.earlier_run_kept += 1
    hosts = [r.get("hostname") for r in row.resources]
    if hosts != run.hosts:
        v.problems.append(f"{name}: hosts {hosts} != the earlier run's {run.hosts}")


def _judge_resources(
    v: Verdict,
    j: JobTruth,
    row: StoredJob,
    pci: Mapping[str, list[str]],
    polls: Sequence[float] | None,
) -> None:
    name = f"{j.cluster}/{j.job_id}"
    hosts = [r.get("hostname") for r in row.resources]
    has_hw = all(r.get("hwthreads") for r in row.resources)
    seen = True if polls is None else capturable(j, polls)
    v.capturable += seen
    if seen or has_hw:
        problem = resource_problem(j, row, pci)
        if problem and not seen and _cores_only(j, row):
            # seen only finished: slurmctld's record keeps the cores, not the GPU indices
            # (gres_detail is emptied at the end; docs/daemon.md "The poll" step 4)
            v.cores_only_uncapturable += 1
        elif problem:
            v.missing_resources += 1
            v.problems.append(f"{name}: {problem}")
        else:
            v.full_resources += 1
            v.gpu_jobs_checked += any(n.gpus for n in j.nodes)
    elif hosts == [n.hostname for n in j.nodes]:
        v.host_only_uncapturable += 1
    else:
        v.problems.append(f"{name}: hosts {hosts} != Slurm's {[n.hostname for n in j.nodes]}")


def _cores_only(j: JobTruth, row: StoredJob) -> bool:
    """Slurm's hosts and hwthreads, and no accelerators at all."""
    if [r.get("hostname") for r in row.resources] != [n.hostname for n in j.nodes]:
        return False
    return all(
        list(r.get("hwthreads") or []) == list(n.hwthreads) and not r.get("accelerators")
        for r, n in zip(row.resources, j.nodes, strict=True)
    )
