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

import pytest

from ccsa.sim.verdict import CAPTURE_MARGIN, capturable
from tests.nats_server import nats_server_binary
from tests.soak_driver import (
    Fault,
    SoakPlan,
    fault_schedule,
    poll_times,
    report,
    run_soak,
    snapshots,
)

SHORT = SoakPlan(jobs=1000, rate_per_min=500.0, seed=8, kills=3, nodes=100)
#: 900 jobs/min of ~30 s need ~4x the short form's nodes, or Slurm's queue (and the run) grows
LONG = SoakPlan(jobs=20_000, rate_per_min=900.0, seed=11, kills=12, nodes=240, drain_timeout=600.0)


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
