"""``SimCluster``: the in-process API of the simulated Slurm cluster (tests, demo, benchmarks).

It owns a state directory (see ``state.py``), writes the five executables into ``DIR/bin``,
recomputes the deterministic schedule whenever jobs are submitted, and moves the simulated clock.
The executables are separate processes that only read the directory.
"""

from __future__ import annotations

import getpass
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import msgspec

from ccsa.sim.slurm import faults as faultmod
from ccsa.sim.slurm import render, schedule
from ccsa.sim.slurm import state as statemod
from ccsa.sim.slurm.cmd import COMMANDS, warm_sacct_cache
from ccsa.sim.slurm.model import (
    DATA_PARSERS,
    ClusterSpec,
    Fault,
    Job,
    JobSpec,
    NodeGroup,
    State,
    UserSpec,
)


class NodeTruth(msgspec.Struct, frozen=True):
    """One node of a job: hostname, hwthreads (every hardware thread of each allocated core, Linux
    x86 numbering: thread t of core c is ``c + t * cores per node``), GPU indices."""

    hostname: str
    hwthreads: tuple[int, ...]
    gpus: tuple[int, ...]


def _threads(cores: tuple[int, ...], group: NodeGroup) -> tuple[int, ...]:
    n = group.ncores
    return tuple(c + t * n for c in sorted(cores) for t in range(group.threads))


class RecordTruth(msgspec.Struct, frozen=True):
    """An earlier accounting record of a job: start, end, and how it ended (REQUEUED,
    PREEMPTED or RESIZING)."""

    start: int
    end: int
    state: str
    hosts: tuple[str, ...] = ()


class JobTruth(msgspec.Struct, frozen=True, kw_only=True):
    """Ground truth of one job record at the cluster's "now" (what should reach cc-backend)."""

    cluster: str
    job_id: int
    array_job_id: int
    array_task_id: int | None
    het_job_id: int
    het_offset: int | None
    name: str
    user: str
    account: str
    partition: str
    submit: int
    start: int | None  # None if not started (yet, or never)
    end: int | None  # None while pending or running
    state: str  # state at now: PENDING RUNNING or the final state
    shared: str
    restarts: int
    nodes: tuple[NodeTruth, ...]
    #: when the current run's nodes were allocated: ``start`` unless they had to power up
    #: (CONFIGURING from ``allocated`` until ``start``); None if not started
    allocated: int | None = None
    #: the job's earlier records that have ended by now (``sacct --duplicates``), oldest first
    earlier: tuple[RecordTruth, ...] = ()


def _exe(command: str, directory: Path) -> str:
    root = str(Path(__file__).resolve().parents[3])
    return (
        f"#!{sys.executable} -I\n"
        f"# simulated Slurm `{command}` answering from {directory}\n"
        "import gc, sys\n"
        "gc.disable()  # a short-lived process: no collection passes while it builds its state\n"
        f"sys.path.insert(0, {root!r})\n"
        "from ccsa.sim.slurm.cmd import main\n"
        f"sys.exit(main({command!r}, {str(directory)!r}, sys.argv[1:]))\n"
    )


