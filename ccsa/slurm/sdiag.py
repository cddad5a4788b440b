"""View of ``sdiag --json``: slurmctld's clock and its queue of messages for slurmdbd.

``statistics.req_time`` is slurmctld's ``time(NULL)`` when it answered (the clock every job time
comes from) and ``statistics.dbd_agent_queue_size`` the number of messages slurmctld holds for
slurmdbd (a backlog means sacct lags behind squeue). Field names: SchedMD data_parser
``STATS_MSG`` (``src/plugins/data_parser/v0.0.4x/parsers.c``); text form ``src/sdiag/sdiag.c``.
Any user may ask (only ``sdiag --reset`` needs an operator, ``proc_req.c``
``_slurm_rpc_dump_stats``).
"""

from __future__ import annotations

import msgspec

from ccsa.slurm.types import Meta, Num, decode_doc


class Statistics(msgspec.Struct, gc=False):
    req_time: Num = 0
    dbd_agent_queue_size: Num = 0


class SdiagDoc(msgspec.Struct, gc=False):
    statistics: Statistics = msgspec.field(default_factory=Statistics)
    meta: Meta = msgspec.field(default_factory=Meta)


_DECODER = msgspec.json.Decoder(SdiagDoc)


def decode(data: bytes, *, command: str = "sdiag") -> SdiagDoc:
    """Decode ``sdiag --json``; SlurmDecodeError naming the command on bad output."""
    return decode_doc(_DECODER, data, command)
