"""cc-backend's cluster topology (``GET /api/clusters/``) decoded and indexed per host (pure).

cc-backend selects a job's per-hwthread and per-accelerator metric series by exactly the ids the
job's ``resources`` carry (``pkg/metricstore/scopequery.go``); ids its topology does not have
select nothing, silently. This module turns the answer of ``GET /api/clusters/`` (cc-backend
``internal/api/cluster.go``, cc-lib ``schema/cluster.go``: Cluster, SubCluster, Topology,
Accelerator; ccbackend.md §13) into a per-host lookup:

* :func:`decode` -> ``{cluster name: ClusterTopology}``. Every cluster and every subcluster is
  decoded on its own: a cluster that does not decode, a subcluster whose ``nodes`` is not a
  hostlist, or whose ``core`` lists are missing, empty or overlap, is reported as one
  :class:`Problem` (naming cluster and subcluster) and left out (a bad ``core`` only drops the
  core map, the accelerator ids stay), so the hosts concerned fall back to Slurm's shape and
  nothing else is affected. A top-level answer that is not ``{"clusters": [...]}`` raises
  :class:`TopologyError`.
* :meth:`ClusterTopology.subcluster` mirrors cc-backend's ``AssignSubCluster``
  (``pkg/archive/clusterConfig.go``): the first subcluster whose ``nodes`` hostlist holds the
  host, else the first subcluster when its ``nodes`` is ``"*"``.
* :class:`SubTopology`: ``cores`` (``topology.core``: the hardware-thread ids of each core, in
  core index order, or None), ``accelerators`` (``topology.accelerators[].id`` in listed order,
  case as cc-backend has it) and the shape cc-backend believes (sockets, cores per socket,
  threads per core, from the topology's ``socket``/``core`` lists, else from the subcluster's
  ``socketsPerNode``/``coresPerSocket``/``threadsPerCore``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from ccsa.hostlist import HostlistError, expand

__all__ = [
    "ClusterTopology",
    "Problem",
    "SubTopology",
    "TopologyError",
    "decode",
]


class TopologyError(ValueError):
    """The answer as a whole is not ``{"clusters": [...]}``."""


# ------------------------------------------------------------------ wire views (cc-lib schema)


class _Accelerator(msgspec.Struct):
    id: str
    type: str = ""
    model: str = ""


class _Topology(msgspec.Struct):
    node: list[int] = []
    socket: list[list[int]] = []
    core: list[list[int]] | None = None
    accelerators: list[_Accelerator] | None = None


class _SubCluster(msgspec.Struct):
    name: str
    nodes: str
    topology: _Topology = msgspec.field(default_factory=_Topology)
    socketsPerNode: int = 0
    coresPerSocket: int = 0
    threadsPerCore: int = 0


class _ClusterHead(msgspec.Struct):
    name: str
    subClusters: list[msgspec.Raw] = []


class _Answer(msgspec.Struct):
    clusters: list[msgspec.Raw]


_answer = msgspec.json.Decoder(_Answer)
_head = msgspec.json.Decoder(_ClusterHead)
_sub = msgspec.json.Decoder(_SubCluster)


# ------------------------------------------------------------------ indexed topology


@dataclass(frozen=True)
class Problem:
    """One part of the answer ccsa cannot use: which cluster/subcluster, and why."""

    cluster: str
    subcluster: str
    reason: str

    def __str__(self) -> str:
        where = f"cluster {self.cluster}" + (
            f" subcluster {self.subcluster}" if self.subcluster else ""
        )
        return f"GET /api/clusters/: {where}: {self.reason}"


@dataclass(frozen=True)
class SubTopology:
    """One subcluster: its hosts and what its topology says about them."""

    cluster: str
    name: str
    nodes: str
    #: Expanded ``nodes``; None for ``"*"``.
    hosts: frozenset[str] | None
    #: ``topology.core``: hardware-thread ids per core index; None when absent or unusable.
    cores: tuple[tuple[int, ...], ...] | None
    #: ``topology.accelerators[].id`` in listed order.
    accelerators: tuple[str, ...]
    sockets: int
    cores_per_socket: int
    threads_per_core: int


@dataclass(frozen=True)
class ClusterTopology:
    """The usable subclusters of one cluster, in cc-backend's order."""

    name: str
    subclusters: tuple[SubTopology, ...]
    _cache: dict[str, SubTopology | None] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    def subcluster(self, host: str) -> SubTopology | None:
        """cc-backend's AssignSubCluster: first subcluster holding ``host``, else a first ``*``."""
        cache = self._cache
        if host in cache:
            return cache[host]
        found: SubTopology | None = None
        for sc in self.subclusters:
            if sc.hosts is not None and host in sc.hosts:
                found = sc
                break
        else:
            if self.subclusters and self.subclusters[0].hosts is None:
                found = self.subclusters[0]
        if len(cache) < 65536:
            cache[host] = found
        return found


def decode(data: bytes) -> tuple[dict[str, ClusterTopology], list[Problem]]:
    """Decode a ``GET /api/clusters/`` answer (see the module docstring)."""
    try:
        answer = _answer.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise TopologyError(f"GET /api/clusters/: answer does not decode: {exc}") from None
    out: dict[str, ClusterTopology] = {}
    problems: list[Problem] = []
    for i, raw in enumerate(answer.clusters):
        try:
            head = _head.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            problems.append(Problem(f"#{i}", "", f"does not decode: {exc}"))
            continue
        subs: list[SubTopology] = []
        for j, sraw in enumerate(head.subClusters):
            sub = _subcluster(head.name, j, sraw, problems)
            if sub is not None:
                subs.append(sub)
        out[head.name] = ClusterTopology(head.name, tuple(subs))
    return out, problems


def _subcluster(
    cluster: str, j: int, raw: msgspec.Raw, problems: list[Problem]
) -> SubTopology | None:
    try:
        sc = _sub.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        problems.append(Problem(cluster, f"#{j}", f"does not decode: {exc}"))
        return None
    hosts: frozenset[str] | None = None
    if sc.nodes.strip() != "*":
        try:
            hosts = frozenset(expand(sc.nodes))
        except HostlistError as exc:
            problems.append(
                Problem(cluster, sc.name, f"nodes {sc.nodes!r} is not a hostlist: {exc}")
            )
            return None
    topo = sc.topology
    cores = _cores(topo.core)
    if isinstance(cores, str):
        problems.append(Problem(cluster, sc.name, cores))
        cores = None
    sockets = len(topo.socket) or sc.socketsPerNode
    per_socket = len(cores) // sockets if cores and sockets else sc.coresPerSocket
    threads = len(cores[0]) if cores else sc.threadsPerCore
    accs = tuple(a.id for a in topo.accelerators or ())
    return SubTopology(cluster, sc.name, sc.nodes, hosts, cores, accs, sockets, per_socket, threads)


def _cores(core: list[list[int]] | None) -> tuple[tuple[int, ...], ...] | str | None:
    """The core map, None when absent, or a reason string when it cannot be used."""
    if core is None:
        return None
    if not core:
        return "topology.core is empty"
    seen: set[int] = set()
    for index, ids in enumerate(core):
        if not ids:
            return f"topology.core[{index}] lists no hardware thread"
        for hw in ids:
            if hw in seen:
                return f"topology.core lists hardware thread {hw} twice (core {index})"
            seen.add(hw)
    width = len(core[0])
    if any(len(ids) != width for ids in core):
        return "topology.core lists cores with different thread counts"
    return tuple(tuple(ids) for ids in core)
