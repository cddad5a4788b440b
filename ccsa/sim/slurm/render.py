"""Render the simulated cluster's jobs at a moment "now" as Slurm's tools print them: sacct,
squeue / scontrol show job (JSON and text); ``render_nodes`` does sinfo and sacctmgr.

Pure: takes the state, the time and the data_parser version, returns ``dict``/``str``. Shapes
follow the real documents in ``shared/fixtures/slurm`` (data_parser v0.0.41-v0.0.44), including
their quirks (``time.start`` 4294967294 for jobs cancelled while pending, PENDING in sacct during
the slurmdbd lag, ``gres_detail`` emptied once a job has finished, ``job_resources`` ``{}`` on
24.05 vs ``null`` later for pending jobs, ``exclusive``/``oversubscribe`` only up to v0.0.41).
Why hand-written: no library produces Slurm's data_parser JSON.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import msgspec

from ccsa.sim.slurm.model import (
    DATA_PARSERS,
    ClusterSpec,
    Job,
    NodeGroup,
    Run,
    State,
)

#: how an earlier accounting record of a job ends when the job runs again (restart_cnt + 1)
REQUEUE_STATES = ("REQUEUED", "PREEMPTED")
NO_VAL32 = 4294967294  # what slurmdbd prints as time.start of a job cancelled while pending
Doc = dict[str, Any]

NV_UNSET: Doc = {"set": False, "infinite": False, "number": 0}
NV_INF: Doc = {"set": False, "infinite": True, "number": 0}


def nv(n: float) -> Doc:
    return {"set": True, "infinite": False, "number": n}


def dp_num(dp: str) -> int:
    return int(dp.rsplit(".", 1)[1])


# --------------------------------------------------------------------------------------------
# small formatting helpers


def compress(names: Sequence[str]) -> str:
    """Slurm's ranged hostlist string (``cn[001-003,005],gpu1``) keeping the given order."""
    out: list[str] = []
    cur_prefix: str | None = None
    cur_width = 0
    ranges: list[list[int]] = []

    def flush() -> None:
        if cur_prefix is None:
            return
        parts = [
            f"{a:0{cur_width}d}" if a == b else f"{a:0{cur_width}d}-{b:0{cur_width}d}"
            for a, b in ranges
        ]
        if len(ranges) == 1 and ranges[0][0] == ranges[0][1]:
            out.append(cur_prefix + parts[0])
        else:
            out.append(f"{cur_prefix}[{','.join(parts)}]")

    for name in names:
        i = len(name)
        while i > 0 and name[i - 1].isdigit():
            i -= 1
        if i == len(name):
            flush()
            cur_prefix = None
            ranges = []
            out.append(name)
            continue
        prefix, digits = name[:i], name[i:]
        num = int(digits)
        width = len(digits) if digits[0] == "0" or len(digits) > 1 else 1
        if prefix == cur_prefix and width == cur_width and ranges and ranges[-1][1] + 1 == num:
            ranges[-1][1] = num
        elif prefix == cur_prefix and width == cur_width and ranges and num > ranges[-1][1]:
            ranges.append([num, num])
        else:
            flush()
            cur_prefix, cur_width, ranges = prefix, width, [[num, num]]
    flush()
    return ",".join(out)


def ranges_str(values: Iterable[int]) -> str:
    """Bitmap format ``0-3,5``."""
    vals = sorted(values)
    out: list[str] = []
    i = 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        out.append(str(vals[i]) if i == j else f"{vals[i]}-{vals[j]}")
        i = j + 1
    return ",".join(out)


def mem_str(mib: int) -> str:
    return f"{mib // 1024}G" if mib % 1024 == 0 else f"{mib}M"


