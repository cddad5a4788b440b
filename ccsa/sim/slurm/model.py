"""The simulated cluster's data model: specs (what the cluster is, what users ask for) and the
scheduled job records (what Slurm did with it), as msgspec Structs so the state directory can be
written and read back quickly by every simulated command.

Times are Unix seconds (floats in the model; Slurm prints whole seconds).
"""

from __future__ import annotations

import msgspec

#: Final states a job can end in (``state.current[0]`` in sacct, ``job_state[0]`` in squeue).
END_STATES = (
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
)

#: slurm.conf ``AuthInfo=cred_expire`` default (s). A requeued (or preempted) job may start
#: again ``cred_expire + 1`` after the requeue (``job_mgr.c``: begin_time = now +
#: cred_lifetime + 1), seen as 121 s on the 24.11 test bed and 11 s with ``cred_expire=10``
#: (docs/real-slurm.md); `ClusterSpec.requeue_delay`.
CRED_EXPIRE = 120.0

#: data_parser version -> (Slurm release it is the CLI default of, release string printed).
DATA_PARSERS: dict[str, tuple[str, str, str, str]] = {
    # dp: (major, minor, micro, release)
    "v0.0.41": ("24", "05", "3", "24.05.3"),
    "v0.0.42": ("24", "11", "5", "24.11.5"),
    "v0.0.43": ("25", "05", "4", "25.05.4"),
    "v0.0.44": ("25", "11", "0", "25.11.0"),
}

#: data_parser plugins each release ships that the simulator can render (``--json=v0.0.XX``).
RENDERABLE: dict[str, tuple[str, ...]] = {
    "v0.0.41": ("v0.0.41",),
    "v0.0.42": ("v0.0.41", "v0.0.42"),
    "v0.0.43": ("v0.0.41", "v0.0.42", "v0.0.43"),
    "v0.0.44": ("v0.0.41", "v0.0.42", "v0.0.43", "v0.0.44"),
}


class GpuSpec(msgspec.Struct, frozen=True):
    """``count`` GPUs of one type on a node; ``type == ""`` is an untyped ``gpu:N``."""

    type: str
    count: int


class NodeGroup(msgspec.Struct, frozen=True, kw_only=True):
    """``count`` identical nodes named ``prefix`` + zero-padded number (``cn001``...)."""

    prefix: str
    count: int
    sockets: int = 2
    cores: int = 8  # per socket
    threads: int = 1
    memory: int = 64000  # MiB (RealMemory)
    gpus: tuple[GpuSpec, ...] = ()
    width: int = 3
    first: int = 1

    def names(self) -> list[str]:
        return [
            f"{self.prefix}{i:0{self.width}d}" for i in range(self.first, self.first + self.count)
        ]

    @property
    def ncores(self) -> int:
        return self.sockets * self.cores

    @property
    def ngpus(self) -> int:
        return sum(g.count for g in self.gpus)

    def gres(self) -> str:
        """Configured ``gres`` string as scontrol/sinfo print it (``gpu:h100:2,gpu:h200:4``)."""
        return ",".join(
            f"gpu:{g.type}:{g.count}" if g.type else f"gpu:{g.count}" for g in self.gpus
        )


