"""Deterministic, seeded generator of realistic ``sacct --json`` and ``squeue --json`` dumps.

The job objects follow the shapes of real Slurm 24.11 output (data_parser v0.0.42 by default):
every job carries the fields Slurm prints (not only the ones ccsa reads), sacct jobs carry
``batch``/``extern``/srun steps with TRES lists, squeue jobs carry ``job_resources`` with every
core of every socket, so one job is several KB like in production. Output is produced chunk by
chunk (:func:`iter_sacct`, :func:`iter_squeue`) so a 1M-job dump can be written to a file without
holding it in memory. Same (n_jobs, seed, dp) -> same bytes.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

_enc = msgspec.json.Encoder()
_USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
_ACCOUNTS = ["research", "ml", "physics", "chem", "bio"]
_PARTS = ["gpu", "cpu", "debug", "long"]
_FINAL = ["COMPLETED", "COMPLETED", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"]
_RELEASE = {"v0.0.41": "24.05.5", "v0.0.42": "24.11.5", "v0.0.43": "25.05.3", "v0.0.44": "25.11.0"}
_BASE = 1_795_000_000


def _nv(n: int | None, infinite: bool = False) -> dict[str, Any]:
    if n is None:
        return {"set": False, "infinite": infinite, "number": 0}
    return {"set": True, "infinite": False, "number": n}


def _meta(command: list[str], dp: str) -> dict[str, Any]:
    release = _RELEASE.get(dp, "24.11.5")
    major, minor, micro = release.split(".")
    return {
        "plugin": {
            "type": "",
            "name": "",
            "data_parser": f"data_parser/{dp}",
            "accounting_storage": "accounting_storage/slurmdbd",
        },
        "client": {"source": "/dev/pts/0", "user": "root", "group": "root"},
        "command": command,
        "slurm": {
            "version": {"major": major, "micro": micro, "minor": minor},
            "release": release,
            "cluster": "bench",
        },
    }


def _tres(cpus: int, mem: int, nodes: int, gpus: int) -> list[dict[str, Any]]:
    out = [
        {"type": "cpu", "name": "", "id": 1, "count": cpus},
        {"type": "mem", "name": "", "id": 2, "count": mem},
        {"type": "energy", "name": "", "id": 3, "count": -2},
        {"type": "node", "name": "", "id": 4, "count": nodes},
        {"type": "billing", "name": "", "id": 5, "count": cpus},
    ]
    if gpus:
        out.append({"type": "gres", "name": "gpu", "id": 1001, "count": gpus})
    return out


def _exit(code: int) -> dict[str, Any]:
    return {
        "status": ["SUCCESS" if code == 0 else "ERROR"],
        "return_code": _nv(code),
        "signal": {"id": _nv(None), "name": ""},
    }


class _Job:
    """The random facts of one job, shared by its sacct and squeue renderings."""

    def __init__(self, rng: random.Random, job_id: int) -> None:
        self.job_id = job_id
        self.user = rng.choice(_USERS)
        self.account = rng.choice(_ACCOUNTS)
        self.partition = rng.choice(_PARTS)
        self.n_nodes = rng.choice([1, 1, 1, 1, 2, 4])
        first = rng.randrange(1, 512)
        self.hosts = [f"cn{first + i:04d}" for i in range(self.n_nodes)]
        self.nodes = (
            f"cn[{first:04d}-{first + self.n_nodes - 1:04d}]" if self.n_nodes > 1 else self.hosts[0]
        )
        self.cores = rng.choice([1, 2, 4, 8, 16, 32])
        self.gpus = rng.choice([0, 0, 1, 2, 4])
        self.submit = _BASE + job_id * 3
        self.start = self.submit + rng.randrange(0, 600)
        self.limit = rng.choice([10, 60, 1440, None])
        self.running = rng.random() < 0.3
        self.end = 0 if self.running else self.start + rng.randrange(5, 7200)
        self.state = "RUNNING" if self.running else rng.choice(_FINAL)
        self.n_steps = rng.choice([0, 1, 1, 2, 3])
        self.array = job_id - rng.randrange(0, 4) if rng.random() < 0.1 else 0
        self.name = f"job-{rng.randrange(10_000):04d}"


def _step(job: _Job, step_id: str, name: str, tres: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "time": {
            "elapsed": max(job.end - job.start, 0),
            "end": _nv(job.end),
            "start": _nv(job.start),
            "suspended": 0,
            "system": {"seconds": 0, "microseconds": 1234},
            "total": {"seconds": 1, "microseconds": 4567},
            "user": {"seconds": 1, "microseconds": 3333},
        },
        "exit_code": _exit(0),
        "nodes": {"count": job.n_nodes, "range": job.nodes, "list": job.hosts},
        "tasks": {"count": job.n_nodes},
        "pid": "",
        "CPU": {"requested_frequency": {"min": _nv(0), "max": _nv(0)}, "governor": "0"},
        "kill_request_user": "",
        "state": [job.state],
        "statistics": {"CPU": {"actual_frequency": 0}, "energy": {"consumed": _nv(0)}},
        "step": {"id": f"{job.job_id}.{step_id}", "name": name},
        "task": {"distribution": "Block"},
        "tres": {
            "requested": {
                "max": [{"type": "cpu", "name": "", "id": 1, "count": 1000}],
                "min": [{"type": "cpu", "name": "", "id": 1, "count": 1000}],
                "average": [{"type": "cpu", "name": "", "id": 1, "count": 1000}],
                "total": [{"type": "cpu", "name": "", "id": 1, "count": 1000}],
            },
            "consumed": {"max": [], "min": [], "average": [], "total": []},
            "allocated": tres,
        },
    }


def sacct_job(job: _Job) -> dict[str, Any]:
    """One sacct ``jobs[]`` record."""
    cpus = job.cores * job.n_nodes
    mem = 512 * cpus
    tres = _tres(cpus, mem, job.n_nodes, job.gpus * job.n_nodes)
    steps = [_step(job, "batch", "batch", tres), _step(job, "extern", "extern", tres)]
    steps += [_step(job, str(i), "srun", tres) for i in range(job.n_steps)]
    return {
        "account": job.account,
        "comment": {"administrator": "", "job": "", "system": ""},
        "allocation_nodes": job.n_nodes,
        "array": {
            "job_id": job.array,
            "limits": {"max": {"running": {"tasks": 0}}},
            "task_id": _nv(job.job_id - job.array if job.array else None),
            "task": "",
        },
        "association": {
            "account": job.account,
            "cluster": "bench",
            "partition": "",
            "user": job.user,
            "id": 7,
        },
        "block": "",
        "cluster": "bench",
        "constraints": "",
        "container": "",
        "derived_exit_code": _exit(0),
        "time": {
            "elapsed": max(job.end - job.start, 0),
            "eligible": job.submit,
            "end": job.end,
            "planned": _nv(job.start - job.submit),
            "start": job.start,
            "submission": job.submit,
            "suspended": 0,
            "system": {"seconds": 0, "microseconds": 0},
            "limit": _nv(job.limit, infinite=job.limit is None),
            "total": {"seconds": 0, "microseconds": 0},
            "user": {"seconds": 0, "microseconds": 0},
        },
        "exit_code": _exit(1 if job.state == "FAILED" else 0),
        "extra": "",
        "failed_node": "",
        "flags": ["STARTED_ON_SCHEDULE", "START_RECEIVED"],
        "group": job.account,
        "het": {"job_id": 0, "job_offset": _nv(None)},
        "job_id": job.job_id,
        "name": job.name,
        "licenses": "",
        "mcs": {"label": ""},
        "nodes": job.nodes,
        "partition": job.partition,
        "hold": False,
        "priority": _nv(4242),
        "qos": "normal",
        "qosreq": "",
        "required": {"CPUs": cpus, "memory_per_cpu": _nv(512), "memory_per_node": _nv(None)},
        "kill_request_user": "",
        "restart_cnt": 0,
        "reservation": {"id": 0, "name": ""},
        "script": "",
        "stdin_expanded": "/dev/null",
        "stdout_expanded": f"/home/{job.user}/slurm-{job.job_id}.out",
        "stderr_expanded": "",
        "stdout": f"/home/{job.user}/slurm-%j.out",
        "stderr": "",
        "stdin": "/dev/null",
        "state": {"current": [job.state], "reason": "None"},
        "steps": steps,
        "submit_line": f"sbatch -J {job.name} -N {job.n_nodes} -c {job.cores} run.sh",
        "tres": {
            "allocated": tres,
            "requested": _tres(cpus, mem, job.n_nodes, job.gpus * job.n_nodes),
        },
        "used_gres": "",
        "user": job.user,
        "wckey": {"wckey": "", "flags": []},
        "working_directory": f"/home/{job.user}",
    }


def squeue_job(job: _Job) -> dict[str, Any]:
    """One squeue / scontrol ``jobs[]`` element with v0.0.41+ job_resources (2 x 16 cores)."""
    allocation = []
    for i, host in enumerate(job.hosts):
        sockets = []
        left = job.cores
        for s in range(2):
            cores = []
            for c in range(16):
                status = ["ALLOCATED"] if left > 0 else ["UNALLOCATED"]
                left -= 1
                cores.append({"index": c, "status": status})
            sockets.append({"index": s, "cores": cores})
        allocation.append(
            {
                "index": i,
                "name": host,
                "cpus": {"count": job.cores, "used": 0},
                "memory": {"used": 0, "allocated": 512 * job.cores},
                "sockets": sockets,
            }
        )
    gres = [f"gpu:h100:{job.gpus}(IDX:0-{job.gpus - 1})"] * job.n_nodes if job.gpus else []
    cpus = job.cores * job.n_nodes
    tres = f"cpu={cpus},mem={512 * cpus}M,node={job.n_nodes},billing={cpus}"
    if job.gpus:
        tres += f",gres/gpu={job.gpus * job.n_nodes}"
    return {
        "account": job.account,
        "accrue_time": _nv(job.submit),
        "admin_comment": "",
        "array_job_id": _nv(job.array),
        "array_task_id": _nv(job.job_id - job.array if job.array else None),
        "array_max_tasks": _nv(0),
        "array_task_string": "",
        "batch_flag": True,
        "batch_host": job.hosts[0],
        "cluster": "bench",
        "command": f"/home/{job.user}/run.sh",
        "comment": "",
        "cpus": _nv(cpus),
        "current_working_directory": f"/home/{job.user}",
        "end_time": _nv(job.end or job.start + 86400),
        "exit_code": _exit(0),
        "flags": ["EXACT_TASK_COUNT_REQUESTED", "JOB_WAS_RUNNING"],
        "gres_detail": gres,
        "group_id": 1000,
        "group_name": job.account,
        "het_job_id": _nv(0),
        "het_job_id_set": "",
        "het_job_offset": _nv(0),
        "job_id": job.job_id,
        "job_resources": {
            "select_type": ["CORE", "MEMORY"],
            "nodes": {
                "count": job.n_nodes,
                "select_type": ["ONE_ROW"],
                "list": job.nodes,
                "whole": False,
                "allocation": allocation,
            },
            "cpus": cpus,
            "threads_per_core": _nv(1),
        },
        "job_state": ["RUNNING"] if job.running else [job.state],
        "last_sched_evaluation": _nv(job.start),
        "memory_per_cpu": _nv(512),
        "memory_per_node": _nv(None),
        "name": job.name,
        "node_count": _nv(job.n_nodes),
        "nodes": job.nodes,
        "partition": job.partition,
        "priority": _nv(4242),
        "qos": "normal",
        "shared": [],
        "standard_error": f"/home/{job.user}/slurm-{job.job_id}.out",
        "standard_output": f"/home/{job.user}/slurm-{job.job_id}.out",
        "start_time": _nv(job.start),
        "state_description": "",
        "state_reason": "None",
        "submit_time": _nv(job.submit),
        "tasks": _nv(job.n_nodes),
        "time_limit": _nv(job.limit, infinite=job.limit is None),
        "tres_alloc_str": tres,
        "tres_req_str": tres,
        "user_id": 2000 + _USERS.index(job.user),
        "user_name": job.user,
    }


def _iter(kind: str, n_jobs: int, seed: int, dp: str) -> Iterator[bytes]:
    rng = random.Random(seed)
    render = sacct_job if kind == "sacct" else squeue_job
    head = b'{"jobs":['
    if kind == "squeue":
        head = (
            b'{"last_backfill":'
            + _enc.encode(_nv(_BASE))
            + b',"last_update":'
            + _enc.encode(_nv(_BASE))
            + b',"jobs":['
        )
    yield head
    batch: list[bytes] = []
    for i in range(n_jobs):
        piece = _enc.encode(render(_Job(rng, 1000 + i)))
        batch.append(piece if i == 0 else b"," + piece)
        if len(batch) >= 256:
            yield b"".join(batch)
            batch.clear()
    if batch:
        yield b"".join(batch)
    command = [kind, "--json"] if kind == "sacct" else ["squeue", "--json"]
    yield b'],"meta":' + _enc.encode(_meta(command, dp)) + b',"errors":[],"warnings":[]}'


def iter_sacct(n_jobs: int, seed: int = 1, dp: str = "v0.0.42") -> Iterator[bytes]:
    """Chunks of a sacct dump (concatenate them for the document)."""
    return _iter("sacct", n_jobs, seed, dp)


def iter_squeue(n_jobs: int, seed: int = 1, dp: str = "v0.0.42") -> Iterator[bytes]:
    """Chunks of a squeue dump (concatenate them for the document)."""
    return _iter("squeue", n_jobs, seed, dp)


def generate_sacct(n_jobs: int, seed: int = 1, dp: str = "v0.0.42") -> bytes:
    return b"".join(iter_sacct(n_jobs, seed, dp))


def generate_squeue(n_jobs: int, seed: int = 1, dp: str = "v0.0.42") -> bytes:
    return b"".join(iter_squeue(n_jobs, seed, dp))


def write_dump(path: Path, kind: str, n_jobs: int, seed: int = 1, dp: str = "v0.0.42") -> int:
    """Write a dump to ``path`` chunk by chunk; returns its size in bytes."""
    size = 0
    with path.open("wb") as fh:
        for chunk in _iter(kind, n_jobs, seed, dp):
            fh.write(chunk)
            size += len(chunk)
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["sacct", "squeue"])
    parser.add_argument("n_jobs", type=int)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dp", default="v0.0.42")
    args = parser.parse_args()
    size = write_dump(args.out, args.kind, args.n_jobs, args.seed, args.dp)
    print(f"{args.out}: {size / 1e6:.1f} MB, {args.n_jobs} jobs")


if __name__ == "__main__":
    main()
