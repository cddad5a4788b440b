"""The stand-in's GET /api/clusters/ with real topologies, its 404 switch, and its refusal of
hwthread/accelerator ids its topology lacks (issue #16).

What cc-backend does: ``internal/api/cluster.go`` (getClusters, ``unknown cluster: X``), cc-lib
``schema/cluster.go`` (Topology), ``pkg/metricstore/scopequery.go`` (ids not in the topology select
nothing; the stand-in says so with 400 instead, see ``Backend``'s docstring).
"""

from __future__ import annotations

import json

import pytest
from standin_helpers import FakeClock, raw, start_body

from ccsa import topology
from ccsa.sim.ccbackend import topologies
from ccsa.sim.ccbackend.state import Backend


@pytest.fixture
def backend() -> Backend:
    configs = {c.name: c for c in map(topologies.config, topologies.examples())}
    return Backend(configs, clock=FakeClock())


def test_examples_decode_with_ccsas_reader(backend: Backend) -> None:
    reply = backend.list_clusters([])
    assert reply.status == 200
    clusters, problems = topology.decode(reply.body)
    assert problems == []
    icx = clusters["smtx86"].subcluster("s03")
    assert icx is not None
    assert icx.cores is not None
    assert icx.cores[5] == (5, 13)
    grace = clusters["armc"].subcluster("a01")
    assert grace is not None
    assert grace.cores is not None
    assert grace.cores[5] == (10, 11)
    a100 = clusters["gpux"].subcluster("g05")
    assert a100 is not None
    assert a100.accelerators == ("00000000:0e:00.0", "00000000:1e:00.0", "00000000:2e:00.0",
                                 "00000000:3e:00.0")  # fmt: skip
    nocore = clusters["nocore"].subcluster("anything")
    assert nocore is not None
    assert nocore.cores is None


def test_cluster_filter_and_unknown_cluster(backend: Backend) -> None:
    reply = backend.list_clusters([("cluster", "armc")])
    assert [c["name"] for c in json.loads(reply.body)["clusters"]] == ["armc"]
    bad = backend.list_clusters([("cluster", "nope")])
    assert (bad.status, bad.error) == (400, "unknown cluster: nope")


def test_switched_off_clusters_api_is_404() -> None:
    backend = Backend({}, clusters_api=False)
    reply = backend.list_clusters([])
    assert reply.status == 404
    assert json.loads(reply.body)["error"] == "the requested endpoint does not exist"


@pytest.mark.parametrize(
    ("resource", "error"),
    [
        ({"hostname": "s01", "hwthreads": [0, 8, 15]}, None),
        ({"hostname": "s01", "hwthreads": [16]}, "hwthread 16 of host s01"),
    ],
)
def test_hwthreads_must_exist_in_the_topology(
    resource: dict[str, object], error: str | None
) -> None:
    backend = Backend({"smtx86": topologies.config(topologies.examples()[0])}, clock=FakeClock())
    body = start_body(1, cluster="smtx86", resources=[resource], numHwthreads=2)
    reply = backend.start_job(raw(body))
    if error is None:
        assert reply.status == 201
    else:
        assert reply.status == 400
        assert error in (reply.error or "")
        assert "subcluster icx (cluster: smtx86)" in (reply.error or "")


def test_accelerator_ids_compare_case_sensitively(backend: Backend) -> None:
    ok = {"hostname": "g05", "hwthreads": [0], "accelerators": ["00000000:1e:00.0"]}
    upper = {"hostname": "g05", "hwthreads": [1], "accelerators": ["00000000:1E:00.0"]}
    first = backend.start_job(raw(start_body(1, cluster="gpux", resources=[ok], numAcc=1)))
    assert first.status == 201
    second = backend.start_job(raw(start_body(2, cluster="gpux", resources=[upper], numAcc=1)))
    assert second.status == 400
    assert "accelerator 00000000:1E:00.0 of host g05" in (second.error or "")


def test_cluster_without_core_checks_the_node_list(backend: Backend) -> None:
    fine = start_body(1, cluster="nocore", resources=[{"hostname": "x", "hwthreads": [15]}])
    assert backend.start_job(raw(fine)).status == 201
    beyond = start_body(2, cluster="nocore", resources=[{"hostname": "x", "hwthreads": [16]}])
    assert backend.start_job(raw(beyond)).status == 400
