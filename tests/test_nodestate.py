"""Node state per node: jobsRunning and exact cpus/gpus from squeue's allocations; node shapes.

sinfo groups sum CPUs over their nodes (slurm-json.md §9; the simulator's groups have the real
24.11 shape): the group sum // node count of upstream is wrong for unevenly loaded nodes.
"""

from __future__ import annotations

import json
from typing import Any

from ccsa.layout import NodeShape
from ccsa.nodestate import node_load, node_shapes, node_state
from ccsa.resources import ConvertOptions
from ccsa.slurm import sinfo, squeue


def _sinfo() -> sinfo.SinfoDoc:
    group: dict[str, Any] = {
        "node": {"state": ["MIXED"]},
        "nodes": {"total": 2, "nodes": ["n1", "n2"]},
        "cpus": {"allocated": 6, "total": 32},
        "memory": {"allocated": 1024},
        "gres": {"total": "gpu:a100:4(S:0-1)", "used": "gpu:a100:1(IDX:0)"},
        "sockets": {"minimum": 2, "maximum": 2},
        "cores": {"minimum": 4, "maximum": 4},
        "threads": {"minimum": 2, "maximum": 2},
    }
    odd = group | {"nodes": {"total": 1, "nodes": ["m1"]}, "threads": {"minimum": 1, "maximum": 2}}
    return sinfo.decode(json.dumps({"sinfo": [group, odd]}).encode())


def _queue() -> list[squeue.QueueJob]:
    def job(job_id: int, state: str, allocs: list[tuple[str, int]], gres: list[str]) -> Any:
        return {
            "job_id": job_id,
            "job_state": [state],
            "gres_detail": gres,
            "job_resources": {
                "nodes": {
                    "allocation": [
                        {"index": i, "name": n, "cpus": {"count": c}, "sockets": []}
                        for i, (n, c) in enumerate(allocs)
                    ]
                }
            },
        }

    raw = {
        "jobs": [
            job(1, "RUNNING", [("n1", 4)], ["gpu:1(IDX:0)"]),
            job(2, "RUNNING", [("n1", 2), ("n2", 2)], []),
            job(3, "COMPLETED", [("n2", 8)], ["gpu:2(IDX:0-1)"]),
            {"job_id": 4, "job_state": ["PENDING"], "job_resources": None},
        ]
    }
    return squeue.decode(json.dumps(raw).encode()).jobs


def test_exact_per_node_load_from_squeue() -> None:
    body = node_state(_sinfo(), "c", ConvertOptions(), node_load(_queue()))
    got = {n.hostname: (n.jobs_running, n.cpus_allocated, n.gpus_allocated) for n in body.nodes}
    assert got == {"n1": (2, 6, 1), "n2": (1, 2, 0), "m1": (0, 0, 0)}


def test_without_load_upstreams_group_average() -> None:
    body = node_state(_sinfo(), "c", ConvertOptions())
    got = {n.hostname: (n.jobs_running, n.cpus_allocated, n.gpus_allocated) for n in body.nodes}
    assert got["n1"] == got["n2"] == (0, 3, 1)


def test_v040_jobs_give_no_load() -> None:
    raw = {"jobs": [{"job_id": 1, "job_state": ["RUNNING"], "job_resources": {
        "nodes": "n1", "allocated_nodes": [{"nodename": "n1", "sockets": {}}]}}]}  # fmt: skip
    assert node_load(squeue.decode(json.dumps(raw).encode()).jobs) is None


def test_mig_nodes_are_recognised_by_their_gres_type() -> None:
    doc = _sinfo()
    doc.sinfo[0].gres.total = "gpu:nvidia_a100_3g.40gb:8(S:0-1)"
    assert node_shapes(doc)["n1"] == NodeShape(2, 4, 2, gpus=8, mig=True)


def test_shapes_only_where_the_group_is_uniform() -> None:
    assert node_shapes(_sinfo()) == {"n1": NodeShape(2, 4, 2, 4), "n2": NodeShape(2, 4, 2, 4)}
