"""Deterministic scheduling of the simulated cluster (pure: no I/O, no clock).

``schedule()`` turns the submitted job specs into Slurm job records with start/end times and
conflict-free allocations (nodes, cores, GPU indices) by an event-driven simulation: end events
free resources, eligible/cancel events change the queue, and after every event time the pending
queue is scanned first-fit (FIFO with backfill, ``MAX_SCAN`` deep, like bf_max_job_test).
The simulation is causal: decisions at time t depend only on specs submitted at or before t, so
adding a spec submitted "now" never rewrites the past. ``workload()`` generates a seeded,
realistic mix of specs. Why hand-written: no scheduler library models Slurm's cons_tres
allocations (socket/core/GPU indices), and these few hundred lines are the whole point.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from ccsa.sim.slurm.model import (
    Alloc,
    ClusterSpec,
    GpuSpec,
    Job,
    JobSpec,
    NodeGroup,
    PartitionSpec,
    Run,
    Shape,
    UserSpec,
)

#: How many pending jobs are tried at each event (Slurm's bf_max_job_test is 500 by default;
#: a smaller depth keeps a 10k-job backlog cheap and changes nothing at test scale).
MAX_SCAN = 64


class ScheduleError(ValueError):
    """A job spec can never run on this cluster (names the job)."""


def default_cluster(
    name: str = "cluster1", *, operator: str | None = None, nodes: int = 14
) -> ClusterSpec:
    """A mixed cluster of ``nodes`` nodes (>= 3): ~60 % CPU nodes (2x8 cores), ~30 % nodes with
    4 a100 GPUs, the rest two-type GPU nodes (2 h100 + 4 h200). Node names start with the
    cluster's first letter so that clusters do not share host names."""
    if nodes < 3:
        raise ValueError(f"cluster {name}: needs at least 3 nodes (one of each kind), not {nodes}")
    n_hx = max(1, nodes // 7)
    n_gpu = max(1, (nodes * 2) // 7)
    n_cn = nodes - n_hx - n_gpu
    groups = (
        # SMT CPU nodes (2 sockets x 8 cores x 2 threads), the GPU nodes without SMT
        NodeGroup(prefix=f"{name[:1]}cn", count=n_cn, sockets=2, cores=8, threads=2, memory=64000),
        NodeGroup(
            prefix=f"{name[:1]}gpu",
            count=n_gpu,
            sockets=2,
            cores=16,
            memory=256000,
            gpus=(GpuSpec("a100", 4),),
        ),
        NodeGroup(
            prefix=f"{name[:1]}hx",
            count=n_hx,
            sockets=2,
            cores=16,
            memory=512000,
            gpus=(GpuSpec("h100", 2), GpuSpec("h200", 4)),
        ),
    )
    partitions = (
        PartitionSpec(name="main", groups=(groups[0].prefix,), time_limit=1440, default=True),
        PartitionSpec(name="gpu", groups=(groups[1].prefix, groups[2].prefix), time_limit=2880),
        PartitionSpec(name="debug", groups=(groups[0].prefix,), time_limit=60),
    )
    users = [
        UserSpec(name="alice", uid=2001, account="research"),
        UserSpec(name="bob", uid=2002, account="ml"),
        UserSpec(name="carol", uid=2003, account="research"),
        UserSpec(name="dave", uid=2004, account="physics"),
    ]
    if operator and operator not in {u.name for u in users}:
        users.append(UserSpec(name=operator, uid=0, account="root", admin_level="Operator"))
    return ClusterSpec(name=name, groups=groups, partitions=partitions, users=tuple(users))


# --------------------------------------------------------------------------------------------
# node bookkeeping


@dataclass
class _Node:
    name: str
    group: NodeGroup
    free_cores: list[int]
    free_gpus: set[int]
    free_mem: int
    jobs: int = 0
    exclusive: bool = False
    owner: str = ""  # shared=user: only this user's jobs
    type_ranges: dict[str, range] = field(default_factory=dict)


def _make_nodes(spec: ClusterSpec) -> dict[str, _Node]:
    nodes: dict[str, _Node] = {}
    for g in spec.groups:
        ranges: dict[str, range] = {}
        off = 0
        for gpu in g.gpus:
            ranges[gpu.type] = range(off, off + gpu.count)
            off += gpu.count
        for n in g.names():
            nodes[n] = _Node(
                name=n,
                group=g,
                free_cores=list(range(g.ncores)),
                free_gpus=set(range(g.ngpus)),
                free_mem=g.memory,
                type_ranges=ranges,
            )
    return nodes


def _fits(node: _Node, shape: Shape, user: str, shared: str) -> bool:
    if node.exclusive:
        return False
    if shared == "none" and node.jobs:
        return False
    if node.owner and node.owner != user:
        return False
    if shared == "user" and node.jobs and node.owner != user:
        return False
    if len(node.free_cores) < shape.cpus_per_node or node.free_mem < shape.mem_per_node:
        return False
    if shape.gpus_per_node:
        if shape.gpu_type:
            rng = node.type_ranges.get(shape.gpu_type)
            if rng is None:
                return False
            return sum(1 for i in rng if i in node.free_gpus) >= shape.gpus_per_node
        return len(node.free_gpus) >= shape.gpus_per_node
    return True


def _take(node: _Node, shape: Shape, user: str, shared: str) -> Alloc:
    ncores = len(node.free_cores) if shared == "none" else shape.cpus_per_node
    cores = tuple(node.free_cores[:ncores])
    del node.free_cores[:ncores]
    gpus: tuple[int, ...] = ()
    if shape.gpus_per_node:
        pool = (
            sorted(i for i in node.type_ranges[shape.gpu_type] if i in node.free_gpus)
            if shape.gpu_type
            else sorted(node.free_gpus)
        )
        gpus = tuple(pool[: shape.gpus_per_node])
        node.free_gpus.difference_update(gpus)
    node.free_mem -= shape.mem_per_node
    node.jobs += 1
    if shared == "none":
        node.exclusive = True
    if shared == "user":
        node.owner = user
    return Alloc(node.name, cores, gpus)


def _give_back(node: _Node, alloc: Alloc, mem: int) -> None:
    node.free_cores.extend(alloc.cores)
    node.free_cores.sort()
    node.free_gpus.update(alloc.gpus)
    node.free_mem += mem
    node.jobs -= 1
    node.exclusive = False
    if node.jobs == 0:
        node.owner = ""


# --------------------------------------------------------------------------------------------
# units of scheduling


@dataclass
class _Unit:
    """Something that starts as a whole: a job, one array task, or all components of a het job."""

    seq: int
    first: int
    spec: JobSpec
    ids: list[int]
    shapes: list[Shape]
    partitions: list[str]
    eligible: float
    task: int | None = None
    runs: list[Run] = field(default_factory=list)
    #: the interruptions still to come, in order: (record state, seconds after the start)
    interrupts: list[tuple[str, float]] = field(default_factory=list)
    cancel_at: float | None = None
    allocs: list[list[Alloc]] = field(default_factory=list)  # per component, current run
    started: float | None = None
    done: bool = False


def _units(
    spec: ClusterSpec, items: Sequence[tuple[int, JobSpec]]
) -> tuple[list[_Unit], dict[str, list[str]]]:
    part_nodes: dict[str, list[str]] = {}
    by_prefix = {g.prefix: g for g in spec.groups}
    for p in spec.partitions:
        part_nodes[p.name] = [n for pre in p.groups for n in by_prefix[pre].names()]
    units: list[_Unit] = []
    for first, js in items:
        assert js.submit is not None
        part = js.partition or spec.default_partition().name
        shapes = [js.shape, *js.het]
        parts = [s.partition or part for s in shapes]
        for shape, pname in zip(shapes, parts, strict=True):
            _check_shape(spec, first, js, shape, pname, part_nodes)
        eligible = js.submit + js.begin_delay
        cancel = (
            js.submit + js.cancel_pending_after if js.cancel_pending_after is not None else None
        )
        interrupts = [
            (state, after)
            for state, after in (("REQUEUED", js.requeue_after), ("PREEMPTED", js.preempt_after))
            if after is not None
        ]
        if js.array_size:
            n = js.array_size
            for t in range(n):
                raw = first if t == n - 1 else first + 1 + t
                units.append(
                    _Unit(
                        len(units),
                        first,
                        js,
                        [raw],
                        shapes[:1],
                        parts[:1],
                        eligible,
                        task=t,
                        cancel_at=cancel,
                        interrupts=list(interrupts),
                    )
                )
        else:
            ids = [first + k for k in range(len(shapes))]
            units.append(
                _Unit(
                    len(units),
                    first,
                    js,
                    ids,
                    shapes,
                    parts,
                    eligible,
                    cancel_at=cancel,
                    interrupts=list(interrupts),
                )
            )
    return units, part_nodes


def _check_shape(
    spec: ClusterSpec,
    first: int,
    js: JobSpec,
    s: Shape,
    part: str,
    part_nodes: Mapping[str, list[str]],
) -> None:
    if part not in part_nodes:
        raise ScheduleError(f"job {first}: partition {part!r} does not exist on {spec.name}")
    groups = spec.group_of()
    ok = [
        n
        for n in part_nodes[part]
        if (g := groups[n]).ncores >= s.cpus_per_node
        and g.memory >= s.mem_per_node
        and (
            s.gpus_per_node == 0
            or (
                sum(x.count for x in g.gpus if not s.gpu_type or x.type == s.gpu_type)
                >= s.gpus_per_node
            )
        )
    ]
    if len(ok) < s.nodes:
        raise ScheduleError(
            f"job {first} ({js.name}): requested node configuration is not available "
            f"in partition {part} ({s.nodes} nodes x {s.cpus_per_node} cpus, "
            f"{s.gpus_per_node} gpu{':' + s.gpu_type if s.gpu_type else ''})"
        )


def _try_start(unit: _Unit, nodes: dict[str, _Node], part_nodes: Mapping[str, list[str]]) -> bool:
    user, shared = unit.spec.user, unit.spec.shared
    taken: list[tuple[_Node, Alloc, int]] = []
    result: list[list[Alloc]] = []
    for shape, part in zip(unit.shapes, unit.partitions, strict=True):
        comp: list[Alloc] = []
        for name in part_nodes[part]:
            node = nodes[name]
            if _fits(node, shape, user, shared):
                a = _take(node, shape, user, shared)
                taken.append((node, a, shape.mem_per_node))
                comp.append(a)
                if len(comp) == shape.nodes:
                    break
        if len(comp) < shape.nodes:
            for node, a, mem in reversed(taken):
                _give_back(node, a, mem)
            return False
        result.append(comp)
    unit.allocs = result
    return True


def _queue_key(u: _Unit) -> tuple[float, int]:
    return (u.eligible, u.seq)


def _record_start(
    u: _Unit,
    t: float,
    events: list[tuple[float, int, int, int]],
    ends: dict[int, tuple[float, str]],
) -> None:
    """Start ``u``'s next run at ``t``, the allocation time.

    Power-up (``boot_delay``, first run only): the job is CONFIGURING until its nodes are up,
    then slurmctld resets its start time to that moment and extends its end time by the boot
    (SchedMD ``src/slurmctld/job_mgr.c`` ``job_config_fini``, ``_het_job_time_limit_incr``).
    """
    u.started = t
    boot = u.spec.boot_delay if not u.runs and u.spec.boot_delay > 0 else 0.0
    start = t + boot
    ended = ""
    if u.interrupts:
        ended, after = u.interrupts.pop(0)
        end = start + max(1.0, after)
    else:
        length, state = _run_length(u.spec)
        end = start + length
        u.done = True
        ends[u.seq] = (end, state)
    allocs = tuple(a for c in u.allocs for a in c)
    u.runs.append(Run(start, end, allocs, alloc=t if boot else 0.0, ended=ended))
    heapq.heappush(events, (end, 0, u.seq, u.seq))


def _run_length(js: JobSpec) -> tuple[float, str]:
    limit = js.time_limit * 60.0
    if js.end_state == "TIMEOUT" or js.duration > limit:
        return limit, "TIMEOUT"
    return max(1.0, js.duration), js.end_state


def schedule(spec: ClusterSpec, items: Sequence[tuple[int, JobSpec]]) -> list[Job]:
    """Schedule every ``(first_job_id, spec)`` (submit set) on ``spec``; return job records.

    Raises:
        ScheduleError: a job can never fit its partition (names the job).
    """
    units, part_nodes = _units(spec, items)
    nodes = _make_nodes(spec)
    events: list[
        tuple[float, int, int, int]
    ] = []  # (time, kind, seq, unit) kind 0=end 1=cancel 2=arrive
    for u in units:
        heapq.heappush(events, (u.eligible, 2, u.seq, u.seq))
        if u.cancel_at is not None:
            heapq.heappush(events, (u.cancel_at, 1, u.seq, u.seq))
    pending: list[_Unit] = []  # sorted by (eligible, seq)
    cancelled: dict[int, float] = {}
    ends: dict[int, tuple[float, str]] = {}
    key = _queue_key
    while events:
        t = events[0][0]
        freed = False
        arrived: list[_Unit] = []
        while events and events[0][0] == t:
            _, kind, _, idx = heapq.heappop(events)
            u = units[idx]
            if kind == 0:
                for comp, shape in zip(u.allocs, u.shapes, strict=True):
                    for a in comp:
                        _give_back(nodes[a.node], a, shape.mem_per_node)
                u.allocs = []
                freed = True
                if not u.done:  # requeued: back to the queue
                    u.eligible = t + spec.requeue_delay
                    u.started = None
                    heapq.heappush(events, (u.eligible, 2, u.seq, u.seq))
                    if u.spec.cancel_requeued_after is not None:
                        cancel = t + max(
                            1.0, min(u.spec.cancel_requeued_after, spec.requeue_delay - 1)
                        )
                        heapq.heappush(events, (cancel, 1, u.seq, u.seq))
            elif kind == 1:
                if (
                    u.started is None
                    and not u.done
                    and (not u.runs or u.spec.cancel_requeued_after is not None)
                ):
                    u.done = True
                    cancelled[u.seq] = t
                    pos = bisect.bisect_left(pending, key(u), key=key)
                    if pos < len(pending) and pending[pos] is u:
                        del pending[pos]
            elif not u.done:
                bisect.insort(pending, u, key=key)
                arrived.append(u)
        # after an end, the head of the queue gets another chance; after arrivals only the
        # newcomers are new (everything else already failed against the same free resources)
        candidates = pending[:MAX_SCAN] if freed else [u for u in arrived if not u.done]
        started: list[_Unit] = []
        for u in candidates:
            if _try_start(u, nodes, part_nodes):
                started.append(u)
                _record_start(u, t, events, ends)
        if started:
            done = {id(u) for u in started}
            head = [u for u in pending[: MAX_SCAN + len(started)] if id(u) not in done]
            if freed:
                pending[: MAX_SCAN + len(started)] = head
            else:
                pending = [u for u in pending if id(u) not in done]
    return _records(spec, units, cancelled, ends)


def _records(
    spec: ClusterSpec,
    units: Iterable[_Unit],
    cancelled: Mapping[int, float],
    ends: Mapping[int, tuple[float, str]],
) -> list[Job]:
    out: list[Job] = []
    for u in units:
        js = u.spec
        assert js.submit is not None
        account = spec.user(js.user).account
        part = js.partition or spec.default_partition().name
        ncomp = len(u.shapes)
        for k in range(ncomp):
            shape = u.shapes[k]
            # split the (flattened) allocation of each run back into this component's nodes
            offs = sum(u.shapes[i].nodes for i in range(k))

            def comp_run(r: Run, offs: int = offs, shape: Shape = shape) -> Run:
                return msgspec.structs.replace(r, allocs=r.allocs[offs : offs + shape.nodes])

            runs = [comp_run(r) for r in u.runs]
            if u.seq in cancelled:
                end, state, run = cancelled[u.seq], "CANCELLED", None
            else:
                end, state = ends[u.seq]
                runs = _resized(runs, js)
                run = runs[-1]
            exit_code, signal = _exit(state, js.exit_code)
            out.append(
                Job(
                    cluster=spec.name,
                    job_id=u.ids[k],
                    name=js.name,
                    user=js.user,
                    account=account,
                    partition=u.partitions[k] if ncomp > 1 else part,
                    submit=js.submit,
                    eligible=js.submit + js.begin_delay,
                    time_limit=js.time_limit,
                    shape=shape,
                    shared=js.shared,
                    run=run,
                    prior=tuple(runs[:-1]) if run is not None else tuple(runs),
                    end=end,
                    state=state,
                    exit_code=exit_code,
                    signal=signal,
                    array_job_id=u.first if js.array_size else 0,
                    array_task_id=u.task,
                    array_size=js.array_size,
                    het_job_id=u.ids[0] if ncomp > 1 else 0,
                    het_offset=k if ncomp > 1 else None,
                    het_ids=tuple(u.ids) if ncomp > 1 else (),
                    script=js.script or f"#!/bin/bash\n#SBATCH -J {js.name}\nsrun ./{js.name}\n",
                )
            )
    return out


def _resized(runs: list[Run], js: JobSpec) -> list[Run]:
    """Split the final run at ``resize_after`` into a RESIZING record and the shrunk rest.

    On a resize slurmctld ends the job's accounting record with state RESIZING and end = the
    resize time, then sends a new job start whose submit, eligible and start times are the
    resize time (``job_mgr.c`` ``job_pre_resize_acctg``/``job_post_resize_acctg``,
    ``as_mysql_job.c`` ``resize_time``). The nodes given up stay reserved in this schedule until
    the job's end (a simplification: nothing else is placed on them meanwhile).
    """
    last = runs[-1]
    if js.resize_after is None or not 0 < js.resize_after < last.end - last.start:
        return runs
    keep = max(1, min(js.resize_nodes, len(last.allocs)))
    at = last.start + js.resize_after
    head = msgspec.structs.replace(last, end=at, ended="RESIZING")
    tail = Run(at, last.end, last.allocs[:keep])
    return [*runs[:-1], head, tail]


def _exit(state: str, code: int) -> tuple[int, int]:
    """(return code, signal) as slurmdbd records them for a final state."""
    if state == "FAILED":
        return (code or 1), 0
    if state == "OUT_OF_MEMORY":
        return 0, 125
    if state in ("CANCELLED", "PREEMPTED"):
        return 0, 15
    return 0, 0


# --------------------------------------------------------------------------------------------
# workload generator

#: default mix of job kinds (weights)
DEFAULT_MIX: dict[str, float] = {
    "small": 30,
    "gpu": 14,
    "multinode": 8,
    "multitype": 4,
    "array": 5,
    "het": 3,
    "exclusive": 4,
    "user_shared": 3,
    "cancel_pending": 3,
    "requeue": 2,
}
#: every job kind ``workload`` knows: the default mix plus the lifecycles that are not in it
#: (``preempt``: preempted with PreemptMode=REQUEUE and run again; ``power_up``: allocated
#: powered-down nodes, CONFIGURING while they boot, start time reset)
JOB_KINDS: tuple[str, ...] = (*DEFAULT_MIX, "preempt", "power_up")
#: final states of the jobs that run (weights)
STATE_MIX: dict[str, float] = {
    "COMPLETED": 70,
    "FAILED": 10,
    "CANCELLED": 6,
    "TIMEOUT": 5,
    "NODE_FAIL": 3,
    "OUT_OF_MEMORY": 3,
    "PREEMPTED": 3,
}


def workload(
    spec: ClusterSpec,
    *,
    seed: int,
    n_jobs: int,
    start: float,
    rate_per_min: float,
    mix: Mapping[str, float] | None = None,
    max_duration: float = 1800.0,
) -> list[JobSpec]:
    """``n_jobs`` seeded job specs with Poisson arrivals from ``start`` at ``rate_per_min``."""
    mix = dict(mix or DEFAULT_MIX)
    unknown = set(mix) - set(JOB_KINDS)
    if unknown:
        raise ValueError(
            f"unknown job kinds in mix: {sorted(unknown)} (known: {sorted(JOB_KINDS)})"
        )
    rng = random.Random(seed)
    kinds, weights = list(mix), list(mix.values())
    states, sweights = list(STATE_MIX), list(STATE_MIX.values())
    cpu_groups = [g for g in spec.groups if not g.gpus]
    gpu_groups = [g for g in spec.groups if g.gpus]
    multi = [g for g in gpu_groups if len(g.gpus) > 1]

    def part_of(group: NodeGroup | None) -> PartitionSpec:
        for p in spec.partitions:
            if group is None or group.prefix in p.groups:
                return p
        return spec.default_partition()

    t = start
    out: list[JobSpec] = []
    for i in range(n_jobs):
        t += rng.expovariate(rate_per_min / 60.0)
        user = rng.choice(spec.users)
        kind = rng.choices(kinds, weights)[0]
        duration = math.exp(rng.uniform(math.log(30), math.log(max_duration)))
        state = rng.choices(states, sweights)[0]
        group = rng.choice(cpu_groups) if cpu_groups else spec.groups[0]
        shape = Shape(
            nodes=1, cpus_per_node=rng.choice((1, 2, 4, 8)), mem_per_node=1024 * rng.randint(1, 8)
        )
        kw: dict[str, object] = {}
        if kind == "gpu" and gpu_groups:
            group = rng.choice(gpu_groups)
            gt = rng.choice(group.gpus)
            shape = Shape(
                cpus_per_node=rng.choice((2, 4, 8)),
                gpus_per_node=rng.randint(1, gt.count),
                gpu_type=gt.type if rng.random() < 0.5 else "",
                mem_per_node=8192,
            )
        elif kind == "multitype" and multi:
            group = rng.choice(multi)
            shape = Shape(cpus_per_node=8, gpus_per_node=group.ngpus, mem_per_node=16384)
        elif kind == "multinode":
            shape = Shape(
                nodes=rng.randint(2, max(2, min(4, group.count))),
                cpus_per_node=group.ncores // 2,
                mem_per_node=4096,
            )
        elif kind == "array":
            kw["array_size"] = rng.randint(2, 6)
        elif kind == "het":
            kw["het"] = (Shape(cpus_per_node=rng.choice((1, 2)), mem_per_node=1024),)
        elif kind == "exclusive":
            kw["shared"] = "none"
        elif kind == "user_shared":
            kw["shared"] = "user"
        elif kind == "cancel_pending":
            kw["begin_delay"] = 3600.0
            kw["cancel_pending_after"] = rng.uniform(30, 600)
            state = "CANCELLED"
        elif kind == "requeue":
            kw["requeue_after"] = rng.uniform(30, 300)
        elif kind == "preempt":
            kw["preempt_after"] = rng.uniform(30, 300)
        elif kind == "power_up":
            kw["boot_delay"] = rng.uniform(60, 300)
        part = part_of(group)
        limit = min(part.time_limit, max(1, int(duration // 60) + rng.choice((1, 5, 30))))
        if state == "TIMEOUT":
            duration = limit * 60.0
        out.append(
            JobSpec(
                user=user.name,
                cluster=spec.name,
                partition=part.name,
                name=f"{kind}-{i}",
                submit=round(t, 3),
                shape=shape,
                duration=duration,
                time_limit=limit,
                end_state=state,
                exit_code=rng.choice((1, 2, 137)) if state == "FAILED" else 0,
                **kw,  # type: ignore[arg-type]
            )
        )
    return out
