"""View of ``squeue --json`` and ``scontrol show job --json`` (slurmctld job_info), v0.0.39–v0.0.44.

Both commands dump the same ``OPENAPI_JOB_INFO_RESP`` object, so one view serves both. It covers
both ``job_resources`` shapes: v0.0.40's ``allocated_nodes`` (dict-keyed sockets listing only
allocated cores) and v0.0.41+'s ``nodes.allocation[]`` (every core with a status flag list), and
``{}`` / ``null`` / missing for jobs without resources.
"""

from __future__ import annotations

import msgspec

from ccsa.slurm.types import Flags, Meta, Num, decode_doc


class Core(msgspec.Struct, gc=False):
    index: int
    #: A flag list in every data_parser that has this shape (v0.0.41+): ``["ALLOCATED"]``.
    status: list[str] = []


class Socket(msgspec.Struct, gc=False):
    index: int
    cores: list[Core] = []


class Alloc(msgspec.Struct, gc=False):
    """One node of a v0.0.41+ allocation; ``index`` is the position in the job's node list."""

    index: int
    name: str
    sockets: list[Socket] = []


class ResNodes(msgspec.Struct, gc=False):
    allocation: list[Alloc] = []
    count: Num | None = None
    hostlist: str = msgspec.field(default="", name="list")


class SocketV40(msgspec.Struct, gc=False):
    cores: dict[str, str] = {}


class AllocV40(msgspec.Struct, gc=False):
    """One node of a v0.0.40 allocation: ``{"0": {"cores": {"5": "allocated"}}}``."""

    nodename: str
    sockets: dict[str, SocketV40] = {}


class JobResources(msgspec.Struct, gc=False):
    nodes: str | ResNodes | None = None
    allocated_nodes: list[AllocV40] = []
    threads_per_core: Num | None = None


class QueueJob(msgspec.Struct, gc=False):
    """One ``jobs[]`` element of squeue / scontrol show job."""

    job_id: int
    name: str = ""
    account: str = ""
    partition: str = ""
    cluster: str = ""
    comment: str = ""
    user_name: str = ""
    group_name: str = ""
    job_state: Flags = []
    submit_time: Num | None = None
    start_time: Num | None = None
    end_time: Num | None = None
    time_limit: Num | None = None
    cpus: Num | None = None
    node_count: Num | None = None
    nodes: str = ""
    tres_req_str: str = ""
    tres_alloc_str: str = ""
    gres_detail: list[str] = []
    shared: Flags | None = None
    #: v0.0.40/41 only (removed in v0.0.42).
    exclusive: Flags | None = None
    array_job_id: Num | None = None
    array_task_id: Num | None = None
    het_job_id: Num | None = None
    het_job_offset: Num | None = None
    job_resources: JobResources | None = None


class QueueDoc(msgspec.Struct, gc=False):
    jobs: list[QueueJob] = []
    meta: Meta = msgspec.field(default_factory=Meta)


_decoder = msgspec.json.Decoder(QueueDoc)


def decode(data: bytes, *, command: str = "squeue") -> QueueDoc:
    """Decode squeue / scontrol show job JSON; raises SlurmDecodeError with path and version."""
    return decode_doc(_decoder, data, command)
