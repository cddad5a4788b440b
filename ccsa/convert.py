"""Slurm job and node views -> cc-backend start_job / stop_job / nodestate bodies (pure).

No I/O and no trio/httpx: every function takes decoded views and returns strict msgspec bodies
(``ccsa.ccbackend.models``) or a :class:`Skip` saying why a job is not sent.

Resources
    The per-node hwthreads and accelerators of a job come from :mod:`ccsa.resources`
    (``capture_resources`` and ``ConvertOptions`` are re-exported here); node state from
    :mod:`ccsa.nodestate`. This module builds the bodies around them.

Stop states
    cc-backend v1.5 rejects states outside ``VALID_STOP_STATES`` with 400, so :func:`job_state`
    maps: ``node_fail`` -> ``failed`` (upstream), ``requeued``/``requeue_fed``/``requeue_hold``/
    ``revoked``/``stopped`` -> ``cancelled`` (the run was ended from outside; cc-backend issue #30:
    stop the old run as failed or cancelled, the requeued run is a new job with a new start time),
    ``special_exit``/``launch_failed`` -> ``failed``, ``resizing`` -> ``completed`` (the old
    allocation ended normally), and a state that still says alive (pending/running/suspended)
    or is unknown -> ``failed`` (ccsa cannot tell that it succeeded).

Speed
    Conversion runs for every job of a poll, so the per-job paths avoid repeated work: plain-int
    fast paths for Slurm numbers (:func:`timestamp`), one ``isalnum()`` tells a single-host
    ``nodes`` string (used as is, no hostlist parsing) from anything needing a closer look,
    ``job_state`` of a one-element state list is cached, TRES types compare by identity
    (:class:`~ccsa.slurm.sacct.TresType`), sacct's requested TRES are decoded only when the
    allocated ones lack a CPU count, TRES strings of queue jobs are parsed once per distinct
    string, and the gpuPciAddrs regexes run once per host (:meth:`ConvertOptions.pci_list`).
    Measured on 10k generated jobs (start body, plus stop body when finished; instructions per
    job under callgrind): 39.6k -> 34.1k, i.e. 5.4 -> 4.3 us in a fresh process. What is left
    is mostly building the bodies (StartJob, Resource, the metaData dict, ``str(submitTime)``,
    StopJob: ~8k) and Python call overhead; inlining every helper and passing StartJob's 14
    fields positionally would save 2.8k more and was not kept (readability, and positional
    arguments would silently shift if the model gained a field). squeue capture + start body:
    37 -> 34 us per job (most of it is decoding ``job_resources`` and walking every core).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from ccsa.ccbackend.models import VALID_STOP_STATES, Resource, SharedMode, StartJob, StopJob
from ccsa.hostlist import HostlistError, expand
from ccsa.nodestate import node_state as node_state
from ccsa.resources import ConvertOptions as ConvertOptions
from ccsa.resources import capture_resources as capture_resources
from ccsa.slurm.sacct import SacctJob
from ccsa.slurm.squeue import QueueJob
from ccsa.slurm.types import NO_VAL32_FLOOR, NV, first, flags, num
from ccsa.tres import queue_tres_counts
from ccsa.tres import tres_counts as tres_counts

log = logging.getLogger(__name__)

_ALIVE = frozenset({"PENDING", "RUNNING", "SUSPENDED"})
_REQUEUE_FLAGS = frozenset({"REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD"})
_STATE_MAP = {
    "node_fail": "failed",
    "failure": "failed",
    "requeued": "cancelled",
    "requeue_fed": "cancelled",
    "requeue_hold": "cancelled",
    "revoked": "cancelled",
    "stopped": "cancelled",
    "special_exit": "failed",
    "launch_failed": "failed",
    "resizing": "completed",
}


@dataclass(frozen=True)
class Skip:
    """A job that is not sent to cc-backend, and why.

    ``final``: the reason cannot change (all hosts in ignoreHosts, never started, a negative
    id). Otherwise it may pass (an empty user name while the host's user lookup fails, a node
    list that does not expand or is not known yet): the daemon asks again later.
    """

    job_id: int
    reason: str
    final: bool = True


# --------------------------------------------------------------------------- sacct facts


def _valid_time(value: int | None) -> int | None:
    if value is None or value == 0 or value >= NO_VAL32_FLOOR:
        return None
    return value


def timestamp(x: int | NV | None) -> int | None:
    """A Slurm timestamp in epoch seconds, None when unset (0, NO_VAL, infinite, negative).

    ``_valid_time(num(x))`` with the plain-int case inlined (it runs several times per job).
    """
    if type(x) is int:
        return x if 0 < x < NO_VAL32_FLOOR else None
    return _valid_time(num(x))


def _no_nodes(nodes: str) -> bool:
    if not nodes:
        return True
    text = nodes.strip()
    return not text or (len(text) == 13 and text.lower() == "none assigned")


def start_time(acct: SacctJob) -> int | None:
    """The job's start (epoch s), None when it never started (0, NO_VAL, or no nodes)."""
    if _no_nodes(acct.nodes):
        return None
    return timestamp(acct.time.start)


