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
"""

from __future__ import annotations

import bisect
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

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
            (
                "repeats answered 422 (start) / 422,404 (stop)",
                f"{self.starts_422} / {self.stops_422_404}",
            ),
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
    starts, stops = _accepted(events, v)
    stored: dict[tuple[str, int], list[StoredJob]] = {}
    for row in rows:
        stored.setdefault((row.cluster, row.job_id), []).append(row)
    started = [j for j in truth if j.start is not None]
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
        running = [j for j in started if j.end is None and (j.start or 0) <= cutoff]
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
        _judge(v, j, stored.get((j.cluster, j.job_id), []), starts, stops, pci, polls)
    return v


def _accepted(events: Iterable[Event], v: Verdict) -> tuple[Counter[_Key], Counter[_Key]]:
    """Accepted starts (201) and stops (200) per job; counts the repeats cc-backend absorbed."""
    starts: Counter[_Key] = Counter()
    stops: Counter[_Key] = Counter()
    for e in events:
        key = (e.cluster or "", e.job_id or 0, e.start_time or 0)
        if e.kind == "start" and e.status == 201:
            starts[key] += 1
        elif e.kind == "stop" and e.status == 200:
            stops[key] += 1
        elif e.kind == "start" and e.status == 422:
            v.starts_422 += 1
        elif e.kind == "stop" and e.status in (404, 422):
            v.stops_422_404 += 1
    return starts, stops


def _judge(
    v: Verdict,
    j: JobTruth,
    found: list[StoredJob],
    starts: Counter[_Key],
    stops: Counter[_Key],
    pci: Mapping[str, list[str]],
    polls: Sequence[float] | None,
) -> None:
    """One finished job: stored once, started and stopped once, its state, stop time and
    resources."""
    assert j.start is not None
    name = f"{j.cluster}/{j.job_id}"
    key = (j.cluster, j.job_id, int(j.start))
    n_starts = sum(c for k, c in starts.items() if k[:2] == key[:2])
    if not found:
        v.lost += 1
        v.problems.append(f"{name}: LOST (never reached cc-backend)")
        return
    if len(found) > 1 or n_starts > 1:
        v.duplicated += 1
        v.problems.append(f"{name}: {len(found)} rows, {n_starts} accepted starts")
        return
    row = found[0]
    once = starts[key] == 1 and row.start_time == key[2]
    if once:
        v.started_once += 1
    else:
        v.problems.append(f"{name}: start time {row.start_time}, Slurm says {key[2]}")
    if row.state == "running":
        v.stuck_running += 1
        v.problems.append(f"{name}: still running in cc-backend (Slurm: {j.state})")
        return
    if stops[key] == 1:
        v.stopped_once += 1
        v.exactly_once += once
    else:
        v.problems.append(f"{name}: stopped {stops[key]} times")
    want_state = convert.job_state([j.state])
    if row.state == want_state:
        v.right_state += 1
    else:
        v.problems.append(f"{name}: state {row.state}, expected {want_state} ({j.state})")
    want_stop = max(int(j.end or 0), key[2])
    if row.start_time + row.duration == want_stop:
        v.right_stop_time += 1
    else:
        v.problems.append(
            f"{name}: stop time {row.start_time + row.duration}, Slurm says {want_stop}"
        )
    _judge_resources(v, j, row, pci, polls)


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
        if problem:
            v.missing_resources += 1
            v.problems.append(f"{name}: {problem}")
        else:
            v.full_resources += 1
            v.gpu_jobs_checked += any(n.gpus for n in j.nodes)
    elif hosts == [n.hostname for n in j.nodes]:
        v.host_only_uncapturable += 1
    else:
        v.problems.append(f"{name}: hosts {hosts} != Slurm's {[n.hostname for n in j.nodes]}")
