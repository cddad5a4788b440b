"""Memory independent of answer size (issue #19): a sacct answer of tens of MB through the real
runner (a real subprocess prints it) and decoder raises the process's peak RSS by far less than
the answer's size.

The answer is the real 24.11 test bed's biggest job, given three steps and pretty-printed like
``sacct --json`` prints (~20 KB per job), repeated with distinct ids. The measurement runs in a
fresh child process (peak RSS is per process and never goes down): ``VmHWM`` after the
imports and a warm-up call, then after the big call. A memory bound, not a timing. Before job-by-job
decoding the runner joined the pipe's chunks (the answer twice) and decoded the document whole:
peak growth was more than twice the answer.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="needs Linux /proc/self/status (VmHWM)"
)

CHILD = r"""
import json, sys
from datetime import datetime, UTC
import trio
from ccsa.slurm.commands import Slurm
from ccsa.slurm.runner import SlurmRunner

def peak_kib():
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over exec from the forked
    # copy of the parent (the test process, holding the answer), VmHWM starts at exec.
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

async def main():
    bindir, small, big = sys.argv[1:]
    which = bindir + "/answer"  # the fake sacct prints the file named there
    open(which, "w").write(small)
    slurm = Slurm(SlurmRunner(bin_dir=bindir))
    begin, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    warm = await slurm.sacct_window("c", begin, end)  # every code path loaded once
    open(which, "w").write(big)
    before = peak_kib()
    doc = await slurm.sacct_window("c", begin, end)
    after = peak_kib()
    print(json.dumps({"warm": len(warm.jobs), "jobs": len(doc.jobs), "bad": len(doc.bad),
                      "ids": len({j.job_id for j in doc.jobs}), "before": before, "after": after}))

trio.run(main)
"""


def _answer(shared: Path, n_jobs: int) -> bytes:
    raw = json.loads((shared / "fixtures/slurm/24.11-testbed/sacct-allusers.json").read_bytes())
    template = max(raw["jobs"], key=lambda j: len(json.dumps(j)))
    step = template["steps"][0]
    steps = []
    for i, name in enumerate(("batch", "extern", "0")):
        s = copy.deepcopy(step)
        s["step"]["id"] = f"{template['job_id']}.{name}"
        s["step"]["name"] = name if i < 2 else template["name"]
        steps.append(s)
    jobs = []
    for i in range(n_jobs):
        job = copy.deepcopy(template)
        job["job_id"] = 100_000 + i
        job["steps"] = steps
        jobs.append(job)
    return json.dumps({"jobs": jobs, "meta": raw["meta"], "errors": [], "warnings": []}, indent=2)


def test_peak_rss_grows_by_far_less_than_the_answer(shared: Path, tmp_path: Path) -> None:
    n_jobs = 2000
    big = tmp_path / "big.json"
    big.write_text(_answer(shared, n_jobs))
    small = tmp_path / "small.json"
    small.write_text(_answer(shared, 2))
    size = big.stat().st_size
    assert size > 30_000_000  # tens of MB
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "sacct"
    fake.write_text(f'#!/bin/sh\nexec cat "$(cat {bindir}/answer)"\n')
    fake.chmod(0o755)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(bindir), str(small), str(big)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    got = json.loads(out.stdout)
    assert (got["warm"], got["jobs"], got["ids"], got["bad"]) == (2, n_jobs, n_jobs, 0)
    growth = (got["after"] - got["before"]) * 1024
    assert growth < size / 2, (
        f"peak RSS grew {growth / 1e6:.1f} MB for a {size / 1e6:.1f} MB answer"
    )
