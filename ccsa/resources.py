"""A job's ``resources[]``: hwthread ids and accelerator ids per node, as cc-backend indexes them.

Pure: takes decoded squeue/scontrol jobs and the :class:`~ccsa.layout.Layouts` the daemon keeps
up to date, returns :class:`~ccsa.ccbackend.models.Resource` lists. docs/resources.md has the
tables this module implements; in short:

hwthreads (every hardware thread of every allocated core)
    Slurm's ``job_resources`` names (socket, core) pairs; core index = socket x cores-per-socket
    + core (v0.0.41+: every core with status ``ALLOCATED``; v0.0.40: the listed cores). The
    layout turns each core index into its thread ids: cc-backend's ``topology.core[index]`` where
    the host's subcluster has one and agrees with Slurm's shape, else Slurm's shape and the
    configured sibling numbering (:mod:`ccsa.layout`).

accelerators
    GPU device positions from ``gres_detail[allocation.index]`` (:func:`ccsa.gres.gpu_devices`:
    ``gpu`` IDX lists, MIG instances, shard/mps positions) mapped through the host's list:
    ``gpuPciAddrs`` (first matching regex) when configured, else the subcluster's
    ``topology.accelerators`` ids (:meth:`Layouts.accelerator_ids`). MIG instances map to their
    parent GPU (:meth:`Layouts.parent_index`). A job ``comment`` counts as an accelerator list
    only when Slurm gave no GPU device for that node and every comma-separated item is a PCI
    address (:data:`PCI_ADDRESS`, the rule of upstream's ``pci-ids-via-comment`` branch).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from ccsa.ccbackend.models import Resource
from ccsa.gres import GresError, gpu_devices
from ccsa.layout import Layouts, Numbering
from ccsa.slurm.squeue import Alloc, QueueJob, SocketV40

__all__ = ["PCI_ADDRESS", "ConvertOptions", "capture_resources", "comment_accelerators"]

log = logging.getLogger(__name__)

#: A PCI address as cc-metric-collector and nvidia-smi print it (domain:bus:device.function).
PCI_ADDRESS = re.compile(r"^[0-9a-fA-F]+:[0-9a-fA-F]+:[0-9a-fA-F]+\.[0-9a-fA-F]$")

_PCI_CACHE_MAX = 65536


@dataclass(frozen=True)
class ConvertOptions:
    """The parts of the configuration conversion needs (kept apart so convert is testable alone).

    ``gpu_pci_addrs``: (compiled host regex, PCI addresses in NVML order), first match wins.
    ``ignore_hosts``: a job is dropped when *all* its hosts match (``re.search``, like Go's
    ``MatchString``); node state drops every matching host. ``layouts``: cc-backend's topology
    and Slurm's node shapes, updated in place by the daemon (a fresh one knows neither).
    """

    gpu_pci_addrs: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = ()
    ignore_hosts: re.Pattern[str] | None = None
    layouts: Layouts = field(default_factory=Layouts, compare=False, hash=False)
    #: Hosts already warned about (GPU indices but no address list): the warning comes once.
    unmapped_warned: set[str] = field(default_factory=set, compare=False, hash=False, repr=False)

    @classmethod
    def from_config(cls, cfg: Any) -> ConvertOptions:
        """Build from a ``ccsa.config.Config`` (``gpu_pci_addrs`` items have .pattern/.addrs)."""
        maps = tuple((m.pattern, tuple(m.addrs)) for m in cfg.gpu_pci_addrs)
        numbering: Numbering = cfg.sibling_numbering
        return cls(gpu_pci_addrs=maps, ignore_hosts=cfg.ignore_hosts, layouts=Layouts(numbering))

    #: host -> pci_list(host): the regexes run once per host, not once per job and node.
    _pci_cache: dict[str, tuple[str, ...] | None] = field(
        default_factory=dict, init=False, compare=False, hash=False, repr=False
    )

    def pci_list(self, host: str) -> tuple[str, ...] | None:
        """The PCI list of the first regex matching ``host`` (``re.search``), None if none."""
        cache = self._pci_cache
        if host in cache:
            return cache[host]
        found = None
        for pattern, addrs in self.gpu_pci_addrs:
            if pattern.search(host):
                found = addrs
                break
        if len(cache) < _PCI_CACHE_MAX:
            cache[host] = found
        return found

    def ignored(self, host: str) -> bool:
        return self.ignore_hosts is not None and self.ignore_hosts.search(host) is not None

    def accelerator_list(self, cluster: str, host: str) -> tuple[tuple[str, ...], str] | None:
        """(ids by GPU index, source) for ``host``: gpuPciAddrs first, then the topology."""
        pci = self.pci_list(host)
        if pci is not None:
            return pci, "gpuPciAddrs"
        ids = self.layouts.accelerator_ids(cluster, host)
        return (ids, "topology") if ids else None


# --------------------------------------------------------------------------- cores


def _cores_v41(alloc: Alloc) -> tuple[list[int], int]:
    """(allocated core indices, cores per node as listed) of one v0.0.41+ allocation."""
    sockets = alloc.sockets
    if not sockets:
        return [], 0
    per_socket = len(sockets[0].cores)
    ids: list[int] = []
    for socket in sockets:
        base = socket.index * per_socket
        ids += [base + c.index for c in socket.cores if (st := c.status) and st[0] == "ALLOCATED"]
    return ids, per_socket * len(sockets)


def _cores_v40(sockets: dict[str, SocketV40], per_socket: int) -> list[int]:
    # Keys are decimal ids in every real document; anything else is skipped, never a crash.
    pairs = [
        (int(s), int(c))
        for s, sock in sockets.items()
        for c in sock.cores
        if s.isascii() and s.isdigit() and c.isascii() and c.isdigit()
    ]
    if not pairs:
        return []
    # Without Slurm's node shape, cores per socket is the highest core index seen + 1: exact
    # for single-socket allocations, a unique best effort otherwise.
    per = per_socket or max(c for _, c in pairs) + 1
    return sorted({s * per + c for s, c in pairs})


# --------------------------------------------------------------------------- accelerators


def comment_accelerators(comment: str) -> list[str]:
    """The comment as an accelerator list when every item is a PCI address, else ``[]``."""
    items = [x.strip() for x in comment.split(",")]
    if items and all(PCI_ADDRESS.match(x) for x in items):
        return items
    return []


def _accelerators(job: QueueJob, host: str, index: int, opts: ConvertOptions) -> list[str]:
    devices: list[int] = []
    if index < len(job.gres_detail):
        try:
            devices = gpu_devices(job.gres_detail[index])
        except GresError as exc:
            log.warning("job %d: host %s: cannot parse gres_detail: %s", job.job_id, host, exc)
            return []
    if not devices:
        return comment_accelerators(job.comment) if job.comment.strip() else []
    found = opts.accelerator_list(job.cluster, host)
    if found is None:
        if host not in opts.unmapped_warned:
            opts.unmapped_warned.add(host)
            log.warning(
                "job %d: host %s has GPUs but matches no gpuPciAddrs regex and its cc-backend"
                " subcluster lists no accelerators: its GPUs are not reported (warned once"
                " per host)",
                job.job_id,
                host,
            )
        return []
    ids, source = found
    parent = opts.layouts.parent_index
    out: list[str] = []
    for i in devices:
        gpu = parent(job.cluster, host, i, len(ids))
        if gpu < len(ids):
            if ids[gpu] not in out:
                out.append(ids[gpu])
        else:
            log.warning(
                "job %d: host %s: GPU index %d beyond the %d %s entries: skipped",
                job.job_id,
                host,
                i,
                len(ids),
                source,
            )
    return out


# --------------------------------------------------------------------------- resources


def capture_resources(job: QueueJob, opts: ConvertOptions) -> list[Resource] | None:
    """Per-node hwthreads and accelerators of a job slurmctld still knows; None without resources.

    v0.0.41+: one Resource per ``job_resources.nodes.allocation[]`` (its ``index`` selects the
    ``gres_detail`` entry); v0.0.40: one per ``allocated_nodes[]`` in node-list order.
    """
    res = job.job_resources
    if res is None:
        return None
    layouts = opts.layouts
    cluster = job.cluster
    out: list[Resource] = []
    if res.nodes is not None and not isinstance(res.nodes, str) and res.nodes.allocation:
        for alloc in res.nodes.allocation:
            cores, listed = _cores_v41(alloc)
            cpus = alloc.cpus.count if alloc.cpus is not None else 0
            hw = layouts.hwthreads(cluster, alloc.name, cores, listed, cpus)
            acc = _accelerators(job, alloc.name, alloc.index, opts)
            out.append(
                Resource(hostname=alloc.name, hwthreads=hw or None, accelerators=acc or None)
            )
        return out
    if res.allocated_nodes:
        for pos, node in enumerate(res.allocated_nodes):
            host = node.nodename
            shape = layouts.shape(cluster, host)
            cores = _cores_v40(node.sockets, shape.cores if shape is not None else 0)
            hw = layouts.hwthreads(cluster, host, cores, 0, 0)
            acc = _accelerators(job, host, pos, opts)
            out.append(Resource(hostname=host, hwthreads=hw or None, accelerators=acc or None))
        return out
    return None
