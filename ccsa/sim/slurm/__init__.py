"""A simulated Slurm cluster: deterministic seeded workload, real executables (``sacct``,
``squeue``, ``scontrol``, ``sinfo``, ``sacctmgr``) answering from it, injectable faults.

``from ccsa.sim.slurm import SimCluster, JobSpec, Shape``. The names are imported lazily so the
simulated executables (which import ``ccsa.sim.slurm.cmd``) stay quick to start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ccsa.sim.slurm.cluster import JobTruth, NodeTruth, SimCluster
    from ccsa.sim.slurm.model import (
        ClusterSpec,
        GpuSpec,
        JobSpec,
        NodeGroup,
        PartitionSpec,
        Shape,
        UserSpec,
    )

__all__ = [
    "ClusterSpec",
    "GpuSpec",
    "JobSpec",
    "JobTruth",
    "NodeGroup",
    "NodeTruth",
    "PartitionSpec",
    "Shape",
    "SimCluster",
    "UserSpec",
]

_WHERE = {
    "SimCluster": "cluster",
    "JobTruth": "cluster",
    "NodeTruth": "cluster",
    "ClusterSpec": "model",
    "GpuSpec": "model",
    "JobSpec": "model",
    "NodeGroup": "model",
    "PartitionSpec": "model",
    "Shape": "model",
    "UserSpec": "model",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"ccsa.sim.slurm.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'ccsa.sim.slurm' has no attribute {name!r}")
