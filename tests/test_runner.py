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


async def test_urgent_calls_run_while_other_calls_wait_for_the_scope(tmp_path: Path) -> None:
    log = tmp_path / "order"
    script(tmp_path, "sacct", f'echo "$1" >> {log}\n')
    runner = SlurmRunner(bin_dir=str(tmp_path))
    release = trio.Event()
    urgent_done = trio.Event()
    poll_done = trio.Event()

    async def hook_batch() -> None:
        with runner.urgent():
            async with trio.open_nursery() as inner:  # tasks it starts inherit the priority
                inner.start_soon(runner.run, "sacct", ["urgent-child"])
                await runner.run("sacct", ["urgent"])
            urgent_done.set()
            await release.wait()
            await runner.run("sacct", ["urgent-late"])

    async def poll() -> None:
        await runner.run("sacct", ["poll"])
        poll_done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hook_batch)
        with trio.fail_after(10):
            await urgent_done.wait()
        nursery.start_soon(poll)
        await trio.sleep(0.5)  # a poll that did not wait would have run by now
        assert not poll_done.is_set()
        assert sorted(log.read_text().split()) == ["urgent", "urgent-child"]
        assert runner.stats()["limiter"]["urgent_scopes"] == 1
        release.set()
        with trio.fail_after(10):
            await poll_done.wait()
    assert log.read_text().split()[2:] == ["urgent-late", "poll"]
    stats = runner.stats()
    assert stats["commands"]["sacct"]["deferred"] == 1
    assert stats["limiter"]["urgent_scopes"] == 0


async def test_a_waiting_call_waits_only_for_the_scopes_open_at_its_arrival(
    tmp_path: Path,
) -> None:
    # hook work that keeps overlapping (a flood) must not starve the poll
    script(tmp_path, "squeue", "exit 0\n")
    runner = SlurmRunner(bin_dir=str(tmp_path))
    first_open = trio.Event()
    second_open = trio.Event()
    end_first = trio.Event()
    end_second = trio.Event()
    poll_done = trio.Event()

    async def first_batch() -> None:
        with runner.urgent():
            first_open.set()
            await end_first.wait()

    async def second_batch() -> None:
        with runner.urgent():
            second_open.set()
            await end_second.wait()

    async def poll() -> None:
        await runner.run("squeue", [])
        poll_done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first_batch)
        await first_open.wait()
        nursery.start_soon(poll)
        await trio.sleep(0.2)
        assert not poll_done.is_set()
        nursery.start_soon(second_batch)  # opens while the first is still open
        await second_open.wait()
        end_first.set()
        with trio.fail_after(10):
            await poll_done.wait()  # while the second scope is still open
        assert runner.stats()["limiter"]["urgent_scopes"] == 1
        end_second.set()
    assert runner.stats()["commands"]["squeue"]["deferred"] == 1


async def test_a_stuck_urgent_scope_holds_other_calls_only_briefly(tmp_path: Path) -> None:
    # a hook lookup stuck on a hung Slurm command must not stall the poll for its timeout
    script(tmp_path, "sinfo", "exit 0\n")
    runner = SlurmRunner(bin_dir=str(tmp_path), urgent_max_wait=0.5)
    opened = trio.Event()
    release = trio.Event()
    waited = -1.0

    async def stuck_lookup() -> None:
        with runner.urgent():
            opened.set()
            await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stuck_lookup)
        await opened.wait()
        began = trio.current_time()
        with trio.fail_after(10):
            await runner.run("sinfo", [])
        waited = trio.current_time() - began
        assert not release.is_set()  # the scope is still open
        assert runner.stats()["commands"]["sinfo"]["deferred"] == 1
        release.set()
    assert 0.4 <= waited < 5.0


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
