"""sinfo groups (+ squeue's allocations) -> cc-backend's nodestate body and node shapes (pure).

:func:`node_state` builds ``POST /api/nodestate/``: one NodePayload per node of ``sinfo --json``
(first group of a node wins; ``ignoreHosts`` drops a node). States and allocated memory come
from the node's group (``memory.allocated`` is a per-node value, ``gres.used`` is the same for
every node of a group). ``jobsRunning``, ``cpusAllocated`` and ``gpusAllocated`` come from
:func:`node_load` over squeue's running jobs when given: exact per node. Without it they fall
back to upstream's rule (group CPU sum // node count, GPUs from ``gres.used``, 0 jobs), which
is wrong for every group of unevenly loaded nodes.

:func:`node_shapes` gives each node's sockets/cores/threads/GPU devices for
:class:`~ccsa.layout.Layouts` (a group's values are per node; a group whose minimum and
maximum differ gives no shape for its nodes).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ccsa.ccbackend.models import NodePayload, NodeStateRequest
from ccsa.gres import GresError, gpu_count, gpu_indices
from ccsa.layout import NodeShape
from ccsa.slurm.sinfo import SinfoDoc, SinfoRange
from ccsa.slurm.squeue import QueueJob
from ccsa.slurm.types import first, flags, num

if TYPE_CHECKING:
    from ccsa.resources import ConvertOptions

__all__ = ["NodeLoad", "node_load", "node_shapes", "node_state"]

log = logging.getLogger(__name__)

#: A MIG profile in a GRES type (``gpu:1g.10gb:7``, ``gpu:nvidia_a100_3g.40gb:2``).
_MIG = re.compile(r"(?:^|[_:])\d+g\.\d+gb")


@dataclass
class NodeLoad:
    """What running jobs hold on one node."""

    jobs: int = 0
    cpus: int = 0
    gpus: int = 0


def node_load(jobs: Iterable[QueueJob]) -> dict[str, NodeLoad] | None:
    """Per-node load of the RUNNING jobs (``job_resources`` v0.0.41+: CPUs per allocation,
    GPU devices from ``gres_detail[allocation.index]``); None when a running job lacks that
    shape (v0.0.40 documents), so the caller falls back to sinfo's numbers."""
    out: dict[str, NodeLoad] = {}
    for job in jobs:
        if first(job.job_state) != "RUNNING":
            continue
        res = job.job_resources
        if res is None or res.nodes is None or isinstance(res.nodes, str):
            return None
        for alloc in res.nodes.allocation:
            load = out.setdefault(alloc.name, NodeLoad())
            load.jobs += 1
            load.cpus += alloc.cpus.count if alloc.cpus is not None else 0
            if alloc.index < len(job.gres_detail):
                try:
                    load.gpus += len(gpu_indices(job.gres_detail[alloc.index]))
                except GresError as exc:
                    log.warning("job %d: cannot parse gres_detail: %s", job.job_id, exc)
    return out


def node_state(
    doc: SinfoDoc,
    cluster: str,
    opts: ConvertOptions,
    load: dict[str, NodeLoad] | None = None,
) -> NodeStateRequest:
    """The nodestate body (module docstring)."""
    seen: dict[str, NodePayload] = {}
    idle = NodeLoad()
    for group in doc.sinfo:
        hosts = group.nodes.nodes
        total = num(group.nodes.total) or len(hosts) or 1
        try:
            gpus = gpu_count(group.gres.used) if group.gres.used else 0
        except GresError as exc:
            log.warning("sinfo: cannot parse gres.used %r: %s", group.gres.used, exc)
            gpus = 0
        states = [s.lower() for s in flags(group.node.state)]
        for host in hosts:
            if host in seen or opts.ignored(host):
                continue
            if load is None:
                cpus, gpus_here, jobs = (num(group.cpus.allocated) or 0) // total, gpus, 0
            else:
                here = load.get(host, idle)
                cpus, gpus_here, jobs = here.cpus, here.gpus, here.jobs
            seen[host] = NodePayload(
                hostname=host,
                states=states,
                cpus_allocated=cpus,
                memory_allocated=num(group.memory.allocated) or 0,
                gpus_allocated=gpus_here,
                jobs_running=jobs,
            )
    return NodeStateRequest(cluster=cluster, nodes=list(seen.values()))


def _exact(r: SinfoRange) -> int:
    lo, hi = num(r.minimum) or 0, num(r.maximum) or 0
    return lo if lo == hi else 0


def node_shapes(doc: SinfoDoc) -> dict[str, NodeShape]:
    """Each node's shape from its sinfo group (module docstring)."""
    out: dict[str, NodeShape] = {}
    for group in doc.sinfo:
        sockets, cores, threads = _exact(group.sockets), _exact(group.cores), _exact(group.threads)
        if not (sockets and cores and threads):
            continue
        try:
            gpus = gpu_count(group.gres.total) if group.gres.total else 0
        except GresError:
            gpus = 0
        mig = _MIG.search(group.gres.total) is not None
        for host in group.nodes.nodes:
            out.setdefault(host, NodeShape(sockets, cores, threads, gpus, mig))
    return out
