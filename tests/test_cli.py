"""ccsa.cli: upstream spellings, hook-mode dispatch, the daemon path and the systemd unit."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ccsa import cli, logs
from ccsa.config import Config

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "cc-slurm-adapter.service"
ADAPTER = shutil.which("cc-slurm-adapter", path=os.path.dirname(sys.executable))


@pytest.fixture
def config_file(tmp_path: Path) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"ccRestUrl": "http://127.0.0.1:1", "ccRestJwt": "jwt-123456"}))
    path.chmod(0o600)
    return str(path)


class FakeSupervisor(types.ModuleType):
    """Stands in for ccsa.daemon.supervisor (written by another engineer) in sys.modules."""

    def __init__(self) -> None:
        super().__init__("ccsa.daemon.supervisor")
        self.calls: list[tuple[Config, bool, bool]] = []

    def run(self, cfg: Config, *, once: bool, dry_run: bool) -> int:
        self.calls.append((cfg, once, dry_run))
        return 0


@pytest.fixture
def supervisor(monkeypatch: pytest.MonkeyPatch) -> FakeSupervisor:
    fake = FakeSupervisor()
    monkeypatch.setitem(sys.modules, "ccsa.daemon.supervisor", fake)
    return fake


def exit_code(argv: list[str]) -> Any:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    return info.value.code


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-daemon", "-config", "F"], ["--daemon", "--config", "F"]),
        (["-daemon", "-config=F", "-debug", "5"], ["--daemon", "--config=F", "--debug", "5"]),
        (["-help"], ["--help"]),
        (["-h"], ["--help"]),
        (["--daemon", "--config", "F"], ["--daemon", "--config", "F"]),
        (["-dry-run", "-once"], ["--dry-run", "--once"]),
        (["-debug", "-1"], ["--debug", "-1"]),
        (["check", "-config", "F"], ["check", "--config", "F"]),
        (["inspect", "--", "-daemon"], ["inspect", "--", "-daemon"]),
        (["-x"], ["-x"]),
    ],
)
def test_normalize(argv: list[str], expected: list[str]) -> None:
    assert cli.normalize(argv) == expected


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], None),
        (["--config", "F"], "F"),
        (["--config=F"], "F"),
        (["--debug", "5", "--config", "F"], "F"),
        (["--daemon"], False),
        (["--help"], False),
        (["version"], False),
        (["check", "--config", "F"], False),
        (["--config"], False),
        (["--bogus"], False),
    ],
)
def test_hook_mode_detection(argv: list[str], expected: object) -> None:
    assert cli.hook_arguments(argv) == expected


@pytest.mark.parametrize(
    ("argv", "once", "dry_run"),
    [
        (["-daemon", "-config", "{cfg}"], False, False),
        (["-daemon", "-config", "{cfg}", "-debug", "5"], False, False),
        (["--daemon", "--config", "{cfg}", "--debug", "0"], False, False),
        (["-daemon", "-config={cfg}", "-once"], True, False),
        (["--config", "{cfg}", "--once", "--dry-run"], True, True),
    ],
)
def test_daemon_invocations(
    supervisor: FakeSupervisor, config_file: str, argv: list[str], once: bool, dry_run: bool
) -> None:
    assert exit_code([a.format(cfg=config_file) for a in argv]) == 0
    ((cfg, got_once, got_dry_run),) = supervisor.calls
    assert cfg.config_path == config_file
    assert cfg.cc_rest_jwt.get() == "jwt-123456"
    assert (got_once, got_dry_run) == (once, dry_run)


def test_supervisor_status_is_the_exit_status(
    supervisor: FakeSupervisor, config_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor, "run", lambda cfg, **kw: 3)
    assert exit_code(["-daemon", "-config", config_file]) == 3


def test_missing_supervisor_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, config_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ccsa.daemon.supervisor", None)
    assert exit_code(["-daemon", "-config", config_file]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert "daemon mode is not available" in line


def test_bad_debug_level(config_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(["-daemon", "-config", config_file, "-debug", "7"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "0..5" in line


def test_help_in_both_spellings(capsys: pytest.CaptureFixture[str]) -> None:
    for flag in ("-help", "--help", "-h"):
        assert exit_code([flag]) in (0, None)
        out = capsys.readouterr().out
        assert "--daemon" in out
        assert "--config" in out
        assert "--debug" in out


def test_version_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    from ccsa import __version__

    assert exit_code(["version"]) == 0
    assert __version__ in capsys.readouterr().out


@pytest.mark.parametrize("name", [entry[0] for entry in cli.SUBCOMMANDS])
def test_every_registered_subcommand_resolves(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert name in cli.SUBCOMMAND_WORDS  # never mistaken for hook mode
    assert exit_code([name, "--help"]) in (0, None)
    assert name in capsys.readouterr().out


def test_unknown_option_is_a_usage_error_not_hook_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(["--bogus"]) not in (0, None)
    assert "--bogus" in capsys.readouterr().err


def test_no_arguments_is_hook_mode(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in list(os.environ):
        if name.startswith("SLURM_"):
            monkeypatch.delenv(name)
    assert exit_code([]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert "SLURM_SCRIPT_CONTEXT" in line


def unit_exec_start() -> list[str]:
    lines = [ln for ln in UNIT.read_text().splitlines() if ln.startswith("ExecStart=")]
    assert len(lines) == 1
    return shlex.split(lines[0].removeprefix("ExecStart="))


def test_unit_matches_upstream_layout() -> None:
    text = UNIT.read_text()
    for line in (
        "User=cc-slurm-adapter",
        "Group=slurm",
        "RuntimeDirectory=cc-slurm-adapter",
        "RuntimeDirectoryMode=0750",
        "StateDirectory=cc-slurm-adapter",
        "Restart=on-failure",
    ):
        assert line in text.splitlines(), line
    argv = unit_exec_start()
    assert argv[0] == "/opt/cc-slurm-adapter/cc-slurm-adapter"
    assert "-daemon" in argv


def test_unit_exec_start_runs_the_console_script_in_daemon_mode(
    tmp_path: Path, config_file: str
) -> None:
    """ExecStart, with the installed console script and a temp config, reaches the supervisor
    with that config (the supervisor is a stub injected before the console script runs)."""
    assert ADAPTER
    argv = unit_exec_start()
    argv[0] = ADAPTER
    argv[argv.index("-config") + 1] = config_file
    report = tmp_path / "report.json"
    driver = (
        "import json, runpy, sys, types\n"
        "stub = types.ModuleType('ccsa.daemon.supervisor')\n"
        "def run(cfg, *, once, dry_run):\n"
        f"    open({str(report)!r}, 'w').write(json.dumps(\n"
        "        [cfg.config_path, str(cfg.prep_sock_listen_path), once, dry_run]))\n"
        "    return 0\n"
        "stub.run = run\n"
        "sys.modules['ccsa.daemon.supervisor'] = stub\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", driver, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.defpath},
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads(report.read_text()) == [
        config_file,
        "unix:/run/cc-slurm-adapter/daemon.sock",
        False,
        False,
    ]


# --- logging (ccsa.logs), as the CLI sets it up ------------------------------------------------


@pytest.fixture(autouse=True)
def fresh_logging() -> Iterator[None]:
    """cli.main sets up logging on the shared ``ccsa`` logger: undo it after every test."""
    yield
    logger = logging.getLogger("ccsa")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)
    logging.getLogger(logs.SUMMARY).setLevel(logging.NOTSET)


@pytest.mark.parametrize(
    ("debug", "shown"),
    [
        (0, ["critical"]),
        (1, ["critical", "error"]),
        (2, ["critical", "error", "warning"]),
        (3, ["critical", "error", "warning", "info"]),
        (4, ["critical", "error", "warning", "info", "debug"]),
        (5, ["critical", "error", "warning", "info", "debug", "trace"]),
    ],
)
def test_debug_levels(debug: int, shown: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup(debug)
    log = logging.getLogger("ccsa.test")
    log.critical("critical")
    log.error("error")
    log.warning("warning")
    log.info("info")
    log.debug("debug")
    log.log(logs.TRACE, "trace")
    err = capsys.readouterr().err
    assert [line.rsplit(": ", 1)[1] for line in err.splitlines()] == shown


@pytest.mark.parametrize(("debug", "shown"), [(0, False), (1, False), (2, True), (3, True)])
def test_summary_lines_show_from_the_default_level(
    debug: int, shown: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """A healthy daemon at the default -debug 2 logs its per-sync INFO line (logs.SUMMARY), and
    no other INFO line; -debug 0 and 1 silence it too."""
    logs.setup(debug)
    logging.getLogger(logs.SUMMARY).info("c1: synced")
    logging.getLogger("ccsa.daemon.delivery").info("other info")
    err = capsys.readouterr().err
    assert ("INFO ccsa.summary: c1: synced" in err) is shown
    assert ("other info" in err) is (debug >= 3)


def test_journald_priorities_and_redaction(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    logs.setup(5)
    logs.redact("top-secret-token")
    logs.redact("abc")  # too short to redact safely: ignored
    log = logging.getLogger("ccsa.test")
    log.error("sending Bearer top-secret-token\nsecond line abc")
    log.warning("w")
    log.info("i")
    log.log(logs.TRACE, "t")
    try:
        raise RuntimeError("boom top-secret-token")
    except RuntimeError:
        log.exception("failed")
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[:5] == [
        "<3>ccsa.test: sending Bearer ***",
        "<3>second line abc",
        "<4>ccsa.test: w",
        "<6>ccsa.test: i",
        "<7>ccsa.test: t",
    ]
    assert "top-secret-token" not in err
    assert all(line.startswith("<3>") for line in lines[5:])
    assert "RuntimeError: boom ***" in err


def test_plain_lines_have_timestamps(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup(2)
    logging.getLogger("ccsa.x").warning("hello")
    (line,) = capsys.readouterr().err.splitlines()
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING ccsa\.x: hello$", line)


def test_journald_config_warning_via_the_cli(tmp_path: Path) -> None:
    """Under systemd the config warnings carry a journald priority and the JWT never shows."""
    assert ADAPTER
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps({"ccRestUrl": "http://x", "ccRestJwt": "jwt-abcdef", "tpyo": 1, "natsPort": "x"})
    )
    path.chmod(0o600)
    proc = subprocess.run(
        [ADAPTER, "-daemon", "-config", str(path)],
        env={"PATH": os.defpath, "JOURNAL_STREAM": "8:1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    warning, error = proc.stderr.splitlines()
    assert warning.startswith("<4>ccsa.config: ")
    assert "'tpyo'" in warning
    assert error.startswith("<3>cc-slurm-adapter: config error: ")
    assert "natsPort" in error
    assert "jwt-abcdef" not in proc.stderr
