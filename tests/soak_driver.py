"""The soak harness: thousands of simulated jobs through the real daemon under a fault schedule.

One `run_soak(plan)` call starts, on this machine and on loopback only:

* the simulated Slurm cluster (``ccsa.sim.slurm``) on the **wall clock** with a seeded workload
  of short jobs (seconds), its commands answering as real executables;
* the stand-in cc-backend (``ccsa.sim.ccbackend``) in this process, on a free port;
* a real ``nats-server`` (``tests.nats_server``), restartable;
* the daemon as a real subprocess, exactly as systemd runs it
  (``python -m ccsa -daemon -config FILE``), killed with SIGKILL and restarted several times;
* Prolog/Epilog hook messages for every start and end, sent to the daemon's socket.

While the workload runs, a seeded fault schedule (`fault_schedule`, pure) hits ccsa: cc-backend
down for longer than MinJobAge, bursts of 5xx, answers slower than the client timeout, answers
lost after cc-backend applied the request, NATS server restarts, Slurm commands that hang past
their timeout, print garbage or half a document or fail, a slurmdbd outage, and ``kill -9`` of
the daemon. Then every fault is cleared, the daemon drains, gets SIGTERM, and `verify` (pure)
checks the stand-in against Slurm's ground truth.

Why the wall clock: the daemon is a separate process and takes "now" from ``time.time`` (only the
in-process ``supervisor.main`` accepts an injected clock), so the cluster follows the real clock
and the schedule is compressed instead: jobs of 8-15 s, MinJobAge 15 s, a 2 s poll.

Capturability: a job's hwthreads/GPUs can only come from slurmctld, and ``squeue`` (as ccsa calls
it, without ``-t all``) lists a job only while it runs. A job counts as *capturable* when the
``squeue`` snapshot of one of the daemon's polls that succeeded (its ``synced A..B UTC`` log line;
the snapshot is the first ``squeue --all`` the simulator logged at or after B) saw it running,
``ccsa.sim.verdict.CAPTURE_MARGIN`` seconds clear of its start and end. Such a job must arrive with
exactly Slurm's hwthreads and GPU PCI addresses. Any other job must arrive with the right host
names (and is counted). Deriving this from the polls and snapshots that actually happened, not from
a model of the daemon's cadence, keeps the check exact on a loaded machine where a poll may take
tens of seconds. The check itself is ``ccsa.sim.verdict.verify``, the one the demo uses too.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import random
import re
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import msgspec
import trio

from ccsa.demo import DEMO_MIX, gpu_pci_map, standin_cluster
from ccsa.sim.ccbackend.server import StandIn
from ccsa.sim.ccbackend.state import Backend
from ccsa.sim.slurm import JobSpec, JobTruth, SimCluster
from ccsa.sim.slurm.schedule import workload
from ccsa.sim.verdict import Verdict, verify
from tests.nats_server import PASSWORD

CLUSTER = "soak"


#: Issue 8's faults (every soak had them).
BASE_FAULTS = frozenset(
    {
        "backend_down",
        "http_5xx",
        "http_502",
        "http_slow",
        "http_lost_answer",
        "nats_restart",
        "slurm_hang",
        "slurm_garbage",
        "slurm_truncate",
        "slurm_exit",
        "slurm_latency",
        "dbd_down",
        "kill",
    }
)
#: Issue 17's: NATS down for long and its credentials revoked (REST on), a window of 401s, a
#: proxy's HTML 502/404, passing user-lookup failures (empty user in sacct), one corrupt sacct
#: record now and then, the state database deleted between two kill -9 restarts.
ISSUE17_FAULTS = frozenset(
    {
        "nats_outage",
        "nats_revoke",
        "http_401",
        "proxy_html",
        "empty_user",
        "corrupt_record",
        "state_db_loss",
    }
)
#: Issue 18's: requeued, preempted and powered-up jobs in the job mix, and a slurmdbd lag
#: longer than the query overlap.
LIFECYCLES: dict[str, float] = {"requeue": 3, "preempt": 3, "power_up": 3}
#: ``requeue_cancel``: every third requeued job is cancelled while it pends again (test bed job
#: 35); then only plain sacct's CANCELLED record (never started) and ``sacct --duplicates``'s
#: REQUEUED record show that it ran.
ISSUE18_FAULTS = frozenset({*LIFECYCLES, "requeue_cancel", "dbd_lag"})
ALL_FAULTS = BASE_FAULTS | ISSUE17_FAULTS | ISSUE18_FAULTS
#: how many sacct answers get one corrupt record (spread evenly over the arrivals)
CORRUPT_ANSWERS = 6
#: the soak's slurmQueryOverlap; the dbd_lag fault is three times longer
OVERLAP = 10.0
HTML_502 = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
HTML_404 = b"<html><head><title>404 Not Found</title></head><body>nginx</body></html>"


@dataclass(frozen=True)
class SoakPlan:
    """Size and knobs of one soak run (all durations in seconds)."""

    jobs: int = 1000
    rate_per_min: float = 450.0
    seed: int = 8
    kills: int = 3
    min_job_age: float = 15.0
    #: typical job run time: long enough for several polls on a loaded machine
    job_run: float = 24.0
    poll: float = 2.0
    nodes: int = 60
    command_timeout: float = 20.0
    rest_timeout: float = 2.0
    drain_timeout: float = 150.0
    nats: bool = True
    hooks: bool = True
    #: the fault kinds (and issue 18's job lifecycles) this run injects; see ALL_FAULTS
    faults: frozenset[str] = BASE_FAULTS

    @property
    def arrival_span(self) -> float:
        return self.jobs / self.rate_per_min * 60.0


@dataclass(frozen=True)
class Fault:
    """One scheduled fault: `at` seconds after the workload starts, lasting `duration`."""

    at: float
    kind: str
    duration: float = 0.0
    arg: str = ""
    n: int = 0


def fault_schedule(plan: SoakPlan) -> list[Fault]:
    """The seeded fault programme (pure): every fault kind of issue 8, spread over the arrivals.

    cc-backend is down for twice MinJobAge plus a bit, so that jobs start, end and leave
    slurmctld during the outage; kills are spread so that no two overlap.
    """
    rng = random.Random(plan.seed)
    span = plan.arrival_span

    def at(lo: float, hi: float) -> float:
        return round(rng.uniform(lo * span, hi * span), 1)

    faults = [
        Fault(at(0.25, 0.4), "backend_down", duration=2 * plan.min_job_age + 6),
        Fault(at(0.05, 0.2), "http_5xx", arg="start_job", n=15),
        Fault(at(0.5, 0.6), "http_5xx", arg="stop_job", n=10),
        Fault(at(0.6, 0.7), "http_502", arg="*", n=3),
        Fault(at(0.1, 0.3), "http_slow", arg="start_job", n=4),
        Fault(at(0.6, 0.8), "http_slow", arg="stop_job", n=4),
        Fault(at(0.1, 0.9), "http_lost_answer", arg="start_job", n=4),
        Fault(at(0.1, 0.9), "http_lost_answer", arg="stop_job", n=4),
        Fault(at(0.15, 0.35), "nats_restart", duration=4.0),
        Fault(at(0.65, 0.85), "nats_restart", duration=4.0),
        Fault(at(0.1, 0.9), "slurm_hang", arg="sacct", n=1),
        Fault(at(0.1, 0.9), "slurm_hang", arg="squeue", n=1),
        Fault(at(0.1, 0.9), "slurm_garbage", arg="squeue", n=3),
        Fault(at(0.1, 0.9), "slurm_truncate", arg="sacct", n=2),
        Fault(at(0.1, 0.9), "slurm_exit", arg="scontrol", n=3),
        Fault(at(0.1, 0.9), "slurm_latency", arg="squeue", n=3),
        Fault(at(0.4, 0.6), "dbd_down", duration=6.0),
    ]
    # Kills: one per equal slice of the span (so they never overlap), at a seeded moment in it.
    for k in range(plan.kills):
        lo, hi = (k + 0.1) / plan.kills, (k + 0.9) / plan.kills
        faults.append(Fault(at(lo, hi), "kill", duration=round(rng.uniform(1.0, 3.0), 1)))
    # Issue 17 and 18 (drawn after the others, so the older kinds keep their seeded times).
    faults += [
        Fault(at(0.3, 0.5), "nats_outage", duration=max(20.0, round(0.1 * span, 1))),
        Fault(at(0.55, 0.75), "nats_revoke", duration=max(15.0, round(0.08 * span, 1))),
        Fault(at(0.2, 0.8), "http_401", duration=15.0),
        Fault(at(0.1, 0.9), "proxy_html", arg="start_job", n=4),
        Fault(at(0.1, 0.9), "proxy_html", arg="stop_job", n=4),
        Fault(at(0.2, 0.8), "empty_user", duration=8.0),
        Fault(at(0.3, 0.6), "dbd_lag", duration=15.0, n=int(3 * OVERLAP)),
    ]
    faults += [
        Fault(round((k + 0.5) / CORRUPT_ANSWERS * span, 1), "corrupt_record", arg="sacct", n=1)
        for k in range(CORRUPT_ANSWERS)
    ]
    if plan.kills and "state_db_loss" in plan.faults:
        # the middle kill also deletes the state database before the restart
        kills = [i for i, f in enumerate(faults) if f.kind == "kill"]
        i = kills[len(kills) // 2]
        faults[i] = Fault(faults[i].at, "kill", duration=faults[i].duration, arg="state_db_loss")
    wanted = plan.faults | {"kill"} if plan.kills else plan.faults
    if not plan.nats:
        wanted = wanted - {"nats_restart", "nats_outage", "nats_revoke"}
    return sorted((f for f in faults if f.kind in wanted), key=lambda f: f.at)


# ---------------------------------------------------------------------------- verification


_SYNCED = re.compile(r"synced \S+\.\.(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d) UTC")


def poll_times(log_text: str) -> list[float]:
    """Epoch times of the successful polls in a daemon log (every run appends to it)."""
    return sorted(
        datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
        for m in _SYNCED.finditer(log_text)
    )


def snapshots(polls: Sequence[float], squeue_times: Sequence[float]) -> list[float]:
    """For each successful poll, when its ``squeue --all`` ran: the first one at or after it."""
    times = sorted(squeue_times)
    out = {times[i] for p in polls if (i := bisect.bisect_left(times, p)) < len(times)}
    return sorted(out)


# ---------------------------------------------------------------------------- the run


@dataclass
class SoakResult:
    plan: SoakPlan
    verdict: Verdict
    applied: list[tuple[float, str]]
    restarts: int
    up: list[tuple[float, float]]
    wall: float
    daemon_log: Path
    last_status: dict[str, Any]
    workdir: Path


class SoakError(Exception):
    """The soak could not run (a part did not start, the daemon died on its own)."""


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class _Run:
    plan: SoakPlan
    tmp: Path
    out: TextIO
    sim: SimCluster
    standin: StandIn
    backend: Backend
    cfg_path: Path
    sock: Path
    nats: Any | None
    t0: float = 0.0
    proc: trio.Process | None = None
    ready_at: float | None = None
    up: list[tuple[float, float]] = field(default_factory=list)
    applied: list[tuple[float, str]] = field(default_factory=list)
    restarts: int = 0
    last_status: dict[str, Any] = field(default_factory=dict)
    dbd_down: list[tuple[float, float]] = field(default_factory=list)
    expected_exit: bool = False
    killed: set[int] = field(default_factory=set)
    hooks_sent: int = 0
    _fired: set[tuple[int, str, int]] = field(default_factory=set)
    #: NATS faults take turns (a restart must not start the server during an outage)
    nats_lock: trio.Lock = field(default_factory=trio.Lock)

    def log(self, text: str) -> None:
        self.out.write(f"[soak {time.time() - self.t0:6.1f}s] {text}\n")
        self.out.flush()

    # --- the daemon ------------------------------------------------------------------------

    async def start_daemon(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "NOTIFY_SOCKET")}
        with (self.tmp / "daemon.log").open("ab") as logf:
            self.proc = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    "-m",
                    "ccsa",
                    "-daemon",
                    "-config",
                    str(self.cfg_path),
                    "-debug",
                    "3",
                ],
                stdout=logf,
                stderr=logf,
                stdin=None,
                env=env,
                start_new_session=True,
            )
        self.ready_at = None
        with trio.move_on_after(60):
            while self.proc.returncode is None:
                if await self.status():
                    self.ready_at = time.time()
                    return
                await trio.sleep(0.1)
        raise SoakError(f"the daemon did not start:\n{self.log_tail()}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.killed.add(self.proc.pid)
        # The whole process group, as systemd's KillMode=control-group does after a crash: a
        # Slurm command the daemon was waiting for (maybe a hung one) must not outlive it.
        os.killpg(self.proc.pid, signal.SIGKILL)
        if self.ready_at is not None:
            self.up.append((self.ready_at, time.time()))
        self.ready_at = None

    async def status(self) -> bool:
        try:
            with trio.fail_after(5):
                stream = await trio.open_unix_socket(str(self.sock))
                async with stream:
                    await stream.send_all(b'{"ccsa": "status"}')
                    await stream.send_eof()
                    data = bytearray()
                    while chunk := await stream.receive_some(1 << 20):
                        data += chunk
            self.last_status = json.loads(data)
        except (OSError, trio.TooSlowError, trio.BrokenResourceError, ValueError):
            return False
        return True

    def log_tail(self, n: int = 20) -> str:
        try:
            lines = (self.tmp / "daemon.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    async def watch_daemon(self) -> None:
        """Fail loudly if the daemon exits on its own (a crash is a bug, not a fault)."""
        while True:
            proc = self.proc
            if proc is not None:
                await proc.wait()
                if proc.pid not in self.killed and not self.expected_exit:
                    raise SoakError(
                        f"the daemon exited by itself with status {proc.returncode}:\n"
                        f"{self.log_tail()}"
                    )
            await trio.sleep(0.2)

    # --- faults ----------------------------------------------------------------------------

    async def apply(self, f: Fault) -> None:
        kind = "state_db_loss" if f.arg == "state_db_loss" else f.kind
        self.applied.append((time.time() - self.t0, f"{kind} {f.arg} {f.n or ''}".strip()))
        self.log(f"fault: {f.kind} {f.arg} n={f.n} duration={f.duration}")
        if f.kind == "kill":
            self.kill9()
            assert self.proc is not None
            await self.proc.wait()
            if f.arg == "state_db_loss":
                db = Path(json.loads(self.cfg_path.read_text())["stateDbPath"])
                for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
                    path.unlink(missing_ok=True)
            await trio.sleep(f.duration)
            self.restarts += 1
            await self.start_daemon()
        elif not await self.apply_new(f):
            await self.apply_base(f)

    async def apply_new(self, f: Fault) -> bool:
        """Issue 17's and 18's fault kinds; False for the others."""
        faults = self.standin.faults
        now = time.time()
        if f.kind in ("nats_outage", "nats_revoke"):
            assert self.nats is not None
            nats = self.nats
            async with self.nats_lock:
                original = nats.config_file.read_text()
                await trio.to_thread.run_sync(nats.stop)
                if f.kind == "nats_revoke":  # the server no longer knows ccsa's password
                    nats.config_file.write_text(original.replace(PASSWORD, "revoked"))
                    await trio.to_thread.run_sync(nats.start)
                await trio.sleep(f.duration)
                if f.kind == "nats_revoke":
                    await trio.to_thread.run_sync(nats.stop)
                    nats.config_file.write_text(original)
                await trio.to_thread.run_sync(nats.start)
        elif f.kind == "http_401":
            until = now + f.duration
            faults.rule(
                "*",
                status=401,
                message="missing or invalid token",
                predicate=lambda _body: time.time() < until,
            )
        elif f.kind == "proxy_html":
            reply = (502, HTML_502) if f.arg == "start_job" else (404, HTML_404)
            faults.script(f.arg, [reply] * f.n)
        elif f.kind == "empty_user":
            self.sim.set_fault("empty_user", start=now, end=now + f.duration)
        elif f.kind == "corrupt_record":
            self.sim.set_fault("corrupt_record", calls=f.n)
        elif f.kind == "dbd_lag":
            self.sim.set_fault("dbd_lag", seconds=float(f.n), start=now, end=now + f.duration)
        else:
            return False
        return True

    async def apply_base(self, f: Fault) -> None:
        """Issue 8's fault kinds."""
        faults = self.standin.faults
        if f.kind == "backend_down":
            self.standin.down()
            await trio.sleep(f.duration)
            self.standin.up()
        elif f.kind == "http_5xx":
            faults.script(f.arg, [500] * f.n)
        elif f.kind == "http_502":
            faults.script(f.arg, [(502, b"<html>Bad Gateway</html>")] * f.n)
        elif f.kind == "http_slow":
            faults.latency(f.arg, self.plan.rest_timeout + 1.5, f.n)
        elif f.kind == "http_lost_answer":
            faults.reset_next(f.arg, f.n, after_processing=True)
        elif f.kind == "nats_restart":
            assert self.nats is not None
            async with self.nats_lock:
                await trio.to_thread.run_sync(self.nats.stop)
                await trio.sleep(f.duration)
                await trio.to_thread.run_sync(self.nats.start)
        elif f.kind == "slurm_hang":
            self.sim.set_fault("hang", command=f.arg, calls=f.n)
        elif f.kind == "slurm_garbage":
            self.sim.set_fault("garbage", command=f.arg, calls=f.n)
        elif f.kind == "slurm_truncate":
            self.sim.set_fault("truncate", command=f.arg, calls=f.n)
        elif f.kind == "slurm_exit":
            self.sim.set_fault(
                "exit",
                command=f.arg,
                calls=f.n,
                exit_code=1,
                message="scontrol: error: slurm_load_jobs: Socket timed out",
            )
        elif f.kind == "slurm_latency":
            self.sim.set_fault("latency", command=f.arg, calls=f.n, seconds=2.0)
        elif f.kind == "dbd_down":
            now = time.time()
            self.dbd_down.append((now, now + f.duration))
            self.sim.set_fault("dbd_down", start=now, end=now + f.duration)
        else:  # pragma: no cover - fault_schedule only makes the kinds above
            raise ValueError(f"unknown fault kind {f.kind!r}")

    async def run_faults(self, schedule: Sequence[Fault]) -> None:
        async with trio.open_nursery() as nursery:
            for f in schedule:
                await trio.sleep_until(trio.current_time() + max(0.0, self.t0 + f.at - time.time()))
                if f.kind == "kill":
                    await self.apply(f)  # in line: a kill waits for its restart
                else:
                    nursery.start_soon(self.apply, f)

    # --- hooks -----------------------------------------------------------------------------

    async def send_hook(self, job: JobTruth, context: str) -> None:
        msg = {
            "SLURM_JOB_ID": str(job.job_id),
            "SLURM_CLUSTER_NAME": job.cluster,
            "SLURM_SCRIPT_CONTEXT": context,
            "SLURM_JOB_USER": job.user,
        }
        try:
            with trio.fail_after(2):
                stream = await trio.open_unix_socket(str(self.sock))
                async with stream:
                    await stream.send_all(json.dumps(msg).encode())
            self.hooks_sent += 1
        except (OSError, trio.TooSlowError, trio.BrokenResourceError):
            pass  # the real hook also gives up (exit 0) when the daemon is not there

    async def run_hooks(self, until: float) -> None:
        async with trio.open_nursery() as nursery:
            while time.time() < until:
                truth = await trio.to_thread.run_sync(self.sim.jobs)
                for j in truth:
                    # PrologSlurmctld at every allocation (a power-up's before its nodes are
                    # up), EpilogSlurmctld at every end (a requeued run's too)
                    events = [("prolog_slurmctld", j.allocated), ("epilog_slurmctld", j.end)]
                    for e in j.earlier:
                        events += [("prolog_slurmctld", e.start), ("epilog_slurmctld", e.end)]
                    for context, when in events:
                        if when is not None and (j.job_id, context, when) not in self._fired:
                            self._fired.add((j.job_id, context, when))
                            nursery.start_soon(self.send_hook, j, context)
                await trio.sleep(1.0)

    async def progress(self) -> None:
        while True:
            await trio.sleep(10)
            s = self.last_status
            c = s.get("counters", {})
            self.log(
                f"cc-backend {len(self.backend.jobs)} jobs; daemon pid {s.get('pid')}: outbox "
                f"{s.get('outbox')}, parked {s.get('parked')}, starts {c.get('starts_delivered')}"
                f", stops {c.get('stops_delivered')}, transient {c.get('transient_failures')}"
                f", NATS {c.get('nats_published')}/{c.get('nats_failures')} failed"
            )

    async def poll_status(self) -> None:
        while True:
            if self.ready_at is not None:
                await self.status()
            await trio.sleep(1.0)


