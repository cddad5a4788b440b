"""The daemon, the stand-in cc-backend and a NATS subscriber as real processes, for the suite.

One job: start and stop ``cc-slurm-adapter -daemon`` (config written into a work directory),
``python -m ccsa.sim.ccbackend`` (a real HTTP server on 127.0.0.1) and a core-NATS subscriber,
read what the stand-in stored, and compute the resources a job must have from squeue's raw JSON
(independently of ccsa). Shared by ``test_real_slurm.py`` and ``test_lifecycles.py``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .testbed import ChrootHook, Testbed, allocated_cores, gpu_indices

#: gpuPciAddrs for the test bed's nodes: GRES index i -> PCI_ADDRS[i] (NVML order).
PCI_ADDRS = ("0000:01:00.0", "0000:41:00.0", "0000:81:00.0", "0000:c1:00.0")
GPU_MAP = {"^node[12]$": list(PCI_ADDRS)}


class StandIn:
    """The stand-in cc-backend (``python -m ccsa.sim.ccbackend``) as a real process on loopback."""

    def __init__(self, workdir: Path, cluster: str) -> None:
        self.token_file = workdir / "standin.jwt"
        self.request_file = workdir / "requests.jsonl"
        self.log = (workdir / "standin.log").open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "ccsa.sim.ccbackend", "--cluster",
                f"{cluster}=main:node[1-9]", "--write-token", str(self.token_file),
                "--request-log", str(self.request_file),
            ],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.close()
            pytest.fail(f"stand-in cc-backend did not start: {line!r}, see {self.log.name}")
        self.url = line.removeprefix("listening on ")
        self.token = self.token_file.read_text().strip()
        self.cluster = cluster

    def jobs(self) -> dict[int, list[dict[str, Any]]]:
        """Every job the stand-in stored for the cluster (job id -> records, newest first)."""
        out: dict[int, list[dict[str, Any]]] = {}
        page = 1
        with httpx.Client(base_url=self.url, headers={"X-Auth-Token": self.token}) as client:
            while True:
                resp = client.get(
                    "/api/jobs/",
                    params={
                        "cluster": self.cluster, "with-metadata": "true",
                        "items-per-page": "500", "page": str(page),
                    },
                )  # fmt: skip
                resp.raise_for_status()
                batch = resp.json()["jobs"]
                for job in batch:
                    out.setdefault(int(job["jobId"]), []).append(job)
                if len(batch) < 500:
                    return out
                page += 1

    def requests(self, job_id: int | None = None) -> list[dict[str, Any]]:
        """Every start_job/stop_job the stand-in answered (refused ones too), oldest first:
        ``{"endpoint", "status", "body", "response"}``; only ``job_id``'s when given."""
        if not self.request_file.exists():
            return []
        lines = [json.loads(x) for x in self.request_file.read_text().splitlines() if x]
        return [x for x in lines if job_id is None or x["body"].get("jobId") == job_id]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()


class AdapterDaemon:
    """``cc-slurm-adapter -daemon -config FILE`` as a real process, config in ``workdir``."""

    def __init__(
        self, workdir: Path, standin: StandIn, tb: Testbed, hook: ChrootHook, **keys: Any
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = {
            "ccRestUrl": standin.url,
            "ccRestJwt": standin.token,
            "slurmBinDir": str(tb.bindir),
            "pidFilePath": str(workdir / "daemon.pid"),
            "prepSockListenPath": str(hook.socket_host),
            "prepSockConnectPath": str(hook.socket_host),
            "lastRunPath": str(workdir / "lastrun"),
            "stateDbPath": str(workdir / "state.sqlite3"),
            "slurmPollInterval": 2,
            "slurmQueryDelay": 1,
            "gpuPciAddrs": GPU_MAP,
            **keys,
        }
        self.config_path = workdir / "config.json"
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(self.config, fh, indent=1)
        self.log_path = workdir / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [ADAPTER, "-daemon", "-config", str(self.config_path), "-debug", "5"],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )

    def wait_for_log(self, text: str, *, timeout: float) -> None:
        def seen() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log_tail()}")
            return text in self.log_path.read_text(errors="replace")

        deadline = time.monotonic() + timeout
        while not seen():
            if time.monotonic() > deadline:
                raise AssertionError(f"daemon log has no {text!r} after {timeout} s:\n"
                                     f"{self.log_tail()}")  # fmt: skip
            time.sleep(0.2)

    def log_tail(self, lines: int = 25) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int:
        """SIGTERM and wait; the exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


ADAPTER = str(Path(sys.executable).with_name("cc-slurm-adapter"))


class NatsTap:
    """A core-NATS subscriber speaking the text protocol (INFO/CONNECT/SUB/MSG/PING) in a thread.

    Hand-written instead of nats-py: nats-py is asyncio-only, and these tests are synchronous;
    the subscribe side of the protocol is five line types.
    """

    def __init__(self, port: int, subject: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.rfile = self.sock.makefile("rb")
        if not self.rfile.readline().startswith(b"INFO "):
            raise AssertionError("nats-server did not greet with INFO")
        self.sock.sendall(
            b'CONNECT {"verbose":false,"pedantic":false}\r\n'
            + f"SUB {subject} 1\r\nPING\r\n".encode()
        )
        while (line := self.rfile.readline()) != b"PONG\r\n":
            if not line or line.startswith(b"-ERR"):
                raise AssertionError(f"nats-server refused the subscription: {line!r}")
        self.sock.settimeout(None)
        self.messages: list[bytes] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while line := self.rfile.readline():
                if line.startswith(b"MSG "):
                    size = int(line.split()[-1])
                    self.messages.append(self.rfile.read(size + 2)[:-2])
                elif line.startswith(b"PING"):
                    self.sock.sendall(b"PONG\r\n")
        except (OSError, ValueError):
            return

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)
        self.rfile.close()


_LINE = re.compile(r'^job,(?P<tags>\S+) event="(?P<event>(?:[^"\\]|\\.)*)" (?P<ts>\d+)$')


def decode_line(raw: bytes) -> tuple[dict[str, str], dict[str, Any]]:
    """One InfluxDB line of the daemon: its tags and the JSON body in ``event``."""
    m = _LINE.match(raw.decode())
    assert m is not None, raw
    tags = dict(t.split("=", 1) for t in m["tags"].split(","))
    event = json.loads(re.sub(r"\\(.)", r"\1", m["event"]))
    return tags, event


def wait_standin(
    standin: StandIn, want: dict[int, str], *, timeout: float
) -> dict[int, dict[str, Any]]:
    """Wait until each job id has a record in state ``want[id]``; return those records."""
    found: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while True:
        stored = standin.jobs()
        for job_id, state in want.items():
            for rec in stored.get(job_id, []):
                if rec["jobState"] == state:
                    found[job_id] = rec
        if len(found) == len(want) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def expected_resources(queued: dict[str, Any]) -> list[dict[str, Any]]:
    """cc-backend resources computed from squeue's raw JSON, independently of ccsa."""
    cores = allocated_cores(queued)
    gpus = gpu_indices(queued)
    hosts = [a["name"] for a in queued["job_resources"]["nodes"]["allocation"]]
    out: list[dict[str, Any]] = []
    for i, host in enumerate(hosts):
        res: dict[str, Any] = {"hostname": host, "hwthreads": cores[host]}
        if gpus and gpus[i]:
            res["accelerators"] = [PCI_ADDRS[g] for g in gpus[i]]
        out.append(res)
    return out
