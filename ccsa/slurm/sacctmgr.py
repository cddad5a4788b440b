"""Views of ``sacctmgr list clusters --json`` and ``sacctmgr show user --json``."""

from __future__ import annotations

import msgspec

from ccsa.slurm.types import Flags, Meta, decode_doc


class ClusterRec(msgspec.Struct, gc=False):
    name: str
    nodes: str = ""


class ClustersDoc(msgspec.Struct, gc=False):
    clusters: list[ClusterRec] = []
    meta: Meta = msgspec.field(default_factory=Meta)


class UserRec(msgspec.Struct, gc=False):
    name: str
    #: ``["Not Set"]``, ``["None"]``, ``["Operator"]`` or ``["Administrator"]``.
    administrator_level: Flags = []


class UsersDoc(msgspec.Struct, gc=False):
    users: list[UserRec] = []
    meta: Meta = msgspec.field(default_factory=Meta)


_clusters_decoder = msgspec.json.Decoder(ClustersDoc)
_users_decoder = msgspec.json.Decoder(UsersDoc)


def decode(data: bytes, *, command: str = "sacctmgr list clusters") -> ClustersDoc:
    """Decode ``sacctmgr list clusters --json``; raises SlurmDecodeError."""
    return decode_doc(_clusters_decoder, data, command)


def decode_users(data: bytes, *, command: str = "sacctmgr show user") -> UsersDoc:
    """Decode ``sacctmgr show user --json``; raises SlurmDecodeError."""
    return decode_doc(_users_decoder, data, command)