def _config(run: _Run, plan: SoakPlan, pci: Mapping[str, list[str]]) -> dict[str, Any]:
    tmp = run.tmp
    cfg: dict[str, Any] = {
        "ccRestUrl": run.standin.url,
        "ccRestJwt": "soak-no-auth",
        "ccRestTimeout": plan.rest_timeout,
        "pidFilePath": str(tmp / "run" / "daemon.pid"),
        "prepSockListenPath": str(run.sock),
        "prepSockConnectPath": str(run.sock),
        "lastRunPath": str(tmp / "lib" / "lastrun"),
        "stateDbPath": str(tmp / "lib" / "state.sqlite3"),
        "slurmBinDir": str(run.sim.bin_dir),
        "slurmPollInterval": plan.poll,
        "slurmQueryDelay": 1,
        "slurmQueryOverlap": OVERLAP,
        "slurmQueryMaxSpan": 86400,
        "slurmCommandTimeout": plan.command_timeout,
        "ccPollInterval": 30,
        "gpuPciAddrs": dict(pci),
    }
    if run.nats is not None:
        cfg |= {"natsServer": "127.0.0.1", "natsPort": run.nats.port, "natsSubject": "soak"}
        if run.nats.user:
            cfg |= {"natsUser": run.nats.user, "natsPassword": run.nats.password}
    return cfg


