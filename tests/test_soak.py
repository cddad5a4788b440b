"""Issue 8's soak: no job is ever lost, duplicated, left running or stripped of its resources.

The short form runs in the normal test session (about 1,000 jobs, a few minutes); the long form
(``nox -s soak``, marker ``soak``, ``CCSA_SOAK=long``) runs tens of thousands. Both print the
counts table of ``tests.soak_driver.report`` and fail on any problem it lists. What runs and
which faults hit the daemon: ``tests/soak_driver.py`` and ``docs/lossless.md``.
"""

from __future__ import annotations

import itertools
import os
import shutil
from datetime import UTC, datetime

import msgspec
import pytest

from ccsa.sim.verdict import CAPTURE_MARGIN, capturable, verify
from tests.nats_server import nats_server_binary
from tests.soak_driver import (
    ALL_FAULTS,
    BASE_FAULTS,
    ISSUE17_FAULTS,
    ISSUE18_FAULTS,
    Fault,
    SoakPlan,
    fault_schedule,
    poll_times,
    report,
    run_soak,
    snapshots,
)

#: The fault kinds the soaks inject: issue 8's, and of issue 17's and 18's those whose fix is on
#: main and that a soak has passed with (a kind goes in when its fix lands, so the short soak in
#: CI stays green at every landing).
ENABLED = BASE_FAULTS | {
    "requeue",  # no fix needed: the first run is kept, the second is a refused 422
    "preempt",
    "corrupt_record",  # #17 item 5 (9217a5a)
    "nats_outage",  # #17 item 1 (e5fdc7e)
    "nats_revoke",
    "empty_user",  # #17 item 3 (96a75a1)
    "http_401",  # #17 item 2 (d90fb40)
    "proxy_html",
    "dbd_lag",  # #18 item 3 (a58bcc2)
    "power_up",  # #18 item 2 (64f6f5b)
    "requeue_cancel",  # #18: poll windows with sacct --duplicates
}
#: Only in the long soak: the state database deleted between two kill -9 restarts (#17 item 4,
#: 2033485). The restart re-reads everything since ``lastrun``, which on a loaded 2-core
#: machine pushed the short soak past CI's 420-s test timeout (2026-12-06 02:34).
LONG_ONLY = frozenset({"state_db_loss"})
#: not yet enabled: waiting for their fixes (see each engineer's issue item)
WAITING = (ISSUE17_FAULTS | ISSUE18_FAULTS) - ENABLED - LONG_ONLY

SHORT = SoakPlan(jobs=1000, rate_per_min=500.0, seed=8, kills=3, nodes=100, faults=ENABLED)
#: 900 jobs/min of ~30 s need ~4x the short form's nodes, or Slurm's queue (and the run) grows
LONG = SoakPlan(
    jobs=20_000,
    rate_per_min=900.0,
    seed=11,
    kills=12,
    nodes=240,
    drain_timeout=600.0,
    faults=ENABLED | LONG_ONLY,
)


