"""Prolog/Epilog mode end to end: the real console script, real Unix and TCP sockets."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccsa import hook
from ccsa.sockaddr import TcpAddr, UnixAddr

REPO = Path(__file__).resolve().parents[1]
ADAPTER = shutil.which("cc-slurm-adapter", path=os.path.dirname(sys.executable))
HOOK_SH = REPO / "hooks" / "hook.sh"
HEAVY = ("trio", "httpx", "msgspec", "cyclopts", "anyio", "asyncio")

SLURM_ENV = {
    "SLURM_SCRIPT_CONTEXT": "prolog_slurmctld",
    "SLURM_JOB_ID": "4711",
    "SLURM_CLUSTER_NAME": "fritz",
    "SLURM_JOB_NODELIST": "f[0101-0104]",
    "SLURM_JOB_PARTITION": "singlenode",
    "SLURM_JOB_USER": "jürgen",  # non-ASCII survives the trip
    "SLURM_NEW_VARIABLE": "x",
    "CUDA_VISIBLE_DEVICES": "0,1",
    "UNRELATED": "not sent",
}


class Listener:
    """Accepts connections in a thread and keeps what each one sent until EOF."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.received: list[bytes] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(30)
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            chunks = []
            while data := conn.recv(65536):
                chunks.append(data)
        self.received.append(b"".join(chunks))
        self.done.set()

    def message(self) -> dict[str, str]:
        assert self.done.wait(30), "the hook never sent anything"
        (raw,) = self.received
        decoded: dict[str, str] = json.loads(raw)
        return decoded


@pytest.fixture
def unix_listener(tmp_path: Path) -> Iterator[tuple[str, Listener]]:
    path = str(tmp_path / "d.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(8)
    with sock:
        yield path, Listener(sock)


def write_config(tmp_path: Path, connect: str) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"ccRestJwt": "x", "prepSockConnectPath": connect}))
    return str(path)


