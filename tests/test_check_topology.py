"""`check`'s resource rows: sinfo hosts against cc-backend's subclusters, gpuPciAddrs against the
topology's accelerator ids, GPU nodes without any id list, and the hwthread source (issue #16).

The sinfo groups have the real 24.11 shape (per-node sockets/cores/threads ranges, ``gres.total``
as sinfo prints it); the topologies are cluster.json documents (cc-lib ``schema/cluster.go``).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from ccsa import topology
from ccsa.check.findings import Finding
from ccsa.check.topology import resource_findings
from ccsa.resources import ConvertOptions
from ccsa.sim.ccbackend import topologies
from ccsa.slurm import sinfo

IDS = topologies.gpu_ids(4)  # lower case, as cc-backend's generator writes them


def _sinfo(groups: list[tuple[list[str], int, int, int, str]]) -> sinfo.SinfoDoc:
    docs: list[dict[str, Any]] = [
        {
            "nodes": {"total": len(hosts), "nodes": hosts},
            "gres": {"total": gres, "used": ""},
            "sockets": {"minimum": s, "maximum": s},
            "cores": {"minimum": c, "maximum": c},
            "threads": {"minimum": t, "maximum": t},
        }
        for hosts, s, c, t, gres in groups
    ]
    return sinfo.decode(json.dumps({"sinfo": docs}).encode())


def _topo(*subs: dict[str, Any]) -> topology.ClusterTopology:
    clusters, problems = topology.decode(
        json.dumps({"clusters": [topologies.cluster("tc", list(subs))]}).encode()
    )
    assert problems == []
    return clusters["tc"]


GPU_SUB = topologies.subcluster("gpu", "g[1-2]", sockets=2, cores=4, threads=2, accelerators=IDS)
CPU_SUB = topologies.subcluster("cpu", "c[1-4]", sockets=2, cores=4, threads=2)
SLURM = _sinfo([(["c1", "c2", "c3", "c4"], 2, 4, 2, ""), (["g1", "g2"], 2, 4, 2, "gpu:4(S:0-1)")])


def _rows(
    doc: sinfo.SinfoDoc, topo: topology.ClusterTopology | None, opts: ConvertOptions | None = None
) -> dict[str, list[Finding]]:
    o = opts or ConvertOptions()
    out: dict[str, list[Finding]] = {}
    for f in resource_findings("tc", doc, topo, o.pci_list, o.layouts.numbering):
        out.setdefault(f.check.removeprefix("tc: "), []).append(f)
    return out


def _levels(rows: list[Finding]) -> list[str]:
    return [f.level for f in rows]


def test_everything_matching_is_ok() -> None:
    rows = _rows(SLURM, _topo(CPU_SUB, GPU_SUB))
    assert _levels(rows["subclusters"]) == ["ok"]
    assert _levels(rows["GPU ids"]) == ["ok"]
    assert "2 GPU nodes mapped (2 from topology)" in rows["GPU ids"][0].detail
    assert _levels(rows["hwthread ids"]) == ["ok"]


def test_hosts_in_no_subcluster_fail_as_a_hostlist() -> None:
    rows = _rows(SLURM, _topo(topologies.subcluster("cpu", "c[1-2]", sockets=2, cores=4,
                                                    threads=2), GPU_SUB))  # fmt: skip
    (row,) = rows["subclusters"]
    assert row.level == "fail"
    assert "2 sinfo hosts are in no subcluster of cc-backend's cluster tc: c[3-4]" in row.detail
    assert "subClusters[].nodes" in row.fix


def test_gpu_pci_addrs_not_in_the_topology_fail_case_included() -> None:
    upper = tuple(i.upper() for i in IDS)
    opts = ConvertOptions(gpu_pci_addrs=((re.compile("^g"), upper),))
    rows = _rows(SLURM, _topo(CPU_SUB, GPU_SUB), opts)
    fails = [f for f in rows["GPU ids"] if f.level == "fail"]
    assert len(fails) == 4
    assert f"gpuPciAddrs address {upper[0]} (hosts g[1-2])" in fails[0].detail
    assert "case included" in fails[0].fix


def test_gpu_nodes_without_any_id_list_fail() -> None:
    """Was INFO "GPU nodes will report GPU indices" with exit status 0 (issue #16)."""
    rows = _rows(SLURM, None)
    fail = next(f for f in rows["GPU ids"] if f.level == "fail")
    assert "GPU jobs will be sent without accelerators" in fail.detail
    assert "g[1-2]" in fail.detail
    assert "topology.accelerators" in fail.fix


def test_gpu_count_against_list_length_warns() -> None:
    two = topologies.subcluster("gpu", "g[1-2]", sockets=2, cores=4, threads=2,
                                accelerators=IDS[:2])  # fmt: skip
    rows = _rows(SLURM, _topo(CPU_SUB, two))
    (row,) = rows["GPU ids"]
    assert row.level == "warn"
    assert "g1 (4 GPUs, 2 ids)" in row.detail


def test_without_topology_the_numbering_is_named() -> None:
    rows = _rows(SLURM, None)
    assert "subclusters" not in rows
    (row,) = rows["hwthread ids"]
    assert row.level == "warn"
    assert "cc-backend gave no topology" in row.detail
    assert "siblingNumbering spread" in row.detail


def test_shape_disagreement_warns_once_per_node_list() -> None:
    wrong = topologies.subcluster("cpu", "c[1-4]", sockets=1, cores=8, threads=1)
    rows = _rows(SLURM, _topo(wrong, GPU_SUB))
    warn = next(f for f in rows["hwthread ids"] if f.level == "warn")
    assert "disagree on c[1-4]" in warn.detail
    assert "8 cores x 1 threads" in warn.detail
    assert "Slurm says 8 cores x 2 threads" in warn.detail


@pytest.mark.parametrize("core", [None, [[0, 8], [1, 8]]])
def test_missing_or_bad_core_falls_back_with_a_warning(core: list[list[int]] | None) -> None:
    sub = dict(CPU_SUB)
    topo_doc = dict(sub["topology"])  # type: ignore[call-overload]
    topo_doc.pop("core")
    if core is not None:
        topo_doc["core"] = core
    sub["topology"] = topo_doc
    clusters, _ = topology.decode(
        json.dumps({"clusters": [topologies.cluster("tc", [sub, GPU_SUB])]}).encode()
    )
    rows = _rows(SLURM, clusters["tc"])
    warn = next(f for f in rows["hwthread ids"] if f.level == "warn")
    assert "4 hosts (c[1-4]): no topology.core" in warn.detail
