"""View of ``sinfo --json`` (node groups) and ``scontrol show node(s) --json`` (single nodes)."""

from __future__ import annotations

import msgspec

from ccsa.slurm.types import Flags, Meta, Num, decode_doc


class SinfoNodeState(msgspec.Struct, gc=False):
    state: Flags = []


class SinfoNodes(msgspec.Struct, gc=False):
    allocated: Num = 0
    idle: Num = 0
    other: Num = 0
    total: Num = 0
    #: Expanded host names of the group.
    nodes: list[str] = []


class SinfoCpus(msgspec.Struct, gc=False):
    allocated: Num = 0
    idle: Num = 0
    other: Num = 0
    total: Num = 0


class SinfoMemory(msgspec.Struct, gc=False):
    minimum: Num = 0
    maximum: Num = 0
    allocated: Num = 0


class SinfoGres(msgspec.Struct, gc=False):
    total: str = ""
    used: str = ""


class SinfoRange(msgspec.Struct, gc=False):
    minimum: Num = 0
    maximum: Num = 0


class SinfoPartition(msgspec.Struct, gc=False):
    name: str = ""


class SinfoGroup(msgspec.Struct, gc=False):
    """One sinfo group: nodes sharing partition, state, config and ``gres_used``."""

    node: SinfoNodeState = msgspec.field(default_factory=SinfoNodeState)
    nodes: SinfoNodes = msgspec.field(default_factory=SinfoNodes)
    cpus: SinfoCpus = msgspec.field(default_factory=SinfoCpus)
    memory: SinfoMemory = msgspec.field(default_factory=SinfoMemory)
    gres: SinfoGres = msgspec.field(default_factory=SinfoGres)
    #: Per-node shape of the group's nodes (sockets, cores per socket, threads per core).
    sockets: SinfoRange = msgspec.field(default_factory=SinfoRange)
    cores: SinfoRange = msgspec.field(default_factory=SinfoRange)
    threads: SinfoRange = msgspec.field(default_factory=SinfoRange)
    partition: SinfoPartition = msgspec.field(default_factory=SinfoPartition)
    cluster: str = ""


class SinfoDoc(msgspec.Struct, gc=False):
    sinfo: list[SinfoGroup] = []
    meta: Meta = msgspec.field(default_factory=Meta)


class Node(msgspec.Struct, gc=False):
    """One node of ``scontrol show node(s) --json``."""

    name: str
    hostname: str = ""
    state: Flags = []
    cpus: Num = 0
    sockets: Num = 0
    cores: Num = 0
    threads: Num = 0
    real_memory: Num = 0
    alloc_cpus: Num = 0
    alloc_memory: Num = 0
    gres: str = ""
    gres_used: str = ""
    partitions: list[str] = []


class NodesDoc(msgspec.Struct, gc=False):
    nodes: list[Node] = []
    meta: Meta = msgspec.field(default_factory=Meta)


_sinfo_decoder = msgspec.json.Decoder(SinfoDoc)
_nodes_decoder = msgspec.json.Decoder(NodesDoc)


def decode(data: bytes, *, command: str = "sinfo") -> SinfoDoc:
    """Decode ``sinfo --json``; raises SlurmDecodeError with path and version."""
    return decode_doc(_sinfo_decoder, data, command)


def decode_nodes(data: bytes, *, command: str = "scontrol show node") -> NodesDoc:
    """Decode ``scontrol show node(s) --json``; raises SlurmDecodeError with path and version."""
    return decode_doc(_nodes_decoder, data, command)
