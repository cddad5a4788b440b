"""View of ``sacct --json`` (slurmdbd job records), data_parser v0.0.39–v0.0.44.

Only the fields ccsa reads are declared; msgspec skips everything else (``steps`` included)
without building objects, which is what makes a 100k-job dump decode at hundreds of MB/s.
``tres.requested`` stays raw JSON, decoded by :func:`requested_tres` only for the few jobs
whose allocated TRES have no CPU count (``convert.tres_counts``). A decoded ``msgspec.Raw`` is
a view into the dump, so a :class:`SacctJob` keeps the whole ``sacct`` output alive: jobs are
meant to live for one poll (decode, plan, convert, drop), never to be cached.

Where the time goes (generated 24.11-shaped dump, 7.5 KB/job; instructions per job counted
with callgrind, which unlike CPU time does not drift with the load of the shared machine):
scanning the JSON with only ``job_id`` declared costs 94.7k instructions (~8.2 us warm, ~900
MB/s: the floor of any msgspec view). This view costs 117.3k, i.e. 22.6k more (~2 us warm; ~3
us in a fresh process, where every new page of decoded objects is a page fault): ``tres`` 8.3k
(six TresRec objects), the seven strings 4.0k, ``time`` 3.1k, ``state`` 2.0k, ``array`` 1.1k,
``required`` 1.0k, ``het`` 0.9k, ``allocation_nodes`` 0.4k, and ~2k of key matching. Each
job's decoded objects take ~1.6 KB.

Kept (131k -> 117k instructions, 2.9 -> 1.6 KB per job; 12.6 -> 10.9 us in a fresh process):
``tres.requested`` as ``Raw`` (0.4k instead of 7.7k); dropping fields nobody read (``group``,
``state.reason``, ``time.eligible``/``elapsed``, ``array.task_id``/``task``,
``het.job_offset``: 3k); TRES ``type`` as :class:`TresType`, an open string enum
(a known type decodes to a shared member instead of a new string per record: 1-2k and 340
bytes per job, an unknown one still decodes, to its own string); job fields declared in
sacct's output order (msgspec looks a key up starting after the previous match: 1.3k).

Tried and not kept: ``Literal`` TRES types (an unknown type would fail the whole dump;
``Literal | str`` decodes to a new string anyway, so no gain); ``Raw`` for ``tres.allocated``
too, decoded in conversion (-6.6k here, +10.7k there: conversion needs it for every new job);
an open enum for the state names (no fewer instructions, 64 bytes less per job: not worth
widening every flag helper's types); ``Raw`` for ``required`` (0.25k, and a Raw is bigger than
the one-field struct).
"""

from __future__ import annotations

import msgspec

from ccsa.errors import SlurmDecodeError
from ccsa.slurm.types import NV, Flags, Meta, Num, OpenStrEnum, decode_doc


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
    #: The batch script when slurmdbd stores scripts and sacct was asked for it, else "".
    script: str = ""
    state: SacctState = msgspec.field(default_factory=SacctState)
    tres: SacctTres = msgspec.field(default_factory=SacctTres)
    user: str = ""


class SacctDoc(msgspec.Struct, gc=False):
    jobs: list[SacctJob] = []
    meta: Meta = msgspec.field(default_factory=Meta)


_decoder = msgspec.json.Decoder(SacctDoc)
_tres_decoder = msgspec.json.Decoder(list[TresRec])


def decode(data: bytes, *, command: str = "sacct") -> SacctDoc:
    """Decode ``sacct --json`` output; raises SlurmDecodeError naming command, path, version."""
    return decode_doc(_decoder, data, command)


def requested_tres(job: SacctJob) -> list[TresRec]:
    """The job's ``tres.requested`` list; SlurmDecodeError naming the job when it is garbled."""
    try:
        return _tres_decoder.decode(job.tres.requested)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        text, _, where = str(exc).partition(" - at `$")
        where = f"tres.requested{where.rstrip('`')}"
        raise SlurmDecodeError("sacct", f"job {job.job_id}: {where}: {text}") from exc