class SimCluster:
    """A simulated Slurm cluster persisted in ``directory``."""

    def __init__(self, directory: Path, state: State) -> None:
        self.directory = directory
        self.state = state

    # ---------------------------------------------------------------- creation

    @classmethod
    def create(
        cls,
        directory: Path,
        *,
        clusters: Sequence[str | ClusterSpec] = ("cluster1",),
        nodes: int = 14,
        seed: int = 0,
        data_parser: str = "v0.0.42",
        clock: Literal["real", "sim"] = "sim",
        start: float | None = None,
        min_job_age: float = 300.0,
        dbd_lag: float = 0.0,
        store_scripts: bool = False,
        operator: str | None = None,
        admin_level: str = "Operator",
        private_data: str = "none",
        cred_expire: float | None = None,
    ) -> SimCluster:
        """Create (or overwrite) a simulated cluster in ``directory``; returns it.

        ``clusters`` are names (each gets ``schedule.default_cluster(name, nodes=nodes)``) or
        full ``ClusterSpec`` objects. ``clock="sim"`` stands still until ``advance``/``set_now``;
        ``"real"`` follows the wall clock from ``start`` (default: now).

        ``operator`` (default: the user running this) is added to every cluster's users with
        ``admin_level`` so ``sacctmgr show user $USER`` answers like a configured site.
        ``private_data`` is what ``scontrol show config`` reports as ``PrivateData``.
        ``cred_expire`` (slurm.conf ``AuthInfo=cred_expire``, default 120 s): a requeued job
        waits ``cred_expire + 1`` seconds before it may run again.
        """
        if data_parser not in DATA_PARSERS:
            raise ValueError(
                f"data_parser {data_parser!r} not simulated (choose from {', '.join(DATA_PARSERS)})"
            )
        if clock not in ("real", "sim"):
            raise ValueError(f"clock must be 'real' or 'sim', not {clock!r}")
        me = operator if operator is not None else getpass.getuser()
        specs: list[ClusterSpec] = []
        for i, c in enumerate(clusters):
            spec = c if isinstance(c, ClusterSpec) else schedule.default_cluster(c, nodes=nodes)
            users = [u for u in spec.users if u.name != me]
            users.append(
                UserSpec(name=me, uid=os.getuid(), account="root", admin_level=admin_level)
            )
            spec = msgspec.structs.replace(
                spec,
                users=tuple(users),
                min_job_age=min_job_age,
                dbd_lag=dbd_lag,
                store_scripts=store_scripts,
                private_data=private_data,
                cred_expire=spec.cred_expire if cred_expire is None else cred_expire,
                first_job_id=spec.first_job_id if isinstance(c, ClusterSpec) else 1000 + i * 100000,
            )
            specs.append(spec)
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate cluster names: {names}")
        origin = float(int(start if start is not None else time.time()))
        st = State(
            clusters=tuple(specs),
            data_parser=data_parser,
            clock=clock,
            origin=origin,
            seed=seed,
            next_id={s.name: s.first_job_id for s in specs},
        )
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "bin").mkdir(exist_ok=True)
        for command in COMMANDS:
            path = directory / "bin" / command
            statemod.write_atomic(path, _exe(command, directory.resolve()).encode())
            path.chmod(0o755)
        statemod.save_state(directory, st)
        statemod.save_now(directory, origin)
        statemod.save_faults(directory, [])
        (directory / statemod.CALLS).write_bytes(b"")
        return cls(directory, st)

    @classmethod
    def open(cls, directory: Path) -> SimCluster:
        return cls(directory, statemod.load_state(directory, with_specs=True))

    # ---------------------------------------------------------------- properties

    @property
    def bin_dir(self) -> Path:
        return self.directory / "bin"

    @property
    def now(self) -> float:
        """The Slurm hosts' clock (this host's plus the skew, see ``set_skew``)."""
        return statemod.load_now(self.directory, self.state)

    @property
    def host_now(self) -> float:
        """This host's clock (the simulated one, or the wall clock), without the skew."""
        return statemod.load_now(self.directory, self.state, skewed=False)

    @property
    def skew(self) -> float:
        return statemod.load_clock(self.directory, self.state).skew

    def set_skew(self, seconds: float) -> None:
        """Let the Slurm hosts' clock run ``seconds`` ahead of this host's (negative: behind).

        Every time Slurm prints (job times, ``sdiag``'s request time, squeue's ``last_update``)
        and every "now" of the commands is on the skewed clock; ``host_now`` is not.
        """
        statemod.save_now(
            self.directory, statemod.load_clock(self.directory, self.state).now, seconds
        )

    @property
    def clusters(self) -> list[str]:
        return [c.name for c in self.state.clusters]

    def spec(self, cluster: str | None = None) -> ClusterSpec:
        return self.state.cluster(cluster) if cluster else self.state.clusters[0]

    # ---------------------------------------------------------------- clock

    def advance(self, seconds: float) -> float:
        """Move the simulated clock forward; returns the new now."""
        if self.state.clock != "sim":
            raise ValueError("advance() needs clock='sim' (this cluster follows the wall clock)")
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        return self.set_now(self.host_now + seconds)

    def set_now(self, t: float) -> float:
        """Set this host's simulated clock to ``t`` (Slurm's is ``t`` plus the skew)."""
        if self.state.clock != "sim":
            raise ValueError("set_now() needs clock='sim' (this cluster follows the wall clock)")
        statemod.save_now(self.directory, t)
        self.warm()
        return t

    def warm(self) -> int:
        """Pre-render the sacct records of every job finished by now (default data_parser), so
        a big sacct window costs the simulated sacct a join, not a render. Returns the count."""
        return warm_sacct_cache(self.directory, self.state, self.now)

    # ---------------------------------------------------------------- workload

    def submit(self, spec: JobSpec) -> int:
        """Submit one job (``submit=None`` means now); returns its (first) job id."""
        return self.submit_many([spec])[0]

    def submit_many(self, specs: Iterable[JobSpec]) -> list[int]:
        st = self.state
        now = self.now
        ids: list[int] = []
        new_specs = list(st.specs)
        first_ids = list(st.first_ids)
        next_id = dict(st.next_id)
        for js in specs:
            cluster = js.cluster or st.clusters[0].name
            cspec = st.cluster(cluster)
            try:
                cspec.user(js.user)
            except KeyError:
                raise ValueError(
                    f"job {js.name!r}: user {js.user!r} is not a user of cluster {cluster}"
                ) from None
            if js.end_state not in (*schedule.STATE_MIX, "CANCELLED"):
                raise ValueError(f"job {js.name!r}: unknown end state {js.end_state!r}")
            submit = now if js.submit is None else js.submit
            js = msgspec.structs.replace(js, cluster=cluster, submit=submit)
            first = next_id[cluster]
            next_id[cluster] = first + max(1, js.array_size) + len(js.het)
            new_specs.append(js)
            first_ids.append(first)
            ids.append(first)
        jobs: list[Job] = []
        for c in st.clusters:
            items = [
                (f, s) for f, s in zip(first_ids, new_specs, strict=True) if s.cluster == c.name
            ]
            jobs.extend(schedule.schedule(c, items))
        self.state = msgspec.structs.replace(
            st,
            specs=new_specs,
            first_ids=first_ids,
            next_id=next_id,
            jobs=jobs,
            generation=st.generation + 1,
        )
        statemod.save_state(self.directory, self.state)
        return ids

    def add_workload(
        self,
        n_jobs: int = 100,
        *,
        rate_per_min: float = 10.0,
        mix: Mapping[str, float] | None = None,
        cluster: str | None = None,
        start: float | None = None,
        max_duration: float = 900.0,
    ) -> list[int]:
        """Submit a steady, seeded workload of ``n_jobs`` arriving from ``start`` (default now)."""
        spec = self.spec(cluster)
        t0 = self.now if start is None else start
        seed = self.state.seed * 1_000_003 + self.state.workload_counter
        specs = schedule.workload(
            spec,
            seed=seed,
            n_jobs=n_jobs,
            start=t0,
            rate_per_min=rate_per_min,
            mix=mix,
            max_duration=max_duration,
        )
        self.state = msgspec.structs.replace(
            self.state, workload_counter=self.state.workload_counter + 1
        )
        return self.submit_many(specs)

    # ---------------------------------------------------------------- truth

    def jobs(self, *, cluster: str | None = None) -> list[JobTruth]:
        """Ground truth of every submitted job record at now (array meta records excluded)."""
        now = self.now
        out: list[JobTruth] = []
        groups = {n: g for c in self.state.clusters for n, g in c.group_of().items()}
        for v in render.visible(self.state.jobs, now):
            j = v.job
            if cluster and j.cluster != cluster:
                continue
            run = v.run
            # hwthreads: every thread of each allocated core (socket*cores+core), spread numbering
            nodes = tuple(
                NodeTruth(a.node, _threads(a.cores, groups[a.node]), a.gpus)
                for a in (run.allocs if run else ())
            )
            out.append(
                JobTruth(
                    cluster=j.cluster,
                    job_id=j.job_id,
                    array_job_id=j.array_job_id,
                    array_task_id=j.array_task_id,
                    het_job_id=j.het_job_id,
                    het_offset=j.het_offset,
                    name=j.name,
                    user=j.user,
                    account=j.account,
                    partition=j.partition,
                    submit=int(j.submit),
                    start=int(run.start) if run else None,
                    end=(int(run.end) if run else int(j.end)) if v.phase == "done" else None,
                    state=v.state,
                    shared=j.shared,
                    restarts=v.restarts,
                    nodes=nodes,
                    allocated=int(v.run.begin) if v.run else None,
                    earlier=tuple(
                        RecordTruth(
                            int(r.start), int(r.end), r.ended, tuple(a.node for a in r.allocs)
                        )
                        for r in v.earlier
                    ),
                )
            )
        return out

    def records(self) -> list[Job]:
        """The full scheduled records (future included): for tests and generators."""
        return list(self.state.jobs)

    # ---------------------------------------------------------------- faults

    def set_fault(
        self,
        kind: str,
        *,
        command: str = "*",
        seconds: float = 0.0,
        exit_code: int = 1,
        message: str = "",
        calls: int | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> Fault:
        """Add a fault (see ``faults.KINDS``); subprocesses see it at their next call."""
        f = Fault(
            kind=kind,
            command=command,
            seconds=seconds,
            exit_code=exit_code,
            message=message,
            calls=calls,
            start=start,
            end=end,
        )
        faultmod.validate(f)
        with statemod.Locked(self.directory):
            fs = statemod.load_faults(self.directory)
            fs.append(f)
            statemod.save_faults(self.directory, fs)
        return f

    def faults(self) -> list[Fault]:
        return statemod.load_faults(self.directory)

    def clear_faults(self) -> None:
        with statemod.Locked(self.directory):
            statemod.save_faults(self.directory, [])

    # ---------------------------------------------------------------- statistics

    def calls(self) -> list[dict[str, object]]:
        """Every simulated command run so far: ``{"command", "argv", "now", "t"}``."""
        data = (self.directory / statemod.CALLS).read_bytes()
        return [msgspec.json.decode(line) for line in data.splitlines() if line]
