"""Typed high-level Slurm calls: build the argv, run it through the SlurmRunner, decode the views.

Every call goes through ``SlurmRunner.run`` (one limiter, timeout, TZ=UTC). Job-id lists are
chunked well below the kernel's per-argument limit (``MAX_ARG_STRLEN`` = 128 KiB) and the chunks
run concurrently under the runner's limiter; results are merged and filtered to the ids asked for.
Fewer subprocesses than upstream: ``scontrol show job`` text of many jobs comes from one call and
is split per job; batch scripts are fetched concurrently.

Slurm quirks handled here (slurm-json.md §1, §11):

* ``squeue``/``sinfo`` print ``CLUSTER: name`` before the JSON whenever ``--cluster`` is given
  unless ``--noheader``; we pass ``--noheader`` and strip such a line defensively anyway.
* ``squeue``, ``scontrol``, ``sinfo`` and ``sdiag`` given ``--cluster``/``-M`` look the
  cluster's slurmctld up in slurmdbd and exit 1 while slurmdbd is down (``_open_persist_conn:
  failed to open persistent connection``); without it they ask the slurmctld of the local
  slurm.conf and answer (24.11 test bed, docs/real-slurm.md "slurmdbd stopped while short jobs
  start and end"; in SchedMD's squeue/sinfo/scontrol/sdiag option parsing ``-M`` calls
  ``slurmdb_get_info_cluster`` and exits 1 via ``print_db_notok`` when that fails). So the
  cluster the local slurmctld serves (``ClusterName`` of ``scontrol show config``,
  `Slurm.learn_local_cluster`) is asked without ``--cluster``. sacct always needs slurmdbd.
* ``squeue -j ID`` with exactly one unknown id exits 1 (``Invalid job id specified``, no JSON);
  that is an empty answer, not an error. Same for ``scontrol show job ID`` in text mode.
* ``sacct -j MASTER`` returns every task of an array (and every component of a het job):
  records are kept when their own id, their array master id or their het leader id was asked for.
* ``sacct -S/-E`` without ``-s`` returns every job that existed in any state during the window,
  selected by slurmdbd on its eligible/start/end times. A job cancelled while its ``--begin`` was
  still in the future has an eligible time after its end and only shows up in a window that
  reaches its eligible time (24.11 test bed, job 7); ``sacct_jobs`` (``-j``) finds it regardless.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

import trio

from ccsa.errors import SlurmCommandError, SlurmError
from ccsa.slurm import sacct, sacctmgr, sdiag, sinfo, squeue
from ccsa.slurm.runner import SlurmRunner
from ccsa.slurm.sacct import SacctDoc, SacctJob
from ccsa.slurm.sacctmgr import ClustersDoc, UsersDoc
from ccsa.slurm.scontrol_text import config_values, split_records
from ccsa.slurm.sdiag import SdiagDoc
from ccsa.slurm.sinfo import SinfoDoc
from ccsa.slurm.squeue import QueueDoc, QueueJob
from ccsa.slurm.stream import BadRecord
from ccsa.slurm.types import num

__all__ = ["DEFAULT_CHUNK_SIZE", "Slurm", "slurm_time", "strip_cluster_header"]

log = logging.getLogger(__name__)

#: Job ids per ``-j`` argument: at most ~11 bytes each, so ~11 KB, far below 128 KiB.
DEFAULT_CHUNK_SIZE = 1000
_INVALID_JOB_ID = "Invalid job id specified"

T = TypeVar("T")
D = TypeVar("D", SacctDoc, QueueDoc)


def strip_cluster_header(data: bytes) -> bytes:
    """Drop a leading ``CLUSTER: name`` line that squeue/sinfo print with ``--cluster``."""
    head = data.lstrip()
    if head.startswith(b"CLUSTER:"):
        newline = head.find(b"\n")
        return b"" if newline < 0 else head[newline + 1 :]
    return data


def slurm_time(when: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` in UTC (the runner runs Slurm with TZ=UTC); naive means UTC."""
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S")


