"""hwthreads and accelerators on the real test bed, with and without cc-backend's topology (#16).

One batch of real job kinds (GPU, multi-node, ``-c 2``, exclusive, array, a comment that is
not a PCI list, failed, cancelled) runs while two daemons poll the test bed, each with its own
stand-in cc-backend:

* ``topology``: the stand-in serves a cluster.json matching the test bed's node layout; its
  ``topology.core`` numbers the siblings of a core *consecutively* (unlike ccsa's default
  ``spread``), so equal ids prove they came from the topology; GPU ids (lower case) only
  from the topology (no gpuPciAddrs). The stand-in refuses any id its topology lacks.
* ``slurm``: the stand-in answers 404 for ``GET /api/clusters/``; ids come from Slurm's node
  shape (``spread`` numbering, Linux on x86) and gpuPciAddrs; ``check`` and ``status`` say so.

The oracle is squeue's own ``job_resources`` (socket, core) per node and ``gres_detail``, read
here independently of ccsa. The node layout follows ``SLURM_TESTBED_CPUS/SOCKETS/THREADS``
(../shared/docs/testbed.md "Node layouts"): the default 1 x 8 x 1, or the SMT layout with
``SLURM_TESTBED_ROOT=/tmp/slurmroot-smt SLURM_TESTBED_CPUS=16 SLURM_TESTBED_SOCKETS=2
SLURM_TESTBED_THREADS=2``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ccsa.sim.ccbackend import topologies

from .conftest import JOB_REPORT
from .processes import ADAPTER, GPU_MAP, PCI_ADDRS, AdapterDaemon, StandIn
from .processes import wait_standin as _wait_standin
from .testbed import ChrootHook, JobKind, RealJobs, Testbed, submit_and_collect

pytestmark = pytest.mark.slurm

CPUS = int(os.environ.get("SLURM_TESTBED_CPUS", "8"))
SOCKETS = int(os.environ.get("SLURM_TESTBED_SOCKETS", "1"))
THREADS = int(os.environ.get("SLURM_TESTBED_THREADS", "1"))
CORES = CPUS // SOCKETS // THREADS  # per socket
PER_NODE = SOCKETS * CORES
GPU_IDS = topologies.gpu_ids(4)
#: The topology's thread ids per core index: consecutive siblings (see the module docstring).
CORE_TABLE = topologies.core_ids(SOCKETS, CORES, THREADS, "consecutive")

KINDS: tuple[JobKind, ...] = (
    JobKind("cpu-c2", "alice", ("-c", "2", "--wrap", "sleep 12"), "COMPLETED"),
    JobKind("gpu", "alice", ("--gres=gpu:2", "-c", "2", "--wrap", "sleep 12"), "COMPLETED"),
    JobKind(
        "multi-node",
        "carol",
        ("-N", "2", "--gres=gpu:1", "-c", "2", "--wrap", "sleep 12"),
        "COMPLETED",
        nodes=2,
    ),
    JobKind("exclusive", "bob", ("--exclusive", "-t", "5", "--wrap", "sleep 8"), "COMPLETED"),
    JobKind(
        "array",
        "bob",
        ("--array=0-1", "--gres=gpu:1", "-c", "1", "--wrap", "sleep 10"),
        "COMPLETED",
        tasks=2,
    ),
    JobKind(
        "comment",
        "alice",
        ("--comment", "rerun of case 7", "-c", "1", "--wrap", "sleep 10"),
        "COMPLETED",
    ),
    JobKind("failing", "bob", ("-p", "debug", "--wrap", "sleep 8; exit 3"), "FAILED"),
    JobKind(
        "cancelled",
        "bob",
        ("-c", "1", "--gres=gpu:1", "--wrap", "sleep 300"),
        "CANCELLED",
        cancel="running",
    ),
)


class TopologyStandIn(StandIn):
    """The stand-in with given cluster arguments (a cluster.json, or ``--no-clusters-api``)."""

    def __init__(self, workdir: Path, cluster: str, args: list[str]) -> None:
        self.token_file = workdir / "standin.jwt"
        self.request_file = workdir / "requests.jsonl"
        self.log = (workdir / "standin.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ccsa.sim.ccbackend", *args, "--write-token",
             str(self.token_file), "--request-log", str(self.request_file)],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.close()
            pytest.fail(f"stand-in did not start: {line!r}, see {self.log.name}")
        self.url = line.removeprefix("listening on ")
        self.token = self.token_file.read_text().strip()
        self.cluster = cluster


@dataclass
class Run:
    jobs: RealJobs
    stored: dict[str, dict[int, list[dict[str, Any]]]]  # mode -> job id -> records
    check: dict[str, str]  # mode -> `check` output
    status: dict[str, str]  # mode -> `status` output while the daemon ran
    rejected: dict[str, list[dict[str, Any]]]  # mode -> start_job requests refused


def _cluster_json(path: Path, cluster: str) -> None:
    doc = topologies.cluster(
        cluster,
        [
            topologies.subcluster(
                "main", "node[1-2]", sockets=SOCKETS, cores=CORES, threads=THREADS,
                numbering="consecutive", accelerators=GPU_IDS,
            )
        ],
    )  # fmt: skip
    path.write_text(json.dumps(doc))


def _cli(*argv: str) -> str:
    proc = subprocess.run(
        [ADAPTER, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "250", "TERM": "dumb"},
    )
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def run(testbed: Testbed) -> Iterator[Run]:
    work = Path(tempfile.mkdtemp(prefix="ccres-", dir="/tmp"))  # short: Unix socket paths
    cluster_file = work / "tb.cluster.json"
    _cluster_json(cluster_file, testbed.cluster)
    modes = {
        "topology": (["--cluster-config", str(cluster_file)], {}),
        "slurm": (
            ["--cluster", f"{testbed.cluster}=main:node[1-9]", "--no-clusters-api"],
            {"gpuPciAddrs": GPU_MAP},
        ),
    }
    standins: dict[str, StandIn] = {}
    daemons: dict[str, AdapterDaemon] = {}
    try:
        for mode, (args, keys) in modes.items():
            d = work / mode
            d.mkdir()
            standins[mode] = TopologyStandIn(d, testbed.cluster, args)
            sock = d / "d.sock"
            hook = ChrootHook(hook="", config="", socket_chroot="", socket_host=sock)
            daemon = AdapterDaemon(d, standins[mode], testbed, hook, **keys)
            if mode == "topology":  # GPU ids from the topology alone
                del daemon.config["gpuPciAddrs"]
                daemon.config_path.write_text(json.dumps(daemon.config))
            daemons[mode] = daemon
            daemon.start()
        for daemon in daemons.values():
            daemon.wait_for_log("synced", timeout=60)
        jobs = submit_and_collect(testbed, KINDS)
        want = {i: k.state.lower() for k in KINDS if k.nodes for i in jobs.ids[k.name]}
        for standin in standins.values():
            _wait_standin(standin, want, timeout=60)
        status = {m: _cli("status", "-config", str(d.config_path)) for m, d in daemons.items()}
        check = {m: _cli("check", "-config", str(d.config_path)) for m, d in daemons.items()}
        # Only this batch's jobs: the daemons also deliver the session's earlier jobs (their
        # windows read sacct --duplicates), and the second run of test_lifecycles.py's requeued
        # or preempted job is refused there as cc-backend refuses it (422), not for resources.
        batch = {i for ids in jobs.ids.values() for i in ids}
        rejected = {
            m: [
                r
                for r in s.requests()
                if r["endpoint"] == "start_job"
                and r["status"] >= 400
                and r["body"].get("jobId") in batch
            ]
            for m, s in standins.items()
        }
        yield Run(jobs, {m: s.jobs() for m, s in standins.items()}, check, status, rejected)
    finally:
        for daemon in daemons.values():
            daemon.stop()
        for standin in standins.values():
            standin.close()
        shutil.rmtree(work, ignore_errors=True)


_IDX = re.compile(r"IDX:([0-9,\-]*)\)")


def _expected(queued: dict[str, Any], mode: str) -> list[dict[str, Any]]:
    """Resources from squeue's raw ``job_resources`` and ``gres_detail`` (not from ccsa)."""
    res = queued["job_resources"]["nodes"]["allocation"]
    out: list[dict[str, Any]] = []
    for alloc in res:
        cores = [
            sock["index"] * len(sock["cores"]) + core["index"]
            for sock in alloc["sockets"]
            for core in sock["cores"]
            if "ALLOCATED" in core["status"]
        ]
        if mode == "topology":
            hw = [t for c in cores for t in CORE_TABLE[c]]
        else:  # Slurm's shape, Linux x86 numbering
            hw = [c + t * PER_NODE for c in cores for t in range(THREADS)]
        entry: dict[str, Any] = {"hostname": alloc["name"], "hwthreads": hw}
        details = queued.get("gres_detail") or []
        if alloc["index"] < len(details):
            idx: list[int] = []
            for m in _IDX.finditer(details[alloc["index"]]):
                for part in filter(None, m.group(1).split(",")):
                    lo, _, hi = part.partition("-")
                    idx.extend(range(int(lo), int(hi or lo) + 1))
            ids = GPU_IDS if mode == "topology" else PCI_ADDRS
            if idx:
                entry["accelerators"] = [ids[i] for i in idx]
        out.append(entry)
    return out


