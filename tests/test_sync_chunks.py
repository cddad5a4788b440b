"""Issue #19: a backlog is stored and delivered chunk by chunk, and a Slurm that ignores the
poll window is read once per poll (the simulated cluster's real commands; its ``sacct`` behind
a wrapper that widens every window, like the fake Slurm of issue #19 and bench_largesite)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ccsa.daemon import chunks, plan
from ccsa.daemon.store import Store
from ccsa.daemon.windows import SubWindows, beyond
from ccsa.sim.slurm import JobSpec, SimCluster
from ccsa.slurm.sacct import SacctJob, SacctTime
from tests.test_sync import T0, make_syncer


def acct(job_id: int, submitted: int = 0) -> SacctJob:
    return SacctJob(job_id=job_id, time=SacctTime(submission=submitted))


def test_split_keeps_everything_and_each_stop_with_its_start() -> None:
    starts = [(acct(i), None) for i in range(7)]
    old = acct(99)
    stops = [(acct(1), 10), (old, 5), (acct(6), 10), (acct(3), 10)]
    extra: list[plan.Action] = [plan.MarkStale(plan.JobKey("c", 50, 1), True)]
    decision = plan.Decision("c", starts=starts, stops=stops, extra=extra, lookup=[42])
    parts = chunks.split(decision, 3, first=3)
    assert [[a.job_id for a, _ in p.starts] for p in parts] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [[a.job_id for a, _ in p.stops] for p in parts] == [[1], [3], [99, 6]]
    smaller_first = chunks.split(decision, 3, first=1)
    assert [[a.job_id for a, _ in p.starts] for p in smaller_first] == [[0], [1, 2, 3], [4, 5, 6]]
    assert [p.extra for p in parts] == [[], [], extra]
    assert [p.lookup for p in parts] == [[], [], [42]]
    assert parts[0].stop_keys == {(1, 10)}
    assert chunks.split(decision, 7, first=7) == [decision]
    with pytest.raises(ValueError):
        chunks.split(decision, 0)


def test_beyond_counts_records_submitted_after_the_window() -> None:
    jobs = [acct(1, 1000), acct(2, 1200), acct(3, 2000), acct(4)]
    assert beyond(jobs, 1000, margin=300) == 1
    assert beyond(jobs, 2000, margin=300) == 0


def window_ignoring_bin(tmp_path: Path, sim: SimCluster) -> Path:
    """The simulator's commands; its sacct answers any -S/-E window with all of history."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for cmd in sim.bin_dir.iterdir():
        if cmd.name != "sacct":
            (bin_dir / cmd.name).symlink_to(cmd)
    real = str(sim.bin_dir / "sacct")
    (bin_dir / "sacct").write_text(
        f"#!{sys.executable}\nimport os, sys\nargs = sys.argv[1:]\n"
        "for flag, value in (('--starttime', '2000-01-01T00:00:00'),\n"
        "                    ('--endtime', '2099-01-01T00:00:00')):\n"
        "    if flag in args:\n"
        "        args[args.index(flag) + 1] = value\n"
        f"os.execv({real!r}, [{real!r}, *args])\n"
    )
    (bin_dir / "sacct").chmod(0o755)
    return bin_dir


async def test_backlog_in_chunks_one_sacct_and_squeue_per_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seven jobs over six hours, chunks of two (the first of one): the first sub-window's
    answer reaches past its end, so the poll plans everything from it (one sacct, one squeue:
    before, every sub-window re-read the whole answer). Starts are stored two by two, each
    transaction waking the delivery, the watermark only with the last (it moves only past
    what is queued)."""
    monkeypatch.setattr(chunks, "CHUNK_JOBS", 2)
    monkeypatch.setattr(chunks, "FIRST_CHUNK_JOBS", 1)
    sim = SimCluster.create(tmp_path / "sim", clusters=("c1",), start=T0 - 6 * 3600)
    ids = []
    for _ in range(7):
        ids.append(sim.submit(JobSpec(user="alice", duration=60)))
        sim.advance(3000)
    bin_dir = window_ignoring_bin(tmp_path, sim)
    with Store.open(tmp_path / "s.sqlite3") as store:
        syncer = make_syncer(sim, store, bin_dir, SubWindows(first=3600))
        syncer.initial_start = lambda: T0 - 6 * 3600 - 60
        woken: list[tuple[int, float | None]] = []
        syncer.on_queued = lambda: woken.append((len(store.outbox_rows()), store.watermark("c1")))
        calls_before = len(sim.calls())
        result = await syncer.tick("c1")
        calls = [c for c in sim.calls()[calls_before:] if c["command"] in ("sacct", "squeue")]
        windows = [c for c in calls if c["command"] == "sacct" and "-j" not in c["argv"]]
        assert len(windows) == 1, calls
        assert len([c for c in calls if "--all" in c["argv"]]) == 1, calls  # squeue --all
        assert result.parts == 1
        rows = {(r.key.job_id, r.kind) for r in store.outbox_rows()}
        assert rows == {(j, k) for j in ids for k in ("start", "stop")}
        # 4 chunks (1+2+2+2 starts, each with its stop); the watermark moved with the last
        assert [n for n, _ in woken] == [2, 6, 10, 14]
        assert [mark for _, mark in woken] == [None, None, None, sim.now]
