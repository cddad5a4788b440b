"""View of ``sacct --json`` (slurmdbd job records), data_parser v0.0.39–v0.0.44.

Contract: :func:`decode` (bytes) and :func:`decode_file` (the runner's temporary file) return a
:class:`SacctDoc`: the jobs that decoded, ``meta``, and one :class:`~ccsa.slurm.stream.BadRecord`
per record that did not (the others are kept; issue #17 item 5). Records are decoded one at a
time (:mod:`ccsa.slurm.stream`), so memory is the narrow views, not the answer. Only the fields
ccsa reads are declared; msgspec skips everything else (``steps`` included) without building
objects. ``tres.requested`` stays raw JSON (copied out of the record, so a job keeps only that
much of the answer alive), decoded by :func:`requested_tres` only for the few jobs whose
allocated TRES have no CPU count (``convert.tres_counts``). How the view was sized and what it
costs per job: benchmarks/README.md, "sacct view".
"""

from __future__ import annotations

from io import BytesIO
from typing import BinaryIO

import msgspec

from ccsa.errors import SlurmDecodeError
from ccsa.slurm.stream import BadRecord, decode_jobs
from ccsa.slurm.types import NV, Flags, Meta, Num, OpenStrEnum, decode_meta


class SacctState(msgspec.Struct, gc=False):
    current: Flags = []


class SacctTime(msgspec.Struct, gc=False):
    end: Num = 0
    start: Num = 0
    submission: Num = 0
    limit: Num | None = None


class SacctRequired(msgspec.Struct, gc=False):
    CPUs: Num = 0


class TresType(OpenStrEnum):
    """The TRES types Slurm defines (``slurm/src/common/assoc_mgr.h``); others decode too."""

    CPU = "cpu"
    MEM = "mem"
    ENERGY = "energy"
    NODE = "node"
    BILLING = "billing"
    FS = "fs"
    VMEM = "vmem"
    PAGES = "pages"
    GRES = "gres"
    LICENSE = "license"
    BB = "bb"
    IC = "ic"
    NONE = ""


class TresRec(msgspec.Struct, gc=False):
    """One TRES entry: ``{"type": "gres", "name": "gpu", "id": 1001, "count": 2}``."""

    type: TresType = TresType.NONE
    name: str = ""
    count: int | str | NV = 0


_NO_TRES = msgspec.Raw(b"[]")


class SacctTres(msgspec.Struct, gc=False):
    allocated: list[TresRec] = []
    #: The raw JSON list; :func:`requested_tres` decodes it (it is rarely needed).
    requested: msgspec.Raw = _NO_TRES


class SacctArray(msgspec.Struct, gc=False):
    job_id: Num = 0


class SacctHet(msgspec.Struct, gc=False):
    job_id: Num = 0


class SacctJob(msgspec.Struct, gc=False, kw_only=True):
    """One ``jobs[]`` record of sacct (one per job, array task or het component).

    Fields are declared in the order sacct writes them: msgspec looks a key up starting after
    the previous match, so in-order keys are found at the first comparison.
    """

    account: str = ""
    #: Not read by ccsa itself; tests/test_sim_slurm.py checks the simulator's output with it.
    allocation_nodes: Num = 0
    array: SacctArray = msgspec.field(default_factory=SacctArray)
    cluster: str = ""
    time: SacctTime = msgspec.field(default_factory=SacctTime)
    het: SacctHet = msgspec.field(default_factory=SacctHet)
    job_id: int
    name: str = ""
    nodes: str = ""
    partition: str = ""
    required: SacctRequired = msgspec.field(default_factory=SacctRequired)
    #: How often the job was requeued before this record's run (0: never; a REQUEUED or
    #: PREEMPTED record of an earlier run has the count of its own run).
    restart_cnt: Num = 0
    #: The batch script when slurmdbd stores scripts and sacct was asked for it, else "".
    script: str = ""
    state: SacctState = msgspec.field(default_factory=SacctState)
    tres: SacctTres = msgspec.field(default_factory=SacctTres)
    user: str = ""


class SacctDoc(msgspec.Struct, gc=False):
    jobs: list[SacctJob] = []
    meta: Meta = msgspec.field(default_factory=Meta)
    #: records that did not decode (not in ``jobs``)
    bad: list[BadRecord] = []


_job_decoder = msgspec.json.Decoder(SacctJob)
_tres_decoder = msgspec.json.Decoder(list[TresRec])


def decode(data: bytes, *, command: str = "sacct") -> SacctDoc:
    """Decode ``sacct --json`` output; raises SlurmDecodeError when it is not a sacct answer at
    all (a record that does not decode is listed in ``bad`` instead)."""
    return decode_file(BytesIO(data), command=command)


def decode_file(source: BinaryIO, *, command: str = "sacct") -> SacctDoc:
    """:func:`decode` reading ``source`` chunk by chunk (see :mod:`ccsa.slurm.stream`)."""
    got = decode_jobs(source, _job_decoder, command=command, finish=_own_bytes)
    meta = decode_meta(got.values.get("meta"), command)
    return SacctDoc(jobs=got.jobs, meta=meta, bad=got.bad)


def _own_bytes(job: SacctJob) -> SacctJob:
    """Copy ``tres.requested`` out of the record's bytes, so that those can be freed."""
    if job.tres.requested is not _NO_TRES:
        job.tres.requested = job.tres.requested.copy()
    return job


def requested_tres(job: SacctJob) -> list[TresRec]:
    """The job's ``tres.requested`` list; SlurmDecodeError naming the job when it is garbled."""
    try:
        return _tres_decoder.decode(job.tres.requested)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        text, _, where = str(exc).partition(" - at `$")
        where = f"tres.requested{where.rstrip('`')}"
        raise SlurmDecodeError("sacct", f"job {job.job_id}: {where}: {text}") from exc
