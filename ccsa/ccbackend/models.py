"""Strict msgspec Structs for the bodies ccsa sends to cc-backend (v1.5 contract).

cc-backend decodes start_job/stop_job/nodestate bodies with ``DisallowUnknownFields``, over REST
and over NATS alike, so these Structs encode exactly the keys it accepts and nothing else
(``forbid_unknown_fields`` makes decoding our own journal equally strict). See
``docs/ccbackend.md`` §2.1, §3.1, §5 in the shared spec.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

SharedMode = Literal["none", "single_user", "multi_user"]

#: Job states cc-backend v1.5 accepts on stop (``schema.JobState.Valid()``).
VALID_STOP_STATES: frozenset[str] = frozenset(
    {
        "boot_fail",
        "cancelled",
        "completed",
        "deadline",
        "failed",
        "node_fail",
        "out_of_memory",
        "pending",
        "preempted",
        "running",
        "suspended",
        "timeout",
    }
)

NonNegative = Annotated[int, msgspec.Meta(ge=0)]


class Resource(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True, gc=False):
    """One node of a job: OS processor ids and accelerator ids (PCI addresses)."""

    hostname: str
    hwthreads: list[int] | None = None
    accelerators: list[str] | None = None


class StartJob(
    msgspec.Struct, rename="camel", omit_defaults=True, forbid_unknown_fields=True, gc=False
):
    """Body of ``POST /api/jobs/start_job/`` (a subset of cc-lib's ``schema.Job``)."""

    job_id: NonNegative
    cluster: str
    user: str
    project: str
    num_nodes: Annotated[int, msgspec.Meta(ge=1)]
    resources: list[Resource]
    start_time: NonNegative
    #: Always sent: cc-backend silently defaults an absent ``shared`` to ``none``.
    shared: SharedMode
    partition: str = ""
    num_hwthreads: NonNegative = 0
    num_acc: NonNegative = 0
    walltime: NonNegative = 0
    array_job_id: NonNegative = 0
    meta_data: dict[str, str] = {}


class StopJob(msgspec.Struct, rename="camel", omit_defaults=True, forbid_unknown_fields=True):
    """Body of ``POST /api/jobs/stop_job/`` (``api.StopJobAPIRequest``).

    ``startTime`` is optional for cc-backend; ccsa sends it so that the stop can never hit an
    older job that reused the same Slurm id.
    """

    job_id: NonNegative
    cluster: str
    job_state: str
    stop_time: NonNegative
    start_time: int | None = None


class NodePayload(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """One node in ``POST /api/nodestate/``."""

    hostname: str
    states: list[str]
    cpus_allocated: int = 0
    memory_allocated: int = 0
    gpus_allocated: int = 0
    jobs_running: int = 0


class NodeStateRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /api/nodestate/`` (``api.UpdateNodeStatesRequest``)."""

    cluster: str
    nodes: list[NodePayload]


_encoder = msgspec.json.Encoder()


def encode(body: StartJob | StopJob | NodeStateRequest) -> bytes:
    """Encode a request body as compact JSON (the same bytes for REST and NATS)."""
    return _encoder.encode(body)
