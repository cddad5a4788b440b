"""View of ``squeue --json`` and ``scontrol show job --json`` (slurmctld job_info), v0.0.39–v0.0.44.

Both commands dump the same ``OPENAPI_JOB_INFO_RESP`` object, so one view serves both. It covers
both ``job_resources`` shapes: v0.0.40's ``allocated_nodes`` (dict-keyed sockets listing only
allocated cores) and v0.0.41+'s ``nodes.allocation[]`` (every core with a status flag list), and
``{}`` / ``null`` / missing for jobs without resources.

``job_resources`` is kept as its JSON text and decoded on access (:attr:`QueueJob.job_resources`).
v0.0.41+ lists every core of every allocated node as ``{"index", "status": [...]}``; as objects
that is about 170 bytes per core, so keeping them all made the decoded ``squeue --all`` document
3.1x the size of the dump (peak RSS 4.1x the dump). The daemon decodes every poll but captures
resources only for jobs it has not seen start, so the cores are decoded only for those.
:func:`decode` still checks every ``job_resources`` eagerly (one job at a time, objects dropped
at once), so malformed input fails at decode with its full JSON path, as before. Measured on the
10k-job generated dump (``benchmarks/bench_decode.py``, CPU time): peak RSS 4.1x -> 1.45x the
dump, decode alone ~1.6x faster (nothing big is allocated), decode + capture of *every* job about
the same as before (its cores are decoded twice, but into memory that is reused).
"""

from __future__ import annotations

import gc

import msgspec

from ccsa.errors import SlurmDecodeError
from ccsa.slurm.types import Flags, Meta, Num, decode_doc, decode_error


class Core(msgspec.Struct, gc=False):
    index: int
    #: A flag list in every data_parser that has this shape (v0.0.41+): ``["ALLOCATED"]``.
    status: list[str] = []


class Socket(msgspec.Struct, gc=False):
    index: int
    cores: list[Core] = []


class AllocCpus(msgspec.Struct, gc=False):
    count: int = 0


class Alloc(msgspec.Struct, gc=False):
    """One node of a v0.0.41+ allocation; ``index`` is the position in the job's node list.

    ``cpus.count``: CPUs (hardware threads) allocated on this node.
    """

    index: int
    name: str
    sockets: list[Socket] = []
    cpus: AllocCpus | None = None


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
    #: The ``job_resources`` object as JSON text; read :attr:`job_resources` instead. It is a
    #: view into the decoded dump, so a QueueJob keeps the dump's bytes alive: fine for the
    #: per-poll use everywhere in ccsa; to keep single jobs for long, store
    #: ``msgspec.structs.replace(job, job_resources_json=job.job_resources_json.copy())``.
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


_decoder = msgspec.json.Decoder(QueueDoc)


def decode(data: bytes, *, command: str = "squeue") -> QueueDoc:
    """Decode squeue / scontrol show job JSON; raises SlurmDecodeError with path and version."""
    doc = decode_doc(_decoder, data, command)
    _check_resources(doc.jobs, data, command)
    return doc


def _check_resources(jobs: list[QueueJob], data: bytes, command: str) -> None:
    """Validate every job's ``job_resources`` (see the module docstring).

    The objects are dropped right away; the garbage collector is paused meanwhile (they hold no
    cycles). An error names the full path, as a one-pass decode would.
    """
    check = _resources_decoder.decode
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i, job in enumerate(jobs):
            raw = job.job_resources_json
            if raw is _NULL:
                continue
            try:
                check(raw)
            except msgspec.ValidationError as exc:
                text, at, path = str(exc).partition(" - at `$")
                text += f" - at `$.jobs[{i}].job_resources{path if at else '`'}"
                raise decode_error(command, data, text) from exc
    finally:
        if was_enabled:
            gc.enable()
