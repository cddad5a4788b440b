"""Run identity: which run of a Slurm job a sacct or slurmctld record belongs to (pure).

cc-backend knows a job as (cluster, jobId, startTime); a Slurm job can run more than once and
its start time can move without a new run. What real Slurm 24.11 does (docs/real-slurm.md
"Lifecycles of issue 18", SchedMD ``src/slurmctld/job_mgr.c``):

* **Requeue, preemption, node failure** (``_job_requeue_op``, ``job_requeue``): the run's
  accounting record ends REQUEUED / PREEMPTED / NODE_FAIL (``sacct --duplicates``; a time window
  without it and ``sacct -j`` print only the latest record), the job is resubmitted, and its
  next run has a new start and ``restart_cnt`` one higher, in slurmctld (squeue) as in sacct. A
  record of the earlier run keeps the count of its own run.
* **Node power-up** (``job_config_fini``): while powered-down nodes boot the job is RUNNING +
  CONFIGURING with the allocation time as start; when they are up slurmctld resets the start
  to that moment and overwrites sacct's record in place. Same run, same restart count.
* **Resize** (``job_pre_resize_acctg`` / ``job_post_resize_acctg``): the record ends RESIZING
  and a new one starts at the resize (submit = start); slurmctld keeps the job's start. Same
  run, same restart count.

So two records are the same run when their restart counts agree and neither ended with a
requeue; a record whose count differs from slurmctld's is another run, and so is one that
ended requeued whose start differs from slurmctld's. `run_of` says under which start ccsa
plans a sacct record, given the start times under which ccsa already knows the job.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from ccsa import convert
from ccsa.slurm.sacct import SacctJob
from ccsa.slurm.squeue import QueueJob
from ccsa.slurm.types import flags, num

#: States of an accounting record whose run ended because the job was requeued (the job runs
#: again under a new start time: a new job for cc-backend).
REQUEUED_RUN = frozenset(
    {"REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL"}
)


def run_of(
    acct: SacctJob,
    known: Sequence[int],
    recs: Iterable[SacctJob],
    delivered: Collection[int] = (),
) -> tuple[int, bool] | None:
    """(the start under which this record's run is planned, whether that is an earlier known
    start of the same run); None: never started, RESIZING, or a lagging image of a known run.

    ``known``: the start times under which ccsa knows the job (rows not merely waiting);
    ``recs``: every record of the job in the same answer; ``delivered``: those of ``known``
    whose start reached cc-backend. A record whose own start is delivered while no earlier one
    is, is planned under it: when two planners raced and queued the same run under two starts
    (a power-up's allocation and reset times), the one cc-backend has gets the stop, not the
    earlier one it refused (that one's stop would wait, parked, for good).
    """
    start = convert.start_time(acct)
    if start is None or resizing(acct):
        return None
    if start in delivered and not any(s < start for s in delivered):
        return start, False
    if lagging(acct, start, known):
        return None
    same = same_run(acct, start, known, recs)
    return (start, False) if same is None else (same, True)


def ended_requeued(acct: SacctJob) -> bool:
    """The record's run ended because the job was requeued, preempted or its node failed."""
    return not REQUEUED_RUN.isdisjoint(flags(acct.state.current))


def resizing(acct: SacctJob) -> bool:
    """The record a resize ended (``job_mgr.c`` ``job_pre_resize_acctg``): the job goes on."""
    return "RESIZING" in flags(acct.state.current)


def same_run(
    acct: SacctJob, start: int, known: Iterable[int], recs: Iterable[SacctJob]
) -> int | None:
    """The known start of the same run, when this record's start time moved without a requeue.

    A requeue leaves evidence: a record of the earlier run ended REQUEUED/PREEMPTED/NODE_FAIL
    (``--duplicates`` shows it; ``sacct -j`` hides it) and a higher restart count. So an
    earlier known run is the same run when its record ended RESIZING, or when this record was
    never requeued (``restart_cnt`` 0) and started after its submission (a power-up: the
    earlier start is the allocation) or at it (a resize's record). The start already sent keeps
    its startTime; the stop carries it (issue 18 item 2).
    """
    earlier = [s for s in known if s < start]
    if not earlier:
        return None
    prev = max(earlier)
    for rec in recs:
        if convert.start_time(rec) == prev:
            if ended_requeued(rec):
                return None
            if resizing(rec):
                return prev
    if num(acct.restart_cnt):
        return None  # requeued since: a new run (its earlier record may be hidden by -j)
    submitted = convert.timestamp(acct.time.submission) or 0
    return prev if prev >= submitted or submitted == start else None


def lagging(acct: SacctJob, start: int, known: Iterable[int]) -> bool:
    """A running, never requeued record older than a known run: slurmdbd's image from before a
    power-up reset (``job_mgr.c`` ``job_config_fini``), found by the short soak as a rerun."""
    if convert.is_finished(acct) or num(acct.restart_cnt) or ended_requeued(acct):
        return False
    return any(s > start for s in known)


def other_run(q: QueueJob, acct: SacctJob) -> bool:
    """slurmctld's record `q` is of another run than the sacct record `acct`: never give
    `acct`'s run its cores and hosts.

    The restart counts differ (the job was requeued since, or sacct still shows the earlier
    run, not yet REQUEUED/PREEMPTED, while slurmctld already has the next: found by the short
    soak, jobs 1628 and 1663), or `acct` ended requeued and slurmctld's run started at another
    time. A start that moved under the same count is a power-up reset: the same run.
    """
    count = num(q.restart_cnt)  # None: an older squeue without the field
    if count is not None and count != (num(acct.restart_cnt) or 0):
        return True
    if not ended_requeued(acct):
        return False  # a power-up reset or a lagging answer: the same run under another start
    return convert.queue_start_time(q) not in (None, convert.start_time(acct))


def same_run_record(q: QueueJob, acct: SacctJob) -> bool:
    """slurmctld's record `q` (remembered, or of a job that just ended) is of `acct`'s run:
    the same start, or, when both restart counts are known, the same count and `acct` not
    ended requeued (a power-up reset slurmdbd has not recorded yet: soak job 1666)."""
    if other_run(q, acct):
        return False
    return convert.queue_start_time(q) == convert.start_time(acct) or num(q.restart_cnt) is not None


def lookup_records(accts: Iterable[SacctJob], known: Collection[tuple[int, int]]) -> list[SacctJob]:
    """The records a lookup by id plans, out of ``sacct -j IDS --duplicates``: each job's
    latest record (the last submitted: a requeue and a resize resubmit the job) and the
    records of runs ccsa knows (``known``: (job_id, start)). ``sacct -j`` without
    ``--duplicates`` hides a requeued job's earlier runs (docs/real-slurm.md), which a lookup
    needs to stop or re-send them; older jobs that had the same id (before a slurmctld state
    reset) are not planned again.
    """
    by_id: dict[int, list[SacctJob]] = {}
    for acct in accts:
        by_id.setdefault(acct.job_id, []).append(acct)
    out: list[SacctJob] = []
    for jid, recs in by_id.items():
        latest = max(_submitted(r) for r in recs)
        out.extend(
            r
            for r in recs
            if _submitted(r) == latest or (jid, convert.start_time(r) or -1) in known
        )
    return out


def _submitted(acct: SacctJob) -> int:
    return convert.timestamp(acct.time.submission) or 0
