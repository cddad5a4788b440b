"""View of ``sacct --json`` (slurmdbd job records), data_parser v0.0.39–v0.0.44.

Only the fields ccsa reads are declared; msgspec skips everything else (``steps`` included)
without building objects, which is what makes a 100k-job dump decode at hundreds of MB/s.

Where the time goes (generated 24.11-shaped dump, 7.5 KB/job, CPU time per job on the shared
2-core machine): scanning the JSON with only ``job_id`` declared costs 8.5 us (~880 MB/s, the
floor for any view); the string fields add ~1 us, ``time`` ~0.6, ``array`` + ``het`` ~0.8,
``state`` ~0.15 and ``tres`` ~3.5 (11 TresRec objects, each mostly the cost of its ``type``
string). Tried and not kept: declaring fields in document order (no measurable effect),
``Literal`` TRES types (unknown TRES types would fail the whole dump; ``Literal | str`` is not
interned, so no gain), ``msgspec.Raw`` for ``tres`` (conversion needs it for every new job, and
eager validation, which keeps bad input failing at decode, would decode it twice).
"""

from __future__ import annotations

import msgspec

from ccsa.slurm.types import NV, Flags, Meta, Num, decode_doc


class SacctState(msgspec.Struct, gc=False):
    current: Flags = []
    reason: str = ""


class SacctTime(msgspec.Struct, gc=False):
    submission: Num = 0
    eligible: Num = 0
    start: Num = 0
    end: Num = 0
    elapsed: Num = 0
    limit: Num | None = None


class SacctRequired(msgspec.Struct, gc=False):
    CPUs: Num = 0


class TresRec(msgspec.Struct, gc=False):
    """One TRES entry: ``{"type": "gres", "name": "gpu", "id": 1001, "count": 2}``."""

    type: str = ""
    name: str = ""
    count: int | str | NV = 0


class SacctTres(msgspec.Struct, gc=False):
    allocated: list[TresRec] = []
    requested: list[TresRec] = []


class SacctArray(msgspec.Struct, gc=False):
    job_id: Num = 0
    task_id: Num | None = None
    task: str = ""


class SacctHet(msgspec.Struct, gc=False):
    job_id: Num = 0
    job_offset: Num | None = None


class SacctJob(msgspec.Struct, gc=False):
    """One ``jobs[]`` record of sacct (one per job, array task or het component)."""

    job_id: int
    name: str = ""
    account: str = ""
    partition: str = ""
    cluster: str = ""
    user: str = ""
    group: str = ""
    state: SacctState = msgspec.field(default_factory=SacctState)
    time: SacctTime = msgspec.field(default_factory=SacctTime)
    allocation_nodes: Num = 0
    nodes: str = ""
    required: SacctRequired = msgspec.field(default_factory=SacctRequired)
    tres: SacctTres = msgspec.field(default_factory=SacctTres)
    array: SacctArray = msgspec.field(default_factory=SacctArray)
    het: SacctHet = msgspec.field(default_factory=SacctHet)
    #: The batch script when slurmdbd stores scripts and sacct was asked for it, else "".
    script: str = ""


class SacctDoc(msgspec.Struct, gc=False):
    jobs: list[SacctJob] = []
    meta: Meta = msgspec.field(default_factory=Meta)


_decoder = msgspec.json.Decoder(SacctDoc)


def decode(data: bytes, *, command: str = "sacct") -> SacctDoc:
    """Decode ``sacct --json`` output; raises SlurmDecodeError naming command, path, version."""
    return decode_doc(_decoder, data, command)