def is_finished(acct: SacctJob) -> bool:
    """True when the run is over: end time set and the state no longer alive.

    A record that is PENDING/RUNNING/SUSPENDED with an end time is only finished when it
    carries a requeue flag (the old run of a requeued job); slurmdbd's lag after a start shows
    ``PENDING`` with a start time but no end, which is *not* finished.
    """
    end = acct.time.end
    if not (0 < end < NO_VAL32_FLOOR if type(end) is int else timestamp(end)):
        return False
    states = acct.state.current
    if type(states) is list and len(states) == 1:  # the common case: one base state, no flags
        return states[0] not in _ALIVE
    states = flags(states)
    base = states[0] if states else ""
    return base not in _ALIVE or not _REQUEUE_FLAGS.isdisjoint(states)


def host_resources(acct: SacctJob) -> list[Resource]:
    """Fallback resources: hostnames only, from sacct's ``nodes`` hostlist (expanded in order)."""
    nodes = acct.nodes
    if _no_nodes(nodes):
        return []
    return _hosts(acct.job_id, nodes)


def _hosts(job_id: int, nodes: str) -> list[Resource]:
    if nodes.isalnum():  # one plain host name (the most common case): nothing to expand
        return [Resource(hostname=nodes)]
    try:
        return [Resource(hostname=h) for h in expand(nodes)]
    except HostlistError as exc:
        log.warning("job %d: cannot expand nodes %r: %s", job_id, nodes, exc)
        return []


# --------------------------------------------------------------------------- squeue facts


def shared_mode(queue: QueueJob | None) -> SharedMode:
    """cc-backend's ``shared``: exclusive/``none`` -> none, ``user`` -> single_user, else multi."""
    if queue is None:
        return "multi_user"
    if "true" in flags(queue.exclusive):
        return "none"
    values = flags(queue.shared)
    if "none" in values:
        return "none"
    if "user" in values:
        return "single_user"
    return "multi_user"


# --------------------------------------------------------------------------- bodies


def _walltime(limit: int | NV | None) -> int:
    if isinstance(limit, NV):
        if limit.infinite or not limit.set:
            return 0
        minutes = int(limit.number)
    elif limit is None:
        return 0
    else:
        minutes = limit
    return minutes * 60 if 0 <= minutes < NO_VAL32_FLOOR else 0


def _meta(
    name: str, submit: int | None, slurm_info: str | None, script: str | None
) -> dict[str, str]:
    meta = {"jobName": name}
    if slurm_info:
        meta["slurmInfo"] = slurm_info
    if script:
        meta["jobScript"] = script
    if submit is not None:
        meta["submitTime"] = str(submit)
    return meta


def _check_hosts(job_id: int, resources: list[Resource], opts: ConvertOptions) -> Skip | None:
    if not resources:
        return Skip(job_id, "no allocated nodes known", final=False)
    if opts.ignore_hosts is not None and all(opts.ignored(r.hostname) for r in resources):
        hosts = ",".join(r.hostname for r in resources)
        return Skip(job_id, f"all hosts match ignoreHosts ({hosts})")
    return None


def _gpu_total(resources: list[Resource]) -> int:
    return sum(len(r.accelerators or ()) for r in resources)


def start_body(
    acct: SacctJob,
    *,
    resources: list[Resource] | None,
    queue: QueueJob | None = None,
    slurm_info: str | None = None,
    job_script: str | None = None,
    opts: ConvertOptions,
) -> StartJob | Skip:
    """The start_job body of one sacct record (captured resources preferred over host names).

    ``job_script`` falls back to sacct's ``script`` field. numAcc comes from TRES; when TRES has
    no GPU entry (no ``AccountingStorageTRES=gres/gpu``) it falls back to the queue job's
    ``tres_alloc_str``, then to the number of accelerators found, so GPU metrics are not lost.
    """
    job_id = acct.job_id
    if job_id < 0:  # cc-backend's jobId is unsigned; such a body could never be sent
        return Skip(job_id, "negative job_id in sacct's output")
    time = acct.time
    nodes = acct.nodes
    single = nodes.isalnum()  # one plain host name (the common case): nothing to expand
    start = timestamp(time.start) if single or not _no_nodes(nodes) else None  # = start_time(acct)
    if start is None:
        return Skip(job_id, f"never started (time.start={num(time.start)})")
    if resources:
        res = resources
    elif single:
        res = [Resource(hostname=nodes)]
    else:
        res = _hosts(job_id, nodes)
    if not res or opts.ignore_hosts is not None:
        skip = _check_hosts(job_id, res, opts)
        if skip is not None:
            return skip
    user = acct.user or (queue.user_name if queue is not None else "")
    if not user:
        return Skip(job_id, "no user name (uid not resolvable where sacct ran)", final=False)
    cpus, gpus = tres_counts(acct)
    acc = (
        gpus
        or (queue_tres_counts(queue)[1] if queue is not None else 0)
        # host names alone (no captured resources) carry no accelerators
        or (_gpu_total(res) if resources else 0)
    )
    array_id = acct.array.job_id
    return StartJob(
        job_id=job_id,
        cluster=acct.cluster,
        user=user,
        project=acct.account,
        num_nodes=len(res),
        resources=res,
        start_time=start,
        shared="multi_user" if queue is None else shared_mode(queue),
        partition=acct.partition,
        num_hwthreads=cpus,
        num_acc=acc,
        walltime=_walltime(time.limit),
        array_job_id=(array_id if array_id > 0 else 0)
        if type(array_id) is int
        else (num(array_id) or 0),
        meta_data=_meta(
            acct.name,
            timestamp(time.submission),
            slurm_info,
            job_script if job_script else acct.script,
        ),
    )


