"""hwthreads and accelerators per node: topology decode and lookup, sibling numbering, GPU maps,
MIG instances and shards, and the job-comment rule (issue #16).

Jobs are built in data_parser v0.0.42's ``job_resources`` shape (slurm-json.md §6.2, as the real
24.11 test bed prints it: every core of every socket with a status list, ``cpus.count`` per
node). Topologies follow cc-lib ``schema/cluster.go`` (``topology.core`` = hardware-thread ids
per core) as in ../shared/spec/cc-backend/example-clusters.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import pytest

from ccsa import topology
from ccsa.layout import Layouts, NodeShape, hwthread_ids
from ccsa.resources import ConvertOptions, capture_resources, comment_accelerators
from ccsa.slurm import squeue
from ccsa.slurm.squeue import QueueJob

GPU_IDS = ("00000000:0e:00.0", "00000000:13:00.0", "00000000:49:00.0", "00000000:4f:00.0")


def _alloc(
    index: int, name: str, sockets: int, cores: int, used: set[int], threads: int
) -> dict[str, Any]:
    """One allocation[] element; ``used`` are node-wide core indices (socket * cores + core)."""
    return {
        "index": index,
        "name": name,
        "cpus": {"count": len(used) * threads, "used": 0},
        "memory": {"used": 0, "allocated": 512},
        "sockets": [
            {
                "index": s,
                "cores": [
                    {
                        "index": c,
                        "status": ["ALLOCATED" if s * cores + c in used else "UNALLOCATED"],
                    }
                    for c in range(cores)
                ],
            }
            for s in range(sockets)
        ],
    }


def _job(
    allocs: list[dict[str, Any]], gres: list[str] | None = None, comment: str = ""
) -> QueueJob:
    raw = {
        "jobs": [
            {
                "job_id": 7,
                "cluster": "smt",
                "comment": comment,
                "gres_detail": gres or [],
                "job_state": ["RUNNING"],
                "job_resources": {"nodes": {"allocation": allocs}, "cpus": 0},
            }
        ]
    }
    (job,) = squeue.decode(json.dumps(raw).encode(), command="squeue").jobs
    return job


def _sub(name: str, nodes: str, core: list[list[int]] | None, accs: tuple[str, ...] = ()) -> Any:
    topo: dict[str, Any] = {"node": [], "socket": [[0], [1]]}
    if core is not None:
        topo["core"] = core
    if accs:
        topo["accelerators"] = [{"id": a, "type": "Nvidia GPU", "model": "A100"} for a in accs]
    return {"name": name, "nodes": nodes, "topology": topo, "socketsPerNode": 2}


def _answer(*clusters: tuple[str, list[Any]]) -> bytes:
    return json.dumps(
        {"clusters": [{"name": n, "metricConfig": [], "subClusters": s} for n, s in clusters]}
    ).encode()


#: 2 sockets x 4 cores x 2 threads, Linux x86 numbering: core c = [c, c + 8].
SMT_CORES = [[c, c + 8] for c in range(8)]


def _opts(answer: bytes | None, **kw: Any) -> ConvertOptions:
    opts = ConvertOptions(**kw)
    if answer is not None:
        clusters, problems = topology.decode(answer)
        assert problems == []
        opts.layouts.set_topology(clusters, 1.0, "test")
    return opts


# --------------------------------------------------------------------------- comment rule


def test_comment_that_is_not_a_pci_list_is_no_accelerator() -> None:
    """Issue #16: ``sbatch --comment "rerun of case 7"`` on a CPU job went out as
    ``accelerators: ["rerun of case 7"]`` (failed before this change)."""
    job = _job([_alloc(0, "node1", 1, 8, {0}, 1)], comment="rerun of case 7")
    (res,) = capture_resources(job, ConvertOptions()) or []
    assert res.accelerators is None
    assert res.hwthreads == [0]


@pytest.mark.parametrize(
    ("comment", "expected"),
    [
        ("00000000:01:00.0", ["00000000:01:00.0"]),
        ("0000:3B:00.0, 0000:af:00.1", ["0000:3B:00.0", "0000:af:00.1"]),
        ("00000000:01:00.0,gpu7", []),
        ("rerun of case 7", []),
        ("1:2:3", []),
        ("00000000:01:00.10", []),
        ("", []),
    ],
)
def test_comment_rule(comment: str, expected: list[str]) -> None:
    assert comment_accelerators(comment) == expected


def test_comment_ignored_when_slurm_gave_gpu_indices() -> None:
    job = _job([_alloc(0, "g1", 1, 8, {0}, 1)], ["gpu:1(IDX:2)"], comment="00000000:99:00.0")
    opts = _opts(_answer(("smt", [_sub("gpu", "g[1-2]", None, GPU_IDS)])))
    (res,) = capture_resources(job, opts) or []
    assert res.accelerators == [GPU_IDS[2]]


def test_pci_comment_used_without_gres() -> None:
    job = _job([_alloc(0, "node1", 1, 8, {3}, 1)], comment="00000000:01:00.0")
    (res,) = capture_resources(job, ConvertOptions()) or []
    assert res.accelerators == ["00000000:01:00.0"]


# --------------------------------------------------------------------------- hwthreads


def test_smt_with_topology_gives_every_thread_of_each_core() -> None:
    # socket 1 core 2 -> core index 6 -> threads [6, 14]; socket 0 core 0 -> [0, 8]
    job = _job([_alloc(0, "n01", 2, 4, {0, 6}, 2)])
    opts = _opts(_answer(("smt", [_sub("x86", "n[01-04]", SMT_CORES)])))
    (res,) = capture_resources(job, opts) or []
    assert res.hwthreads == [0, 8, 6, 14]
    assert opts.layouts.hwthread_source("smt", "n01") == "topology"


def test_consecutive_topology_numbering_is_taken_as_listed() -> None:
    core = [[2 * c, 2 * c + 1] for c in range(8)]
    job = _job([_alloc(0, "a7", 2, 4, {1, 5}, 2)])
    opts = _opts(_answer(("smt", [_sub("arm", "a[1-9]", core)])))
    (res,) = capture_resources(job, opts) or []
    assert res.hwthreads == [2, 3, 10, 11]


@pytest.mark.parametrize(
    ("numbering", "expected"), [("spread", [1, 9, 5, 13]), ("consecutive", [2, 3, 10, 11])]
)
def test_without_topology_the_slurm_shape_and_numbering_decide(
    numbering: str, expected: list[int]
) -> None:
    job = _job([_alloc(0, "n01", 2, 4, {1, 5}, 2)])
    opts = ConvertOptions(
        layouts=Layouts("consecutive" if numbering == "consecutive" else "spread")
    )
    opts.layouts.set_shapes("smt", {"n01": NodeShape(2, 4, 2)})
    (res,) = capture_resources(job, opts) or []
    assert res.hwthreads == expected
    assert opts.layouts.hwthread_source("smt", "n01") == "slurm"


def test_without_any_shape_threads_come_from_allocated_cpus() -> None:
    """inspect of a lone squeue document: 4 CPUs on 2 cores -> 2 threads per core."""
    job = _job([_alloc(0, "n01", 2, 4, {1, 5}, 2)])
    (res,) = capture_resources(job, ConvertOptions()) or []
    assert res.hwthreads == [1, 9, 5, 13]


def test_no_smt_keeps_core_ids() -> None:
    job = _job([_alloc(0, "node1", 1, 8, {1, 2}, 1)])
    (res,) = capture_resources(job, ConvertOptions()) or []
    assert res.hwthreads == [1, 2]


def test_shape_disagreement_uses_slurm_and_is_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # the topology says 8 cores x 1 thread, Slurm says 2 x 4 x 2
    job = _job([_alloc(0, "n01", 2, 4, {0}, 2)])
    opts = _opts(_answer(("smt", [_sub("x86", "n[01-04]", [[c] for c in range(8)])])))
    opts.layouts.set_shapes("smt", {"n01": NodeShape(2, 4, 2)})
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            (res,) = capture_resources(job, opts) or []
            assert res.hwthreads == [0, 8]
    assert sum("using Slurm's shape" in r.getMessage() for r in caplog.records) == 1
    assert opts.layouts.hwthread_source("smt", "n01") == "slurm (topology disagrees)"
    assert "8 cores x 1 threads" in opts.layouts.mismatches["smt", "n01"]


def test_host_in_no_subcluster_falls_back() -> None:
    job = _job([_alloc(0, "other1", 2, 4, {0}, 2)])
    opts = _opts(_answer(("smt", [_sub("x86", "n[01-04]", SMT_CORES)])))
    (res,) = capture_resources(job, opts) or []
    assert res.hwthreads == [0, 8]
    assert opts.layouts.hwthread_source("smt", "other1") == "slurm"


@pytest.mark.parametrize("numbering", ["spread", "consecutive"])
def test_numbering_is_a_bijection(numbering: str) -> None:
    mode = "consecutive" if numbering == "consecutive" else "spread"
    ids = hwthread_ids(list(range(16)), 16, 2, mode)
    assert sorted(ids) == list(range(32))


# --------------------------------------------------------------------------- topology decode


def test_star_subcluster_and_first_match_like_assign_subcluster() -> None:
    answer = _answer(("c", [_sub("a", "*", SMT_CORES), _sub("b", "n[1-2]", None, GPU_IDS)]))
    clusters, problems = topology.decode(answer)
    assert problems == []
    c = clusters["c"]
    sub_n1, sub_x = c.subcluster("n1"), c.subcluster("x")
    assert sub_n1 is not None
    assert sub_n1.name == "b"
    assert sub_x is not None
    assert sub_x.name == "a"


@pytest.mark.parametrize(
    ("core", "reason"),
    [
        ([[0, 8], [1, 8]], "twice"),
        ([], "empty"),
        ([[0], []], "no hardware thread"),
        ([[0, 1], [2]], "different thread counts"),
    ],
)
def test_bad_core_lists_drop_only_the_core_map(core: list[list[int]], reason: str) -> None:
    answer = _answer(("c", [_sub("bad", "n[1-2]", core, GPU_IDS)]))
    clusters, problems = topology.decode(answer)
    (problem,) = problems
    assert reason in str(problem)
    assert "cluster c subcluster bad" in str(problem)
    sub = clusters["c"].subcluster("n1")
    assert sub is not None
    assert sub.cores is None
    assert sub.accelerators == GPU_IDS


def test_bad_nodes_and_undecodable_parts_are_left_out() -> None:
    answer = _answer(
        ("c", [_sub("bad", "n[1-", SMT_CORES), {"name": "nonodes"}, _sub("ok", "m1", None)]),
        ("d", [_sub("ok", "d1", SMT_CORES)]),
    )
    clusters, problems = topology.decode(answer)
    assert len(problems) == 2
    assert "subcluster bad: nodes 'n[1-' is not a hostlist" in str(problems[0])
    assert [s.name for s in clusters["c"].subclusters] == ["ok"]
    assert clusters["d"].subcluster("d1") is not None


@pytest.mark.parametrize("data", [b"", b"[]", b'{"clusters": 3}', b"{"])
def test_undecodable_answer_raises_one_error(data: bytes) -> None:
    with pytest.raises(topology.TopologyError, match="GET /api/clusters/"):
        topology.decode(data)


def test_cluster_without_core_has_the_shape_fields() -> None:
    sub = _sub("nocore", "n[1-2]", None) | {"coresPerSocket": 4, "threadsPerCore": 2}
    clusters, _ = topology.decode(_answer(("c", [sub])))
    found = clusters["c"].subcluster("n2")
    assert found is not None
    assert found.cores is None
    assert (found.sockets, found.cores_per_socket, found.threads_per_core) == (2, 4, 2)


# --------------------------------------------------------------------------- accelerators


def test_topology_accelerators_map_gres_indices_case_kept() -> None:
    job = _job([_alloc(0, "g1", 1, 8, {0}, 1), _alloc(1, "g2", 1, 8, {0}, 1)],
               ["gpu:2(IDX:0,3)", "gpu:a100:1(IDX:1)"])  # fmt: skip
    opts = _opts(_answer(("smt", [_sub("gpu", "g[1-2]", None, GPU_IDS)])))
    res = capture_resources(job, opts) or []
    assert [r.accelerators for r in res] == [[GPU_IDS[0], GPU_IDS[3]], [GPU_IDS[1]]]


def test_gpu_pci_addrs_override_the_topology() -> None:
    mine = ("0000:AA:00.0", "0000:BB:00.0")
    job = _job([_alloc(0, "g1", 1, 8, {0}, 1)], ["gpu:1(IDX:1)"])
    opts = _opts(
        _answer(("smt", [_sub("gpu", "g[1-2]", None, GPU_IDS)])),
        gpu_pci_addrs=((re.compile("^g1$"), mine),),
    )
    (res,) = capture_resources(job, opts) or []
    assert res.accelerators == ["0000:BB:00.0"]


def test_mig_instances_map_to_their_parent_gpu() -> None:
    """4 A100 split into 7 MIG instances each: Slurm counts 28 gpu devices in NVML order."""
    job = _job([_alloc(0, "g1", 1, 8, {0}, 1)], ["gpu:1g.10gb:3(IDX:0,6,7)"])
    opts = _opts(_answer(("smt", [_sub("gpu", "g[1-2]", None, GPU_IDS)])))
    opts.layouts.set_shapes("smt", {"g1": NodeShape(1, 8, 1, gpus=28, mig=True)})
    (res,) = capture_resources(job, opts) or []
    assert res.accelerators == [GPU_IDS[0], GPU_IDS[1]]


def test_shards_map_to_the_gpu_they_are_on() -> None:
    job = _job([_alloc(0, "g1", 1, 8, {0}, 1)], ["shard:3(0/8,2/8,0/8,1/8)"])
    opts = _opts(_answer(("smt", [_sub("gpu", "g[1-2]", None, GPU_IDS)])))
    (res,) = capture_resources(job, opts) or []
    assert res.accelerators == [GPU_IDS[1], GPU_IDS[3]]


def test_gpus_without_any_list_are_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    job = _job([_alloc(0, "g1", 1, 8, {0}, 1)], ["gpu:1(IDX:0)"])
    opts = ConvertOptions()
    with caplog.at_level(logging.WARNING):
        capture_resources(job, opts)
        (res,) = capture_resources(job, opts) or []
    assert res.accelerators is None
    assert sum("its GPUs are not reported" in r.getMessage() for r in caplog.records) == 1
