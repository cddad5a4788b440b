"""Detect which Slurm command produced a saved JSON document and decode it with the right view.

Detection looks at the payload key (``jobs`` / ``nodes`` / ``sinfo`` / ``clusters`` / ``users``)
and, for ``jobs``, tells sacct records (``state`` object) from slurmctld job_info (``job_state``);
an empty ``jobs`` list is told apart by the slurmctld-only ``last_backfill`` key, then by
``meta.command`` / ``meta.plugin.type``.
"""

from __future__ import annotations

import msgspec

from ccsa.errors import SlurmDecodeError
from ccsa.slurm import sacct, sacctmgr, sinfo, squeue
from ccsa.slurm.types import Meta, decode_doc, decode_error

Doc = (
    sacct.SacctDoc
    | squeue.QueueDoc
    | sinfo.SinfoDoc
    | sinfo.NodesDoc
    | sacctmgr.ClustersDoc
    | sacctmgr.UsersDoc
)


def _absent() -> msgspec.Raw:
    return msgspec.Raw(b"")


class _JobProbe(msgspec.Struct):
    job_state: msgspec.Raw = msgspec.field(default_factory=_absent)
    state: msgspec.Raw = msgspec.field(default_factory=_absent)


class _SlurmError(msgspec.Struct):
    description: str = ""
    error: str = ""


class _Probe(msgspec.Struct):
    """Top-level keys only; ``Raw`` keeps values undecoded, an empty Raw means the key is absent."""

    jobs: list[_JobProbe] | None = None
    nodes: msgspec.Raw = msgspec.field(default_factory=_absent)
    sinfo: msgspec.Raw = msgspec.field(default_factory=_absent)
    clusters: msgspec.Raw = msgspec.field(default_factory=_absent)
    users: msgspec.Raw = msgspec.field(default_factory=_absent)
    last_backfill: msgspec.Raw = msgspec.field(default_factory=_absent)
    last_update: msgspec.Raw = msgspec.field(default_factory=_absent)
    meta: Meta | None = None
    errors: list[_SlurmError] = []


_probe_decoder = msgspec.json.Decoder(_Probe)

#: Kind names as used in fixtures' ``equiv_cli`` and by :func:`detect`.
KINDS = ("sacct", "squeue", "sinfo", "scontrol-node", "sacctmgr-clusters", "sacctmgr-users")


def _jobs_kind(probe: _Probe) -> str:
    jobs = probe.jobs or []
    if any(len(j.job_state) for j in jobs):
        return "squeue"
    if any(len(j.state) for j in jobs):
        return "sacct"
    if len(probe.last_backfill):
        return "squeue"
    meta = probe.meta or Meta()
    command = " ".join(meta.command)
    if (
        "squeue" in command
        or "show" in command
        or (meta.plugin is not None and "slurmctld" in meta.plugin.type)
    ):
        return "squeue"
    return "sacct"


def detect(data: bytes, *, source: str) -> str:
    """The kind of document (one of :data:`KINDS`); SlurmDecodeError when it is none of them."""
    probe = decode_doc(_probe_decoder, data, source)
    if probe.jobs is not None:
        return _jobs_kind(probe)
    if len(probe.sinfo):
        return "sinfo"
    if len(probe.nodes):
        return "scontrol-node"
    if len(probe.clusters):
        return "sacctmgr-clusters"
    if len(probe.users):
        return "sacctmgr-users"
    if len(probe.last_update):
        return "scontrol-node"  # a node error document (node not found) has no `nodes` key
    if probe.errors:
        said = "; ".join(e.description or e.error for e in probe.errors)
        raise decode_error(source, data, f"Slurm reported an error and no data: {said}")
    raise decode_error(
        source,
        data,
        "not a Slurm document ccsa understands (expected a jobs, nodes, sinfo, clusters or users"
        " list)",
    )


def decode_any(data: bytes, *, source: str) -> Doc:
    """Detect the document's kind and decode it; every failure is a SlurmDecodeError."""
    kind = detect(data, source=source)
    if kind == "sacct":
        return sacct.decode(data, command=f"{source} (sacct)")
    if kind == "squeue":
        return squeue.decode(data, command=f"{source} (squeue/scontrol job)")
    if kind == "sinfo":
        return sinfo.decode(data, command=f"{source} (sinfo)")
    if kind == "scontrol-node":
        return sinfo.decode_nodes(data, command=f"{source} (scontrol node)")
    if kind == "sacctmgr-clusters":
        return sacctmgr.decode(data, command=f"{source} (sacctmgr clusters)")
    if kind == "sacctmgr-users":
        return sacctmgr.decode_users(data, command=f"{source} (sacctmgr users)")
    raise SlurmDecodeError(source, f"unknown document kind {kind!r}")  # pragma: no cover
