"""`cc-slurm-adapter demo` as a user runs it: a real subprocess that starts the simulated cluster,
the stand-in cc-backend, nats-server and the daemon, ends by itself (or on SIGINT), prints its
verified summary, exits 0 and leaves no process and no temporary directory behind."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ccsa.demo import MIN_RUN, gpu_pci_map, shape_workload
from ccsa.sim.slurm import JobSpec
from ccsa.sim.slurm.schedule import default_cluster, workload

DEMO = [sys.executable, "-m", "ccsa", "demo"]


def _cmdlines_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain ``text`` (the demo's work dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append(f"{entry.name}: {cmd}")
    return found


def _work_dir(output: str) -> str:
    match = re.search(r"work dir (\S+)", output)
    assert match, output
    return match.group(1)


def _assert_nothing_left(work: str) -> None:
    deadline = time.monotonic() + 5
    while _cmdlines_mentioning(work) and time.monotonic() < deadline:
        time.sleep(0.1)  # a reaped child may linger in /proc for a moment
    assert _cmdlines_mentioning(work) == []
    assert not Path(work).exists()


def test_demo_runs_to_the_end_and_verifies_every_finished_job() -> None:
    proc = subprocess.run(
        [*DEMO, "--duration", "14", "--jobs-per-minute", "60", "--seed", "3"],
        capture_output=True,
        text=True,
        timeout=150,
        stdin=subprocess.DEVNULL,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    work = _work_dir(out)
    assert "daemon PID" in out
    assert "stand-in cc-backend http://127.0.0.1:" in out
    assert re.search(r"\[\s*\d+s running\] Slurm: \d+ submitted", out)  # plain lines (no tty)
    match = re.search(r"demo OK: all (\d+) finished jobs reached cc-backend", out)
    assert match, out
    assert int(match.group(1)) > 0, out
    check = re.search(r"check: (\d+) finished jobs, (\d+) started and stopped exactly once, "
                      r"(\d+) with exactly Slurm's hosts", out)  # fmt: skip
    assert check, out
    assert check.group(1) == check.group(2) == check.group(3), out
    assert "Traceback" not in proc.stderr
    _assert_nothing_left(work)


def _interrupt_demo(finished: Callable[[int], bool]) -> tuple[str, str, int]:
    """Run a 90 s REST-only demo, send SIGINT after the first live line whose Slurm "finished"
    count satisfies ``finished``; (stdout, stderr, exit status)."""
    proc = subprocess.Popen(
        [*DEMO, "--duration", "90", "--jobs-per-minute", "60", "--seed", "5", "--no-nats"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"running\] Slurm: .* (\d+) finished \|", line)
            if m and finished(int(m.group(1))):
                break
        assert any("finished |" in x for x in lines), "".join(lines)
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return "".join(lines) + rest, err, proc.returncode


def test_demo_stops_on_sigint_and_still_checks() -> None:
    out, err, status = _interrupt_demo(lambda finished: finished >= 1)
    assert status == 0, out + err
    assert "interrupted" in out
    assert "demo OK" in out
    assert "jobs via NATS" not in out  # --no-nats
    _assert_nothing_left(_work_dir(out))


def test_demo_rejects_bad_arguments_in_one_line() -> None:
    proc = subprocess.run([*DEMO, "--duration", "0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "--duration" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_workload_is_shortened_but_keeps_its_mix() -> None:
    spec = default_cluster("demo")
    specs = workload(spec, seed=7, n_jobs=200, start=0.0, rate_per_min=60, max_duration=120)
    short = shape_workload(specs, 0.1)
    assert [s.name for s in short] == [s.name for s in specs]
    assert [s.end_state for s in short] == [s.end_state for s in specs]
    # the generator's 30..120 s become MIN_RUN..MIN_RUN+9 s (TIMEOUT jobs run to their limit)
    assert all(MIN_RUN <= s.duration <= MIN_RUN + 9.0 for s in short if s.end_state != "TIMEOUT")
    for before, after in zip(specs, short, strict=True):
        if before.cancel_pending_after is not None:
            assert after.cancel_pending_after is not None
            assert after.cancel_pending_after < before.cancel_pending_after
    assert {s.shape.gpu_type for s in short} >= {"a100", "h100", "h200"}
    assert any(s.array_size for s in short)
    assert any(s.het for s in short)
    unchanged = JobSpec(user="alice", duration=30.0)
    assert shape_workload([unchanged], 1.0)[0].duration == MIN_RUN


def test_gpu_pci_map_covers_every_gpu_of_each_group() -> None:
    spec = default_cluster("demo")
    pci = gpu_pci_map(spec)
    for group in spec.groups:
        count = sum(g.count for g in group.gpus)
        keys = [k for k in pci if re.search(k, f"{group.prefix}001")]
        if count:
            assert len(keys) == 1
            assert len(pci[keys[0]]) == count
            assert len(set(pci[keys[0]])) == count
        else:
            assert keys == []


@pytest.fixture(autouse=True)
def _no_tty_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.setenv("COLUMNS", os.environ.get("COLUMNS", "200"))


def test_live_view_keeps_gpu_names_in_brackets() -> None:
    """Issue 20 item 7: rich read ``dgpu002[h100:0,1]`` as markup and printed ``dgpu002``."""
    from rich.console import Console

    from ccsa.demo.view import Snapshot, rich_view

    snap = Snapshot(elapsed=10, duration=60, phase="running")
    snap.latest.append(("7", "alice", "gpu", "RUNNING", "running", "dgpu002", "dgpu002[h100:0,1]"))
    snap.errors.append("cc-backend 400 start job 7: [bad] request")
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(rich_view(snap))
    assert "dgpu002[h100:0,1]" in out.getvalue()
    assert "[bad] request" in out.getvalue()


def test_demo_interrupted_before_any_job_finished_says_so() -> None:
    """Issue 20 item 7: Ctrl-C before the first job ended printed "demo FAILED: no job
    finished", contradicting a run the user stopped; it says it was interrupted, with the counts
    so far, and exits 130 (nothing to verify yet). The first live line comes before any job
    can end (the shortest runs 8 s)."""
    out, err, status = _interrupt_demo(lambda finished: finished == 0)
    assert status == 130, out + err
    assert "no job finished" not in out
    assert "FAILED" not in out
    assert re.search(r"demo interrupted before any job finished: \d+ submitted", out), out
    assert "Traceback" not in err
    _assert_nothing_left(_work_dir(out))