def hms(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{d}-{h:02d}:{m:02d}:{s:02d}" if d else f"{h:02d}:{m:02d}:{s:02d}"


def local(ts: float) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` in the TZ of the environment (as Slurm prints)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ts))


# --------------------------------------------------------------------------------------------
# the state of one job record at "now"


class View:
    """What a job record looks like at ``now``.

    ``run`` is slurmctld's view (squeue, scontrol), ``db_run`` slurmdbd's record (sacct); they
    differ in the start time after a resize (slurmctld keeps the job's start, slurmdbd's new
    record starts at the resize). ``earlier`` are the records that ended by a requeue,
    preemption or resize (``sacct --duplicates``), ``flags`` the job_state flags besides the
    base state (``CONFIGURING``/``POWER_UP_NODE`` while powered-down nodes boot).
    """

    __slots__ = (
        "db_run",
        "earlier",
        "flags",
        "job",
        "phase",
        "resize_time",
        "restarts",
        "run",
        "state",
    )

    def __init__(self, job: Job, now: float) -> None:
        self.job = job
        runs: list[Run] = [*job.prior, *([job.run] if job.run else [])]
        self.run: Run | None = None
        self.db_run: Run | None = None
        self.restarts = 0
        self.earlier: tuple[Run, ...] = ()
        self.flags: tuple[str, ...] = ()
        self.resize_time = 0.0
        latest = -1
        for i, r in enumerate(runs):
            if r.begin <= now:
                latest = i
        if latest < 0:
            if job.run is None and job.end <= now:
                self.phase, self.state = "done", "CANCELLED"
            else:
                self.phase, self.state = "pending", "PENDING"
            return
        r = runs[latest]
        self.restarts = sum(1 for x in runs[:latest] if x.ended in REQUEUE_STATES)
        self.earlier = tuple(runs[:latest])
        if now < r.end or (latest == len(runs) - 1 and job.run is not None):
            self.phase, self.state = ("running", "RUNNING") if now < r.end else ("done", job.state)
            if now < r.start:  # powered-down nodes still booting; start reset when they are up
                self.flags = ("CONFIGURING", "POWER_UP_NODE")
                r = msgspec.structs.replace(r, start=r.alloc)
            self.db_run = r
            first = latest
            while first > 0 and runs[first - 1].ended == "RESIZING":
                first -= 1
            if first < latest:  # resized: slurmctld keeps the job's start time
                self.resize_time = r.start
                r = msgspec.structs.replace(r, start=runs[first].start)
            self.run = r
        else:  # a run ended by requeue or preemption; the job waits for its next start
            self.phase, self.state = "pending", "PENDING"
            self.restarts += 1
            self.earlier = tuple(runs[: latest + 1])
            if job.run is None and latest == len(runs) - 1 and job.end <= now:
                self.phase, self.state = "done", "CANCELLED"  # cancelled while it pended

    @property
    def started(self) -> bool:
        return self.run is not None


def visible(jobs: Iterable[Job], now: float) -> Iterator[View]:
    for j in jobs:
        if j.submit <= now:
            yield View(j, now)


def collapse_arrays(views: Iterable[View]) -> list[View | tuple[View, list[int]]]:
    """Pending array tasks fold into one meta record (``job_id == array_job_id``)."""
    out: list[View | tuple[View, list[int]]] = []
    meta: dict[tuple[str, int], tuple[View, list[int]]] = {}
    for v in views:
        j = v.job
        if j.array_size and v.phase == "pending" and v.restarts == 0:
            key = (j.cluster, j.array_job_id)
            if key in meta:
                assert j.array_task_id is not None
                meta[key][1].append(j.array_task_id)
            else:
                assert j.array_task_id is not None
                entry = (v, [j.array_task_id])
                meta[key] = entry
                out.append(entry)
        else:
            out.append(v)
    return out


# --------------------------------------------------------------------------------------------
# envelope


def meta(state: State, dp: str, command: Sequence[str], user: str, group: str) -> Doc:
    major, minor, micro, release = DATA_PARSERS[state.data_parser]
    return {
        "plugin": {
            "type": "",
            "name": "",
            "data_parser": f"data_parser/{dp}",
            "accounting_storage": "accounting_storage/slurmdbd",
        },
        "client": {"source": "", "user": user, "group": group},
        "command": list(command),
        "slurm": {
            "version": {"major": major, "micro": micro, "minor": minor},
            "release": release,
            "cluster": state.clusters[0].name,
        },
    }


def _exit_obj(rc: int, signal: int, state: str) -> Doc:
    if state == "FAILED":
        return {"status": ["ERROR"], "return_code": nv(rc), "signal": {"id": NV_UNSET, "name": ""}}
    if state == "OUT_OF_MEMORY":  # sacct's ExitCode 0:125
        return {
            "status": ["SIGNALED"],
            "return_code": nv(0),
            "signal": {"id": nv(signal), "name": ""},
        }
    return {"status": ["SUCCESS"], "return_code": nv(0), "signal": {"id": NV_UNSET, "name": ""}}


EXIT_OK: Doc = _exit_obj(0, 0, "COMPLETED")


# --------------------------------------------------------------------------------------------
# TRES


class Tres:
    """TRES ids of a cluster (gres/gpu = 1001, typed GPUs after it, as slurmdbd numbers them)."""

    def __init__(self, spec: ClusterSpec) -> None:
        types = sorted({g.type for grp in spec.groups for g in grp.gpus if g.type})
        self.typed = spec.typed_gpu_tres
        self.ids = {t: 1002 + i for i, t in enumerate(types)}

    def gpu_types(self, job: Job, run: Run | None, groups: dict[str, NodeGroup]) -> dict[str, int]:
        """GPU count per type of a run (or of the request when not running)."""
        out: dict[str, int] = {}
        if run is None:
            if job.shape.gpu_type:
                out[job.shape.gpu_type] = job.shape.gpus_per_node * job.shape.nodes
            return out
        for a in run.allocs:
            g = groups[a.node]
            off = 0
            for gs in g.gpus:
                n = sum(1 for i in a.gpus if off <= i < off + gs.count)
                if n and gs.type:
                    out[gs.type] = out.get(gs.type, 0) + n
                off += gs.count
        return out

    def sacct_list(
        self, cpus: int, mem: int, nodes: int, gpus: int, typed: dict[str, int], energy: bool
    ) -> list[Doc]:
        out: list[Doc] = [
            {"type": "cpu", "name": "", "id": 1, "count": cpus},
            {"type": "mem", "name": "", "id": 2, "count": mem},
        ]
        if energy:
            out.append({"type": "energy", "name": "", "id": 3, "count": -2})
        out.append({"type": "node", "name": "", "id": 4, "count": nodes})
        out.append({"type": "billing", "name": "", "id": 5, "count": cpus})
        if gpus:
            out.append({"type": "gres", "name": "gpu", "id": 1001, "count": gpus})
            if self.typed:
                for t, n in sorted(typed.items()):
                    out.append({"type": "gres", "name": f"gpu:{t}", "id": self.ids[t], "count": n})
        return out

    def string(self, cpus: int, mem: int, nodes: int, gpus: int, typed: dict[str, int]) -> str:
        s = f"cpu={cpus},mem={mem_str(mem)},node={nodes},billing={cpus}"
        if gpus:
            s += f",gres/gpu={gpus}"
            if self.typed:
                s += "".join(f",gres/gpu:{t}={n}" for t, n in sorted(typed.items()))
        return s


def _sizes(job: Job, run: Run | None, groups: dict[str, NodeGroup]) -> tuple[int, int, int, int]:
    """(cpus, mem MiB, nodes, gpus) of the run, or of the request if not running."""
    s = job.shape
    if run is None:
        return (
            s.cpus_per_node * s.nodes,
            s.mem_per_node * s.nodes,
            s.nodes,
            s.gpus_per_node * s.nodes,
        )
    cpus = sum(len(a.cores) * groups[a.node].threads for a in run.allocs)
    return (
        cpus,
        s.mem_per_node * len(run.allocs),
        len(run.allocs),
        sum(len(a.gpus) for a in run.allocs),
    )


def gres_detail_entry(group: NodeGroup, gpus: Sequence[int], requested_type: str) -> str:
    """``gpu:h100:2(IDX:0-1)`` / ``gpu:2(IDX:0-1)`` / multi-type joined by ``,``."""
    if not group.gpus:
        return ""
    if len(group.gpus) == 1 and not group.gpus[0].type:
        return f"gpu:{len(gpus)}(IDX:{ranges_str(gpus)})"
    parts = []
    off = 0
    for gs in group.gpus:
        mine = [i for i in gpus if off <= i < off + gs.count]
        off += gs.count
        if mine or (not requested_type and len(group.gpus) > 1):
            parts.append(f"gpu:{gs.type}:{len(mine)}(IDX:{ranges_str(mine)})")
    return ",".join(parts)


# --------------------------------------------------------------------------------------------
# sacct


class Ctx:
    """Per-render lookups shared by all jobs of one document."""

    def __init__(self, state: State, dp: str, now: float) -> None:
        self.state = state
        self.dp = dp
        self.n = dp_num(dp)
        self.now = now
        self.release = DATA_PARSERS[state.data_parser][3]
        self.groups: dict[str, dict[str, NodeGroup]] = {}
        self.tres: dict[str, Tres] = {}
        self.uids: dict[str, dict[str, int]] = {}
        self.requeue_delay: dict[str, float] = {}
        for c in state.clusters:
            self.requeue_delay[c.name] = c.requeue_delay
            self.groups[c.name] = c.group_of()
            self.tres[c.name] = Tres(c)
            self.uids[c.name] = {u.name: u.uid for u in c.users}


def sacct_job(
    ctx: Ctx,
    item: View | tuple[View, list[int]],
    *,
    script: bool,
    lag: float,
    run_override: Run | None = None,
    state_override: str | None = None,
) -> Doc:
    """One ``jobs[]`` element of ``sacct --json``."""
    if isinstance(item, tuple):
        v, tasks = item
        job_id = v.job.array_job_id
        task_str = ranges_str(tasks)
        meta_record = True
    else:
        v, tasks, task_str, meta_record = item, [], "", False
        job_id = v.job.job_id
    j = v.job
    groups = ctx.groups[j.cluster]
    tres = ctx.tres[j.cluster]
    run = run_override if run_override is not None else v.db_run
    state = state_override or v.state
    now = ctx.now
    eligible = int(j.eligible)
    submission = int(j.submit)
    restarts = v.restarts
    if run_override is not None:  # an earlier record: its own restart count
        restarts = sum(
            1 for r in v.earlier[: v.earlier.index(run_override)] if r.ended in REQUEUE_STATES
        )
    elif v.resize_time:  # the record a resize started (as_mysql_job.c)
        eligible = submission = int(v.resize_time)
    elif v.earlier and v.earlier[-1].ended in REQUEUE_STATES:
        # after a requeue the job is resubmitted: submit = the requeue, eligible 121 s later
        submission = int(v.earlier[-1].end)
        eligible = int(v.earlier[-1].end + ctx.requeue_delay[j.cluster])
    if run is not None and state == "RUNNING" and now - run.start < lag:
        state = "PENDING"  # slurmdbd has the start time and nodes but not the state yet
        eligible = 0
    cpus, mem, nnodes, ngpus = _sizes(j, run, groups)
    typed = tres.gpu_types(j, run, groups)
    finished = state not in ("PENDING", "RUNNING")
    if run is not None:
        start = int(run.start)
        end = int(run.end) if finished else 0
        elapsed = int((run.end if finished else now) - run.start)
        nodes_str = compress([a.node for a in run.allocs])
    else:
        start = NO_VAL32 if finished else 0
        end = int(j.end) if finished else 0
        elapsed = 0
        nodes_str = "None assigned"
    limit = nv(j.time_limit)
    ec = _exit_obj(j.exit_code, j.signal, state) if finished and run is not None else EXIT_OK
    steps = _steps(j, run, state, finished, now, cpus, mem) if run is not None else []
    user = j.user
    d: Doc = {
        "account": j.account,
        "comment": {"administrator": "", "job": "", "system": ""},
        "allocation_nodes": nnodes if run is not None else 0,
        "array": {
            "job_id": j.array_job_id,
            "limits": {"max": {"running": {"tasks": 0}}},
            "task_id": NV_UNSET
            if (meta_record or j.array_task_id is None)
            else nv(j.array_task_id),
            "task": task_str,
        },
        "association": {
            "account": j.account,
            "cluster": j.cluster,
            "partition": "",
            "user": user,
            "id": 2,
        },
        "block": "",
        "cluster": j.cluster,
        "constraints": "",
        "container": "",
        "derived_exit_code": EXIT_OK,
        "time": {
            "elapsed": elapsed,
            "eligible": eligible,
            "end": end,
            "planned": nv(max(0, int((run.start if run else now) - j.eligible))),
            "start": start,
            "submission": submission,
            "suspended": 0,
            "system": {"seconds": 0, "microseconds": 0},
            "limit": limit,
            "total": {"seconds": 0, "microseconds": 0},
            "user": {"seconds": 0, "microseconds": 0},
        },
        "exit_code": ec,
        "extra": "",
        "failed_node": "",
        "flags": ["STARTED_ON_SCHEDULE", "START_RECEIVED"]
        if run is not None
        else ["START_RECEIVED"],
        "group": user,
        "het": {
            "job_id": j.het_job_id,
            "job_offset": NV_UNSET if j.het_offset is None else nv(j.het_offset),
        },
        "job_id": job_id,
        "name": j.name,
        "licenses": "",
        "mcs": {"label": ""},
        "nodes": nodes_str,
        "partition": j.partition,
        "hold": False,
        "priority": nv(1) if not finished else nv(0),
        "qos": "normal",
        "qosreq": "",
        "required": {
            "CPUs": j.shape.cpus_per_node * j.shape.nodes,
            "memory_per_cpu": NV_UNSET,
            "memory_per_node": nv(j.shape.mem_per_node),
        },
        "kill_request_user": "",
        "restart_cnt": restarts,
        "reservation": {"id": 0, "name": ""},
        "script": j.script if script else "",
        "stdin_expanded": "/dev/null",
        "stdout_expanded": f"/home/{user}/slurm-{job_id}.out",
        "stderr_expanded": "",
        "stdout": f"/home/{user}/slurm-%j.out",
        "stderr": "",
        "stdin": "/dev/null",
        "state": {
            # an earlier record ended by a requeue or resize reads ["PENDING", "REQUEUED"] /
            # ["PENDING", "RESIZING"] (24.11 test bed, docs/real-slurm.md)
            "current": ["PENDING", state] if state in ("REQUEUED", "RESIZING") else [state],
            "reason": "Priority" if state == "PENDING" and run is None else "None",
        },
        "steps": steps,
        "submit_line": f"sbatch -J {j.name} job.sh",
        "tres": {
            "allocated": tres.sacct_list(cpus, mem, nnodes, ngpus, typed, True) if run else [],
            "requested": tres.sacct_list(
                j.shape.cpus_per_node * j.shape.nodes,
                j.shape.mem_per_node * j.shape.nodes,
                j.shape.nodes,
                j.shape.gpus_per_node * j.shape.nodes,
                tres.gpu_types(j, None, groups),
                False,
            ),
        },
        "used_gres": "",
        "user": user,
        "wckey": {"wckey": "", "flags": []},
        "working_directory": f"/home/{user}",
    }
    n = ctx.n
    if n <= 41:
        del d["qosreq"], d["restart_cnt"]
    if n >= 43:
        d["reservation"]["requested"] = ""
        d["segment_size"] = 0
    return d


_STEP_CPU: Doc = {
    "requested_frequency": {"min": nv(0), "max": nv(0)},
    "governor": "0",
}


def _steps(
    j: Job, run: Run, state: str, finished: bool, now: float, cpus: int, mem: int
) -> list[Doc]:
    nodes = [a.node for a in run.allocs]
    st = int(run.start)
    end = nv(int(run.end)) if finished else nv(0)
    elapsed = int((run.end if finished else now) - run.start)
    batch_state = state if finished else "RUNNING"
    if finished and state in ("PREEMPTED", "NODE_FAIL"):
        batch_state = "CANCELLED"
    out = []
    for name, sid, snodes, sstate, ncpu in (
        ("extern", f"{j.job_id}.extern", nodes, "COMPLETED" if finished else "RUNNING", cpus),
        ("batch", f"{j.job_id}.batch", nodes[:1], batch_state, len(run.allocs[0].cores)),
    ):
        out.append(
            {
                "time": {
                    "elapsed": elapsed,
                    "end": end,
                    "start": nv(st),
                    "suspended": 0,
                    "system": {"seconds": 0, "microseconds": 0},
                    "total": {"seconds": 0, "microseconds": 0},
                    "user": {"seconds": 0, "microseconds": 0},
                },
                "exit_code": EXIT_OK,
                "nodes": {"count": len(snodes), "range": compress(snodes), "list": snodes},
                "tasks": {"count": len(snodes)},
                "pid": "",
                "CPU": _STEP_CPU,
                "kill_request_user": "",
                "state": [sstate],
                "statistics": {"CPU": {"actual_frequency": 0}, "energy": {"consumed": nv(0)}},
                "step": {"id": sid, "name": name},
                "task": {"distribution": "Unknown" if name != "batch" else "Cyclic"},
                "tres": {
                    "requested": {"max": [], "min": [], "average": [], "total": []},
                    "consumed": {"max": [], "min": [], "average": [], "total": []},
                    "allocated": [
                        {"type": "cpu", "name": "", "id": 1, "count": ncpu},
                        {"type": "mem", "name": "", "id": 2, "count": mem},
                        {"type": "node", "name": "", "id": 4, "count": len(snodes)},
                    ],
                },
            }
        )
    return out


# --------------------------------------------------------------------------------------------
# squeue / scontrol show job --json


def queue_job(ctx: Ctx, item: View | tuple[View, list[int]]) -> Doc:
    """One ``jobs[]`` element of ``squeue --json`` / ``scontrol show job --json``."""
    if isinstance(item, tuple):
        v, tasks = item
        job_id, task_str, meta_record = v.job.array_job_id, ranges_str(tasks), True
    else:
        v, task_str, meta_record = item, "", False
        job_id = v.job.job_id
    j = v.job
    s = j.shape
    groups = ctx.groups[j.cluster]
    tres = ctx.tres[j.cluster]
    run = v.run
    finished = v.phase == "done"
    running = v.phase == "running"
    uid = ctx.uids[j.cluster].get(j.user, 0)
    cpus, mem, nnodes, ngpus = _sizes(j, run, groups)
    typed = tres.gpu_types(j, run, groups)
    limit_s = j.time_limit * 60
    if run is not None:
        start, end = run.start, (run.end if finished else run.start + limit_s)
        nodes_str = compress([a.node for a in run.allocs])
    elif finished:  # cancelled while pending
        start, end = j.end, j.end
        nodes_str = ""
    else:
        start, end = 0.0, 0.0
        nodes_str = ""
    n = ctx.n
    if run is not None:
        job_res: Doc | None = _job_resources(run, groups, s.mem_per_node, j.shared == "none")
        gres_detail = (
            [gres_detail_entry(groups[a.node], a.gpus, s.gpu_type) for a in run.allocs]
            if running and s.gpus_per_node
            else []
        )
    else:
        job_res = {} if ctx.release.startswith("24.05") else None
        gres_detail = []
    tres_per_node = ""
    if s.gpus_per_node:
        tres_per_node = (
            f"gres/gpu:{s.gpu_type}:{s.gpus_per_node}"
            if s.gpu_type
            else f"gres/gpu:{s.gpus_per_node}"
        )
    rq = tres.string(
        s.cpus_per_node * s.nodes,
        s.mem_per_node * s.nodes,
        s.nodes,
        s.gpus_per_node * s.nodes,
        tres.gpu_types(j, None, groups),
    )
    shared = [j.shared] if j.shared else []
    reason = (
        "None"
        if run is not None or finished
        else ("BeginTime" if v.restarts or j.eligible > ctx.now else "Priority")
    )
    if meta_record:
        array_task: Doc = NV_UNSET
        array_job: Doc = nv(j.array_job_id)
    else:
        array_task = NV_UNSET if j.array_task_id is None else nv(j.array_task_id)
        array_job = nv(j.array_job_id)
    d: Doc = {
        "account": j.account,
        "accrue_time": nv(int(j.eligible)),
        "admin_comment": "",
        "allocating_node": "login1",
        "array_job_id": array_job,
        "array_task_id": array_task,
        "array_max_tasks": nv(0),
        "array_task_string": task_str,
        "association_id": 2,
        "batch_features": "",
        "batch_flag": True,
        "batch_host": run.allocs[0].node if run is not None else "",
        "flags": ["EXACT_CPU_COUNT_REQUESTED", "JOB_WAS_RUNNING", "PARTITION_ASSIGNED"]
        if run is not None
        else ["EXACT_CPU_COUNT_REQUESTED", "PARTITION_ASSIGNED"],
        "burst_buffer": "",
        "burst_buffer_state": "",
        "cluster": j.cluster,
        "cluster_features": "",
        "command": "",
        "comment": "",
        "container": "",
        "container_id": "",
        "contiguous": False,
        "core_spec": 0,
        "thread_spec": 32766,
        "cores_per_socket": NV_UNSET,
        "billable_tres": nv(float(cpus)),
        "cpus_per_task": nv(s.cpus_per_node),
        "cpu_frequency_minimum": NV_UNSET,
        "cpu_frequency_maximum": NV_UNSET,
        "cpu_frequency_governor": NV_UNSET,
        "cpus_per_tres": "",
        "cron": "",
        "deadline": nv(0),
        "delay_boot": nv(0),
        "dependency": "",
        "derived_exit_code": EXIT_OK,
        "eligible_time": nv(int(j.eligible)),
        "end_time": nv(int(end)),
        "excluded_nodes": "",
        "exit_code": _exit_obj(j.exit_code, j.signal, v.state) if finished and run else EXIT_OK,
        "extra": "",
        "failed_node": "",
        "features": "",
        "federation_origin": "",
        "federation_siblings_active": "",
        "federation_siblings_viable": "",
        "gres_detail": gres_detail,
        "group_id": uid,
        "group_name": j.user,
        "het_job_id": nv(j.het_job_id),
        "het_job_id_set": compress([str(i) for i in j.het_ids]).strip("[]") if j.het_ids else "",
        "het_job_offset": nv(j.het_offset or 0),
        "job_id": job_id,
        "job_resources": job_res,
        "job_size_str": [],
        "job_state": [v.state, *v.flags],
        "last_sched_evaluation": nv(int(start or j.submit)),
        "licenses": "",
        "mail_type": [],
        "mail_user": j.user,
        "max_cpus": nv(0),
        "max_nodes": nv(0),
        "mcs_label": "",
        "memory_per_tres": "",
        "name": j.name,
        "network": "",
        "nodes": nodes_str,
        "nice": 0,
        "tasks_per_core": NV_INF,
        "tasks_per_tres": nv(0),
        "tasks_per_node": nv(0),
        "tasks_per_socket": NV_INF,
        "tasks_per_board": nv(0),
        "cpus": nv(cpus),
        "node_count": nv(nnodes),
        "tasks": nv(nnodes),
        "partition": j.partition,
        "prefer": "",
        "memory_per_cpu": NV_UNSET,
        "memory_per_node": nv(s.mem_per_node),
        "minimum_cpus_per_node": nv(s.cpus_per_node),
        "minimum_tmp_disk_per_node": nv(0),
        "power": {"flags": []},
        "preempt_time": nv(0),
        "preemptable_time": nv(0),
        "pre_sus_time": nv(0),
        "hold": False,
        "priority": nv(0 if finished else 1),
        "priority_by_partition": [],
        "profile": ["NOT_SET"],
        "qos": "normal",
        "reboot": False,
        "required_nodes": "",
        "required_switches": 0,
        "requeue": True,
        "resize_time": nv(int(v.resize_time)),
        "restart_cnt": v.restarts,
        "resv_name": "",
        "scheduled_nodes": "",
        "selinux_context": "",
        "shared": shared,
        "sockets_per_board": 0,
        "sockets_per_node": NV_UNSET,
        "start_time": nv(int(start)),
        "state_description": "",
        "state_reason": reason,
        "standard_error": f"/home/{j.user}/slurm-{job_id}.out",
        "standard_input": "/dev/null",
        "standard_output": f"/home/{j.user}/slurm-{job_id}.out",
        "submit_time": nv(int(j.submit)),
        "suspend_time": nv(0),
        "system_comment": "",
        "time_limit": nv(j.time_limit),
        "time_minimum": nv(0),
        "threads_per_core": NV_UNSET,
        "tres_bind": "",
        "tres_freq": "",
        "tres_per_job": "",
        "tres_per_node": tres_per_node,
        "tres_per_socket": "",
        "tres_per_task": f"cpu={s.cpus_per_node}" if s.cpus_per_node > 1 else "",
        "tres_req_str": rq,
        "tres_alloc_str": tres.string(cpus, mem, nnodes, ngpus, typed) if run is not None else "",
        "user_id": uid,
        "user_name": j.user,
        "maximum_switch_wait_time": 0,
        "wckey": "",
        "current_working_directory": f"/home/{j.user}",
    }
    if n <= 41:
        del d["priority_by_partition"], d["required_switches"]
        d["exclusive"] = {"none": ["true"], "user": ["user"]}.get(j.shared, [])
        d["oversubscribe"] = j.shared == ""
        d["minimum_switches"] = 0
        d["show_flags"] = ["ALL", "DETAIL", "LOCAL"]
    if n >= 43:
        d["licenses_allocated"] = ""
        d["segment_size"] = 0
        d["stdin_expanded"] = "/dev/null"
        d["stdout_expanded"] = d["standard_output"]
        d["stderr_expanded"] = d["standard_error"]
        d["standard_output"] = d["standard_error"] = f"/home/{j.user}/slurm-%j.out"
    if n >= 44:
        d["step_id"] = {
            "sluid": "",
            "job_id": nv(job_id),
            "step_het_component": NV_UNSET,
            "step_id": "entire",
        }
        d["submit_line"] = f"sbatch -J {j.name} job.sh"
    return d


def _job_resources(run: Run, groups: dict[str, NodeGroup], mem: int, whole: bool) -> Doc:
    alloc = []
    total = 0
    for i, a in enumerate(run.allocs):
        g = groups[a.node]
        mine = set(a.cores)
        sockets = [
            {
                "index": si,
                "cores": [
                    {
                        "index": ci,
                        "status": ["ALLOCATED"] if si * g.cores + ci in mine else ["UNALLOCATED"],
                    }
                    for ci in range(g.cores)
                ],
            }
            for si in range(g.sockets)
        ]
        ncpu = len(a.cores) * g.threads
        total += ncpu
        alloc.append(
            {
                "index": i,
                "name": a.node,
                "cpus": {"count": ncpu, "used": 0},
                "memory": {"used": 0, "allocated": mem},
                "sockets": sockets,
            }
        )
    return {
        "select_type": ["CORE"],
        "nodes": {
            "count": len(run.allocs),
            "select_type": ["ONE_ROW"],
            "list": compress([a.node for a in run.allocs]),
            "whole": whole,
            "allocation": alloc,
        },
        "cpus": total,
        "threads_per_core": NV_UNSET,
    }


# --------------------------------------------------------------------------------------------
# scontrol show job (text)


_OVERSUBSCRIBE = {"none": "NO", "user": "USER"}


def scontrol_text(ctx: Ctx, item: View | tuple[View, list[int]]) -> str:
    """One ``scontrol show job`` record (without ``-d``), as real scontrol prints it."""
    d = queue_job(ctx, item)
    v = item[0] if isinstance(item, tuple) else item
    j = v.job
    s = j.shape
    start = d["start_time"]["number"]
    end = d["end_time"]["number"]
    now = ctx.now
    run = v.run
    runtime = 0.0
    if run is not None:
        runtime = (min(now, run.end) if v.phase == "done" else now) - run.start
    uid = d["user_id"]
    ec = d["exit_code"]
    rc = ec["return_code"]["number"] if ec["return_code"]["set"] else 0
    sig = ec["signal"]["id"]["number"] if ec["signal"]["id"]["set"] else 0
    job_line = f"JobId={d['job_id']}"
    if j.array_size:
        task = d["array_task_string"] or str(j.array_task_id)
        job_line += f" ArrayJobId={j.array_job_id} ArrayTaskId={task}"
    if j.het_job_id:
        job_line += f" HetJobId={j.het_job_id} HetJobOffset={j.het_offset}"
    job_line += f" JobName={j.name}"
    lines = [
        job_line,
        f"   UserId={j.user}({uid}) GroupId={j.user}({uid}) MCS_label=N/A",
        f"   Priority={d['priority']['number']} Nice=0 Account={j.account} QOS=normal",
        f"   JobState={v.state} Reason={d['state_reason']} Dependency=(null)",
        f"   Requeue=1 Restarts={v.restarts} BatchFlag=1 Reboot=0 ExitCode={rc}:{sig}",
        f"   RunTime={hms(max(0, runtime))} TimeLimit={hms(j.time_limit * 60)} TimeMin=N/A",
        f"   SubmitTime={local(j.submit)} EligibleTime={local(j.eligible)}",
        f"   AccrueTime={local(j.eligible)}",
        f"   StartTime={local(start) if start else 'Unknown'} "
        f"EndTime={local(end) if end else 'Unknown'} Deadline=N/A",
        f"   SuspendTime=None SecsPreSuspend=0 LastSchedEval={local(start or j.submit)} "
        "Scheduler=Main",
        f"   Partition={j.partition} AllocNode:Sid=login1:4242",
        "   ReqNodeList=(null) ExcNodeList=(null)",
        f"   NodeList={d['nodes'] or '(null)'}",
        f"   BatchHost={d['batch_host'] or '(null)'}" if run is not None else "",
        f"   NumNodes={d['node_count']['number']} NumCPUs={d['cpus']['number']} "
        f"NumTasks={d['tasks']['number']} CPUs/Task={s.cpus_per_node} ReqB:S:C:T=0:0:*:*",
        f"   ReqTRES={d['tres_req_str']}",
        f"   AllocTRES={d['tres_alloc_str'] or '(null)'}",
        "   Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=*",
        f"   MinCPUsNode={s.cpus_per_node} MinMemoryNode={mem_str(s.mem_per_node)} "
        "MinTmpDiskNode=0",
        "   Features=(null) DelayBoot=00:00:00",
        f"   OverSubscribe={_OVERSUBSCRIBE.get(j.shared, 'OK')}"
        " Contiguous=0 Licenses=(null) Network=(null)",
        "   Command=(null)",
        f"   WorkDir={d['current_working_directory']}",
        f"   StdErr={d['standard_error']}",
        "   StdIn=/dev/null",
        f"   StdOut={d['standard_output']}",
    ]
    if d["tres_per_node"]:
        lines.append(f"   TresPerNode={d['tres_per_node']}")
    if d["tres_per_task"]:
        lines.append(f"   TresPerTask={d['tres_per_task']}")
    return "\n".join(x for x in lines if x) + "\n   \n"
