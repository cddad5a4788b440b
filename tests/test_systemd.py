"""systemd integration: the unit file's ExecStart runs the daemon as systemd would, and the
daemon (a real subprocess) speaks sd_notify on a real ``NOTIFY_SOCKET`` datagram socket:
READY=1 once serving, STATUS= lines, WATCHDOG=1 pings at WatchdogSec/2, STOPPING=1 on SIGTERM."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import sys
from functools import partial
from pathlib import Path

import trio

from ccsa import cli
from ccsa.sim.ccbackend.clusters import minimal
from ccsa.sim.ccbackend.server import StandIn
from ccsa.sim.ccbackend.state import Backend
from ccsa.sim.slurm import SimCluster

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "cc-slurm-adapter.service"


def unit_service() -> dict[str, str]:
    """The [Service] section of the unit (systemd syntax: KEY=VALUE, # comments)."""
    section = ""
    out: dict[str, str] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        if section == "Service":
            out[key.strip()] = value.strip()
    return out


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "min": 60, "h": 3600}
    for suffix in sorted(units, key=len, reverse=True):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * units[suffix]
    return float(value)


def test_unit_is_type_notify_with_watchdog() -> None:
    svc = unit_service()
    assert svc["Type"] == "notify"
    assert svc["NotifyAccess"] == "main"
    assert 10 <= seconds(svc["WatchdogSec"]) <= 600
    # upstream's documented invocation still works unchanged
    argv = shlex.split(svc["ExecStart"])
    assert argv[0] == "/opt/cc-slurm-adapter/cc-slurm-adapter"
    assert cli.normalize(argv[1:]) == [
        "--daemon",
        "--config",
        "/opt/cc-slurm-adapter/config.json",
    ]
    assert cli.hook_arguments(cli.normalize(argv[1:])) is False  # daemon, not hook mode


async def test_execstart_daemon_speaks_sd_notify(tmp_path: Path, short_dir: Path) -> None:
    sim = SimCluster.create(tmp_path / "sim", clusters=("c1",), clock="real")
    backend = Backend({"c1": minimal("c1")})
    standin = StandIn(backend)
    notify_path = short_dir / "notify"
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await sock.bind(str(notify_path))
    conf = tmp_path / "config.json"
    conf.write_text(
        json.dumps(
            {
                "ccRestUrl": "",  # filled below
                "ccRestJwt": "test-jwt",
                "pidFilePath": str(tmp_path / "run" / "daemon.pid"),
                "prepSockListenPath": str(short_dir / "d.sock"),
                "prepSockConnectPath": str(short_dir / "d.sock"),
                "lastRunPath": str(tmp_path / "lib" / "lastrun"),
                "slurmBinDir": str(sim.bin_dir),
                "slurmPollInterval": 1,
                "slurmQueryDelay": 1,
            }
        )
    )
    messages: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(standin.serve)
        raw = json.loads(conf.read_text())
        raw["ccRestUrl"] = standin.url
        conf.write_text(json.dumps(raw))
        conf.chmod(0o600)
        # ExecStart with the test's interpreter as the binary and the test's config
        svc = unit_service()
        args = shlex.split(svc["ExecStart"])[1:]
        args[args.index("-config") + 1] = str(conf)
        argv = [sys.executable, "-m", "ccsa", *args]
        env = dict(os.environ)
        env.update(
            NOTIFY_SOCKET=str(notify_path),
            WATCHDOG_USEC=str(int(0.4 * 1_000_000)),  # pings every 0.2 s
        )
        proc: trio.Process = await nursery.start(
            partial(trio.run_process, argv, env=env, check=False)
        )

        async def receive_until(pred: str, timeout: float = 60.0) -> None:
            with trio.fail_after(timeout):
                while not any(m.startswith(pred) for m in messages):
                    data = await sock.recv(4096)
                    messages.append(data.decode())

        await receive_until("READY=1")
        ready = next(m for m in messages if "READY=1" in m)
        assert f"MAINPID={proc.pid}" in ready
        assert await trio.Path(short_dir / "d.sock").exists()  # serving when READY=1 arrives
        await receive_until("WATCHDOG=1")
        count = sum(m == "WATCHDOG=1" for m in messages)
        with trio.fail_after(30):
            while sum(m == "WATCHDOG=1" for m in messages) < count + 3:
                messages.append((await sock.recv(4096)).decode())
        await receive_until("STATUS=")  # the ticker's one-line summary, on its own
        proc.send_signal(signal.SIGTERM)
        await receive_until("STOPPING=1")
        with trio.fail_after(30):
            assert await proc.wait() == 0
        nursery.cancel_scope.cancel()
    sock.close()
    # watchdog pings come before STOPPING; the READY line carries a status summary
    assert messages.index(ready) < messages.index("WATCHDOG=1")
    assert "STATUS=0 starts, 0 stops delivered" in ready
    assert any(m.startswith("STATUS=") and "outbox" in m for m in messages)
    stopping = next(m for m in messages if m.startswith("STOPPING=1"))
    assert "SIGTERM" in stopping
