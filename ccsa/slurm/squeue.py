"""View of ``squeue --json`` and ``scontrol show job --json`` (slurmctld job_info), v0.0.39–v0.0.44.

Both commands dump the same ``OPENAPI_JOB_INFO_RESP`` object, so one view serves both. It covers
both ``job_resources`` shapes: v0.0.40's ``allocated_nodes`` (dict-keyed sockets listing only
allocated cores) and v0.0.41+'s ``nodes.allocation[]`` (every core with a status flag list), and
``{}`` / ``null`` / missing for jobs without resources.

Contract: :func:`decode` (bytes) and :func:`decode_file` (the runner's temporary file) return a
:class:`QueueDoc`: the jobs that decoded, ``meta``, and one :class:`~ccsa.slurm.stream.BadRecord`
per record that did not (the others are kept). Records are decoded one at a time
(:mod:`ccsa.slurm.stream`). ``job_resources`` is validated at decode (a malformed one makes its
record bad, with the full JSON path) and kept as compact JSON of the declared fields only
(:attr:`QueueJob.job_resources_json`), decoded again on access (:attr:`QueueJob.job_resources`):
as objects, v0.0.41+'s per-core lists take ~170 bytes per core, and pretty-printed by Slurm
several times that, while the compact text of what the view declares is ~35 bytes per core, and
~12 for a core that is not allocated: the text keeps a core's ``status`` only when it is
``ALLOCATED`` (the one status ccsa reads, ``convert``), the core itself always (its count per
socket numbers the cores).
"""

from __future__ import annotations

from io import BytesIO
from typing import BinaryIO

import msgspec

from ccsa.errors import SlurmDecodeError
from ccsa.slurm.stream import BadRecord, decode_jobs
from ccsa.slurm.types import Flags, Meta, Num, decode_meta


class Core(msgspec.Struct, gc=False, omit_defaults=True):
    index: int
    #: A flag list in every data_parser that has this shape (v0.0.41+): ``["ALLOCATED"]``.
    status: list[str] = []


class Socket(msgspec.Struct, gc=False, omit_defaults=True):
    index: int
    cores: list[Core] = []


class AllocCpus(msgspec.Struct, gc=False, omit_defaults=True):
    count: int = 0


class Alloc(msgspec.Struct, gc=False, omit_defaults=True):
    """One node of a v0.0.41+ allocation; ``index`` is the position in the job's node list.

    ``cpus.count``: CPUs (hardware threads) allocated on this node.
    """

    index: int
    name: str
    sockets: list[Socket] = []
    cpus: AllocCpus | None = None


class ResNodes(msgspec.Struct, gc=False, omit_defaults=True):
    allocation: list[Alloc] = []
    count: Num | None = None
    hostlist: str = msgspec.field(default="", name="list")


class SocketV40(msgspec.Struct, gc=False, omit_defaults=True):
    cores: dict[str, str] = {}


class AllocV40(msgspec.Struct, gc=False, omit_defaults=True):
    """One node of a v0.0.40 allocation: ``{"0": {"cores": {"5": "allocated"}}}``."""

    nodename: str
    sockets: dict[str, SocketV40] = {}


class JobResources(msgspec.Struct, gc=False, omit_defaults=True):
    nodes: str | ResNodes | None = None
    allocated_nodes: list[AllocV40] = []
    threads_per_core: Num | None = None


_NULL = msgspec.Raw(b"null")
_resources_decoder: msgspec.json.Decoder[JobResources | None] = msgspec.json.Decoder(
    JobResources | None
)


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
    #: How often the job was requeued (its run's number - 1), as sacct's ``restart_cnt``.
    restart_cnt: Num | None = None
    #: The ``job_resources`` object as compact JSON text of :class:`JobResources` (see the
    #: module docstring); read :attr:`job_resources` instead.
    job_resources_json: msgspec.Raw = msgspec.field(default=_NULL, name="job_resources")

    @property
    def job_resources(self) -> JobResources | None:
        """The job's allocation (None when Slurm sent none), decoded anew on every access."""
        try:
            return _resources_decoder.decode(self.job_resources_json)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:  # not from decode()
            text, _, rest = str(exc).partition(" - at `$")
            path = "$.job_resources" + rest.rstrip("`")
            raise SlurmDecodeError("squeue", f"job {self.job_id}: {text}", path=path) from exc


class QueueDoc(msgspec.Struct, gc=False):
    jobs: list[QueueJob] = []
    meta: Meta = msgspec.field(default_factory=Meta)
    #: records that did not decode (not in ``jobs``)
    bad: list[BadRecord] = []


_job_decoder = msgspec.json.Decoder(QueueJob)
_resources_encoder = msgspec.json.Encoder()


def decode(data: bytes, *, command: str = "squeue") -> QueueDoc:
    """Decode squeue / scontrol show job JSON; raises SlurmDecodeError when it is not such an
    answer at all (a record that does not decode is listed in ``bad`` instead)."""
    return decode_file(BytesIO(data), command=command)


def decode_file(source: BinaryIO, *, command: str = "squeue") -> QueueDoc:
    """:func:`decode` reading ``source`` chunk by chunk (see :mod:`ccsa.slurm.stream`)."""
    got = decode_jobs(source, _job_decoder, command=command, finish=_compact_resources)
    meta = decode_meta(got.values.get("meta"), command)
    return QueueDoc(jobs=got.jobs, meta=meta, bad=got.bad)


def _compact_resources(job: QueueJob) -> QueueJob:
    """Validate ``job_resources`` and keep it as compact JSON (no view into the record's bytes).

    A malformed one raises msgspec.ValidationError with its path from the record's root.
    """
    raw = job.job_resources_json
    if raw is _NULL:
        return job
    try:
        resources = _resources_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        text, at, path = str(exc).partition(" - at `$")
        raise msgspec.ValidationError(
            f"{text} - at `$.job_resources{path.rstrip('`') if at else ''}`"
        ) from exc
    if resources is None:
        job.job_resources_json = _NULL
        return job
    if isinstance(resources.nodes, ResNodes):
        for alloc in resources.nodes.allocation:
            for socket in alloc.sockets:
                for core in socket.cores:
                    if core.status and core.status[0] != "ALLOCATED":
                        core.status = []  # omitted from the text (see the module docstring)
    job.job_resources_json = msgspec.Raw(_resources_encoder.encode(resources))
    return job
