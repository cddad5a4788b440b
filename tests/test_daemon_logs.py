"""What a healthy daemon writes to the journal at the default level (docs/admin-guide.md, "Log
lines"): one INFO line per sync and cluster, logger ``ccsa.summary``, and no other INFO line.

A real daemon subprocess as the unit starts it (no ``-debug``: the default level), under a
``JOURNAL_STREAM`` so every line carries its syslog priority, against the simulated Slurm and the
stand-in cc-backend."""

from __future__ import annotations

import json
import os
import signal
import sys
from functools import partial
from pathlib import Path

import trio

from ccsa.sim.ccbackend.clusters import minimal
from ccsa.sim.ccbackend.server import StandIn
from ccsa.sim.ccbackend.state import Backend
from ccsa.sim.slurm import SimCluster


async def test_default_level_logs_one_info_line_per_sync(tmp_path: Path, short_dir: Path) -> None:
    sim = SimCluster.create(tmp_path / "sim", clusters=("c1",), clock="real")
    standin = StandIn(Backend({"c1": minimal("c1")}))
    conf = tmp_path / "config.json"
    stderr = tmp_path / "stderr"
    async with trio.open_nursery() as nursery:
        await nursery.start(standin.serve)
        conf.write_text(
            json.dumps(
                {
                    "ccRestUrl": standin.url,
                    "ccRestJwt": "test-jwt",
                    "pidFilePath": str(tmp_path / "daemon.pid"),
                    "prepSockListenPath": str(short_dir / "d.sock"),
                    "prepSockConnectPath": str(short_dir / "d.sock"),
                    "lastRunPath": str(tmp_path / "lib" / "lastrun"),
                    "slurmBinDir": str(sim.bin_dir),
                    "slurmPollInterval": 1,
                    "slurmQueryDelay": 1,
                    "gpuPciAddrs": {".": [f"0000:{i:02x}:00.0" for i in range(8)]},
                }
            )
        )
        conf.chmod(0o600)
        env = {**os.environ, "JOURNAL_STREAM": "8:1"}
        argv = [sys.executable, "-m", "ccsa", "-daemon", "-config", str(conf)]
        with stderr.open("wb") as err:
            proc: trio.Process = await nursery.start(
                partial(trio.run_process, argv, env=env, stderr=err, check=False)
            )
            with trio.fail_after(60):
                while stderr.read_text().count("<6>") < 3:
                    await trio.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            with trio.fail_after(30):
                assert await proc.wait() == 0
        nursery.cancel_scope.cancel()
    lines = stderr.read_text().splitlines()
    info = [line for line in lines if line.startswith("<6>")]
    assert len(info) >= 3, lines
    for line in info:
        assert line.startswith("<6>ccsa.summary: c1: synced "), line
        assert "jobs seen" in line, line
    assert not [line for line in lines if line.startswith("<7>")], lines