@pytest.mark.parametrize("mode", ["topology", "slurm"])
@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_resources_equal_slurms_allocation(run: Run, kind: JobKind, mode: str) -> None:
    assert run.rejected[mode] == []
    for job_id in run.jobs.ids[kind.name]:
        (rec,) = run.stored[mode].get(job_id, [None])
        assert rec is not None, f"job {job_id} ({kind.name}) missing in the {mode} stand-in"
        assert rec["resources"] == _expected(run.jobs.queue[job_id], mode)
        assert rec["numHwthreads"] == sum(len(r["hwthreads"]) for r in rec["resources"])
        tres = {t["type"]: t["count"] for t in run.jobs.acct[job_id]["tres"]["allocated"]}
        assert rec["numHwthreads"] == tres["cpu"]
        if kind.name == "comment":
            assert all("accelerators" not in r for r in rec["resources"])
        arrived = "; ".join(
            f"{r['hostname']} hw={r['hwthreads']} acc={r.get('accelerators', [])}"
            for r in rec["resources"]
        )
        where = f"{kind.name} #{job_id} ({mode}, {SOCKETS}x{CORES}x{THREADS})"
        JOB_REPORT.append((where, run.jobs.acct[job_id]["nodes"], arrived))


def test_without_topology_check_and_status_say_so(run: Run) -> None:
    assert "cc-backend gave no topology" in run.check["slurm"], run.check["slurm"]
    assert "siblingNumbering spread" in run.check["slurm"]
    assert "GET /api/clusters/ answered 404" in run.check["slurm"]
    assert "cluster topology (none)" in run.status["slurm"], run.status["slurm"]
    assert "2 slurm" in run.status["slurm"]


def test_with_topology_check_and_status_say_so(run: Run) -> None:
    text = run.check["topology"]
    assert "all 2 sinfo hosts are in a subcluster" in text, text
    assert "2 hosts from cc-backend's topology.core" in text
    assert "2 GPU nodes mapped (2 from topology)" in text
    assert "cluster topology (cc-backend" in run.status["topology"], run.status["topology"]
    assert "2 topology" in run.status["topology"]
