"""``cc-slurm-adapter inspect [-config FILE] DOC.json...``: show what ccsa would send, and why.

For administrators ("why does this job have no GPUs?"): decode saved Slurm JSON documents of any
supported command (kind detected from the document), merge sacct records with squeue/scontrol
jobs of the same (cluster, job id), apply the config's gpuPciAddrs / ignoreHosts and print one
JSON object per line on ``out``. With ``--topology`` (a saved ``GET /api/clusters/`` answer) and a
sinfo document among the inputs, hwthreads and accelerators are decided as the daemon decides
them (docs/resources.md):

* ``{"kind": "start_job", "body": {...}}`` / ``{"kind": "stop_job", "body": {...}}``
* ``{"kind": "node_state", "body": {...}}`` for a sinfo document
* ``{"kind": "skipped", "jobId": N, "reason": "..."}``
* ``{"kind": "error", "file": "...", "message": "..."}`` for a document (or config) that fails

Conversion warnings (GPU index beyond the PCI list, host matching no regex...) go to ``err``.
Returns 1 if any document failed, else 0.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

import msgspec

from ccsa import topology
from ccsa.ccbackend.models import encode
from ccsa.convert import (
    ConvertOptions,
    Skip,
    capture_resources,
    is_finished,
    node_state,
    queue_is_finished,
    start_body,
    start_body_from_queue,
    stop_body,
    stop_body_from_queue,
)
from ccsa.errors import CcsaError
from ccsa.nodestate import node_shapes
from ccsa.slurm.decode import decode_any
from ccsa.slurm.sacct import SacctDoc, SacctJob
from ccsa.slurm.sinfo import SinfoDoc
from ccsa.slurm.squeue import QueueDoc, QueueJob

_encoder = msgspec.json.Encoder()


@dataclass
class _Pair:
    acct: SacctJob | None = None
    queue: QueueJob | None = None


@dataclass
class _Merged:
    jobs: dict[tuple[str, int], _Pair] = field(default_factory=dict)

    def pair(self, cluster: str, job_id: int) -> _Pair:
        return self.jobs.setdefault((cluster, job_id), _Pair())


def _line(out: TextIO, obj: dict[str, Any]) -> None:
    out.write(_encoder.encode(obj).decode() + "\n")


def _body_line(out: TextIO, kind: str, body: Any) -> None:
    _line(out, {"kind": kind, "body": msgspec.Raw(encode(body))})


def _options(config_path: str | None, out: TextIO, err: TextIO) -> ConvertOptions | None:
    if config_path is None:
        err.write(
            "inspect: no -config given: GPU indices are not mapped to PCI addresses and no host "
            "is ignored\n"
        )
        return ConvertOptions()
    from ccsa.config import load  # imported lazily: only needed with -config

    try:
        return ConvertOptions.from_config(load(config_path))
    except CcsaError as exc:
        _line(out, {"kind": "error", "file": config_path, "message": str(exc)})
        return None


def _emit_job(out: TextIO, pair: _Pair, opts: ConvertOptions) -> None:
    queue = pair.queue
    resources = capture_resources(queue, opts) if queue is not None else None
    if pair.acct is not None:
        acct = pair.acct
        body = start_body(acct, resources=resources, queue=queue, opts=opts)
        if isinstance(body, Skip):
            _line(out, {"kind": "skipped", "jobId": body.job_id, "reason": body.reason})
            return
        _body_line(out, "start_job", body)
        if is_finished(acct):
            _body_line(out, "stop_job", stop_body(acct, body.start_time))
        return
    assert queue is not None
    qbody = start_body_from_queue(queue, resources=resources, opts=opts)
    if isinstance(qbody, Skip):
        _line(out, {"kind": "skipped", "jobId": qbody.job_id, "reason": qbody.reason})
        return
    _body_line(out, "start_job", qbody)
    if queue_is_finished(queue):
        _body_line(out, "stop_job", stop_body_from_queue(queue, qbody.start_time))


class _StreamHandler(logging.Handler):
    def __init__(self, err: TextIO) -> None:
        super().__init__(logging.WARNING)
        self.err = err

    def emit(self, record: logging.LogRecord) -> None:
        self.err.write(f"inspect: {record.getMessage()}\n")


def run(
    paths: list[str],
    config_path: str | None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    topology_path: str | None = None,
) -> int:
    """Decode, merge and convert the documents in ``paths``; print JSON lines; 1 if any failed."""
    opts = _options(config_path, out, err)
    if opts is None:
        return 1
    if topology_path is not None and not _topology(topology_path, opts, out, err):
        return 1
    failed = False
    merged = _Merged()
    for path in paths:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            _line(out, {"kind": "error", "file": path, "message": f"cannot read: {exc.strerror}"})
            failed = True
            continue
        try:
            doc = decode_any(data, source=path)
        except CcsaError as exc:
            _line(out, {"kind": "error", "file": path, "message": str(exc)})
            failed = True
            continue
        if isinstance(doc, SacctDoc):
            for acct in doc.jobs:
                merged.pair(acct.cluster or doc.meta.cluster, acct.job_id).acct = acct
        elif isinstance(doc, QueueDoc):
            for job in doc.jobs:
                merged.pair(job.cluster or doc.meta.cluster, job.job_id).queue = job
        elif isinstance(doc, SinfoDoc):
            cluster = doc.sinfo[0].cluster or doc.meta.cluster if doc.sinfo else doc.meta.cluster
            opts.layouts.set_shapes(cluster, node_shapes(doc))
            _body_line(out, "node_state", node_state(doc, cluster, opts))
        else:
            err.write(f"inspect: {path}: {type(doc).__name__}: nothing to convert\n")
    handler = _StreamHandler(err)
    loggers = [logging.getLogger(f"ccsa.{name}") for name in _LOGGERS]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        for pair in merged.jobs.values():
            _emit_job(out, pair, opts)
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    return 1 if failed else 0


#: The modules whose warnings (unmapped GPUs, shape mismatches...) inspect prints.
_LOGGERS = ("convert", "tres", "resources", "layout", "nodestate")


def _topology(path: str, opts: ConvertOptions, out: TextIO, err: TextIO) -> bool:
    """Load a saved ``GET /api/clusters/`` answer into ``opts``; False (error line) if unusable."""
    try:
        with open(path, "rb") as fh:
            clusters, problems = topology.decode(fh.read())
    except OSError as exc:
        _line(out, {"kind": "error", "file": path, "message": f"cannot read: {exc.strerror}"})
        return False
    except topology.TopologyError as exc:
        _line(out, {"kind": "error", "file": path, "message": str(exc)})
        return False
    for problem in problems:
        err.write(f"inspect: {problem}\n")
    opts.layouts.set_topology(clusters, 0.0, path)
    return True


def inspect_command(*documents: str, config: str | None = None, topology: str | None = None) -> int:
    """Show what ccsa would send for saved Slurm JSON documents (sacct, squeue, scontrol, sinfo).

    Prints one JSON object per line: ``start_job`` / ``stop_job`` bodies, ``skipped`` jobs with
    the reason, ``error`` for documents that do not decode. Exit status 1 if any document failed.

    Parameters
    ----------
    documents
        Saved output of ``sacct --json``, ``squeue --json``, ``scontrol show job --json``, ...
    config
        Config file whose gpuPciAddrs / ignoreHosts / siblingNumbering to apply (optional).
    topology
        A saved ``GET /api/clusters/`` answer of cc-backend: hwthreads and accelerators are
        then taken from its subcluster topologies, as the daemon does (optional).
    """
    if not documents:
        sys.stderr.write("inspect: name at least one saved Slurm JSON document\n")
        return 2
    return run(list(documents), config, topology_path=topology)