async def run_soak(plan: SoakPlan, out: TextIO | None = None) -> SoakResult:
    """Run one soak; the verdict says whether any job was lost, duplicated, stuck or stripped."""
    stream = out or sys.stdout
    began = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="ccsa-soak-", dir="/tmp"))
    sim = await trio.to_thread.run_sync(
        lambda: SimCluster.create(
            tmp / "sim",
            clusters=(CLUSTER,),
            clock="real",
            nodes=plan.nodes,
            min_job_age=plan.min_job_age,
            store_scripts=True,
            seed=plan.seed,
            # as the test bed's lifecycle slurm.conf: a requeued job may run again after 11 s,
            # not 121 s (which would stretch the short soak by two minutes)
            cred_expire=10.0,
        )
    )
    spec = sim.spec()
    lead = 8.0 + plan.jobs / 1000.0 * 4  # submit_many reschedules everything: give it time
    specs = workload(
        spec,
        seed=plan.seed,
        n_jobs=plan.jobs,
        start=sim.now + lead,
        rate_per_min=plan.rate_per_min,
        mix={k: w for k, w in DEMO_MIX.items() if k not in LIFECYCLES}
        | {k: w for k, w in LIFECYCLES.items() if k in plan.faults},
        max_duration=100.0,
    )
    specs = _compress(
        specs,
        sim.now + lead + plan.arrival_span,
        plan.job_run,
        cancel_requeued="requeue_cancel" in plan.faults,
    )
    await trio.to_thread.run_sync(sim.submit_many, specs)
    pci = gpu_pci_map(spec)
    backend = Backend({CLUSTER: standin_cluster(spec, pci)})
    standin = StandIn(backend)
    nats = None
    if plan.nats:
        from tests.nats_server import NatsServer

        nats = NatsServer(tmp, "user" if "nats_revoke" in plan.faults else "plain")
        await trio.to_thread.run_sync(nats.start)
    run: _Run | None = None
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(standin.serve)
            run = _Run(
                plan, tmp, stream, sim, standin, backend, tmp / "config.json", tmp / "d.sock", nats
            )
            run.t0 = time.time()
            run.cfg_path.write_text(json.dumps(_config(run, plan, pci), indent=1))
            run.cfg_path.chmod(0o600)
            await run.start_daemon()
            run.log(
                f"{plan.jobs} jobs at {plan.rate_per_min:g}/min, {plan.kills} kills, seed "
                f"{plan.seed}; work dir {tmp}; daemon pid {run.proc.pid if run.proc else '?'}"
            )
            workload_t0 = min(s.submit or 0.0 for s in specs)
            run.t0 = workload_t0
            last_end = max(
                (j.run.end for j in sim.state.jobs if j.run is not None), default=time.time()
            )
            nursery.start_soon(run.watch_daemon)
            nursery.start_soon(run.poll_status)
            nursery.start_soon(run.progress)
            if plan.hooks:
                nursery.start_soon(run.run_hooks, last_end + 2)
            await run.run_faults(fault_schedule(plan))
            # Wait for the last job to end, then clear every fault and let the daemon drain.
            await trio.sleep(max(0.0, last_end + 1 - time.time()))
            standin.faults.clear()
            sim.clear_faults()
            run.log("workload over, faults cleared: draining")
            expected = {
                (j.cluster, j.job_id)
                for j in await trio.to_thread.run_sync(sim.jobs)
                if j.start is not None
            }
            with trio.move_on_after(plan.drain_timeout):
                while True:
                    await trio.sleep(1.0)
                    done = {(j.cluster, j.job_id) for j in backend.jobs if j.state != "running"}
                    if expected <= done and run.last_status.get("outbox") == 0:
                        break
            # A clean stop: SIGTERM, exit status 0.
            assert run.proc is not None
            assert run.ready_at is not None
            run.expected_exit = True
            run.up.append((run.ready_at, time.time()))
            run.proc.send_signal(signal.SIGTERM)
            with trio.fail_after(30):
                code = await run.proc.wait()
            if code != 0:
                raise SoakError(f"the daemon exited {code} on SIGTERM:\n{run.log_tail()}")
            nursery.cancel_scope.cancel()
    finally:
        if run is not None and run.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.proc.pid, signal.SIGKILL)  # the daemon and any command it left
        if nats is not None:
            nats.stop()
    assert run is not None
    squeue_times = [
        float(c["now"])  # type: ignore[arg-type]
        for c in sim.calls()
        if c["command"] == "squeue" and "--all" in c["argv"]  # type: ignore[operator]
    ]
    polls = snapshots(poll_times((tmp / "daemon.log").read_text(errors="replace")), squeue_times)
    truth = await trio.to_thread.run_sync(sim.jobs)
    verdict = verify(truth, backend.events, backend.jobs, polls=polls, pci=pci)
    return SoakResult(
        plan,
        verdict,
        run.applied,
        run.restarts,
        run.up,
        time.time() - began,
        tmp / "daemon.log",
        run.last_status,
        tmp,
    )


