"""The daemon's topology: fetched from a real stand-in over HTTP, kept in the state DB, used
after a restart with cc-backend down, reported per host; never fatal (issue #16)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
import trio
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry
from standin_helpers import serving

from ccsa.ccbackend.client import BackendClient
from ccsa.daemon.snapshot import StatusSnapshot
from ccsa.daemon.store import Store
from ccsa.daemon.topocache import TopologyKeeper
from ccsa.layout import Layouts, NodeShape
from ccsa.metrics import SnapshotCollector
from ccsa.sim.ccbackend import topologies
from ccsa.sim.ccbackend.state import Backend
from ccsa.status import render, sections

TOKEN = "token-for-a-standin-without-auth"


def _backend(**kw: object) -> Backend:
    configs = {c.name: c for c in map(topologies.config, topologies.examples())}
    return Backend(configs, **kw)  # type: ignore[arg-type]


async def test_fetch_keep_and_restart_with_backend_down(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite3"
    store = Store.open(str(db))
    layouts = Layouts()
    async with serving(_backend()) as standin, BackendClient(standin.url, TOKEN) as client:
        keeper = TopologyKeeper(layouts, client.clusters, store.connection, lambda: 1000.0)
        assert await keeper.refresh()
    assert layouts.topology_origin == "cc-backend"
    assert layouts.hwthreads("smtx86", "s01", [1, 6], 0, 0) == [1, 9, 6, 14]
    store.close()
    # restart: cc-backend is gone (nothing listens on that port any more)
    store = Store.open(str(db))
    fresh = Layouts()
    async with BackendClient(standin.url, TOKEN) as client:
        keeper = TopologyKeeper(fresh, client.clusters, store.connection, lambda: 1060.0)
        assert keeper.load_saved()
        assert not await keeper.refresh()
    assert fresh.topology_origin == "state DB"
    assert fresh.hwthreads("armc", "a02", [3], 0, 0) == [6, 7]
    status = keeper.status()
    assert status.origin == "state DB"
    assert status.fetched_at == 1000.0
    assert "keeping the topology from state DB" in (status.last_error or "")
    store.close()


async def test_404_falls_back_to_slurm_shapes_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    layouts = Layouts()
    layouts.set_shapes("smtx86", {"s01": NodeShape(2, 4, 2), "s02": NodeShape(2, 4, 2, gpus=4)})
    backend = _backend(clusters_api=False)
    async with serving(backend) as standin, BackendClient(standin.url, TOKEN) as client:
        keeper = TopologyKeeper(layouts, client.clusters, None, lambda: 5.0)
        with caplog.at_level(logging.WARNING):
            assert not await keeper.refresh()
            assert not await keeper.refresh()
        backend.clusters_api = True  # the topology appears: switched to at the next refresh
        status = keeper.status()
        assert await keeper.refresh()
    warned = [r.getMessage() for r in caplog.records if "cluster topology" in r.getMessage()]
    assert len(warned) == 1  # the same failure is logged once
    assert "404" in warned[0]
    assert "hwthreads from Slurm's node shapes" in warned[0]
    assert status.origin == ""
    assert status.hosts == {"smtx86": {"slurm": 2}}
    assert status.gpus == {"smtx86": {"none": 1}}
    assert keeper.status().hosts == {"smtx86": {"topology": 2}}


async def test_undecodable_answer_keeps_the_last_good_one() -> None:
    answers = [topologies.cluster("c", [topologies.subcluster("s", "n1", sockets=1, cores=2,
                                                              threads=2)])]  # fmt: skip
    good = b'{"clusters": [' + __import__("json").dumps(answers[0]).encode() + b"]}"
    bodies = [good, b"<html>proxy error</html>"]

    async def fetch() -> bytes:
        return bodies.pop(0)

    layouts = Layouts()
    keeper = TopologyKeeper(layouts, fetch, None, lambda: 7.0)
    assert await keeper.refresh()
    assert not await keeper.refresh()
    assert layouts.hwthreads("c", "n1", [1], 0, 0) == [1, 3]
    assert "does not decode" in (keeper.status().last_error or "")


def test_status_and_metrics_say_which_source_each_host_uses() -> None:
    layouts = Layouts()
    layouts.set_shapes("smtx86", {"s01": NodeShape(2, 4, 2), "z9": NodeShape(2, 4, 2, gpus=2)})
    layouts.set_shapes("nocore", {"n1": NodeShape(1, 8, 1)})
    answer = json.dumps({"clusters": topologies.examples()}).encode()

    async def fetch() -> bytes:
        return answer

    keeper = TopologyKeeper(layouts, fetch, None, lambda: 100.0)
    assert trio.run(keeper.refresh)
    snap = StatusSnapshot(topology=keeper.status())
    out = io.StringIO()
    render(sections(snap, 130.0), out, rich=False)
    text = out.getvalue()
    assert "cluster topology (cc-backend, fetched" in text
    assert "1 slurm, 1 topology" in text  # smtx86: z9 is in no subcluster
    assert "1 none" in text  # z9's GPUs: no gpuPciAddrs, no topology accelerators
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(lambda: snap))
    metrics = generate_latest(registry).decode()
    assert 'ccsa_hwthread_source_hosts{cluster="smtx86",source="topology"} 1.0' in metrics
    assert 'ccsa_hwthread_source_hosts{cluster="nocore",source="slurm"} 1.0' in metrics
    assert 'ccsa_gpu_source_hosts{cluster="smtx86",source="none"} 1.0' in metrics
