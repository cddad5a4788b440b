"""Benchmark: a large site's backlog against a Slurm that ignores the poll window (issue #19).

A fake Slurm shaped like the one issue #19 measured the Go adapter and ccsa with, written here
independently of the simulator (``ccsa.sim.slurm`` honours windows and prints compact JSON):

* ``sacct --json`` answers EVERY window with the whole backlog, pretty-printed Slurm 24.11 JSON
  (data_parser v0.0.42, ~18 KB per job with three steps: batch, extern, one srun);
* ``squeue --all --json`` lists every job (all finished, still in slurmctld's MinJobAge) with
  full per-core ``job_resources`` (two 48-core sockets per node, ~21 KB per job);
* job scripts are not in slurmdbd (``sacct --batch-script`` carries none), so every new job
  needs one ``scontrol write batch_script``;
* ``sacct -j``/``squeue -j``/``scontrol show job --json IDS`` filter the backlog by id.

The big answers are files the fakes ``cat``; the per-job ``scontrol`` is a ``/bin/sh`` script,
so the Slurm side costs little CPU (real ``sacct`` is a C client of slurmdbd). Every execution is
logged for the count. ``cc-slurm-adapter -daemon --once`` (a real process; the stand-in
cc-backend, HTTP on loopback, in this process) syncs the backlog from an empty state and exits
once everything is delivered. Printed: wall time to the last POST, the first start_job after
the spawn, the daemon's peak RSS (``VmHWM``), Slurm commands and their CPU (``wait4`` rusage
of the daemon minus its own CPU), the daemon's CPU per job, with the machine and the command.
Targets (issue #19): first start_job <= 10 s and total <= 43 s at 10k; peak RSS <= 250 MiB at
10k, <= 300 MiB at 30k.

    python -m benchmarks.bench_largesite [--jobs 10000 30000] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import trio

from benchmarks import gen_dumps
from benchmarks.bench_backlog import _config, _proc_sample

TARGET_FIRST_START_S = 10.0
TARGET_WALL_S_10K = 43.0
TARGET_RSS_MIB = {10_000: 250.0, 30_000: 300.0}
CLUSTER = "bench"
CORES_PER_SOCKET = 48

_FILTER = r"""
import sys, msgspec
class Doc(msgspec.Struct):
    jobs: list[msgspec.Raw] = []
    meta: msgspec.Raw = msgspec.Raw(b"{}")
class Id(msgspec.Struct):
    job_id: int = 0
    array_job_id: object = None
    het_job_id: object = None
path, ids = sys.argv[1], {int(i) for i in sys.argv[2].split(",")}
doc = msgspec.json.decode(open(path, "rb").read(), type=Doc)
dec = msgspec.json.Decoder(Id)
keep = [j for j in doc.jobs if dec.decode(j).job_id in ids]
out = sys.stdout.buffer
out.write(b'{"jobs":[' + b",".join(bytes(j) for j in keep) + b'],"meta":' + bytes(doc.meta)
          + b',"errors":[],"warnings":[]}')