def _plan_from_env() -> SoakPlan:
    """``CCSA_SOAK``: ``long`` (default for the soak marker), ``short``, or a job count."""
    value = os.environ.get("CCSA_SOAK", "long")
    if value == "short":
        return SHORT
    if value.isdigit():
        return SoakPlan(
            jobs=int(value),
            rate_per_min=900.0,
            seed=11,
            kills=max(3, int(value) // 2000),
            nodes=240,
            drain_timeout=600.0,
            faults=ENABLED | LONG_ONLY,
        )
    return LONG


async def _soak(plan: SoakPlan) -> None:
    nats_server_binary()  # skip (or fail under CI) without nats-server
    result = await run_soak(plan)
    text = report(result)
    print(text)
    assert result.restarts == plan.kills
    assert result.verdict.expected >= plan.jobs * 0.9
    assert result.verdict.ok, f"{text}\n(work dir kept: {result.workdir})"
    assert result.verdict.capturable >= result.verdict.expected // 4  # the check is not vacuous
    shutil.rmtree(result.workdir, ignore_errors=True)


# Its own bound, above the suite's 420 s: on the quiet 2-core CI machine it took 234-366 s
# (2026-12-06), and a soak cut by the timeout says nothing about lost jobs.
@pytest.mark.timeout(600)
async def test_soak_short() -> None:
    await _soak(SHORT)


@pytest.mark.soak
@pytest.mark.timeout(4 * 3600)  # tens of thousands of jobs on the real clock: well past 420 s
async def test_soak_long() -> None:
    await _soak(_plan_from_env())


# ----------------------------------------------------------------- the harness's pure parts


def test_schedule_has_every_fault_kind_and_kills_do_not_overlap() -> None:
    plan = SoakPlan(jobs=1000, rate_per_min=450.0, kills=4)
    faults = fault_schedule(plan)
    assert fault_schedule(plan) == faults  # seeded
    kinds = {f.kind for f in faults}
    assert kinds >= {
        "backend_down",
        "http_5xx",
        "http_502",
        "http_slow",
        "http_lost_answer",
        "nats_restart",
        "slurm_hang",
        "slurm_garbage",
        "slurm_truncate",
        "slurm_exit",
        "dbd_down",
        "kill",
    }
    down = next(f for f in faults if f.kind == "backend_down")
    assert down.duration > plan.min_job_age  # longer than MinJobAge
    kills = sorted(f.at for f in faults if f.kind == "kill")
    assert len(kills) == 4
    assert all(0 < k < plan.arrival_span for k in kills)
    assert all(b - a > 3.0 for a, b in itertools.pairwise(kills))
    assert fault_schedule(SoakPlan(seed=9)) != fault_schedule(SoakPlan(seed=8))
    assert isinstance(faults[0], Fault)


def test_poll_times_and_capturable() -> None:
    log = (
        "2026-11-23 21:50:44,612 INFO ccsa.daemon.sync: soak: synced "
        "2026-11-23T21:49:03..2026-11-23T21:50:32 UTC: 481 jobs seen, 3 starts\n"
        "2026-11-23 21:50:47,375 ERROR ccsa.daemon.sync: soak: sync failed, its watermark "
        "stays: sacct --starttime 2026-11-23T21:50:22 --endtime 2026-11-23T21:50:45\n"
    )
    t = datetime(2026, 11, 23, 21, 50, 32, tzinfo=UTC).timestamp()
    assert poll_times(log) == [t]
    from ccsa.sim.slurm import JobTruth

    def job(start: int, end: int | None) -> JobTruth:
        return JobTruth(cluster="c", job_id=1, array_job_id=0, array_task_id=None,
                        het_job_id=0, het_offset=None, name="j", user="u", account="a",
                        partition="p", submit=0, start=start, end=end, state="COMPLETED",
                        shared="", restarts=0, nodes=())  # fmt: skip

    assert snapshots([10.0, 20.0, 30.0], [9.0, 11.5, 12.0, 20.0, 25.0]) == [11.5, 20.0]
    assert snapshots([30.0], [1.0]) == []
    m = CAPTURE_MARGIN
    assert capturable(job(100, 110), [50.0, 105.0, 200.0])
    assert capturable(job(100, 110), [100 + m])
    assert not capturable(job(100, 110), [100 + m - 0.5, 110 - m + 0.5])
    assert not capturable(job(100, 110), [])
    assert capturable(job(100, None), [1e12])
    assert not capturable(job(100, 110), [99.0, 111.0])


def test_schedule_of_issue_17_and_18_faults() -> None:
    plan = SoakPlan(jobs=1000, rate_per_min=450.0, kills=3, faults=ALL_FAULTS)
    faults = fault_schedule(plan)
    kinds = {f.kind for f in faults}
    # lifecycles are in the job mix; state_db_loss is a kill's argument
    assert kinds == ALL_FAULTS - {"requeue", "requeue_cancel", "preempt", "power_up",
                                  "state_db_loss"}  # fmt: skip
    assert [f.arg for f in faults if f.kind == "kill"].count("state_db_loss") == 1
    assert sum(f.kind == "corrupt_record" for f in faults) > 1
    lag = next(f for f in faults if f.kind == "dbd_lag")
    assert lag.n > 10  # longer than the soak's slurmQueryOverlap
    # the older kinds keep their seeded times when the new ones are added
    base = fault_schedule(SoakPlan(jobs=1000, rate_per_min=450.0, kills=3))
    assert [f for f in faults if f.kind in BASE_FAULTS and f.arg != "state_db_loss"] == [
        f for f in base if f.at not in {k.at for k in faults if k.arg == "state_db_loss"}
    ]
    no_nats = fault_schedule(SoakPlan(faults=ALL_FAULTS, nats=False))
    assert not {f.kind for f in no_nats} & {"nats_restart", "nats_outage", "nats_revoke"}


def test_verify_requeued_refused_and_powered_up() -> None:
    """The verifier's rules for issue 18's lifecycles, on hand-made stand-in results: a
    requeued job keeps its first run (stopped as cancelled at the next start), its second run
    refused with 422 is counted and listed, not lost; a powered-up job may keep its allocation
    time; a requeued job whose second run was never offered is a problem."""
    from ccsa.sim.ccbackend.state import Event, StoredJob
    from ccsa.sim.slurm.cluster import JobTruth, NodeTruth, RecordTruth

    def job(jid: int, start: int, end: int, **kw: object) -> JobTruth:
        return JobTruth(cluster="c", job_id=jid, array_job_id=0, array_task_id=None,
                        het_job_id=0, het_offset=None, name="j", user="u", account="a",
                        partition="p", submit=0, start=start, end=end, state="COMPLETED",
                        shared="", nodes=(NodeTruth("n1", (0,), ()),),
                        **kw)  # type: ignore[arg-type]  # fmt: skip

    def row(jid: int, start: int, stop: int, state: str) -> StoredJob:
        return StoredJob(db_id=jid, committed=True, job_id=jid, cluster="c", sub_cluster="s",
                         start_time=start, user="u", project="a", partition="p", shared="none",
                         state=state, duration=stop - start, walltime=0, num_nodes=1,
                         num_hwthreads=1, num_acc=0, smt=0, monitoring_status=1, array_job_id=0,
                         resources=[{"hostname": "n1"}], meta_data=None)  # fmt: skip

    def ev(kind: str, jid: int, start: int, status: int) -> Event:
        return Event(0.0, kind, "rest", "c", jid, start, status, "")  # type: ignore[arg-type]

    requeued = job(1, 200, 300, restarts=1, earlier=(RecordTruth(100, 150, "REQUEUED", ("n1",)),))
    powered = job(2, 130, 400, restarts=0, allocated=100)
    silent = job(3, 200, 300, restarts=1, earlier=(RecordTruth(100, 150, "PREEMPTED", ("n1",)),))
    gone = msgspec.structs.replace(
        job(4, 0, 160, restarts=1, earlier=(RecordTruth(100, 150, "REQUEUED", ("n1",)),)),
        start=None,
        state="CANCELLED",
    )
    events = [
        ev("start", 1, 100, 201), ev("stop", 1, 100, 200), ev("start", 1, 200, 422),
        ev("start", 2, 100, 201), ev("stop", 2, 100, 200),
        ev("start", 3, 100, 201), ev("stop", 3, 100, 200),
        ev("start", 4, 100, 201), ev("stop", 4, 100, 200),
    ]  # fmt: skip
    rows = [row(1, 100, 200, "cancelled"), row(2, 100, 400, "completed"),
            row(3, 100, 150, "preempted"), row(4, 100, 150, "cancelled")]  # fmt: skip
    v = verify([requeued, powered, silent, gone], events, rows, polls=[], pci={})
    assert (v.lost, v.duplicated, v.stuck_running, v.unexpected) == (0, 0, 0, 0)
    assert v.expected == 4
    assert (v.restarted, v.earlier_run_kept, v.powered_up, v.refused) == (2, 3, 1, 1)
    assert v.refused_runs == ["c/1: run of 200 refused (422), cc-backend keeps 100"]
    assert v.problems == ["c/3: run of 200 never offered to cc-backend"]
    assert (v.right_state, v.right_stop_time, v.started_once, v.stopped_once) == (4, 4, 4, 4)
    assert "refused second run (422 within 86,400 s)" in v.table()


def test_enabled_kinds_are_known() -> None:
    assert ENABLED | LONG_ONLY <= ALL_FAULTS
    assert not (ENABLED | LONG_ONLY) & WAITING
    assert LONG.faults >= SHORT.faults


def test_verify_cores_without_gpus_only_for_jobs_seen_finished() -> None:
    """A GPU job ccsa saw only after it ended has slurmctld's cores but no GPU indices (the
    finished record's gres_detail is empty): counted, not a problem; the same for a job a
    successful poll saw running is a problem."""
    from ccsa.sim.ccbackend.state import Event, StoredJob
    from ccsa.sim.slurm.cluster import JobTruth, NodeTruth

    truth = JobTruth(cluster="c", job_id=1, array_job_id=0, array_task_id=None, het_job_id=0,
                     het_offset=None, name="g", user="u", account="a", partition="gpu",
                     submit=0, start=100, end=200, state="COMPLETED", shared="", restarts=0,
                     nodes=(NodeTruth("gpu1", (0, 1), (0,)),))  # fmt: skip
    row = StoredJob(db_id=1, committed=True, job_id=1, cluster="c", sub_cluster="s",
                    start_time=100, user="u", project="a", partition="gpu", shared="none",
                    state="completed", duration=100, walltime=0, num_nodes=1, num_hwthreads=2,
                    num_acc=1, smt=0, monitoring_status=1, array_job_id=0,
                    resources=[{"hostname": "gpu1", "hwthreads": [0, 1]}],
                    meta_data=None)  # fmt: skip
    events = [Event(0.0, "start", "rest", "c", 1, 100, 201, ""),
              Event(0.0, "stop", "rest", "c", 1, 100, 200, "")]  # fmt: skip
    pci = {r"^gpu\d+$": ["0000:01:00.0"]}
    unseen = verify([truth], events, [row], polls=[50.0, 300.0], pci=pci)
    assert (unseen.cores_only_uncapturable, unseen.problems) == (1, [])
    seen = verify([truth], events, [row], polls=[150.0], pci=pci)
    assert seen.missing_resources == 1
    assert seen.problems == ["c/1: gpu1: accelerators None != ['0000:01:00.0']"]