def queue_start_time(queue: QueueJob) -> int | None:
    """Start of a squeue/scontrol job, None while pending (its start_time is only a forecast)."""
    if first(queue.job_state) == "PENDING" or not queue.nodes.strip():
        return None
    return timestamp(queue.start_time)


def queue_is_finished(queue: QueueJob) -> bool:
    """From job_state only (``end_time`` is a projection for pending/running jobs)."""
    states = flags(queue.job_state)
    return bool(states) and states[0] not in _ALIVE and "COMPLETING" not in states


def start_body_from_queue(
    queue: QueueJob,
    *,
    resources: list[Resource] | None,
    slurm_info: str | None = None,
    job_script: str | None = None,
    opts: ConvertOptions,
) -> StartJob | Skip:
    """start_job body from a squeue/scontrol job alone (no accounting record available)."""
    if queue.job_id < 0:  # cc-backend's jobId is unsigned; such a body could never be sent
        return Skip(queue.job_id, "negative job_id in slurmctld's output")
    start = queue_start_time(queue)
    if start is None:
        return Skip(queue.job_id, f"not started (state {first(queue.job_state) or 'unknown'})")
    res = resources or []
    if not res and queue.nodes.strip():
        try:
            res = [Resource(hostname=h) for h in expand(queue.nodes)]
        except HostlistError as exc:
            return Skip(queue.job_id, f"cannot expand nodes {queue.nodes!r}: {exc}", final=False)
    skip = _check_hosts(queue.job_id, res, opts)
    if skip is not None:
        return skip
    if not queue.user_name:
        return Skip(queue.job_id, "no user name (uid not resolvable where squeue ran)", final=False)
    cpus, gpus = queue_tres_counts(queue)
    return StartJob(
        job_id=queue.job_id,
        cluster=queue.cluster,
        user=queue.user_name,
        project=queue.account,
        num_nodes=len(res),
        resources=res,
        start_time=start,
        shared=shared_mode(queue),
        partition=queue.partition,
        num_hwthreads=cpus,
        num_acc=gpus or _gpu_total(res),
        walltime=_walltime(queue.time_limit),
        array_job_id=num(queue.array_job_id) or 0,
        meta_data=_meta(queue.name, timestamp(queue.submit_time), slurm_info, job_script),
    )


def job_state(states: Iterable[str]) -> str:
    """Map a Slurm state flag list onto a state cc-backend v1.5 accepts (module docstring)."""
    if type(states) is list and len(states) == 1:  # the common case: one base state, no flags
        return _job_state_one(states[0])
    return _job_state(states)


@lru_cache(maxsize=256)
def _job_state_one(state: str) -> str:
    return _job_state((state,))


def _job_state(states: Iterable[str]) -> str:
    values = [s.upper() for s in states]
    base = values[0].lower() if values else ""
    if base in _STATE_MAP:
        return _STATE_MAP[base]
    if base.upper() not in _ALIVE and base in VALID_STOP_STATES:
        return base
    if any(v in _REQUEUE_FLAGS for v in values):
        return "cancelled"
    return "failed"


def stop_body(acct: SacctJob, start_time: int) -> StopJob:
    """stop_job body; ``stopTime`` is clamped to ``>= start_time`` (cc-backend rejects less)."""
    end = timestamp(acct.time.end) or 0
    states = acct.state.current
    if type(states) is list and len(states) == 1:  # the common case: one base state, no flags
        state = _job_state_one(states[0])
    else:
        state = _job_state(flags(states))
    return StopJob(
        job_id=acct.job_id,
        cluster=acct.cluster,
        job_state=state,
        stop_time=end if end > start_time else start_time,
        start_time=start_time,
    )


def stop_body_from_queue(queue: QueueJob, start_time: int) -> StopJob:
    """stop_job body from a finished squeue/scontrol job (no accounting record available)."""
    end = timestamp(queue.end_time) or 0
    return StopJob(
        job_id=queue.job_id,
        cluster=queue.cluster,
        job_state=job_state(flags(queue.job_state)),
        stop_time=max(end, start_time),
        start_time=start_time,
    )