class PartitionSpec(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    groups: tuple[str, ...]  # NodeGroup prefixes
    time_limit: int = 1440  # minutes
    default: bool = False


class UserSpec(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    uid: int
    account: str
    admin_level: str = "None"  # "Not Set" | "None" | "Operator" | "Administrator"


class ClusterSpec(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    groups: tuple[NodeGroup, ...]
    partitions: tuple[PartitionSpec, ...]
    users: tuple[UserSpec, ...]
    first_job_id: int = 1000
    #: slurm.conf MinJobAge: finished jobs vanish from squeue/scontrol this long after their end.
    min_job_age: float = 300.0
    #: slurmdbd lag: sacct still says PENDING (start and nodes filled) this long after a start.
    dbd_lag: float = 0.0
    #: AccountingStoreFlags=job_script: sacct --batch-script / ``script`` carry the script.
    store_scripts: bool = False
    #: AccountingStorageTRES lists typed GPUs (``gres/gpu:h100``) besides ``gres/gpu``.
    typed_gpu_tres: bool = True
    #: slurm.conf PrivateData (``scontrol show config``); ``jobs`` hides other users' jobs from
    #: non-operators in a real Slurm (the simulator only reports the setting).
    private_data: str = "none"
    #: slurm.conf ``AuthInfo=cred_expire`` (s): how long a requeued job waits (`requeue_delay`)
    cred_expire: float = CRED_EXPIRE

    @property
    def requeue_delay(self) -> float:
        """A requeued job becomes eligible again this long after the requeue."""
        return self.cred_expire + 1.0

    def group_of(self) -> dict[str, NodeGroup]:
        """Node name -> its group."""
        return {name: g for g in self.groups for name in g.names()}

    def partition(self, name: str) -> PartitionSpec:
        for p in self.partitions:
            if p.name == name:
                return p
        raise KeyError(name)

    def default_partition(self) -> PartitionSpec:
        for p in self.partitions:
            if p.default:
                return p
        return self.partitions[0]

    def user(self, name: str) -> UserSpec:
        for u in self.users:
            if u.name == name:
                return u
        raise KeyError(name)


class Shape(msgspec.Struct, frozen=True, kw_only=True):
    """The resources one job (or one het component) asks for."""

    nodes: int = 1
    cpus_per_node: int = 1
    gpus_per_node: int = 0
    gpu_type: str = ""  # "" = any type
    mem_per_node: int = 1024  # MiB
    partition: str = ""  # "" = the job's partition


class JobSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a user submits. ``submit=None`` means "now" when handed to ``SimCluster.submit``."""

    user: str
    cluster: str = ""
    partition: str = ""
    name: str = "job"
    submit: float | None = None
    begin_delay: float = 0.0  # --begin=now+X: eligible = submit + begin_delay
    shape: Shape = Shape()
    het: tuple[Shape, ...] = ()  # further het components (the first one is ``shape``)
    array_size: int = 0  # --array=0-(N-1); 0 = not an array
    duration: float = 600.0  # run time until the end state is reached
    time_limit: int = 60  # minutes
    end_state: str = "COMPLETED"
    exit_code: int = 0
    #: cancel the job if it has not started this many seconds after submit (CANCELLED while pending)
    cancel_pending_after: float | None = None
    #: the first run ends after this many seconds by an operator ``scontrol requeue`` (its
    #: accounting record says REQUEUED) and the job runs again
    requeue_after: float | None = None
    #: a run (after ``requeue_after``'s, if both are set) is preempted this many seconds after
    #: its start with ``PreemptMode=REQUEUE``: its record says PREEMPTED, the job runs again
    preempt_after: float | None = None
    #: the first run's nodes are powered down: the job is CONFIGURING for this long while they
    #: boot, then slurmctld resets its start time to now (``job_config_fini``)
    boot_delay: float = 0.0
    #: the final run shrinks to ``resize_nodes`` nodes this many seconds after its start
    #: (``scontrol update JobId=N NumNodes=M``): a RESIZING record ends, a new one starts
    resize_after: float | None = None
    resize_nodes: int = 1
    #: ``scancel`` this many seconds after a requeue or preemption, while the job pends
    #: (then nothing but the earlier runs ever ran)
    cancel_requeued_after: float | None = None
    shared: str = ""  # "" (partition default) | "none" (exclusive) | "user"
    script: str = ""


class Alloc(msgspec.Struct, frozen=True, array_like=True):
    """One node of a run: the node, its allocated core ids (socket*cores+core), GPU indices."""

    node: str
    cores: tuple[int, ...]
    gpus: tuple[int, ...]


class Run(msgspec.Struct, frozen=True, array_like=True):
    """One accounting record of a job: start, end and allocation (requeued, preempted and
    resized jobs have earlier ones)."""

    start: float
    end: float
    allocs: tuple[Alloc, ...]
    #: when the nodes were allocated, if earlier than ``start`` (power-up: CONFIGURING until
    #: ``start``); 0 = at ``start``
    alloc: float = 0.0
    #: how this record ended when a later one follows: REQUEUED, PREEMPTED or RESIZING
    #: ("" for a job's final run)
    ended: str = ""

    @property
    def begin(self) -> float:
        """When the nodes were allocated (``start`` unless the nodes had to power up)."""
        return self.alloc or self.start


class Job(msgspec.Struct, kw_only=True):
    """One Slurm job record (an array task or a het component is a record of its own)."""

    cluster: str
    job_id: int
    name: str
    user: str
    account: str
    partition: str
    submit: float
    eligible: float
    time_limit: int
    shape: Shape
    shared: str = ""
    #: the final run; None if the job never started (cancelled while pending)
    run: Run | None = None
    #: earlier runs of a requeued job, ended by requeue (oldest first)
    prior: tuple[Run, ...] = ()
    #: when the job reached its final state (cancel time for a pending cancel)
    end: float
    state: str  # final state
    exit_code: int = 0
    signal: int = 0
    array_job_id: int = 0
    array_task_id: int | None = None
    array_size: int = 0
    het_job_id: int = 0
    het_offset: int | None = None
    het_ids: tuple[int, ...] = ()
    script: str = ""


class Fault(msgspec.Struct, kw_only=True):
    """An injected fault. ``command`` is a command name (``sacct``...) or ``*``."""

    #: latency | hang | exit | truncate | garbage | dbd_down | ctld_down | dbd_lag | empty_user
    #: | corrupt_record (see faults.KINDS and docs/simulator.md)
    kind: str
    command: str = "*"
    seconds: float = 0.0  # latency; dbd_lag: the delay of slurmctld's messages to slurmdbd
    exit_code: int = 1  # exit
    message: str = ""  # exit: stderr line
    calls: int | None = None  # remaining calls it applies to; None = unlimited
    start: float | None = None  # active from this simulated time on
    end: float | None = None  # ... until this time (exclusive)


class State(msgspec.Struct, kw_only=True):
    """Everything persisted about a simulated cluster except the clock and the faults."""

    clusters: tuple[ClusterSpec, ...]
    data_parser: str = "v0.0.42"
    clock: str = "sim"  # "sim" | "real"
    origin: float = 0.0  # schedule start (creation time)
    seed: int = 0
    next_id: dict[str, int] = {}
    specs: list[JobSpec] = []  # every submitted spec, in submit order, with submit set
    first_ids: list[int] = []  # the first job id of each spec
    jobs: list[Job] = []
    workload_counter: int = 0
    #: bumped whenever the schedule is recomputed (invalidates rendered-document caches)
    generation: int = 0

    def cluster(self, name: str) -> ClusterSpec:
        for c in self.clusters:
            if c.name == name:
                return c
        raise KeyError(name)
