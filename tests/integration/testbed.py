"""Drive the shared real-Slurm 24.11 test bed (``shared/testbed/slurm-testbed.sh``) from tests.

One job: run Slurm client commands inside the test bed (through the wrappers the script writes),
submit jobs as the test users, wait for job states with a deadline, wire slurmctld's
PrologSlurmctld/EpilogSlurmctld, and restart single daemons while jobs keep running. It also
holds the real job kinds the suite submits (every kind at once, so the slowest, a job hitting its
1-minute time limit, sets the pace: about 75 s) with expectations taken from the sbatch
arguments, and independent readers of squeue's core and GPU allocations, never ccsa code.

Why hand-written: the script only offers ``up``/``down``/``reset``; restarting *one* daemon
(slurmctld or slurmdbd) without killing running jobs, and adding hook settings to the
``slurm.conf`` the script rewrites on every full start, are not part of it. Paths handed to the
Slurm commands are chroot paths; :meth:`Testbed.host_path` / :meth:`Testbed.chroot_path`
translate between the two views of the same files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Job states after which Slurm never changes a job again (sacct / squeue base states).
FINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
    }
)

# Daemon name (its /proc comm and pid file name in the script's pid dir) -> program.
_DAEMONS: dict[str, str] = {"slurmctld": "/usr/sbin/slurmctld", "slurmdbd": "/usr/sbin/slurmdbd"}

# A command that succeeds once the daemon answers.
_READY: dict[str, tuple[str, ...]] = {
    "slurmctld": ("scontrol", "ping"),
    "slurmdbd": ("sacctmgr", "-n", "list", "cluster"),
}
_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
_HOOK_MARK = "# ccsa integration tests: slurmctld hooks"


class TestbedError(RuntimeError):
    """A test bed command failed or a wait ran past its deadline (message names which)."""

    __test__ = False  # not a pytest test class


@dataclass
class Testbed:
    """A running test bed: its script, chroot root and wrapper directory."""

    __test__ = False  # not a pytest test class

    script: Path
    root: Path
    bindir: Path
    cluster: str = "testcluster"
    log: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ paths
    @property
    def pid_dir(self) -> Path:
        return self.root / ".testbed" / "pids"

    @property
    def slurm_conf(self) -> Path:
        return self.root / "etc" / "slurm" / "slurm.conf"

    def host_path(self, chroot_path: str) -> Path:
        """The host path of a file the test bed sees as ``chroot_path``."""
        if not chroot_path.startswith("/"):
            raise ValueError(f"not an absolute chroot path: {chroot_path!r}")
        return self.root / chroot_path.lstrip("/")

    def chroot_path(self, host_path: Path) -> str:
        """The path under which the test bed sees the host file ``host_path``."""
        rel = host_path.resolve().relative_to(self.root.resolve())
        return "/" + rel.as_posix()

    # ------------------------------------------------------------------ commands
    def run(
        self,
        *argv: str,
        user: str | None = None,
        input: str | None = None,
        timeout: float = 60.0,
        check: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client (or, through ``tb-exec``, any program) inside the test bed.

        ``argv[0]`` is a wrapper name (``sacct``, ``squeue``, ...); with ``user`` the command runs
        as that chroot user via ``tb-exec runuser -u USER --``. Raises TestbedError naming the
        command when ``check`` and the exit code is non-zero.
        """
        if user is not None:
            full = [str(self.bindir / "tb-exec"), "runuser", "-u", user, "--", *argv]
        else:
            wrapper = self.bindir / argv[0]
            full = [str(wrapper if wrapper.exists() else self.bindir / "tb-exec"), *argv[1:]]
            if not wrapper.exists():
                full.insert(1, argv[0])
        run_env = {"PATH": _PATH, "TZ": "UTC", "LANG": "C.UTF-8", **(env or {})}
        try:
            proc = subprocess.run(
                full,
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=run_env,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise TestbedError(f"{' '.join(argv)}: no answer within {timeout} s") from exc
        self.log.append(f"$ {' '.join(argv)} -> {proc.returncode}")
        if check and proc.returncode != 0:
            raise TestbedError(
                f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[:500]}"
            )
        return proc

    def json(self, *argv: str) -> dict[str, Any]:
        """Run a Slurm command that prints one JSON document and return it decoded."""
        out = self.run(*argv).stdout
        try:
            doc = json.loads(out)
        except json.JSONDecodeError as exc:
            raise TestbedError(f"{' '.join(argv)}: not JSON ({exc}): {out[:200]!r}") from exc
        if not isinstance(doc, dict):
            raise TestbedError(f"{' '.join(argv)}: JSON is not an object")
        return doc

    def sbatch(self, *args: str, user: str | None = None) -> int:
        """Submit a batch job (``sbatch --parsable ARGS``); return its job id.

        The job's output goes to /dev/null unless ARGS say otherwise: after a test bed
        ``reset`` the job ids start at 1 again, and a stale ``/tmp/slurm-N.out`` of another
        user fails the job ("Slurmd could not connect IO", signal 53).
        """
        if not any(a in ("-o", "--output") or a.startswith("--output=") for a in args):
            args = ("-o", "/dev/null", *args)
        out = self.run("sbatch", "--parsable", *args, user=user).stdout.strip()
        m = re.fullmatch(r"(\d+)(?:;\S+)?", out)
        if m is None:
            raise TestbedError(f"sbatch {' '.join(args)}: unexpected output {out!r}")
        return int(m.group(1))

    def scancel(self, job: int | str, user: str | None = None) -> None:
        self.run("scancel", str(job), user=user)

    # ------------------------------------------------------------------ job states
    def queue_state(self, job: int | str) -> str | None:
        """slurmctld's state of a job (any state, while still in memory), or None."""
        proc = self.run("squeue", "-h", "-t", "all", "-j", str(job), "-o", "%T", check=False)
        lines = proc.stdout.split()
        return lines[0] if proc.returncode == 0 and lines else None

    def acct_states(self, jobs: Iterable[int | str]) -> dict[str, str]:
        """Accounting state per job (``sacct -X``): keys are ``ID`` or ``ARRAYID_TASK``."""
        ids = ",".join(str(j) for j in jobs)
        out = self.run(
            "sacct", "-n", "-X", "-P", "-j", ids, "-o", "JobID,JobIDRaw,State", check=False
        ).stdout
        states: dict[str, str] = {}
        for line in out.splitlines():
            parts = line.split("|")
            if len(parts) == 3:
                state = parts[2].split()[0] if parts[2] else ""
                states[parts[0]] = state
                states[parts[1]] = state
        return states

    def wait_until(
        self,
        what: str,
        probe: Callable[[], bool],
        *,
        timeout: float,
        interval: float = 0.5,
    ) -> None:
        """Poll ``probe`` until True; TestbedError naming ``what`` after ``timeout`` s."""
        end = time.monotonic() + timeout
        while True:
            if probe():
                return
            if time.monotonic() >= end:
                raise TestbedError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(interval)

    def wait_queue_state(self, job: int | str, states: Sequence[str], *, timeout: float) -> str:
        """Wait until slurmctld reports the job in one of ``states``; return that state."""
        seen: list[str | None] = [None]

        def probe() -> bool:
            seen[0] = self.queue_state(job)
            return seen[0] in states

        self.wait_until(f"job {job} in {'/'.join(states)} (squeue)", probe, timeout=timeout)
        assert seen[0] is not None
        return seen[0]

    def wait_acct_final(self, jobs: Iterable[int | str], *, timeout: float) -> dict[str, str]:
        """Wait until accounting shows every job in a final state; return the states."""
        wanted = [str(j) for j in jobs]
        got: dict[str, str] = {}

        def probe() -> bool:
            got.clear()
            got.update(self.acct_states(wanted))
            return all(got.get(j) in FINAL_STATES for j in wanted)

        self.wait_until(f"jobs {','.join(wanted)} final in sacct", probe, timeout=timeout)
        return {j: got[j] for j in wanted}

    def active_jobs(self) -> list[str]:
        """Ids of pending/running jobs (squeue default states)."""
        return self.run("squeue", "-h", "-o", "%i").stdout.split()

    def cancel_all(self, *, timeout: float = 30.0) -> None:
        """Cancel every active job and wait until squeue shows none."""
        ids = self.active_jobs()
        if ids:
            self.run("scancel", *ids, check=False)
        self.wait_until("no active jobs", lambda: not self.active_jobs(), timeout=timeout)

    # ------------------------------------------------------------------ hooks
    def wire_hooks(self, prolog: str, epilog: str) -> None:
        """Point PrologSlurmctld/EpilogSlurmctld at chroot paths and reconfigure slurmctld.

        The script rewrites slurm.conf on every full start, so this is redone after ``up``;
        a restart of slurmctld alone (:meth:`restart`) keeps it.
        """
        self.unwire_hooks(reconfigure=False)
        with self.slurm_conf.open("a") as fh:
            fh.write(f"{_HOOK_MARK}\nPrologSlurmctld={prolog}\nEpilogSlurmctld={epilog}\n")
        self.reconfigure()
        self.wait_until(
            "PrologSlurmctld in scontrol show config",
            lambda: prolog in self.run("scontrol", "show", "config").stdout,
            timeout=20,
        )

    def unwire_hooks(self, *, reconfigure: bool = True) -> None:
        """Remove the hook settings added by :meth:`wire_hooks` (no-op when absent)."""
        text = self.slurm_conf.read_text()
        if _HOOK_MARK not in text:
            return
        self.slurm_conf.write_text(text.split(f"{_HOOK_MARK}\n", 1)[0])
        if reconfigure:
            self.reconfigure()

    def reconfigure(self) -> None:
        """``scontrol reconfigure`` and wait for the re-executed slurmctld; record its pid."""
        self.run("scontrol", "reconfigure")
        self.wait_until(
            "one slurmctld answering after reconfigure",
            lambda: (
                len(self.daemon_pids("slurmctld")) == 1
                and self.run("scontrol", "ping", check=False).returncode == 0
            ),
            timeout=30,
        )
        self.record_pid("slurmctld")
        self.wait_until(
            "every slurmd back after reconfigure",
            lambda: self.nodes_ready(),
            timeout=60,
        )
        self.record_slurmd_pids()

    def nodes_ready(self) -> bool:
        """Every node responds (idle/mix/alloc/completing) in ``sinfo -N -r``."""
        proc = self.run("sinfo", "-h", "-N", "-o", "%N %t", check=False)
        rows = [line.split() for line in proc.stdout.splitlines()]
        return bool(rows) and all(
            len(r) == 2 and r[1] in {"idle", "mix", "alloc", "comp"} for r in rows
        )

    # ------------------------------------------------------------------ daemons
    def _holder(self) -> int:
        pid = int((self.pid_dir / "holder").read_text().strip())
        if not Path(f"/proc/{pid}").is_dir():
            raise TestbedError("the test bed's namespace holder is not running")
        return pid

    def daemon_pids(self, comm: str) -> list[int]:
        """Pids of processes named ``comm`` inside the test bed's mount namespace.

        Scans /proc instead of trusting pid files: since 24.11 ``scontrol reconfigure`` makes
        slurmctld re-exec under a new pid, which leaves the script's pid file stale.
        """
        mntns = os.readlink(f"/proc/{self._holder()}/ns/mnt")
        pids: list[int] = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if (entry / "comm").read_text().strip() != comm:
                    continue
                if os.readlink(entry / "ns" / "mnt") != mntns:
                    continue
            except OSError:
                continue
            pids.append(int(entry.name))
        return sorted(pids)

    def record_pid(self, name: str) -> None:
        """Write the live pid of ``name`` to the script's pid dir (so ``up``/``down`` see it)."""
        pids = self.daemon_pids(name)
        if len(pids) != 1:
            raise TestbedError(f"expected one {name} in the test bed, found pids {pids}")
        (self.pid_dir / name).write_text(f"{pids[0]}\n")

    def record_slurmd_pids(self) -> None:
        """Re-record every ``slurmd -N NODE`` pid (slurmd also re-execs on reconfigure)."""
        for pid in self.daemon_pids("slurmd"):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"-N" in argv[:-1]:
                node = argv[argv.index(b"-N") + 1].decode()
                (self.pid_dir / f"slurmd-{node}").write_text(f"{pid}\n")

    def stop_daemon(self, name: str, *, timeout: float = 20.0) -> None:
        """SIGTERM one daemon (``slurmctld`` or ``slurmdbd``) and wait until it is gone."""
        pids = self.daemon_pids(name)
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        self.wait_until(
            f"{name} (pids {pids}) to exit",
            lambda: not self.daemon_pids(name),
            timeout=timeout,
            interval=0.1,
        )

    def start_daemon(self, name: str, *, timeout: float = 60.0) -> None:
        """Start one daemon inside the test bed's namespaces, the way the script does."""
        if self.daemon_pids(name):
            raise TestbedError(f"{name} is already running")
        holder = self._holder()
        with (self.root / ".testbed" / "daemons.log").open("ab") as log:
            subprocess.run(
                [
                    "nsenter", "-t", str(holder), "-m", "-u", "-n", "--",
                    "chroot", str(self.root), "/usr/bin/env", "-i",
                    "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8",
                    _DAEMONS[name],
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                check=True,
                timeout=timeout,
            )  # fmt: skip
        ready = _READY[name]
        self.wait_until(
            f"{name} answering",
            lambda: self.run(*ready, check=False, timeout=30).returncode == 0,
            timeout=timeout,
        )
        self.record_pid(name)

    def restart(self, name: str) -> None:
        """Stop and start slurmctld or slurmdbd; running jobs keep running."""
        self.stop_daemon(name)
        self.start_daemon(name)

    # ------------------------------------------------------------------ chroot python
    def chroot_has(self, program: str) -> bool:
        return self.run("tb-exec", "sh", "-c", f"command -v {program}", check=False).returncode == 0

    def install_chroot_packages(self, packages: Sequence[str], *, timeout: float = 300) -> None:
        """apt-get install into the chroot (needs the Debian mirror; the holder has no network).

        Runs in a throwaway mount namespace like the script's own build step, so nothing stays
        mounted on the host.
        """
        cmd = (
            "apt-get install -y -q --no-install-recommends "
            + " ".join(packages)
            + " || { apt-get update -q && apt-get install -y -q --no-install-recommends "
            + " ".join(packages)
            + "; } && apt-get clean"
        )
        shell = (
            'mount -t proc proc "$1/proc" && exec chroot "$1" /usr/bin/env -i '
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "
            '/bin/sh -c "$2"'
        )
        proc = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "--", "/bin/sh", "-c", shell, "sh",
             str(self.root), cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            raise TestbedError(f"apt-get install {' '.join(packages)} in the chroot failed: {tail}")

    def copy_into(self, src: Path, chroot_dest: str) -> Path:
        """Copy a tree of ``*.py``/``*.sh`` files into the chroot (replacing an older copy)."""
        dest = self.host_path(chroot_dest)
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        return dest


def script_command(
    script: Path, action: str, *, timeout: float, extra_conf: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``slurm-testbed.sh ACTION`` and return the finished process (never raises on rc).

    ``extra_conf`` is appended to slurm.conf (``SLURM_TESTBED_EXTRA_CONF``); without it the
    caller's environment decides, as for the session's own ``up``.
    """
    env = dict(os.environ)
    if extra_conf is not None:
        env["SLURM_TESTBED_EXTRA_CONF"] = str(extra_conf)
    return subprocess.run(
        ["bash", str(script), action],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
        env=env,
    )


# ================================================================ real job kinds


@dataclass(frozen=True)
class JobKind:
    """One kind of real job: how it is submitted and what it must become."""

    name: str
    user: str
    args: tuple[str, ...]
    state: str  # final base state in sacct (upper case)
    nodes: int = 1  # nodes it runs on (0: never runs)
    cpus: int = 1  # allocated CPUs per node (one hwthread per core on the test bed)
    gpus: int = 0  # GPUs per node
    tasks: int = 1  # array tasks (each its own job)
    cancel: str = ""  # "", "pending" or "running"


KINDS: tuple[JobKind, ...] = (
    JobKind("cpu", "alice", ("-c", "2", "--wrap", "sleep 15"), "COMPLETED", cpus=2),
    JobKind(
        "gpu",
        "alice",
        ("--gres=gpu:2", "-c", "2", "--mem=1G", "-t", "10", "--wrap", "sleep 20"),
        "COMPLETED",
        cpus=2,
        gpus=2,
    ),
    JobKind(
        "array",
        "bob",
        ("--array=0-2", "--gres=gpu:1", "-c", "1", "-t", "5", "--wrap", "sleep 10"),
        "COMPLETED",
        gpus=1,
        tasks=3,
    ),
    JobKind("failing", "bob", ("-p", "debug", "--wrap", "sleep 8; exit 3"), "FAILED"),
    JobKind(
        "cancelled-pending",
        "carol",
        ("--begin=now+1hour", "-c", "1", "--wrap", "sleep 300"),
        "CANCELLED",
        nodes=0,
        cancel="pending",
    ),
    JobKind(
        "cancelled-running",
        "bob",
        ("-c", "1", "--gres=gpu:1", "--wrap", "sleep 300"),
        "CANCELLED",
        gpus=1,
        cancel="running",
    ),
    JobKind("timeout", "carol", ("-t", "1", "-c", "1", "--wrap", "sleep 200"), "TIMEOUT"),
    JobKind(
        "multi-node",
        "carol",
        ("-N", "2", "--gres=gpu:1", "-c", "2", "-t", "5", "--wrap", "sleep 15"),
        "COMPLETED",
        nodes=2,
        cpus=2,
        gpus=1,
    ),
)


@dataclass
class RealJobs:
    """What the test bed showed of one batch of submitted kinds."""

    ids: dict[str, list[int]] = field(default_factory=dict)  # kind -> raw job ids (array: tasks)
    queue: dict[int, dict[str, Any]] = field(default_factory=dict)  # last squeue record, running
    acct: dict[int, dict[str, Any]] = field(default_factory=dict)  # final sacct record
    submitted_at: float = 0.0  # epoch seconds (wall clock)

    def kind_of(self, job_id: int) -> str:
        for kind, ids in self.ids.items():
            if job_id in ids:
                return kind
        raise KeyError(job_id)


def _squeue_all(tb: Testbed) -> list[dict[str, Any]]:
    doc = tb.json("squeue", "--noheader", "--cluster", tb.cluster, "--all", "--json")
    jobs = doc.get("jobs", [])
    return jobs if isinstance(jobs, list) else []


def submit_and_collect(
    tb: Testbed, kinds: tuple[JobKind, ...] = KINDS, *, cancel_after: float = 8.0
) -> RealJobs:
    """Submit every kind, follow them until all are final in accounting, return what was seen.

    A "cancel while running" job is cancelled ``cancel_after`` seconds after squeue first shows
    it RUNNING (long enough for a poll to see it running).
    """
    out = RealJobs(submitted_at=time.time())
    first: dict[str, int] = {}
    for kind in kinds:
        first[kind.name] = tb.sbatch("-J", kind.name, *kind.args, user=kind.user)
        if kind.cancel == "pending":
            tb.scancel(first[kind.name], user=kind.user)
    cancel_running = {k.name for k in kinds if k.cancel == "running"}
    running_since: dict[str, float] = {}
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        for job in _squeue_all(tb):
            state = job.get("job_state") or []
            if "RUNNING" in state:
                out.queue[int(job["job_id"])] = job
                name = job.get("name", "")
                if name in cancel_running and int(job["job_id"]) == first[name]:
                    since = running_since.setdefault(name, time.monotonic())
                    if time.monotonic() - since >= cancel_after:
                        tb.scancel(first[name])
                        cancel_running.discard(name)
        names = ",".join(str(i) for i in first.values())
        done = tb.acct_states([names])  # sacct -j first ids: array master expands to tasks
        if all(
            done.get(str(i)) in {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}
            for i in first.values()
        ) and _all_tasks_final(tb, kinds, first):
            break
        time.sleep(1)
    ids = ",".join(str(i) for i in first.values())
    doc = tb.json("sacct", "--cluster", tb.cluster, "--allusers", "-j", ids, "--json")
    for rec in doc["jobs"]:
        out.acct[int(rec["job_id"])] = rec
    for kind in kinds:
        master = first[kind.name]
        if kind.tasks > 1:
            tasks = [
                int(r["job_id"])
                for r in doc["jobs"]
                if r["array"]["job_id"] == master and r["name"] == kind.name
            ]
            out.ids[kind.name] = sorted(tasks)
        else:
            out.ids[kind.name] = [master]
    return out


def _all_tasks_final(tb: Testbed, kinds: tuple[JobKind, ...], first: dict[str, int]) -> bool:
    for kind in kinds:
        if kind.tasks > 1:
            states = tb.acct_states([first[kind.name]])
            tasks = {k: v for k, v in states.items() if "_" in k}
            if len(tasks) < kind.tasks or any(v != kind.state for v in tasks.values()):
                return False
    return True


# ---------------------------------------------------------------- independent oracles


def allocated_cores(job: dict[str, Any]) -> dict[str, list[int]]:
    """Host -> allocated core ids, read straight from squeue's v0.0.42 ``job_resources``."""
    res = job.get("job_resources") or {}
    nodes = res.get("nodes") or {}
    out: dict[str, list[int]] = {}
    for alloc in nodes.get("allocation", []):
        cores: list[int] = []
        for sock in alloc.get("sockets", []):
            for core in sock.get("cores", []):
                if "ALLOCATED" in core.get("status", []):
                    cores.append(int(core["index"]))
        out[alloc["name"]] = sorted(cores)
    return out


_IDX = re.compile(r"IDX:([0-9,\-]*)\)")


def gpu_indices(job: dict[str, Any]) -> list[list[int]]:
    """Per node (job hostlist order), the GPU indices in ``gres_detail``."""
    result: list[list[int]] = []
    for entry in job.get("gres_detail", []):
        idx: list[int] = []
        for m in _IDX.finditer(entry):
            for part in filter(None, m.group(1).split(",")):
                lo, _, hi = part.partition("-")
                idx.extend(range(int(lo), int(hi or lo) + 1))
        result.append(idx)
    return result


def dump(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)[:300]


# ================================================================ ccsa's hook inside the chroot

HOOK_PREFIX = "/opt/ccsa"  # chroot path of the copied ccsa package, launcher, hook and config


@dataclass(frozen=True)
class ChrootHook:
    """ccsa's Prolog/Epilog client installed in the test bed, and the socket it sends to."""

    hook: str  # chroot path for PrologSlurmctld/EpilogSlurmctld
    config: str  # chroot path of the hook's config file
    socket_chroot: str  # prepSockConnectPath as the hook sees it
    socket_host: Path  # the same socket as the daemon on the host binds it


def install_ccsa_hook(tb: Testbed, repo: Path, *, python: str = "/usr/bin/python3") -> ChrootHook:
    """Copy ccsa into the chroot and write a launcher, the hook script and the hook's config.

    The hook must run inside the chroot as slurmctld runs it (user slurm, no PATH) and reach
    the daemon on the host: the test bed has its own network namespace, so the daemon's
    socket is a Unix socket in the shared filesystem (``ROOT/tmp/ccsa-it`` on the host is
    ``/tmp/ccsa-it`` inside). The directory is setgid to the chroot's ``slurm`` group, so the
    socket the daemon (root) creates with mode 0660 belongs to that group and user slurm may
    connect. ``hooks/hook.sh`` from the repo is used when it exists, with its adapter path
    pointed at the launcher; the hook's config sits at the default path, so no CCSA_CONFIG.
    """
    tb.copy_into(repo / "ccsa", f"{HOOK_PREFIX}/lib/ccsa")
    bin_dir = tb.host_path(f"{HOOK_PREFIX}/bin")
    bin_dir.mkdir(parents=True, exist_ok=True)
    launcher = bin_dir / "cc-slurm-adapter"
    launcher.write_text(f'#!/bin/sh\nPYTHONPATH={HOOK_PREFIX}/lib exec {python} -m ccsa "$@"\n')
    launcher.chmod(0o755)
    sock_dir = tb.host_path("/tmp/ccsa-it")
    sock_dir.mkdir(exist_ok=True)
    os.chown(sock_dir, 0, _chroot_gid(tb, "slurm"))
    sock_dir.chmod(0o2770)
    config = {
        "prepSockConnectPath": "/tmp/ccsa-it/daemon.sock",
        "ccRestUrl": "http://127.0.0.1:9/unused-by-the-hook",
        "ccRestJwt": "unused-by-the-hook",
    }
    # the default config path, so the shipped hook.sh runs unchanged (no CCSA_CONFIG)
    config_path = "/etc/cc-slurm-adapter/config.json"
    tb.host_path(config_path).parent.mkdir(parents=True, exist_ok=True)
    tb.host_path(config_path).write_text(json.dumps(config, indent=1) + "\n")
    tb.host_path(config_path).chmod(0o644)
    hook = bin_dir / "hook.sh"
    repo_hook = repo / "hooks" / "hook.sh"
    if repo_hook.exists():
        hook.write_text(adapt_repo_hook(repo_hook.read_text(), f"{HOOK_PREFIX}/bin"))
    else:
        hook.write_text(
            f"#!/bin/sh\n{HOOK_PREFIX}/bin/cc-slurm-adapter -config {config_path}\nexit 0\n"
        )
    hook.chmod(0o755)
    return ChrootHook(
        hook=f"{HOOK_PREFIX}/bin/hook.sh",
        config=config_path,
        socket_chroot="/tmp/ccsa-it/daemon.sock",
        socket_host=sock_dir / "daemon.sock",
    )


def adapt_repo_hook(text: str, bin_dir: str) -> str:
    """Point the shipped hook's absolute ``cc-slurm-adapter`` path at the chroot's launcher."""
    return re.sub(r"/[^\s\"'}]*/cc-slurm-adapter(?![\w/.-])", f"{bin_dir}/cc-slurm-adapter", text)


def _chroot_gid(tb: Testbed, group: str) -> int:
    for line in tb.host_path("/etc/group").read_text().splitlines():
        name, _, gid, *_ = line.split(":")
        if name == group:
            return int(gid)
    raise TestbedError(f"no group {group!r} in the test bed's /etc/group")