def _label(cmd: str, args: Sequence[str]) -> str:
    """A short command text for error messages: long id lists are elided."""
    parts = [cmd]
    for arg in args:
        parts.append(arg if len(arg) <= 60 else f"{arg[:40]}...({arg.count(',') + 1} ids)")
    return " ".join(parts)


def _unique(ids: Collection[int]) -> list[int]:
    return list(dict.fromkeys(int(i) for i in ids))


class Slurm:
    """The Slurm commands ccsa runs, each returning decoded view Structs."""

    def __init__(self, runner: SlurmRunner, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.runner = runner
        self.chunk_size = chunk_size
        #: ClusterName of the local slurm.conf (`learn_local_cluster`): asked without --cluster
        self.local_cluster: str | None = None

    async def learn_local_cluster(self, names: Collection[str]) -> str | None:
        """Set `local_cluster` to ``scontrol show config``'s ClusterName if it is one of
        ``names`` (sacctmgr's clusters); best effort: on failure every call keeps --cluster."""
        try:
            name = (await self.config_values()).get("ClusterName", "")
        except SlurmError as exc:
            log.warning("scontrol show config failed, so squeue/scontrol/sinfo keep --cluster "
                        "and fail while slurmdbd is down: %s", exc)  # fmt: skip
            return None
        self.local_cluster = name if name and name in names else None
        return self.local_cluster

    def _where(self, cluster: str) -> list[str]:
        """``--cluster C``, or nothing for the local slurmctld's cluster (module docstring)."""
        return [] if cluster == self.local_cluster else ["--cluster", cluster]

    def _chunks(self, ids: Collection[int]) -> list[list[int]]:
        unique = _unique(ids)
        size = self.chunk_size
        return [unique[i : i + size] for i in range(0, len(unique), size)]

    async def _json(self, cmd: str, args: Sequence[str]) -> tuple[bytes, str]:
        data = await self.runner.run(cmd, args)
        return strip_cluster_header(data), _label(cmd, args)

    async def _jobs(self, cmd: str, args: Sequence[str], decode: Callable[..., D]) -> D:
        """Run a command answering ``{"jobs": [...]}`` and decode it job by job from its file."""
        with await self.runner.run_file(cmd, args) as out:
            return decode(out, command=_label(cmd, args))

    # -- sacctmgr ---------------------------------------------------------------------------

    async def clusters(self) -> ClustersDoc:
        """``sacctmgr list clusters --noheader --json``: version check and cluster names."""
        data, label = await self._json("sacctmgr", ["list", "clusters", "--noheader", "--json"])
        return sacctmgr.decode(data, command=label)

    async def user(self, name: str) -> UsersDoc:
        """``sacctmgr show user NAME --json``: permission check."""
        data, label = await self._json("sacctmgr", ["show", "user", name, "--json"])
        return sacctmgr.decode_users(data, command=label)

    async def config_values(self) -> dict[str, str]:
        """``scontrol show config`` as ``{key: value}`` (``PrivateData``, ``SlurmUser``, ...)."""
        data = await self.runner.run("scontrol", ["show", "config"])
        return config_values(data.decode(errors="replace"))

    # -- sacct ------------------------------------------------------------------------------

    async def sacct_window(self, cluster: str, start: datetime, end: datetime) -> SacctDoc:
        """Every job record that existed in [start, end] (any state), times sent in UTC.

        ``--duplicates``: without it sacct prints only each job's latest record the window
        selects, so a run that ended REQUEUED/PREEMPTED/NODE_FAIL vanishes once the job's next
        record is in the window (a requeued job cancelled while it pends: only the CANCELLED
        record that never started; 24.11 test bed, docs/real-slurm.md "Lifecycles of issue 18").
        """
        args = [
            "--cluster", cluster, "--allusers", "--duplicates",
            "--starttime", slurm_time(start), "--endtime", slurm_time(end),
            "--json",
        ]  # fmt: skip
        return await self._jobs("sacct", args, sacct.decode_file)

    async def sacct_jobs(
        self, cluster: str, ids: Sequence[int], *, scripts: bool = False, duplicates: bool = False
    ) -> SacctDoc:
        """sacct records of ``ids`` (plus the tasks/components of asked array/het ids).

        ``scripts``: add ``--batch-script``, so that where slurmdbd stores job scripts
        (AccountingStoreFlags=job_script) each record's ``script`` field carries it.
        ``duplicates``: add ``--duplicates``: every record of each id (earlier runs of a
        requeued job, but also older jobs that had the same id before a slurmctld state
        reset; the caller picks), not only the latest.
        """
        chunks = self._chunks(ids)
        if not chunks:
            return SacctDoc()
        extra = ["--batch-script"] if scripts else []
        if duplicates:
            extra.append("--duplicates")

        async def one(chunk: list[int]) -> SacctDoc:
            args = ["--cluster", cluster, "-j", ",".join(map(str, chunk)), *extra, "--json"]
            return await self._jobs("sacct", args, sacct.decode_file)

        docs = await _gather([partial(one, c) for c in chunks])
        asked = set(_unique(ids))
        jobs: list[SacctJob] = []
        seen: set[int] = set()
        bad = [b for doc in docs for b in doc.bad]
        for doc in docs:
            chunk_seen: set[int] = set()
            for job in doc.jobs:
                if job.job_id in seen or not _sacct_asked(job, asked):
                    continue
                chunk_seen.add(job.job_id)
                jobs.append(job)
            seen |= chunk_seen
        return SacctDoc(jobs=jobs, meta=docs[0].meta, bad=bad)

    # -- squeue -----------------------------------------------------------------------------

    async def squeue_all(self, cluster: str) -> QueueDoc:
        """``squeue --noheader --cluster C --all --json``: every pending/running job."""
        args = ["--noheader", *self._where(cluster), "--all", "--json"]
        return await self._jobs("squeue", args, squeue.decode_file)

    async def squeue_jobs(
        self, cluster: str, ids: Sequence[int], *, all_states: bool = False
    ) -> list[QueueJob]:
        """squeue records of ``ids`` still pending/running (unknown ids are simply absent).

        ``all_states``: ``-t all``, also the jobs that ended less than MinJobAge ago (squeue's
        default state filter hides them; slurmctld still holds them, cores included). Unlike
        ``scontrol show job --json`` without an id, only the asked jobs are printed.
        """
        chunks = self._chunks(ids)
        states = ["-t", "all"] if all_states else []

        async def one(chunk: list[int]) -> list[QueueJob]:
            args = ["--noheader", *self._where(cluster), "-j", ",".join(map(str, chunk))]
            args += [*states, "--json"]
            try:
                doc = await self._jobs("squeue", args, squeue.decode_file)
            except SlurmCommandError as exc:
                if len(chunk) == 1 and exc.returncode == 1 and _INVALID_JOB_ID in exc.stderr:
                    return []
                raise
            _log_bad(doc.bad, label=_label("squeue", args))
            return doc.jobs

        results = await _gather([partial(one, c) for c in chunks])
        return _filter_queue_jobs(results, set(_unique(ids)))

    # -- scontrol ---------------------------------------------------------------------------

    async def scontrol_jobs_json(self, cluster: str, ids: Collection[int]) -> list[QueueJob]:
        """``scontrol --cluster C show job --json`` (all jobs, one call) filtered to ``ids``.

        Unlike squeue it also returns jobs that finished less than MinJobAge ago.
        """
        asked = set(_unique(ids))
        if not asked:
            return []
        args = [*self._where(cluster), "show", "job", "--json"]
        doc = await self._jobs("scontrol", args, squeue.decode_file)
        _log_bad(doc.bad, label=_label("scontrol", args))
        return _filter_queue_jobs([doc.jobs], asked)

    async def scontrol_show_jobs_text(self, cluster: str, ids: Collection[int]) -> dict[int, str]:
        """Per-job ``scontrol show job`` text records of ``ids`` (missing ids are absent).

        One id: ``scontrol --cluster C show job ID``; several: one ``show job`` of all jobs,
        split per JobId (upstream runs one scontrol per job).
        """
        asked = _unique(ids)
        if not asked:
            return {}
        args = [*self._where(cluster), "show", "job"]
        if len(asked) == 1:
            args.append(str(asked[0]))
        try:
            data = await self.runner.run("scontrol", args)
        except SlurmCommandError as exc:
            if len(asked) == 1 and _INVALID_JOB_ID in exc.stderr:
                return {}
            raise
        records = split_records(data.decode("utf-8", errors="replace"))
        return {i: records[i] for i in asked if i in records}

    async def batch_script(self, cluster: str, job_id: int) -> str | None:
        """``scontrol --cluster C write batch_script ID -``; None if Slurm cannot give it.

        Slurm 24.11 answers an id it does not know (or no longer holds) with exit 0, an empty
        stdout and ``job script retrieval failed: ...`` on stderr: empty output is "no script",
        never an empty script (a real batch script has at least its ``#!`` line).
        """
        args = [*self._where(cluster), "write", "batch_script", str(job_id), "-"]
        try:
            data = await self.runner.run("scontrol", args)
        except SlurmError as exc:
            log.debug("no batch script for job %d on %s: %s", job_id, cluster, exc)
            return None
        if not data.strip():
            log.debug("no batch script for job %d on %s: scontrol printed nothing", job_id, cluster)
            return None
        return data.decode("utf-8", errors="replace")

    async def batch_scripts(self, cluster: str, ids: Collection[int]) -> dict[int, str]:
        """Batch scripts of ``ids`` fetched concurrently (under the limiter); failures absent."""
        scripts: dict[int, str] = {}

        async def one(job_id: int) -> None:
            text = await self.batch_script(cluster, job_id)
            if text is not None:
                scripts[job_id] = text

        async with trio.open_nursery() as nursery:
            for job_id in _unique(ids):
                nursery.start_soon(one, job_id)
        return {i: scripts[i] for i in _unique(ids) if i in scripts}

    # -- sdiag ------------------------------------------------------------------------------

    async def sdiag(self, cluster: str) -> SdiagDoc:
        """``sdiag --cluster C --json``: slurmctld's clock and its slurmdbd message queue."""
        data, label = await self._json("sdiag", [*self._where(cluster), "--json"])
        return sdiag.decode(data, command=label)

    # -- sinfo ------------------------------------------------------------------------------

    async def sinfo(self, cluster: str) -> SinfoDoc:
        """``sinfo --cluster C --noheader --json``: node states and allocations."""
        args = [*self._where(cluster), "--noheader", "--json"]
        data, label = await self._json("sinfo", args)
        return sinfo.decode(data, command=label)


def _log_bad(bad: Sequence[BadRecord], *, label: str) -> None:
    """One WARNING line per record that did not decode (for calls whose callers do not track
    them: the job is simply absent from that answer)."""
    for record in bad:
        log.warning("%s: skipped a record that does not decode: %s", label, record.describe())


def _sacct_asked(job: SacctJob, asked: set[int]) -> bool:
    if job.job_id in asked:
        return True
    master = num(job.array.job_id)
    if master and master in asked:
        return True
    leader = num(job.het.job_id)
    return bool(leader) and leader in asked


def _filter_queue_jobs(results: list[list[QueueJob]], asked: set[int]) -> list[QueueJob]:
    jobs: list[QueueJob] = []
    seen: set[int] = set()
    for chunk_jobs in results:
        for job in chunk_jobs:
            if job.job_id in seen:
                continue
            master = num(job.array_job_id)
            leader = num(job.het_job_id)
            if job.job_id in asked or (master and master in asked) or (leader and leader in asked):
                seen.add(job.job_id)
                jobs.append(job)
    return jobs


async def _gather(calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run calls concurrently; results in call order; the first SlurmError cancels the rest.

    Raises that SlurmError itself (not an ExceptionGroup), so callers can ``except SlurmError``.
    """
    results: list[T | None] = [None] * len(calls)
    errors: list[SlurmError] = []

    async with trio.open_nursery() as nursery:

        async def run(index: int, call: Callable[[], Awaitable[T]]) -> None:
            try:
                results[index] = await call()
            except SlurmError as exc:
                errors.append(exc)
                nursery.cancel_scope.cancel()

        for index, call in enumerate(calls):
            nursery.start_soon(run, index, call)
    if errors:
        raise errors[0]
    return [r for r in results if r is not None]