def _compress(
    specs: Sequence[JobSpec], last_arrival: float, run: float, *, cancel_requeued: bool = False
) -> list[JobSpec]:
    """Jobs of `run` s plus up to 25 %; a TIMEOUT job runs to its time limit, so it gets the
    shortest one Slurm has (1 min), and only early in the run (late ones complete)."""
    out: list[JobSpec] = []
    for js in specs:
        cancel = js.cancel_pending_after
        js = msgspec.structs.replace(
            js,
            duration=run * (1.0 + 0.25 * min(1.0, max(0.0, js.duration - 30.0) / 70.0)),
            cancel_pending_after=None if cancel is None else max(2.0, cancel * 0.05),
            requeue_after=None if js.requeue_after is None else max(4.0, js.requeue_after * 0.08),
            # every third requeued job is cancelled while it pends again (test bed job 35)
            cancel_requeued_after=2.0
            if cancel_requeued
            and js.requeue_after is not None
            and int(js.name.rsplit("-", 1)[-1]) % 3 == 0
            else None,
            preempt_after=None if js.preempt_after is None else max(4.0, js.preempt_after * 0.08),
            boot_delay=max(5.0, js.boot_delay * 0.05) if js.boot_delay else 0.0,
        )
        if js.end_state == "TIMEOUT":
            late = (js.submit or 0.0) > last_arrival - 120.0
            js = msgspec.structs.replace(
                js, time_limit=1, end_state="COMPLETED" if late else "TIMEOUT"
            )
        out.append(js)
    return out


def report(result: SoakResult) -> str:
    """The printed summary: counts table, faults applied, daemon restarts."""
    v = result.verdict
    kinds = Counter(name.split()[0] for _, name in result.applied)
    faults = ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items()))
    lines = [
        f"soak: {result.plan.jobs} jobs, seed {result.plan.seed}, {result.wall:.0f} s wall, "
        f"daemon killed -9 and restarted {result.restarts} times",
        f"faults applied: {faults}",
        v.table(),
        "verdict: "
        + (
            "OK: no job lost, duplicated, stuck or stripped of its resources"
            if v.ok
            else f"{len(v.problems)} PROBLEMS"
        ),
    ]
    lines += [f"  {p}" for p in v.problems[:30]]
    if v.refused_runs:
        lines.append("refused second runs (cc-backend keeps the first run; not lost):")
        lines += [f"  {r}" for r in v.refused_runs[:50]]
    return "\n".join(lines)
