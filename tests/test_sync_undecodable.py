"""Issue #17 item 5: one sacct record that does not decode must not stop a cluster.

The simulated cluster's real ``sacct`` runs behind a wrapper that, while a flag file exists,
corrupts one job's ``time.start`` (a string, as a broken slurmdbd or a data_parser change could
print). Before, the whole answer failed with SlurmDecodeError: the watermark stayed, and every
job of the window waited behind the bad one.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from ccsa.daemon.store import Store
from ccsa.daemon.undecodable import UNDECODED_START
from ccsa.sim.slurm import JobSpec, SimCluster
from tests.test_sync import T0, make_syncer


def corrupting_bin(tmp_path: Path, sim: SimCluster, job_id: int, flag: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for cmd in ("squeue", "scontrol", "sinfo", "sacctmgr"):
        (bin_dir / cmd).symlink_to(sim.bin_dir / cmd)
    real = str(sim.bin_dir / "sacct")
    (bin_dir / "sacct").write_text(
        f"#!{sys.executable}\n"
        "import json, os, subprocess, sys\n"
        f"out = subprocess.run([{real!r}, *sys.argv[1:]], capture_output=True)\n"
        "sys.stderr.buffer.write(out.stderr)\n"
        f"if out.returncode or not os.path.exists({str(flag)!r}):\n"
        "    sys.stdout.buffer.write(out.stdout); sys.exit(out.returncode)\n"
        "doc = json.loads(out.stdout)\n"
        "for job in doc['jobs']:\n"
        f"    if job['job_id'] == {job_id}:\n"
        "        job['time']['start'] = 'yesterday'\n"
        "print(json.dumps(doc, indent=2))\n"
    )
    (bin_dir / "sacct").chmod(0o755)
    return bin_dir


async def test_one_bad_record_waits_and_the_rest_is_synced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim = SimCluster.create(tmp_path / "sim", clusters=("c1",), start=T0)
    good = [sim.submit(JobSpec(user="alice", duration=30)) for _ in range(2)]
    bad = sim.submit(JobSpec(user="bob", duration=30))
    sim.advance(120)  # all three ran and finished
    flag = tmp_path / "corrupt"
    flag.touch()
    bin_dir = corrupting_bin(tmp_path, sim, bad, flag)
    with Store.open(tmp_path / "s.sqlite3") as store:
        syncer = make_syncer(sim, store, bin_dir)
        with caplog.at_level(logging.DEBUG, logger="ccsa.daemon.undecodable"):
            assert await syncer.sync_all(["c1"], node_state=False)
        rows = {(r.key.job_id, r.kind) for r in store.outbox_rows()}
        assert rows == {(j, k) for j in good for k in ("start", "stop")}
        assert store.watermark("c1") == sim.now  # the cluster moved on
        assert store.waiting_ids("c1") == [bad]
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert f"job {bad}" in errors[0]
        assert ": time.start: " in errors[0]
        assert "looked up again" in errors[0]
        (line,) = syncer.undecodable.last["c1"]
        assert line.startswith(f"sacct job {bad}: time.start: ")
        # still bad on the next poll: still waiting, no second ERROR
        caplog.clear()
        sim.advance(60)
        with caplog.at_level(logging.DEBUG, logger="ccsa.daemon.undecodable"):
            assert await syncer.sync_all(["c1"], node_state=False)
        assert store.waiting_ids("c1") == [bad]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert syncer.undecodable.last["c1"] == [line]
        # fixed: the next poll looks it up by id (it is out of the window by now) and sends it
        flag.unlink()
        sim.advance(60)
        assert await syncer.sync_all(["c1"], node_state=False)
        rows = {(r.key.job_id, r.kind) for r in store.outbox_rows()}
        assert {(bad, "start"), (bad, "stop")} <= rows
        assert store.waiting_ids("c1") == []
        assert syncer.undecodable.last["c1"] == []
        assert all(r.key.start_time != UNDECODED_START for r in store.outbox_rows())


def test_status_lists_the_records_that_do_not_decode() -> None:
    from ccsa import status
    from ccsa.daemon.snapshot import ClusterStatus, StatusSnapshot, decode, encode

    line = "sacct job 1002: time.start: Expected `int | object`, got `str`"
    snap = decode(encode(StatusSnapshot(clusters={"c1": ClusterStatus(undecodable=[line])})))
    (section,) = [s for s in status.sections(snap, T0) if "do not decode" in s.title]
    assert section.rows == [("c1", line)]
    assert not [s for s in status.sections(StatusSnapshot(), T0) if "do not decode" in s.title]
