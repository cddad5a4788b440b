"""Remembered squeue records serve the run sacct describes, by run identity (issue 18).

Real Store (SQLite), real Slurm 24.11 documents of a power-up (tests/fixtures/
slurm-24.11-lifecycles: job 39, allocated while node2 booted, start reset 14 s later;
docs/real-slurm.md "Lifecycles of issue 18"). slurmctld resets the start time when the nodes
are up (``job_mgr.c`` ``job_config_fini``); a lagging slurmdbd still has the allocation time.
The squeue record remembered after the reset is the same run (same ``restart_cnt``); a requeued
job's next run (``restart_cnt`` + 1) is not.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from ccsa import convert
from ccsa.daemon.live import LiveRecords
from ccsa.daemon.store import Store
from ccsa.slurm import sacct as sacct_view
from ccsa.slurm import squeue as squeue_view
from ccsa.slurm.commands import Slurm
from ccsa.slurm.runner import SlurmRunner

DOCS = Path(__file__).parent / "fixtures" / "slurm-24.11-lifecycles"
C = "testcluster"
NOW = 1796522300.0


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveRecords]:
    store = Store.open(tmp_path / "state.sqlite3")
    slurm = Slurm(SlurmRunner(str(tmp_path), max_concurrent=1, timeout=5))  # never called
    yield LiveRecords(slurm, store, lambda: NOW)
    store.close()


def test_a_lagging_power_up_record_gets_the_record_remembered_after_the_reset(
    live: LiveRecords,
) -> None:
    """The daemon saw the job in squeue only after the reset; it ended, and sacct (lagging)
    still shows the allocation time. Before the fix the remembered record was looked up under
    the allocation time only, so the start went out without cores (soak job 1666)."""
    (lagging,) = sacct_view.decode((DOCS / "powerup-configuring-sacct.json").read_bytes()).jobs
    (running,) = squeue_view.decode((DOCS / "powerup-running-squeue.json").read_bytes()).jobs
    assert convert.start_time(lagging) != convert.queue_start_time(running)
    live.remember(C, [running], {})
    got = live.remembered(C, [lagging.job_id], [lagging])
    assert list(got) == [lagging.job_id]
    assert convert.capture_resources(got[lagging.job_id], convert.ConvertOptions())
    # the next run of a requeued job (restart_cnt 1) is another run: never its record
    rerun = msgspec.structs.replace(running, job_id=40, restart_cnt=1)
    first = msgspec.structs.replace(lagging, job_id=40)
    live.remember(C, [rerun], {})
    assert live.remembered(C, [40], [first]) == {}
