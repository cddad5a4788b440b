"""Test helpers for the stand-in cc-backend: cluster configs, request bodies, a serving context."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

import trio

from ccsa.ccbackend.answers import Endpoint
from ccsa.ccbackend.client import BackendClient
from ccsa.ccbackend.models import StartJob, StopJob, encode
from ccsa.errors import BackendBlocked, BackendRejected, BackendUnavailable
from ccsa.sim.ccbackend import clusters
from ccsa.sim.ccbackend.clusters import ClusterConfig
from ccsa.sim.ccbackend.server import StandIn
from ccsa.sim.ccbackend.state import Backend

T0 = 1_700_000_000


class FakeClock:
    """A settable wall clock (epoch seconds) for ``Backend(clock=...)``."""

    def __init__(self, now: float = T0 + 3600) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def example_clusters(shared: Path) -> dict[str, ClusterConfig]:
    """alex and fritz from ``shared/spec/cc-backend/example-clusters``."""
    return clusters.load([shared / "spec" / "cc-backend" / "example-clusters"])


def generated_clusters() -> dict[str, ClusterConfig]:
    """Generated clusters: ``test`` (any host) and ``sub`` (two hostlist sub-clusters)."""
    return {
        "test": clusters.minimal("test"),
        "sub": clusters.minimal("sub", {"cpu": "c[001-100]", "gpu": "g[1-8],gx"}),
    }


def start_body(
    job_id: int, start: int = T0, *, cluster: str = "test", **over: Any
) -> dict[str, Any]:
    """A start_job body like the adapter's (one node, hwthreads), with overrides."""
    body: dict[str, Any] = {
        "cluster": cluster,
        "subCluster": "",
        "partition": "main",
        "project": "proj",
        "user": "alice",
        "shared": "none",
        "jobState": "",
        "resources": [{"hostname": "c001", "hwthreads": [0, 1]}],
        "metaData": {"jobName": "sim", "submitTime": str(start - 10)},
        "walltime": 3600,
        "jobId": job_id,
        "numHwthreads": 2,
        "numNodes": 1,
        "startTime": start,
    }
    body.update(over)
    return body


def stop_body(job_id: int, stop: int, *, cluster: str = "test", **over: Any) -> dict[str, Any]:
    """A stop_job body like the adapter's."""
    body: dict[str, Any] = {
        "jobId": job_id,
        "cluster": cluster,
        "jobState": "completed",
        "stopTime": stop,
    }
    body.update(over)
    return body


def raw(body: dict[str, Any]) -> bytes:
    """JSON bytes of a body."""
    return json.dumps(body).encode()


@asynccontextmanager
async def serving(
    backend: Backend | None = None,
    *,
    clock: Callable[[], float] | None = None,
    **kwargs: Any,
) -> AsyncIterator[StandIn]:
    """Run a StandIn on a free loopback port for the duration of the block."""
    if backend is None:
        backend = Backend(generated_clusters(), clock=clock or time.time)
    standin = StandIn(backend, **kwargs)
    async with trio.open_nursery() as nursery:
        await nursery.start(standin.serve)
        try:
            yield standin
        finally:
            nursery.cancel_scope.cancel()


class Seen(NamedTuple):
    """How one POST through the real ``BackendClient`` ended: its Outcome, or the error it
    raised as (kind, status, reason), so a test can compare both with one assertion."""

    kind: str
    status: int | None
    message: str


async def post(client: BackendClient, endpoint: Endpoint, body: StartJob | StopJob | Any) -> Seen:
    """``client.post(endpoint, encode(body))`` as a `Seen`."""
    try:
        outcome = await client.post(endpoint, encode(body))
    except BackendBlocked as exc:
        return Seen("blocked", exc.status, exc.reason)
    except BackendUnavailable as exc:
        return Seen("transient", exc.status, exc.reason)
    except BackendRejected as exc:
        return Seen("rejected", exc.status, exc.reason)
    return Seen(outcome.kind, outcome.status, outcome.message)


async def start_job(client: BackendClient, body: StartJob) -> Seen:
    return await post(client, "start_job", body)


async def stop_job(client: BackendClient, body: StopJob) -> Seen:
    return await post(client, "stop_job", body)
