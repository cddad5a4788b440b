"""What ccsa knows about each node's hardware: cc-backend's topology and Slurm's node shape.

:class:`Layouts` is the one mutable object conversion consults (it lives in
:class:`~ccsa.resources.ConvertOptions`). The daemon replaces its parts as they arrive:
:meth:`Layouts.set_topology` with a decoded ``GET /api/clusters/`` (:mod:`ccsa.topology`), and
:meth:`Layouts.set_shapes` with the sockets/cores/threads/GPU count of every node from ``sinfo``.
Lookups are pure functions of those two inputs.

Hardware-thread ids of one core index ``c`` (docs/resources.md):

1. the host's subcluster has ``topology.core`` and it agrees with Slurm's shape (core count and
   threads per core; or Slurm's shape is not known yet): ``topology.core[c]``;
2. otherwise Slurm's shape with the configured sibling numbering (``siblingNumbering``):
   ``spread`` (Linux on x86: thread t of core c is ``c + t * cores_per_node``) or
   ``consecutive`` (``c * threads_per_core + t``, e.g. many ARM and POWER systems);
3. no shape known at all (``inspect`` of a lone document): cores per node as the allocation
   lists them and threads per core = the node's allocated CPUs / allocated cores (Slurm
   allocates whole cores), numbered as in 2.

Where the topology and Slurm disagree on a node's shape, Slurm's shape wins; the disagreement is
logged once per node and kept in :attr:`Layouts.mismatches` for ``check`` and ``status``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from ccsa.topology import ClusterTopology, SubTopology

__all__ = ["Layouts", "NodeShape", "Numbering", "hwthread_ids"]

log = logging.getLogger(__name__)

Numbering = Literal["spread", "consecutive"]

#: Values of :meth:`Layouts.hwthread_source`.
SOURCE_TOPOLOGY = "topology"
SOURCE_SLURM = "slurm"
SOURCE_MISMATCH = "slurm (topology disagrees)"


@dataclass(frozen=True)
class NodeShape:
    """Slurm's account of one node: sockets, cores per socket, threads per core, GPU devices
    (``gpu`` GRES count, MIG instances counted one by one), and whether they are MIG instances
    (a GRES type such as ``1g.10gb`` or ``nvidia_a100_3g.40gb``)."""

    sockets: int
    cores: int
    threads: int
    gpus: int = 0
    mig: bool = False

    @property
    def cores_per_node(self) -> int:
        return self.sockets * self.cores


def hwthread_ids(cores: list[int], per_node: int, threads: int, numbering: Numbering) -> list[int]:
    """Thread ids of the given core indices, for a node of ``per_node`` cores (rule 2)."""
    if threads <= 1:
        return list(cores)
    if numbering == "consecutive":
        return [c * threads + t for c in cores for t in range(threads)]
    return [c + t * per_node for c in cores for t in range(threads)]


class Layouts:
    """cc-backend topology per cluster plus Slurm's node shapes (see the module docstring)."""

    def __init__(self, numbering: Numbering = "spread") -> None:
        self.numbering: Numbering = numbering
        self.topology: dict[str, ClusterTopology] = {}
        #: When the topology in use was fetched (epoch s; 0 = never), and where it came from.
        self.topology_time = 0.0
        self.topology_origin = ""
        self.shapes: dict[tuple[str, str], NodeShape] = {}
        #: (cluster, host) -> what disagrees, for nodes whose topology is not used.
        self.mismatches: dict[tuple[str, str], str] = {}

    def set_topology(self, clusters: dict[str, ClusterTopology], when: float, origin: str) -> None:
        """Use a newly decoded ``GET /api/clusters/`` answer from now on."""
        self.topology = clusters
        self.topology_time = when
        self.topology_origin = origin
        self.mismatches.clear()

    def set_shapes(self, cluster: str, shapes: dict[str, NodeShape]) -> None:
        """Slurm's shapes of ``cluster``'s nodes (from sinfo); other clusters keep theirs."""
        for key in [k for k in self.shapes if k[0] == cluster]:
            del self.shapes[key]
        for host, shape in shapes.items():
            self.shapes[cluster, host] = shape

    def shape(self, cluster: str, host: str) -> NodeShape | None:
        return self.shapes.get((cluster, host))

    def subcluster(self, cluster: str, host: str) -> SubTopology | None:
        topo = self.topology.get(cluster)
        return topo.subcluster(host) if topo is not None else None

    def core_map(self, cluster: str, host: str) -> tuple[tuple[int, ...], ...] | None:
        """The host's ``topology.core`` when usable (rule 1), else None (logs a mismatch once)."""
        sub = self.subcluster(cluster, host)
        if sub is None or sub.cores is None:
            return None
        shape = self.shapes.get((cluster, host))
        if shape is None:
            return sub.cores
        if len(sub.cores) == shape.cores_per_node and len(sub.cores[0]) == shape.threads:
            return sub.cores
        key = (cluster, host)
        if key not in self.mismatches:
            why = (
                f"cc-backend subcluster {sub.name} has {len(sub.cores)} cores x "
                f"{len(sub.cores[0])} threads, Slurm says {shape.cores_per_node} cores x "
                f"{shape.threads} threads"
            )
            self.mismatches[key] = why
            log.warning("%s: host %s: %s; using Slurm's shape", cluster, host, why)
        return None

    def hwthreads(
        self, cluster: str, host: str, cores: list[int], listed: int, cpus: int
    ) -> list[int]:
        """Thread ids of allocated core indices ``cores`` on ``host`` (module docstring).

        ``listed``: cores per node as the allocation lists them (0 unknown); ``cpus``: the
        node's allocated CPUs per Slurm (0 unknown); both only matter without any shape.
        """
        if not cores:
            return []
        table = self.core_map(cluster, host)
        if table is not None and max(cores) < len(table):
            return [hw for c in cores for hw in table[c]]
        shape = self.shapes.get((cluster, host))
        if shape is not None:
            per_node, threads = shape.cores_per_node, shape.threads
        else:
            per_node = listed or max(cores) + 1
            threads = cpus // len(cores) if cpus and cpus % len(cores) == 0 else 1
        return hwthread_ids(cores, per_node, threads, self.numbering)

    def hwthread_source(self, cluster: str, host: str) -> str:
        """Which rule gives ``host``'s hwthreads: topology, slurm, or slurm (topology disagrees)."""
        if self.core_map(cluster, host) is not None:
            return SOURCE_TOPOLOGY
        return SOURCE_MISMATCH if (cluster, host) in self.mismatches else SOURCE_SLURM

    def accelerator_ids(self, cluster: str, host: str) -> tuple[str, ...]:
        """The host's subcluster ``topology.accelerators`` ids in listed order (may be empty)."""
        sub = self.subcluster(cluster, host)
        return sub.accelerators if sub is not None else ()

    def parent_index(self, cluster: str, host: str, device: int, listed: int) -> int:
        """The GPU a Slurm GPU device index belongs to, for a list of ``listed`` GPUs.

        On a MIG node whose Slurm GPU device count is an exact multiple k > 1 of the listed GPUs,
        every GPU is split into k instances (Slurm counts each instance as a ``gpu`` device, in
        NVML order: the instances of GPU 0 first); device d is then GPU ``d // k``. Otherwise
        the device index is the GPU index.
        """
        shape = self.shapes.get((cluster, host))
        if shape is None or not shape.mig or listed <= 0 or shape.gpus <= listed:
            return device
        return device if shape.gpus % listed else device // (shape.gpus // listed)
