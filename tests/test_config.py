"""ccsa.config: defaults, clamps, every kind of config error (in-process and via the real CLI)."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ccsa import config, logs
from ccsa.config import Config, Secret, load, make_config
from ccsa.convert import ConvertOptions
from ccsa.errors import ConfigError
from ccsa.sockaddr import TcpAddr, UnixAddr

JWT = "eyJhbGciOiJFZERTQSJ9.secret-payload.signature"
MINIMAL = {"ccRestUrl": "https://cc.example/", "ccRestJwt": JWT}
ADAPTER = shutil.which("cc-slurm-adapter", path=os.path.dirname(sys.executable))


def write(tmp_path: Path, data: dict[str, Any] | str, mode: int = 0o640) -> str:
    path = tmp_path / "config.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    path.chmod(mode)
    return str(path)


def test_every_default(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    cfg = load(path)
    sock = UnixAddr("/run/cc-slurm-adapter/daemon.sock")
    expected = {
        "pid_file_path": "/run/cc-slurm-adapter/daemon.pid",
        "prep_sock_listen_path": sock,
        "prep_sock_connect_path": sock,
        "last_run_path": "/var/lib/cc-slurm-adapter/lastrun",
        "slurm_poll_interval": 60,
        "slurm_query_delay": 1,
        "slurm_query_max_span": 604800,
        "slurm_max_retries": 10,
        "slurm_max_concurrent": 10,
        "cc_poll_interval": 21600,
        "cc_rest_submit_jobs": True,
        "cc_rest_url": "https://cc.example",
        "gpu_pci_addrs": (),
        "ignore_hosts": None,
        "nats_server": "",
        "nats_port": 4222,
        "nats_subject": "jobs",
        "nats_user": "",
        "nats_creds_file": "",
        "nats_nkey_seed_file": "",
        "slurm_bin_dir": "",
        "slurm_command_timeout": 120,
        "state_db_path": "/var/lib/cc-slurm-adapter/state.sqlite3",
        "sync_overlap": 300,
        "cc_rest_timeout": 30,
        "cc_rest_ca_file": "",
        "cc_rest_insecure": False,
        "metrics_listen": "",
        "sibling_numbering": "spread",
        "unknown_cluster_retention": 259200,
        "config_path": path,
        "warnings": (),
    }
    for attr, value in expected.items():
        assert getattr(cfg, attr) == value, attr
    assert cfg.cc_rest_jwt.get() == JWT
    assert cfg.nats_password.get() == ""
    assert not cfg.nats_enabled
    # every attribute of Config is covered above (the two secrets separately)
    assert set(Config.__struct_fields__) == set(expected) | {"cc_rest_jwt", "nats_password"}
    # ... and every key of the file is one attribute of Config
    assert set(config.KEYS) == set(Config.__struct_fields__) - {"config_path", "warnings"}


def test_upstream_example_loads(tmp_path: Path) -> None:
    """The example from upstream's README, including its typo'd key."""
    creds = tmp_path / "nats.creds"
    creds.write_text("x")
    example = {
        "pidFilePath": "/run/cc-slurm-adapter/daemon.pid",
        "prepSockListenPath": "/run/cc-slurm-adapter/daemon.sock",
        "prepSockConnectPath": "tcp:[::1]:12345",
        "lastRunPath": "/var/lib/cc-slurm-adapter/last_run",
        "slurmPollInterval": 60,
        "slurmQueryDelay": 1,
        "slurmQueryMaxSpan": 604800,
        "slurmQueryMaxRetries": 5,
        "ccPollInterval": 21600,
        "ccRestSubmitJobs": True,
        "ccRestUrl": "https://my-cc-backend-instance.example",
        "ccRestJwt": JWT,
        "gpuPciAddrs": {
            "^nodehostname0[0-9]$": ["00000000:00:10.0", "00000000:00:3F.0"],
            "^node": ["00000000:00:AA.0"],
        },
        "ignoreHosts": "^nodehostname9\\w+$",
        "natsServer": "mynatsserver.example",
        "natsPort": 4222,
        "natsSubject": "mysubject",
        "natsUser": "myuser",
        "natsPassword": "123456789",
        "natsCredsFile": str(creds),
    }
    cfg = load(write(tmp_path, example))
    assert cfg.prep_sock_connect_path == TcpAddr("::1", 12345)
    assert cfg.nats_enabled
    assert cfg.state_db_path == "/var/lib/cc-slurm-adapter/state.sqlite3"
    assert [m.source for m in cfg.gpu_pci_addrs] == ["^nodehostname0[0-9]$", "^node"]
    # first matching regex in file order wins (as conversion applies them)
    opts = ConvertOptions.from_config(cfg)
    assert opts.pci_list("nodehostname03") == ("00000000:00:10.0", "00000000:00:3F.0")
    assert opts.pci_list("node77") == ("00000000:00:AA.0",)
    assert opts.pci_list("login1") is None
    assert opts.ignored("nodehostname9abc")
    assert not opts.ignored("nodehostname1")
    (warning,) = cfg.warnings
    assert "'slurmQueryMaxRetries'" in warning
    assert "did you mean 'slurmMaxRetries'" in warning


def test_ignore_hosts_is_a_search_like_upstream() -> None:
    assert ConvertOptions.from_config(make_config(ignore_hosts="login")).ignored("xlogin3")
    assert not ConvertOptions.from_config(make_config()).ignored("anything")


@pytest.mark.parametrize(
    ("key", "value", "attr", "clamped"),
    [
        ("slurmPollInterval", 0, "slurm_poll_interval", 1),
        ("slurmPollInterval", -5, "slurm_poll_interval", 1),
        ("slurmQueryDelay", 0, "slurm_query_delay", 1),
        ("slurmQueryDelay", 0.5, "slurm_query_delay", 1),
        ("slurmMaxConcurrent", 0, "slurm_max_concurrent", 1),
        ("slurmMaxRetries", -1, "slurm_max_retries", 0),
        ("ccPollInterval", 0, "cc_poll_interval", 1),
        ("slurmQueryOverlap", -10, "sync_overlap", 0),
    ],
)
def test_clamps_warn(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    key: str,
    value: float,
    attr: str,
    clamped: float,
) -> None:
    path = write(tmp_path, {**MINIMAL, key: value})
    with caplog.at_level(logging.WARNING, logger="ccsa.config"):
        cfg = load(path)
    assert getattr(cfg, attr) == clamped
    (warning,) = cfg.warnings
    assert key in warning
    assert path in warning
    assert any(key in r.getMessage() for r in caplog.records)


def test_values_in_range_are_kept(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, {**MINIMAL, "slurmPollInterval": 1, "slurmMaxRetries": 0}))
    assert (cfg.slurm_poll_interval, cfg.slurm_max_retries, cfg.warnings) == (1, 0, ())


def test_world_readable_file_warns(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL, mode=0o644)
    (warning,) = load(path).warnings
    assert path in warning
    assert f"chmod 0600 {path}" in warning


def test_removed_key_gets_a_specific_hint(tmp_path: Path) -> None:
    (warning,) = load(write(tmp_path, {**MINIMAL, "ipcSockPath": "/x"})).warnings
    assert "prepSockListenPath" in warning


def test_keys_match_case_insensitively_like_upstream(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, {**MINIMAL, "SlurmPollInterval": 30}))
    assert cfg.slurm_poll_interval == 30
    (warning,) = cfg.warnings
    assert "'SlurmPollInterval' is read as 'slurmPollInterval'" in warning


def test_unknown_key_without_close_match(tmp_path: Path) -> None:
    (warning,) = load(write(tmp_path, {**MINIMAL, "zzz": 1})).warnings
    assert "'zzz'" in warning
    assert "did you mean" not in warning


# (config content, key the message must name, fragment of the message)
ERRORS: list[tuple[str, dict[str, Any] | str, str | None, str]] = [
    ("bad-json", '{"ccRestUrl": "http://x",\n "ccRestJwt": "t",}', None, "line 2"),
    ("not-object", "[1, 2]", None, "one JSON object"),
    ("wrong-type", {**MINIMAL, "slurmMaxRetries": "ten"}, "slurmMaxRetries", "Expected `int`"),
    ("wrong-type-bool", {**MINIMAL, "ccRestSubmitJobs": "yes"}, "ccRestSubmitJobs", "`bool`"),
    ("null", {**MINIMAL, "natsServer": None}, "natsServer", "null"),
    (
        "bad-gpu-regex",
        {**MINIMAL, "gpuPciAddrs": {"node[": ["0:0:1.0"]}},
        "gpuPciAddrs['node[']",
        "invalid regex",
    ),
    (
        "bad-gpu-list",
        {**MINIMAL, "gpuPciAddrs": {"n.*": "0:0:1.0"}},
        "gpuPciAddrs['n.*']",
        "list of PCI",
    ),
    ("bad-ignore-regex", {**MINIMAL, "ignoreHosts": "(a"}, "ignoreHosts", "invalid regex"),
    (
        "bad-listen-sock",
        {**MINIMAL, "prepSockListenPath": "udp:1.2.3.4:5"},
        "prepSockListenPath",
        "unknown protocol",
    ),
    (
        "bad-connect-sock",
        {**MINIMAL, "prepSockConnectPath": "tcp:h:99999"},
        "prepSockConnectPath",
        "above 65535",
    ),
    ("missing-url", {"ccRestJwt": JWT}, "ccRestUrl", "required"),
    ("missing-jwt", {"ccRestUrl": "http://x"}, "ccRestJwt", "required"),
    ("empty-jwt", {**MINIMAL, "ccRestJwt": " "}, "ccRestJwt", "empty"),
    ("bad-url", {**MINIMAL, "ccRestUrl": "cc.example:8080"}, "ccRestUrl", "http"),
    ("nowhere", {**MINIMAL, "ccRestSubmitJobs": False}, "ccRestSubmitJobs", "natsServer"),
    ("nats-port", {**MINIMAL, "natsPort": 0}, "natsPort", "1..65535"),
    ("max-span", {**MINIMAL, "slurmQueryMaxSpan": 0}, "slurmQueryMaxSpan", "greater than 0"),
    ("timeout", {**MINIMAL, "slurmCommandTimeout": -1}, "slurmCommandTimeout", "greater than 0"),
    (
        "creds",
        {**MINIMAL, "natsCredsFile": "/nonexistent/x.creds"},
        "natsCredsFile",
        "not an existing file",
    ),
    ("bin-dir", {**MINIMAL, "slurmBinDir": "/nonexistent/bin"}, "slurmBinDir", "directory"),
    ("metrics", {**MINIMAL, "metricsListen": "localhost"}, "metricsListen", "HOST:PORT"),
]


@pytest.mark.parametrize(("name", "content", "key", "fragment"), ERRORS, ids=[e[0] for e in ERRORS])
def test_config_errors_name_file_and_key(
    tmp_path: Path, name: str, content: dict[str, Any] | str, key: str | None, fragment: str
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.file == path
    assert info.value.key == key
    assert fragment in str(info.value)
    assert path in str(info.value)
    assert JWT not in str(info.value)


def test_missing_and_unreadable_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.json")
    with pytest.raises(ConfigError, match="file not found") as info:
        load(missing)
    assert info.value.file == missing
    with pytest.raises(ConfigError, match="directory"):
        load(str(tmp_path))


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    assert ADAPTER, "the cc-slurm-adapter console script is not installed next to python"
    return subprocess.run(
        [ADAPTER, *args], capture_output=True, text=True, timeout=60, env={"PATH": os.defpath}
    )


CLI_CASES = [
    ("missing-file", None, None, "file not found"),
    ("bad-json", '{"ccRestUrl": ', None, "not valid JSON"),
    ("wrong-type", {**MINIMAL, "natsPort": "4222"}, "natsPort", "Expected `int`"),
    ("bad-regex", {**MINIMAL, "gpuPciAddrs": {"a(": []}}, "gpuPciAddrs", "invalid regex"),
    ("bad-sock", {**MINIMAL, "prepSockListenPath": "tcp:x"}, "prepSockListenPath", "port"),
    ("missing-key", {"ccRestUrl": "http://x"}, "ccRestJwt", "required"),
]


@pytest.mark.parametrize(
    ("name", "content", "key", "fragment"), CLI_CASES, ids=[c[0] for c in CLI_CASES]
)
def test_cli_config_error_exits_2_with_one_line(
    tmp_path: Path,
    name: str,
    content: dict[str, Any] | str | None,
    key: str | None,
    fragment: str,
) -> None:
    path = str(tmp_path / "missing.json") if content is None else write(tmp_path, content)
    proc = _run_cli("-daemon", "-config", path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert path in lines[0]
    assert fragment in lines[0]
    if key:
        assert key in lines[0]
    assert JWT not in proc.stderr


def test_cli_unknown_key_warns_on_stderr_before_daemon_starts(tmp_path: Path) -> None:
    """Unknown key: a warning naming it and the closest key; here the daemon then fails on the
    config's next problem (missing JWT), so the warning is seen without starting a daemon."""
    path = write(tmp_path, {"ccRestUrl": "http://x", "slurmPolInterval": 5})
    proc = _run_cli("--daemon", "--config", path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    warning, error = proc.stderr.strip().splitlines()
    assert "'slurmPolInterval'" in warning
    assert "did you mean 'slurmPollInterval'" in warning
    assert path in warning
    assert "WARNING" in warning
    assert "ccRestJwt" in error
    assert path in error


def test_secrets_never_show(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = load(write(tmp_path, {**MINIMAL, "natsServer": "n", "natsPassword": "pa55word-xyz"}))
    for text in (repr(cfg), str(cfg), f"{cfg.cc_rest_jwt}", repr(cfg.nats_password)):
        assert JWT not in text
        assert "pa55word-xyz" not in text
    assert cfg.nats_password.get() == "pa55word-xyz"
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert not Secret("")
    assert repr(Secret("")) == "Secret('')"
    # registered for redaction: a log line that carries the token shows *** instead
    record = logging.LogRecord("ccsa.x", logging.ERROR, __file__, 1, "auth %s", (JWT,), None)
    assert logs.scrub(record.getMessage()) == "auth ***"


def test_make_config_validates_and_accepts_typed_values() -> None:
    cfg = make_config(
        prep_sock_listen_path=TcpAddr("127.0.0.1", 0),
        prep_sock_connect_path="unix:/tmp/s",
        ignore_hosts=re.compile("^x"),
        gpu_pci_addrs={"^g": ["0:1.0"]},
        nats_password=Secret("pw-123456"),
        slurm_poll_interval=0,
    )
    assert cfg.prep_sock_listen_path == TcpAddr("127.0.0.1", 0)
    assert cfg.prep_sock_connect_path == UnixAddr("/tmp/s")
    assert cfg.ignore_hosts is not None
    assert cfg.ignore_hosts.pattern == "^x"
    assert ConvertOptions.from_config(cfg).pci_list("g1") == ("0:1.0",)
    assert cfg.slurm_poll_interval == 1
    assert cfg.warnings
    assert make_config(gpu_pci_addrs=cfg.gpu_pci_addrs).gpu_pci_addrs == cfg.gpu_pci_addrs
    assert make_config(nats_port=1).nats_port == 1
    with pytest.raises(ConfigError, match="natsPort"):
        make_config(nats_port="x")
    with pytest.raises(TypeError, match="no_such"):
        make_config(no_such=1)


def test_docs_table_lists_every_key() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "config.md").read_text()
    for key in config.KEYS.values():
        assert f"`{key}`" in doc, key
    for key in config.NEW_KEYS:
        row = next(line for line in doc.splitlines() if line.startswith(f"| `{key}`"))
        assert "new" in row.lower(), key


def test_sibling_numbering_is_spread_or_consecutive() -> None:
    opts = ConvertOptions.from_config(make_config(sibling_numbering="consecutive"))
    assert opts.layouts.numbering == "consecutive"
    with pytest.raises(ConfigError, match="siblingNumbering") as info:
        make_config(sibling_numbering="linux")
    assert "consecutive" in str(info.value)