"""

_IDS = 'ids=; prev=; for a; do [ "$prev" = -j ] && ids=$a; prev=$a; done\n'


def _fake(path: Path, body: str) -> None:
    path.write_text(f'#!/bin/sh\necho "${{0##*/}} $*" >> "$FAKE_LOG"\n{body}')
    path.chmod(0o755)


def _job(rng: random.Random, job_id: int, now: int, n_jobs: int) -> gen_dumps._Job:
    job = gen_dumps._Job(rng, job_id)
    job.running = False
    job.state = "COMPLETED"
    job.n_steps = 1  # batch + extern + one srun = three steps
    job.gpus = 0
    job.n_nodes = 1
    job.hosts = [job.hosts[0]]
    job.nodes = job.hosts[0]
    job.cores = rng.choice([16, 32, 48, 96])
    span = 6 * 3600
    job.submit = now - span - 3600 + (job_id - 1000) * span // max(1, n_jobs)
    job.start = job.submit + rng.randrange(0, 60)
    job.end = min(now - 120, job.start + rng.randrange(60, 3600))
    return job


def _squeue_job(job: gen_dumps._Job) -> dict[str, Any]:
    rec = gen_dumps.squeue_job(job)
    rec["job_state"] = ["COMPLETED"]
    left = job.cores
    sockets = []
    for s in range(2):
        cores = []
        for c in range(CORES_PER_SOCKET):
            cores.append({"index": c, "status": ["ALLOCATED" if left > 0 else "UNALLOCATED"]})
            left -= 1
        sockets.append({"index": s, "cores": cores})
    rec["job_resources"]["nodes"]["allocation"][0]["sockets"] = sockets
    return rec


def _write_doc(path: Path, head: dict[str, Any], jobs: Any, meta: dict[str, Any]) -> int:
    """A pretty-printed (2-space, as Slurm prints) document written job by job."""
    enc = msgspec.json.Encoder()
    with path.open("wb") as fh:
        fh.write(b"{\n")
        for key, value in head.items():
            fh.write(f'  "{key}": '.encode() + msgspec.json.format(enc.encode(value)) + b",\n")
        fh.write(b'  "jobs": [\n')
        for i, rec in enumerate(jobs):
            text = msgspec.json.format(enc.encode(rec), indent=2).replace(b"\n", b"\n    ")
            fh.write((b",\n    " if i else b"    ") + text)
        fh.write(b'\n  ],\n  "meta": ' + msgspec.json.format(enc.encode(meta), indent=2))
        fh.write(b',\n  "errors": [],\n  "warnings": []\n}\n')
        return fh.tell()


def build_fake_slurm(where: Path, n_jobs: int, seed: int, now: int) -> dict[str, Any]:
    """Write the answers and the fake commands into ``where``; their sizes in bytes."""
    bindir = where / "bin"
    bindir.mkdir(parents=True)
    rng = random.Random(seed)
    jobs = [_job(rng, 1000 + i, now, n_jobs) for i in range(n_jobs)]
    sacct = where / "sacct.json"
    squeue = where / "squeue.json"
    sizes = {
        "sacct_bytes": _write_doc(
            sacct, {}, (gen_dumps.sacct_job(j) for j in jobs),
            gen_dumps._meta(["sacct", "--json"], "v0.0.42"),
        ),
        "squeue_bytes": _write_doc(
            squeue, {"last_backfill": gen_dumps._nv(now), "last_update": gen_dumps._nv(now)},
            (_squeue_job(j) for j in jobs), gen_dumps._meta(["squeue", "--json"], "v0.0.42"),
        ),
    }  # fmt: skip
    text = where / "scontrol-show-job.txt"
    with text.open("w") as fh:
        for j in jobs:
            fh.write(
                f"JobId={j.job_id} JobName={j.name}\n   UserId={j.user}(2000) "
                f"Account={j.account} JobState=COMPLETED\n   NodeList={j.nodes} "
                f"NumCPUs={j.cores}\n\n"
            )
    meta = gen_dumps._meta(["sacctmgr", "list", "clusters"], "v0.0.42")
    (where / "clusters.json").write_text(
        json.dumps({"clusters": [{"name": CLUSTER, "nodes": ""}], "meta": meta})
    )
    (where / "user.json").write_text(
        json.dumps({"users": [{"name": "root", "administrator_level": ["Administrator"]}]})
    )
    (where / "config.txt").write_text("PrivateData = (null)\nSlurmUser = slurm(64030)\n")
    (where / "sinfo.json").write_text(json.dumps({"sinfo": [], "meta": meta}))
    (where / "filter.py").write_text(f"#!{sys.executable}\n{_FILTER}")
    filt = f"{sys.executable} {where / 'filter.py'}"
    _fake(
        bindir / "sacct",
        _IDS + f'if [ -n "$ids" ]; then exec {filt} {sacct} "$ids"; fi\nexec cat {sacct}\n',
    )
    _fake(
        bindir / "squeue",
        _IDS + f'if [ -n "$ids" ]; then exec {filt} {squeue} "$ids"; fi\nexec cat {squeue}\n',
    )
    _fake(
        bindir / "scontrol",
        'case " $* " in\n'
        '*" write batch_script "*)\n'
        '  prev=; for a; do [ "$prev" = batch_script ] && id=$a; prev=$a; done\n'
        "  printf '#!/bin/bash\\n#SBATCH --job-name=job-%s\\n#SBATCH --nodes=1\\n"
        'srun ./simulate --input /scratch/run-%s\\n\' "$id" "$id" ;;\n'
        f'*" show config "*) exec cat {where / "config.txt"} ;;\n'
        f'*" --json "*) exec cat {squeue} ;;\n'
        f"*) exec cat {text} ;;\n"
        "esac\n",
    )
    _fake(
        bindir / "sacctmgr",
        f'case " $* " in *" clusters "*) exec cat {where / "clusters.json"} ;; '
        f"*) exec cat {where / 'user.json'} ;; esac\n",
    )
    _fake(bindir / "sinfo", f"exec cat {where / 'sinfo.json'}\n")
    return sizes


async def _measure(tmp: Path, n_jobs: int, log: Path) -> dict[str, Any]:
    from ccsa.sim.ccbackend.clusters import minimal
    from ccsa.sim.ccbackend.server import StandIn
    from ccsa.sim.ccbackend.state import Backend

    backend = Backend({CLUSTER: minimal(CLUSTER)})
    standin = StandIn(backend)
    async with trio.open_nursery() as nursery:
        await nursery.start(standin.serve)
        cfg = _config(tmp, standin.url, tmp / "slurm" / "bin")
        argv = [sys.executable, "-m", "ccsa", "-daemon", "--once", "-config", str(cfg)]
        out = (tmp / "daemon.log").open("wb")
        env = {**os.environ, "FAKE_LOG": str(log)}
        spawned = trio.current_time()
        # Popen + wait4 as in bench_backlog: only wait4 returns the child's rusage
        proc = subprocess.Popen(argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env)  # noqa: ASYNC220
        out.close()
        own_cpu, hwm_kib = 0.0, 0
        while True:
            sample = _proc_sample(proc.pid)
            if sample is None or sample[0] == "Z":
                break
            own_cpu, hwm_kib = sample[1], max(hwm_kib, sample[2])
            await trio.sleep(0.05)
        _, status, usage = os.wait4(proc.pid, 0)  # noqa: ASYNC222
        wall = trio.current_time() - spawned
        nursery.cancel_scope.cancel()
    posts = [r for r in standin.request_log if r.endpoint in ("start_job", "stop_job")]
    starts = [r.time for r in posts if r.endpoint == "start_job"]
    calls = log.read_text().splitlines() if log.exists() else []  # noqa: ASYNC240
    by_command: dict[str, int] = {}
    for line in calls:
        name = line.split(" ", 1)[0]
        if name == "scontrol" and " write batch_script " in f" {line} ":
            name = "scontrol write batch_script"
        by_command[name] = by_command.get(name, 0) + 1
    expected = [(CLUSTER, 1000 + i) for i in range(n_jobs)]
    report = backend.check_exactly_once(expected)
    slurm_cpu = usage.ru_utime + usage.ru_stime - own_cpu
    return {
        "jobs": n_jobs,
        "exit_status": os.waitstatus_to_exitcode(status),
        "all_delivered_once": report.ok,
        "report": report.summary()[:300],
        "wall_s": round(wall, 2),
        "wall_to_last_post_s": round(max(r.time for r in posts) - spawned, 2) if posts else None,
        "first_start_job_s": round(min(starts) - spawned, 2) if starts else None,
        "last_start_job_s": round(max(starts) - spawned, 2) if starts else None,
        "posts_by_10s": _histogram([r.time - spawned for r in posts]),
        "peak_rss_mib": round(hwm_kib / 1024, 1),
        "slurm_commands": len(calls),
        "slurm_commands_by_kind": by_command,
        "slurm_cpu_s": round(slurm_cpu, 2),
        "daemon_cpu_s": round(own_cpu, 2),
        "daemon_cpu_ms_per_job": round(own_cpu * 1000 / max(1, n_jobs), 3),
        "http_posts": len(posts),
        "log_tail": (tmp / "daemon.log").read_text(errors="replace")[-800:],
    }


def _histogram(times: list[float]) -> list[int]:
    """POSTs per 10-second slot since the spawn (where the time went)."""
    out: list[int] = []
    for t in times:
        slot = int(t // 10)
        out.extend([0] * (slot + 1 - len(out)))
        out[slot] += 1
    return out


def run(sizes: tuple[int, ...] = (10_000, 30_000), seed: int = 1) -> dict[str, Any]:
    """Every size; prints the table and returns the numbers for the aggregator."""
    from benchmarks.machine import machine_info, print_table

    results: dict[str, Any] = {"machine": machine_info(), "sizes": {}}
    rows = []
    for n_jobs in sizes:
        tmp = Path(tempfile.mkdtemp(prefix="ccsa-largesite-", dir="/tmp"))
        try:
            t0 = time.perf_counter()
            answer = build_fake_slurm(tmp / "slurm", n_jobs, seed, int(time.time()))
            setup = time.perf_counter() - t0
            r = trio.run(_measure, tmp, n_jobs, tmp / "calls.log")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        r.update(answer, setup_s=round(setup, 1))
        rss_target = TARGET_RSS_MIB.get(n_jobs, TARGET_RSS_MIB[30_000])
        r["targets_met"] = {
            "first_start": (r["first_start_job_s"] or 1e9) <= TARGET_FIRST_START_S,
            "total": n_jobs != 10_000 or (r["wall_to_last_post_s"] or 1e9) <= TARGET_WALL_S_10K,
            "peak_rss": r["peak_rss_mib"] <= rss_target,
            "delivered": r["all_delivered_once"] and r["exit_status"] == 0,
        }
        results["sizes"][str(n_jobs)] = r
        rows.append(
            [
                n_jobs,
                f"{r['sacct_bytes'] / 1e6:.0f} / {r['squeue_bytes'] / 1e6:.0f}",
                f"{r['wall_to_last_post_s']}",
                f"{r['first_start_job_s']} (<= {TARGET_FIRST_START_S:.0f})",
                f"{r['peak_rss_mib']:.0f} (<= {rss_target:.0f})",
                f"{r['slurm_commands']} / {r['slurm_cpu_s']:.1f}",
                f"{r['daemon_cpu_s']:.1f} / {r['daemon_cpu_ms_per_job']:.2f}",
                "yes" if r["targets_met"]["delivered"] else f"NO: {r['report'][:60]}",
            ]
        )
    command = f"python -m benchmarks.bench_largesite --jobs {' '.join(map(str, sizes))}"
    headers = [
        "jobs", "sacct / squeue MB", "wall to last POST s", "first start_job s",
        "peak RSS MiB", "Slurm cmds / CPU s", "daemon CPU s / ms per job", "all once",
    ]  # fmt: skip
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"(load average at the end: {load} on {os.cpu_count()} cores; other work competes)")
    print_table("window-ignoring Slurm backlog, --once (issue #19)", headers, rows, command)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[10_000, 30_000])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    result = run(tuple(args.jobs), args.seed)
    for n, r in result["sizes"].items():
        print(f"{n}: Slurm commands {r['slurm_commands_by_kind']}")
        print(f"{n}: last start_job {r['last_start_job_s']} s; POSTs per 10 s {r['posts_by_10s']}")
        if r["exit_status"] != 0 or not r["all_delivered_once"]:
            print(r["log_tail"])


if __name__ == "__main__":
    main()