def run_adapter(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert ADAPTER, "cc-slurm-adapter console script not installed next to python"
    return subprocess.run(
        [ADAPTER, *args],
        env={"PATH": os.defpath, **(SLURM_ENV if env is None else env)},
        capture_output=True,
        text=True,
        timeout=30,
    )


def check_payload(message: dict[str, str]) -> None:
    for name, value in SLURM_ENV.items():
        if name == "UNRELATED":
            assert name not in message
        else:
            assert message[name] == value
    # upstream's fixed set is always there, "" when slurmctld did not set it
    assert set(hook.UPSTREAM_VARS) <= set(message)
    assert message["SLURM_ARRAY_JOB_ID"] == ""


def test_unix_socket_upstream_spelling(tmp_path: Path, unix_listener: tuple[str, Listener]) -> None:
    path, listener = unix_listener
    proc = run_adapter("-config", write_config(tmp_path, path))
    assert (proc.returncode, proc.stderr) == (0, "")
    check_payload(listener.message())


def test_unix_prefix_and_gnu_spelling(tmp_path: Path, unix_listener: tuple[str, Listener]) -> None:
    path, listener = unix_listener
    proc = run_adapter(f"--config={write_config(tmp_path, 'unix:' + path)}", "-debug", "5")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert listener.message()["SLURM_JOB_ID"] == "4711"


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_tcp_socket(tmp_path: Path, family: socket.AddressFamily) -> None:
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.bind((host, 0))
    except OSError as exc:
        pytest.skip(f"no {host} on this machine: {exc}")
    sock.listen(8)
    with sock:
        listener = Listener(sock)
        port = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        proc = run_adapter("-config", write_config(tmp_path, f"tcp:{shown}:{port}"))
        assert (proc.returncode, proc.stderr) == (0, "")
        check_payload(listener.message())


def test_epilog_context_is_accepted(tmp_path: Path, unix_listener: tuple[str, Listener]) -> None:
    path, listener = unix_listener
    env = {**SLURM_ENV, "SLURM_SCRIPT_CONTEXT": "epilog_slurmctld", "SLURM_JOB_EXIT_CODE2": "0:0"}
    proc = run_adapter("-config", write_config(tmp_path, path), env=env)
    assert proc.returncode == 0
    assert listener.message()["SLURM_JOB_EXIT_CODE2"] == "0:0"


def test_no_daemon_exits_1_with_one_line(tmp_path: Path) -> None:
    missing = str(tmp_path / "nobody.sock")
    proc = run_adapter("-config", write_config(tmp_path, missing))
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1
    assert missing in lines[0]
    assert "4711" in lines[0]
    assert "Traceback" not in proc.stderr


def test_connection_refused_on_tcp(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nobody listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = run_adapter("-config", write_config(tmp_path, f"tcp:127.0.0.1:{port}"))
    assert proc.returncode == 1
    assert len(proc.stderr.splitlines()) == 1
    assert f"tcp:127.0.0.1:{port}" in proc.stderr


def test_stuck_daemon_hits_the_deadline(tmp_path: Path) -> None:
    """A daemon that never accepts (full backlog): connect retries, the deadline ends it."""
    path = str(tmp_path / "stuck.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(0)
        fillers = []
        for _ in range(4):  # fill the backlog so the next connect blocks
            filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            filler.setblocking(False)
            try:
                filler.connect(path)
            except BlockingIOError:
                filler.close()
                break
            fillers.append(filler)
        try:
            with pytest.raises(TimeoutError):
                hook.send(UnixAddr(path), b"{}", timeout=0.3)
            proc = run_adapter("-config", write_config(tmp_path, path))
        finally:
            for filler in fillers:
                filler.close()
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert "timed out" in line


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"SLURM_JOB_ID": "1"}, "SLURM_SCRIPT_CONTEXT is not set"),
        ({"SLURM_JOB_ID": "1", "SLURM_SCRIPT_CONTEXT": "prolog"}, "'prolog'"),
        ({"SLURM_SCRIPT_CONTEXT": "prolog_slurmctld"}, "SLURM_JOB_ID is not set"),
    ],
)
def test_outside_slurmctld_is_refused(env: dict[str, str], fragment: str) -> None:
    proc = run_adapter(env=env)
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert fragment in line


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('{"prepSockConnectPath": "udp:x:1"}', "unknown protocol"),
        ('{"prepSockConnectPath": 5}', "must be a string"),
        ('{"prepSockConnectPath": ', "not valid JSON"),
    ],
)
def test_bad_connect_path_names_key_and_file(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(content)
    proc = run_adapter("-config", str(path))
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert fragment in line
    assert str(path) in line


def test_unreadable_explicit_config_is_an_error(tmp_path: Path) -> None:
    proc = run_adapter("-config", str(tmp_path / "absent.json"))
    assert proc.returncode == 1
    assert "absent.json" in proc.stderr


def test_default_socket_without_config(tmp_path: Path) -> None:
    """No -config and no readable default file: upstream's default socket is used."""
    addr, origin = hook.connect_address(None)
    if os.path.exists(hook.DEFAULT_CONFIG_PATH):
        pytest.skip("this machine has a real /etc/cc-slurm-adapter/config.json")
    assert (addr, origin) == (UnixAddr("/run/cc-slurm-adapter/daemon.sock"), "default")
    config = tmp_path / "no-key.json"
    config.write_text('{"ccRestJwt": "x"}')
    assert hook.connect_address(str(config))[0] == UnixAddr(hook.DEFAULT_SOCK)
    config.write_text('{"prepSockConnectPath": "tcp::7"}')
    assert hook.connect_address(str(config))[0] == TcpAddr("", 7)
    config.write_text('{"PrepSockConnectPath": "tcp:[::1]:8"}')
    assert hook.connect_address(str(config))[0] == TcpAddr("::1", 8)
    config.write_text('["prepSockConnectPath"]')
    with pytest.raises(hook.HookError, match="JSON object"):
        hook.connect_address(str(config))


def import_profile(
    argv: list[str], env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run a real process under ``-X importtime``; its result and every module it imported."""
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return proc, imported


class Installed:
    """ccsa as a non-editable install lays it out, linked like the admin guide's
    /opt/cc-slurm-adapter/cc-slurm-adapter -> venv/bin/cc-slurm-adapter.

    ``venv/bin/python`` runs the real interpreter under ``-X importtime`` (``-I`` would ignore
    PYTHONPROFILEIMPORTTIME) and logs the arguments the launcher gave it, one JSON list a line;
    ``site-packages/ccsa`` links the checkout's package (what pip would copy there).
    """

    def __init__(self, root: Path, *, link_dir: str = "opt") -> None:
        bindir = root / "venv" / "bin"
        site = root / "venv" / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
        (site / "site-packages").mkdir(parents=True)
        bindir.mkdir(parents=True)
        (site / "site-packages" / "ccsa").symlink_to(REPO / "ccsa")
        self.argv_log = root / "python-argv.log"
        log_argv = "import json,sys; print(json.dumps(sys.argv[1:]))"
        python = bindir / "python"
        python.write_text(
            f'#!/bin/sh\n{sys.executable} -I -S -c {log_argv!r} "$@" >> {self.argv_log}\n'
            f'exec {sys.executable} -X importtime "$@"\n'
        )
        python.chmod(0o755)
        shutil.copy(REPO / "scripts" / "cc-slurm-adapter", bindir / "cc-slurm-adapter")
        link = root / link_dir / "cc-slurm-adapter"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(bindir / "cc-slurm-adapter")
        self.command = str(link)
        self.script = str(bindir / "cc-slurm-adapter")

    def calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.argv_log.read_text().splitlines()]


def test_installed_launcher_runs_the_hook_with_I_S(
    tmp_path: Path, unix_listener: tuple[str, Listener]
) -> None:
    """slurmctld's context: python -I -S on the script's real path (through the link, which
    sits in the venv's parent as the admin guide has it: found without running readlink)."""
    path, listener = unix_listener
    installed = Installed(tmp_path, link_dir=".")
    proc, imported = import_profile(
        [installed.command, "-config", write_config(tmp_path, path)],
        {"PATH": os.defpath, **SLURM_ENV},
    )
    assert proc.returncode == 0, proc.stderr
    check_payload(listener.message())
    assert installed.calls() == [
        ["-I", "-S", installed.script, "-config", f"{tmp_path}/config.json"]
    ]
    assert "ccsa.hook" in imported
    for name in HEAVY:
        assert not {m for m in imported if m == name or m.startswith(name + ".")}, name


def test_installed_launcher_runs_anything_else_with_site(tmp_path: Path) -> None:
    """Outside slurmctld (daemon, subcommands) a plain interpreter, found through a link that
    readlink resolves."""
    installed = Installed(tmp_path, link_dir="elsewhere")
    proc = subprocess.run(
        [installed.command, "version"],
        env={"PATH": os.defpath},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ccsa ")
    assert installed.calls() == [[installed.script, "version"]]


def test_launcher_started_with_I_S_turns_site_on_for_subcommands(tmp_path: Path) -> None:
    """A subcommand reached with -I -S (hook context, but not hook arguments) gets site first:
    the cyclopts App and its dependencies import as in a normal start."""
    installed = Installed(tmp_path)
    proc = subprocess.run(
        [installed.command, "version"],
        env={"PATH": os.defpath, **SLURM_ENV},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ccsa ")
    assert installed.calls() == [["-I", "-S", installed.script, "version"]]


# What the hook may import beyond ``python -I -S -c pass`` (no site: not even os). ``_json`` (the
# C scanner) only for a config file that sets prepSockConnectPath.
HOOK_MODULES = {"ccsa", "ccsa.cli", "ccsa.hook", "ccsa.sockaddr", "_socket", "_json"}


@pytest.mark.parametrize("sets_path", [True, False])
def test_hook_path_imports_only_its_own_modules(tmp_path: Path, sets_path: bool) -> None:
    """No os, json, socket, re, enum, typing...: each would cost a sizeable share of the
    start-up that bench_hook measures, measured through the installed launcher."""
    installed = Installed(tmp_path)
    config = tmp_path / "config.json"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        if sets_path:
            sock_path = str(tmp_path / "d.sock")
            server.bind(sock_path)
            server.listen(8)
            config.write_text(json.dumps({"ccRestJwt": "x", "prepSockConnectPath": sock_path}))
        elif os.path.exists(hook.DEFAULT_SOCK):
            pytest.skip(f"something listens at {hook.DEFAULT_SOCK}: the test would message it")
        else:  # the default socket, where nobody listens: the error path, exit 1
            config.write_text(json.dumps({"ccRestJwt": "x"}))
        proc, imported = import_profile(
            [installed.command, "-config", str(config)], {"PATH": os.defpath, **SLURM_ENV}
        )
    assert proc.returncode == (0 if sets_path else 1), proc.stderr
    if not sets_path:
        assert f"unix:{hook.DEFAULT_SOCK}" in proc.stderr
    _, baseline = import_profile([sys.executable, "-X", "importtime", "-I", "-S", "-c", "pass"], {})
    extra = imported - baseline
    assert "ccsa.hook" in extra  # the profile is real
    assert extra <= HOOK_MODULES, sorted(extra - HOOK_MODULES)
    assert ("_json" in extra) == sets_path
    for name in ("os", "json", "socket", "re", "enum", "typing", "dataclasses", "selectors"):
        assert name not in extra, name


def test_console_script_skips_the_interpreter_teardown(
    tmp_path: Path, unix_listener: tuple[str, Listener]
) -> None:
    """The hook ends with os._exit: an atexit handler registered before it never runs, and the
    message and the exit status are not lost on the way."""
    path, listener = unix_listener
    assert ADAPTER
    marker = tmp_path / "teardown-ran"
    driver = (
        "import atexit, runpy, sys\n"
        f"atexit.register(lambda: open({str(marker)!r}, 'w').close())\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    config = write_config(tmp_path, path)
    proc = subprocess.run(
        [sys.executable, "-c", driver, ADAPTER, "-config", config],
        env={"PATH": os.defpath, **SLURM_ENV},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    check_payload(listener.message())
    assert not marker.exists()
    # the error path: status 1 and the whole line, still without teardown
    missing = write_config(tmp_path, str(tmp_path / "none.sock"))
    proc = subprocess.run(
        [sys.executable, "-c", driver, ADAPTER, "-config", missing],
        env={"PATH": os.defpath, **SLURM_ENV},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert line.endswith("is cc-slurm-adapter -daemon running?")
    assert not marker.exists()


def test_send_is_bounded_when_the_daemon_does_not_read(tmp_path: Path) -> None:
    path = str(tmp_path / "slow.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(1)
        with pytest.raises(TimeoutError):  # 64 MiB never fit the socket buffers
            hook.send(UnixAddr(path), b"x" * (64 << 20), timeout=0.3)


def dumps(env: dict[str, str]) -> bytes:
    return json.dumps(env, ensure_ascii=False, separators=(",", ":")).encode()


def test_encode_matches_json() -> None:
    env = {"A": 'quote " back \\ nl \n', "B": "ünïcode ✓ \U0001f600", "C": "", "D": "\x00\x1f\x7f"}
    assert json.loads(hook.encode(env)) == env
    assert hook.encode(env) == dumps(env)


@given(st.dictionaries(st.text(), st.text()))
def test_encode_is_json_dumps_for_any_text(env: dict[str, str]) -> None:
    assert hook.encode(env) == dumps(env)


# Lone surrogates: what os.environ makes of bytes that are not UTF-8 (U+DC80-U+DCFF), and others.
SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"])


@given(st.dictionaries(st.text(), st.text(st.one_of(st.characters(), SURROGATES))))
def test_encode_never_fails_and_stays_valid_utf8_json(env: dict[str, str]) -> None:
    import msgspec  # the daemon's decoder, which rejects lone surrogate escapes

    payload = hook.encode(env)
    decoded = msgspec.json.decode(payload)
    assert json.loads(payload.decode("utf-8")) == decoded
    assert set(decoded) == set(env)
    for name, value in env.items():
        if not any(0xD800 <= ord(c) <= 0xDFFF for c in value):
            assert decoded[name] == value


def test_undecodable_bytes_are_kept_as_hex() -> None:
    env = {"SLURM_JOB_NAME": os.fsdecode(b"caf\xe9 \xff na\xc3\xafve")}
    assert "\udce9" in env["SLURM_JOB_NAME"]  # what os.environ holds for such bytes
    assert json.loads(hook.encode(env)) == {"SLURM_JOB_NAME": "caf\\xe9 \\xff naïve"}
    assert json.loads(hook.encode({"X": "a\ud800b"})) == {"X": "a\\ud800b"}


def test_undecodable_environment_reaches_the_daemon_parser(
    tmp_path: Path, unix_listener: tuple[str, Listener]
) -> None:
    """A job whose name or directory is not UTF-8 still produces a message the daemon takes."""
    from ccsa.daemon.prep import PrepEvent, parse_message

    path, listener = unix_listener
    env = {
        **SLURM_ENV,
        "SLURM_JOB_NAME": os.fsdecode(b"r\xe9sultat"),
        "SLURM_JOB_WORK_DIR": os.fsdecode(b"/home/\xff\xfe"),
    }
    proc = run_adapter("-config", write_config(tmp_path, path), env=env)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert listener.done.wait(30)
    (raw,) = listener.received
    event = parse_message(raw)
    assert isinstance(event, PrepEvent)
    assert (event.cluster, event.job_id) == ("fritz", 4711)
    message = json.loads(raw)
    assert message["SLURM_JOB_NAME"] == "r\\xe9sultat"
    assert message["SLURM_JOB_WORK_DIR"] == "/home/\\xff\\xfe"


def run_hook_sh(adapter: str, config: str | None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.defpath, "CCSA_ADAPTER": adapter, **SLURM_ENV}
    if config:
        env["CCSA_CONFIG"] = config
    return subprocess.run(
        ["/bin/sh", str(HOOK_SH)], env=env, capture_output=True, text=True, timeout=60
    )


def test_hook_sh_delivers(tmp_path: Path, unix_listener: tuple[str, Listener]) -> None:
    path, listener = unix_listener
    assert ADAPTER
    proc = run_hook_sh(ADAPTER, write_config(tmp_path, path))
    assert (proc.returncode, proc.stderr) == (0, "")
    check_payload(listener.message())


def test_hook_sh_exits_0_without_daemon(tmp_path: Path) -> None:
    assert ADAPTER
    proc = run_hook_sh(ADAPTER, write_config(tmp_path, str(tmp_path / "none.sock")))
    assert proc.returncode == 0
    assert "cannot reach the daemon" in proc.stderr


def test_hook_sh_exits_0_when_adapter_is_missing(tmp_path: Path) -> None:
    proc = run_hook_sh(str(tmp_path / "not-installed"), None)
    assert proc.returncode == 0
    assert "not-installed" in proc.stderr


def test_hook_sh_is_executable() -> None:
    assert os.access(HOOK_SH, os.X_OK)
    assert HOOK_SH.read_text().rstrip().endswith("exit 0")
