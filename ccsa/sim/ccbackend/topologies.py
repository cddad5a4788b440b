"""cluster.json documents with real topologies for the stand-in (cc-lib ``schema/cluster.go``).

:func:`subcluster` writes one subcluster the way cc-backend's generator script and
cc-metric-collector see a node: ``topology.node`` every hardware-thread id, ``socket`` the ids
per socket, ``core`` the ids per core (``spread``: Linux on x86, thread t of core c is
``c + t * cores``; ``consecutive``: ``c * threads + t``), ``accelerators`` with the PCI ids given
(case as given). :func:`examples` gives the four clusters of issue #16 (an SMT x86 layout, a
consecutive-sibling layout, a GPU subcluster with lower-case PCI ids, a cluster without
``core``); :func:`for_nodes` builds a cluster for a simulated or real Slurm node layout;
:func:`gpu_ids` the lower-case PCI ids of ``n`` GPUs as cc-backend's generator writes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from ccsa.sim.ccbackend.clusters import ClusterConfig, from_dict

Numbering = Literal["spread", "consecutive"]
Doc = dict[str, object]

_METRICS: list[Doc] = [
    {"name": "cpu_load", "scope": "node", "unit": {"base": ""}, "timestep": 60},
    {"name": "flops_any", "scope": "hwthread", "unit": {"base": "Flops/s"}, "timestep": 60},
    {"name": "acc_utilization", "scope": "accelerator", "unit": {"base": "%"}, "timestep": 60},
]


def gpu_ids(n: int, *, upper: bool = False) -> list[str]:
    """PCI ids of ``n`` GPUs (``00000000:0e:00.0``...), lower case unless ``upper``."""
    ids = [f"00000000:{0x0E + 0x10 * i:02x}:00.0" for i in range(n)]
    return [i.upper() for i in ids] if upper else ids


def core_ids(sockets: int, cores: int, threads: int, numbering: Numbering) -> list[list[int]]:
    """``topology.core``: hardware-thread ids per core index."""
    per_node = sockets * cores
    if numbering == "consecutive":
        return [[c * threads + t for t in range(threads)] for c in range(per_node)]
    return [[c + t * per_node for t in range(threads)] for c in range(per_node)]


def subcluster(
    name: str,
    nodes: str,
    *,
    sockets: int,
    cores: int,
    threads: int,
    numbering: Numbering = "spread",
    accelerators: Sequence[str] = (),
    with_core: bool = True,
) -> Doc:
    """One ``subClusters[]`` element (module docstring)."""
    core = core_ids(sockets, cores, threads, numbering)
    per_socket = [
        [hw for c in core[s * cores : (s + 1) * cores] for hw in c] for s in range(sockets)
    ]
    topo: Doc = {
        "node": sorted(hw for c in core for hw in c),
        "socket": per_socket,
        "memoryDomain": per_socket,
    }
    if with_core:
        topo["core"] = core
    if accelerators:
        topo["accelerators"] = [
            {"id": a, "type": "Nvidia GPU", "model": "A100"} for a in accelerators
        ]
    return {
        "name": name,
        "nodes": nodes,
        "processorType": "Intel Xeon" if numbering == "spread" else "ARM Neoverse",
        "socketsPerNode": sockets,
        "coresPerSocket": cores,
        "threadsPerCore": threads,
        "flopRateScalar": {"unit": {"base": "F/s", "prefix": "G"}, "value": 100},
        "flopRateSimd": {"unit": {"base": "F/s", "prefix": "G"}, "value": 400},
        "memoryBandwidth": {"unit": {"base": "B/s", "prefix": "G"}, "value": 100},
        "topology": topo,
    }


def cluster(name: str, subclusters: Sequence[Doc]) -> Doc:
    """A whole cluster.json document."""
    return {"name": name, "metricConfig": _METRICS, "subClusters": list(subclusters)}


def examples() -> list[Doc]:
    """The four clusters of issue #16 (module docstring)."""
    return [
        cluster("smtx86", [subcluster("icx", "s[01-16]", sockets=2, cores=4, threads=2)]),
        cluster(
            "armc",
            [
                subcluster(
                    "grace", "a[01-08]", sockets=1, cores=8, threads=2, numbering="consecutive"
                )
            ],
        ),
        cluster(
            "gpux",
            [
                subcluster("cpu", "g[01-04]", sockets=2, cores=8, threads=1),
                subcluster(
                    "a100", "g[05-08]", sockets=2, cores=8, threads=1, accelerators=gpu_ids(4)
                ),
            ],
        ),
        cluster(
            "nocore", [subcluster("main", "*", sockets=2, cores=4, threads=2, with_core=False)]
        ),
    ]


def for_nodes(name: str, groups: Sequence[tuple[str, str, int, int, int, Sequence[str]]]) -> Doc:
    """A cluster for node groups ``(subcluster, hostlist, sockets, cores, threads, GPU ids)``."""
    return cluster(
        name,
        [
            subcluster(sub, nodes, sockets=s, cores=c, threads=t, accelerators=acc)
            for sub, nodes, s, c, t, acc in groups
        ],
    )


def config(doc: Doc) -> ClusterConfig:
    """The stand-in's ClusterConfig of a generated document."""
    return from_dict(doc, f"generated {doc.get('name')}")
