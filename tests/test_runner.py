"""SlurmRunner with real subprocesses: small shell scripts written into tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from ccsa.errors import SlurmCommandError, SlurmTimeout
from ccsa.slurm.runner import SlurmRunner


def script(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_stdout_env_and_args(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCSA_INHERITED", "yes")
    monkeypatch.setenv("TZ", "Europe/Berlin")
    script(tmp_path, "sacct", 'printf "%s|" "$TZ" "$CCSA_INHERITED" "$EXTRA" "$@"\n')
    runner = SlurmRunner(bin_dir=str(tmp_path), env={"EXTRA": "x"})
    out = await runner.run("sacct", ["--json", "a b", "*"])
    assert out == b"UTC|yes|x|--json|a b|*|"


async def test_large_stdout_intact(tmp_path: Path) -> None:
    script(tmp_path, "squeue", "head -c 3000000 /dev/zero | tr '\\0' 'x'\n")
    out = await SlurmRunner(bin_dir=str(tmp_path)).run("squeue", [])
    assert out == b"x" * 3_000_000


async def test_nonzero_exit_carries_stderr(tmp_path: Path) -> None:
    script(
        tmp_path, "squeue", 'echo "slurm_load_jobs error: Invalid job id specified" >&2\nexit 1\n'
    )
    runner = SlurmRunner(bin_dir=str(tmp_path))
    with pytest.raises(SlurmCommandError) as info:
        await runner.run("squeue", ["-j", "5"])
    assert info.value.returncode == 1
    assert "Invalid job id specified" in info.value.stderr
    assert info.value.argv == [str(tmp_path / "squeue"), "-j", "5"]
    assert "exited 1" in str(info.value)
    stats = runner.stats()["commands"]["squeue"]
    assert (stats["count"], stats["errors"], stats["timeouts"]) == (1, 1, 0)


async def test_killed_by_signal_is_an_error(tmp_path: Path) -> None:
    script(tmp_path, "sinfo", "kill -9 $$\n")
    with pytest.raises(SlurmCommandError) as info:
        await SlurmRunner(bin_dir=str(tmp_path)).run("sinfo", [])
    assert info.value.returncode == -9


async def test_stderr_is_bounded(tmp_path: Path) -> None:
    script(tmp_path, "sacct", "head -c 500000 /dev/zero | tr '\\0' 'e' >&2\nexit 2\n")
    runner = SlurmRunner(bin_dir=str(tmp_path), stderr_limit=1000)
    with pytest.raises(SlurmCommandError) as info:
        await runner.run("sacct", [])
    assert info.value.stderr == "e" * 1000


async def test_garbage_binary_is_a_typed_error(tmp_path: Path) -> None:
    bad = tmp_path / "sacct"
    bad.write_bytes(b"\x00\x01 not an executable format\n")
    bad.chmod(0o755)
    with pytest.raises(SlurmCommandError) as info:
        await SlurmRunner(bin_dir=str(tmp_path)).run("sacct", [])
    assert info.value.returncode is None
    assert "could not be started" in str(info.value)


async def test_timeout_terminates_child(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script(tmp_path, "sacct", f"echo $$ > {pidfile}\necho partial >&2\nexec sleep 30\n")
    runner = SlurmRunner(bin_dir=str(tmp_path), timeout=0.5, kill_grace=5.0)
    with pytest.raises(SlurmTimeout) as info:
        await runner.run("sacct", [])
    assert "timed out after 0.5 s" in str(info.value)
    assert "partial" in info.value.stderr
    assert pid_gone(int(pidfile.read_text()))
    assert runner.stats()["commands"]["sacct"]["timeouts"] == 1


async def test_timeout_kills_child_that_ignores_sigterm(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script(tmp_path, "sacct", f"trap '' TERM\necho $$ > {pidfile}\nexec sleep 30\n")
    runner = SlurmRunner(bin_dir=str(tmp_path), timeout=10.0, kill_grace=0.3)
    with pytest.raises(SlurmTimeout):
        await runner.run("sacct", [], timeout=0.5)
    assert pid_gone(int(pidfile.read_text()))


async def test_limiter_capacity_is_never_exceeded(tmp_path: Path) -> None:
    log = tmp_path / "intervals"
    script(
        tmp_path,
        "scontrol",
        f'start=$(date +%s%N)\nsleep 0.4\necho "$start $(date +%s%N)" >> {log}\n',
    )
    runner = SlurmRunner(bin_dir=str(tmp_path), max_concurrent=2)
    peak_in_use = 0

    async def watch() -> None:
        nonlocal peak_in_use
        while True:
            peak_in_use = max(peak_in_use, runner.stats()["limiter"]["in_use"])
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        async with trio.open_nursery() as jobs:
            for i in range(6):
                jobs.start_soon(runner.run, "scontrol", [str(i)])
        nursery.cancel_scope.cancel()

    events: list[tuple[int, int]] = []
    for line in log.read_text().splitlines():
        start, end = map(int, line.split())
        events += [(start, 1), (end, -1)]
    assert len(events) == 12
    running = overlap = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        running += delta
        overlap = max(overlap, running)
    assert overlap <= 2
    assert overlap == 2  # the two tokens were really used concurrently
    assert peak_in_use == 2
    assert runner.stats()["commands"]["scontrol"]["count"] == 6


async def test_missing_binary_in_bin_dir_names_dir_and_key(tmp_path: Path) -> None:
    runner = SlurmRunner(bin_dir=str(tmp_path))
    with pytest.raises(SlurmCommandError) as info:
        await runner.run("sacct", ["--json"])
    assert str(tmp_path) in str(info.value)
    assert "slurmBinDir" in str(info.value)


def test_non_executable_file_is_not_a_binary(tmp_path: Path) -> None:
    (tmp_path / "sinfo").write_text("#!/bin/sh\n")
    with pytest.raises(SlurmCommandError, match="slurmBinDir"):
        SlurmRunner(bin_dir=str(tmp_path)).resolve("sinfo")


def test_resolution_path_then_usr_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_path = tmp_path / "onpath"
    on_path.mkdir()
    script(on_path, "sacctmgr", "exit 0\n")
    monkeypatch.setenv("PATH", str(on_path))
    runner = SlurmRunner()
    assert runner.resolve("sacctmgr") == str(on_path / "sacctmgr")
    if not os.access("/usr/bin/env", os.X_OK):
        pytest.skip("/usr/bin/env not present")
    assert runner.resolve("env") == "/usr/bin/env"  # not on PATH: /usr/bin fallback
    with pytest.raises(SlurmCommandError) as info:
        runner.resolve("no-such-slurm-cmd")
    assert str(on_path) in str(info.value)
    assert "/usr/bin" in str(info.value)


def test_bin_dir_wins_over_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    script(first, "sinfo", "exit 0\n")
    script(second, "sinfo", "exit 0\n")
    monkeypatch.setenv("PATH", str(first))
    assert SlurmRunner(bin_dir=str(second)).resolve("sinfo") == str(second / "sinfo")


def test_bad_settings_rejected() -> None:
    with pytest.raises(ValueError, match="slurmMaxConcurrent"):
        SlurmRunner(max_concurrent=0)
    with pytest.raises(ValueError, match="slurmCommandTimeout"):
        SlurmRunner(timeout=0)
