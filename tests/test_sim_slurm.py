"""The simulated Slurm cluster: real executables, real documents, quirks, faults, determinism.

Every document is produced by running the simulated tools as subprocesses and decoded with
ccsa's own Slurm views; shapes are compared with the real fixtures of the same data_parser.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ccsa import hostlist
from ccsa.errors import SlurmDecodeError
from ccsa.gres import gpu_indices
from ccsa.sim.slurm import JobSpec, Shape, SimCluster
from ccsa.sim.slurm.model import DATA_PARSERS
from ccsa.slurm import decode, sacct, sacctmgr, sinfo, squeue

T0 = 1_795_465_000.0  # 2026-11-23T19:36:40Z
DPS = tuple(DATA_PARSERS)


def scenario() -> list[JobSpec]:
    """One job of every kind, submitted T0+1 .. T0+17 (the array last, so some tasks pend)."""
    s = [
        JobSpec(user="alice", name="plain", shape=Shape(cpus_per_node=2), duration=300),
        JobSpec(
            user="bob",
            name="gpu-a100",
            partition="gpu",
            duration=7200,
            time_limit=180,
            shape=Shape(cpus_per_node=4, gpus_per_node=2, gpu_type="a100"),
        ),
        JobSpec(
            user="carol",
            name="multitype",
            partition="gpu",
            duration=7200,
            time_limit=180,
            shape=Shape(cpus_per_node=8, gpus_per_node=6),
        ),
        JobSpec(
            user="dave",
            name="multinode",
            duration=7200,
            time_limit=180,
            shape=Shape(nodes=2, cpus_per_node=8),
        ),
        JobSpec(
            user="bob",
            name="het",
            duration=7200,
            time_limit=180,
            shape=Shape(cpus_per_node=2),
            het=(Shape(cpus_per_node=1, gpus_per_node=1, gpu_type="a100", partition="gpu"),),
        ),
        JobSpec(
            user="carol",
            name="cancel-pending",
            begin_delay=7200,
            cancel_pending_after=120,
            end_state="CANCELLED",
        ),
        JobSpec(user="dave", name="timeout", duration=99999, time_limit=10, end_state="TIMEOUT"),
        JobSpec(user="alice", name="failed", duration=60, end_state="FAILED", exit_code=3),
        JobSpec(user="alice", name="nodefail", duration=100, end_state="NODE_FAIL"),
        JobSpec(user="bob", name="oom", duration=100, end_state="OUT_OF_MEMORY"),
        JobSpec(user="bob", name="preempted", duration=100, end_state="PREEMPTED"),
        JobSpec(user="carol", name="cancel-running", duration=100, end_state="CANCELLED"),
        JobSpec(user="alice", name="requeue", duration=300, requeue_after=60),
        JobSpec(
            user="bob",
            name="exclusive",
            duration=7200,
            time_limit=180,
            shared="none",
            shape=Shape(cpus_per_node=2),
        ),
        JobSpec(
            user="carol",
            name="usershared",
            duration=7200,
            time_limit=180,
            shared="user",
            shape=Shape(cpus_per_node=2),
        ),
        JobSpec(
            user="dave", name="array", array_size=8, duration=600, shape=Shape(cpus_per_node=16)
        ),
    ]
    return [msgspec.structs.replace(j, submit=T0 + 1 + i) for i, j in enumerate(s)]


def make(directory: Path, dp: str = "v0.0.42", **kw: Any) -> SimCluster:
    sim = SimCluster.create(directory, data_parser=dp, start=T0, operator="ccsa", **kw)
    sim.submit_many(scenario())
    return sim


def run(
    sim: SimCluster, *argv: str, tz: str = "UTC", timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    env = {"PATH": "/usr/bin:/bin", "TZ": tz}
    return subprocess.run(
        [str(sim.bin_dir / argv[0]), *argv[1:]],
        capture_output=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def ok(sim: SimCluster, *argv: str, tz: str = "UTC") -> bytes:
    p = run(sim, *argv, tz=tz)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stderr == b""
    return p.stdout


@pytest.fixture(scope="module")
def sims(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SimCluster]:
    return {dp: make(tmp_path_factory.mktemp(dp), dp) for dp in DPS}


@pytest.fixture
def sim(tmp_path: Path) -> SimCluster:
    return make(tmp_path / "sim")


def ids(sim: SimCluster) -> dict[str, int]:
    """Job name -> id of its first record (from the schedule, whatever "now" is)."""
    out: dict[str, int] = {}
    for j in sim.records():
        out.setdefault(j.name, j.array_job_id or j.het_job_id or j.job_id)
    return out


def by_name(docs: list[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for j in docs:
        out.setdefault(j["name"], []).append(j)
    return out


# --------------------------------------------------------------------------------------------
# every command, every data_parser: decodes with ccsa's views, invariants of the real fixtures


def check_queue_invariants(doc: squeue.QueueDoc, raw: dict[str, Any], dp: str) -> None:
    for job, rj in zip(doc.jobs, raw["jobs"], strict=True):
        state = job.job_state[0] if isinstance(job.job_state, list) else job.job_state
        res = rj["job_resources"]
        if state == "PENDING" or not res:  # never started (pending, or cancelled pending)
            assert job.nodes == ""
            assert job.gres_detail == []
            assert res == ({} if dp == "v0.0.41" else None)
            continue
        alloc = res["nodes"]["allocation"]
        names = [a["name"] for a in alloc]
        assert hostlist.expand(job.nodes) == names
        assert hostlist.expand(res["nodes"]["list"]) == names
        assert [a["index"] for a in alloc] == list(range(len(alloc)))
        assert rj["node_count"]["number"] == len(alloc)
        for a in alloc:
            ncores = len(a["sockets"][0]["cores"])
            assert all(len(s["cores"]) == ncores for s in a["sockets"])
            used = sum(c["status"] == ["ALLOCATED"] for s in a["sockets"] for c in s["cores"])
            # whole cores: CPUs = cores x threads per core (1 or 2 in the default cluster)
            assert a["cpus"]["count"] in (used, 2 * used)
            assert used > 0
        if state == "RUNNING" and rj["tres_per_node"]:
            assert len(job.gres_detail) == len(alloc)
        else:
            assert job.gres_detail == []  # finished jobs keep job_resources, lose gres_detail
        assert ("exclusive" in rj) == (dp == "v0.0.41")
        assert ("oversubscribe" in rj) == (dp == "v0.0.41")


@pytest.mark.parametrize("dp", DPS)
def test_every_document_decodes_with_ccsa_views(sims: dict[str, SimCluster], dp: str) -> None:
    sim = sims[dp]
    sim.set_now(T0 + 200)
    data = ok(
        sim,
        "sacct",
        "--cluster",
        "cluster1",
        "--allusers",
        "--starttime",
        "2026-11-23T00:00:00",
        "--endtime",
        "2026-11-24T00:00:00",
        "--json",
    )
    acct = sacct.decode(data, command="sacct")
    assert acct.meta.plugin is not None
    assert acct.meta.plugin.data_parser == f"data_parser/{dp}"
    names = {j.name for j in acct.jobs}
    assert {"plain", "gpu-a100", "multitype", "multinode", "het", "array", "requeue"} <= names
    for j in acct.jobs:
        if j.nodes != "None assigned":
            assert len(hostlist.expand(j.nodes)) == j.allocation_nodes
    q = ok(sim, "squeue", "--noheader", "--cluster", "cluster1", "--all", "--json")
    check_queue_invariants(squeue.decode(q, command="squeue"), json.loads(q), dp)
    sc = ok(sim, "scontrol", "--cluster", "cluster1", "show", "job", "--json")
    check_queue_invariants(squeue.decode(sc, command="scontrol"), json.loads(sc), dp)
    si = sinfo.decode(ok(sim, "sinfo", "--cluster", "cluster1", "--noheader", "--json"))
    assert si.sinfo
    for g in si.sinfo:
        assert len(g.nodes.nodes) == g.nodes.total
    cl = sacctmgr.decode(ok(sim, "sacctmgr", "list", "clusters", "--noheader", "--json"))
    assert [c.name for c in cl.clusters] == ["cluster1"]
    assert cl.meta.slurm is not None
    assert cl.meta.slurm.version.major == DATA_PARSERS[dp][0]
    kinds = {
        "sacct": data,
        "squeue": q,
        "sinfo": ok(sim, "sinfo", "--noheader", "--json"),
        "sacctmgr-clusters": ok(sim, "sacctmgr", "list", "clusters", "--noheader", "--json"),
    }
    for kind, doc in kinds.items():
        assert decode.detect(doc, source="sim") == kind
    assert decode.detect(sc, source="sim") == "squeue"
    us = sacctmgr.decode_users(ok(sim, "sacctmgr", "show", "user", "ccsa", "--json"))
    assert [(u.name, u.administrator_level) for u in us.users] == [("ccsa", ["Operator"])]


def test_resources_match_ground_truth(sim: SimCluster) -> None:
    sim.set_now(T0 + 200)
    q = json.loads(ok(sim, "squeue", "--noheader", "--cluster", "cluster1", "--all", "--json"))
    truth = {t.job_id: t for t in sim.jobs()}
    running = [j for j in q["jobs"] if j["job_state"] == ["RUNNING"]]
    assert len(running) >= 10
    for j in running:
        t = truth[j["job_id"]]
        alloc = j["job_resources"]["nodes"]["allocation"]
        assert [a["name"] for a in alloc] == [n.hostname for n in t.nodes]
        for i, a in enumerate(alloc):
            ncores = len(a["sockets"][0]["cores"])
            cores = [
                s["index"] * ncores + c["index"]
                for s in a["sockets"]
                for c in s["cores"]
                if c["status"][0] == "ALLOCATED"
            ]
            threads = a["cpus"]["count"] // len(cores)  # whole cores (Slurm's CR_Core)
            per_node = ncores * len(a["sockets"])
            hw = tuple(c + k * per_node for c in cores for k in range(threads))
            assert hw == t.nodes[i].hwthreads
            if j["gres_detail"]:
                assert tuple(gpu_indices(j["gres_detail"][i])) == t.nodes[i].gpus
            else:
                assert t.nodes[i].gpus == ()


def test_multitype_gpus_and_shared_flags(sim: SimCluster) -> None:
    sim.set_now(T0 + 200)
    jobs = by_name(
        json.loads(ok(sim, "squeue", "--noheader", "--cluster", "cluster1", "--all", "--json"))[
            "jobs"
        ]
    )
    assert jobs["multitype"][0]["gres_detail"] == ["gpu:h100:2(IDX:0-1),gpu:h200:4(IDX:2-5)"]
    assert jobs["multitype"][0]["tres_alloc_str"].endswith(
        "gres/gpu=6,gres/gpu:h100=2,gres/gpu:h200=4"
    )
    assert jobs["gpu-a100"][0]["gres_detail"] == ["gpu:a100:2(IDX:0-1)"]
    assert jobs["exclusive"][0]["shared"] == ["none"]
    assert jobs["exclusive"][0]["job_resources"]["nodes"]["whole"] is True
    assert jobs["usershared"][0]["shared"] == ["user"]
    assert jobs["plain"][0]["shared"] == []
    assert "exclusive" not in jobs["plain"][0]


def test_array_and_het_records(sim: SimCluster) -> None:
    sim.set_now(T0 + 200)
    q = by_name(
        json.loads(ok(sim, "squeue", "--noheader", "--cluster", "cluster1", "--all", "--json"))[
            "jobs"
        ]
    )
    arr = q["array"]
    meta = [j for j in arr if j["array_task_string"]]
    tasks = [j for j in arr if not j["array_task_string"]]
    assert len(meta) == 1
    assert tasks
    master = meta[0]["job_id"]
    assert meta[0]["array_job_id"]["number"] == master
    assert meta[0]["array_task_id"]["set"] is False
    assert meta[0]["job_state"] == ["PENDING"]
    pending_tasks = hostlist.expand(f"x[{meta[0]['array_task_string']}]")
    assert len(pending_tasks) + len(tasks) == 8
    assert all(t["array_job_id"]["number"] == master and t["job_id"] != master for t in tasks)
    het = q["het"]
    assert len(het) == 2
    leader = het[0]["het_job_id"]["number"]
    assert leader == het[0]["job_id"]
    assert het[1]["job_id"] == leader + 1
    assert [h["het_job_offset"]["number"] for h in het] == [0, 1]
    assert het[0]["het_job_id_set"] == f"{leader}-{leader + 1}"
    assert het[1]["partition"] == "gpu"
    assert het[1]["gres_detail"]
    # sacct -j master returns every task; -j leader every component
    a = json.loads(ok(sim, "sacct", "--cluster", "cluster1", "-j", str(master), "--json"))["jobs"]
    assert {j["array"]["job_id"] for j in a} == {master}
    assert len([j for j in a if j["array"]["task"]]) == 1
    h = json.loads(ok(sim, "sacct", "--cluster", "cluster1", "-j", str(leader), "--json"))["jobs"]
    assert sorted(j["job_id"] for j in h) == [leader, leader + 1]
    # once every task started, the meta record is gone and task 7 carries the master id
    sim.set_now(T0 + 2000)
    a = json.loads(ok(sim, "sacct", "--cluster", "cluster1", "-j", str(master), "--json"))["jobs"]
    assert len(a) == 8
    assert all(j["array"]["task"] == "" for j in a)
    last = next(j for j in a if j["job_id"] == master)
    assert last["array"]["task_id"]["number"] == 7


def test_end_states_and_cancelled_pending(sim: SimCluster) -> None:
    sim.set_now(T0 + 60)
    pend = by_name(
        json.loads(
            ok(
                sim,
                "sacct",
                "--cluster",
                "cluster1",
                "-j",
                str(ids(sim)["cancel-pending"]),
                "--json",
            )
        )["jobs"]
    )
    assert pend["cancel-pending"][0]["state"]["current"] == ["PENDING"]
    assert pend["cancel-pending"][0]["state"]["reason"] == "Priority"  # still waiting
    sim.set_now(T0 + 3000)
    acct = by_name(
        json.loads(
            ok(
                sim,
                "sacct",
                "--cluster",
                "cluster1",
                "--allusers",
                "-S",
                "2026-11-23T19:00:00",
                "-E",
                "2026-11-23T21:00:00",
                "--json",
            )
        )["jobs"]
    )
    assert "cancel-pending" not in acct  # eligible after the window (like the test bed's job 7)
    states = {n: j[0]["state"]["current"][0] for n, j in acct.items()}
    assert states["timeout"] == "TIMEOUT"
    assert states["failed"] == "FAILED"
    assert states["nodefail"] == "NODE_FAIL"
    assert states["oom"] == "OUT_OF_MEMORY"
    assert states["preempted"] == "PREEMPTED"
    assert states["cancel-running"] == "CANCELLED"
    assert states["plain"] == "COMPLETED"
    assert states["requeue"] == "COMPLETED"
    assert acct["failed"][0]["exit_code"]["return_code"]["number"] == 3
    assert acct["requeue"][0]["restart_cnt"] == 1
    cp_id = next(t.job_id for t in sim.jobs() if t.name == "cancel-pending")
    cp = json.loads(ok(sim, "sacct", "--cluster", "cluster1", "-j", str(cp_id), "--json"))["jobs"]
    assert cp[0]["state"]["current"] == ["CANCELLED"]
    assert cp[0]["state"]["reason"] == "None"  # as the 24.11 test bed shows it, not "Priority"
    assert cp[0]["time"]["start"] == 4294967294
    assert cp[0]["nodes"] == "None assigned"
    assert cp[0]["tres"]["allocated"] == []
    assert cp[0]["time"]["end"] == int(T0 + 6 + 120)
    dup = json.loads(
        ok(
            sim,
            "sacct",
            "--cluster",
            "cluster1",
            "-D",
            "-j",
            str(acct["requeue"][0]["job_id"]),
            "--json",
        )
    )["jobs"]
    # the requeued run's record reads ["PENDING", "REQUEUED"] (24.11 test bed, real-slurm.md)
    assert [j["state"]["current"] for j in dup] == [["PENDING", "REQUEUED"], ["COMPLETED"]]
    assert dup[0]["time"]["start"] < dup[1]["time"]["start"]


def test_sacct_window_semantics(sim: SimCluster) -> None:
    sim.set_now(T0 + 3000)
    truth = {t.name: t for t in sim.jobs()}
    plain_end = truth["plain"].end
    assert plain_end is not None

    def window(t0: float, t1: float) -> set[str]:
        fmt = "%Y-%m-%dT%H:%M:%S"
        import time as _t

        a, b = _t.strftime(fmt, _t.gmtime(t0)), _t.strftime(fmt, _t.gmtime(t1))
        return {
            j["name"]
            for j in json.loads(
                ok(
                    sim,
                    "sacct",
                    "--cluster",
                    "cluster1",
                    "--allusers",
                    "--starttime",
                    a,
                    "--endtime",
                    b,
                    "--json",
                )
            )["jobs"]
        }

    after = window(plain_end + 10, T0 + 2900)
    assert "plain" not in after
    assert "gpu-a100" in after
    assert "plain" in window(plain_end - 5, plain_end + 5)
    assert window(T0 - 100, T0 - 10) == set()
    # the same wall time read in another TZ is another instant
    berlin = json.loads(
        ok(
            sim,
            "sacct",
            "--cluster",
            "cluster1",
            "--allusers",
            "--starttime",
            "2026-11-23T18:00:00",
            "--endtime",
            "2026-11-23T19:30:00",
            "--json",
            tz="Europe/Berlin",
        )
    )["jobs"]
    assert berlin == []  # 18:00-19:30 Berlin = 17:00-18:30 UTC, before T0


def test_min_job_age_and_squeue_filter(sim: SimCluster) -> None:
    jid = str(ids(sim)["plain"])
    sim.set_now(T0 + 200)
    assert json.loads(
        ok(sim, "squeue", "--noheader", "--cluster", "cluster1", "-j", jid, "--json")
    )["jobs"][0]["job_state"] == ["RUNNING"]
    end = T0 + 1 + 300  # plain starts at submit, runs 300 s
    sim.set_now(end + 100)
    sc = json.loads(ok(sim, "scontrol", "--cluster", "cluster1", "show", "job", jid, "--json"))
    assert sc["jobs"][0]["job_state"] == ["COMPLETED"]
    assert sc["jobs"][0]["job_resources"]["nodes"]["list"]
    # squeue's default state filter hides it (slurmctld still knows it: no error)
    one = json.loads(ok(sim, "squeue", "--noheader", "--cluster", "cluster1", "-j", jid, "--json"))
    assert one["jobs"] == []
    two = json.loads(
        ok(
            sim,
            "squeue",
            "--noheader",
            "--cluster",
            "cluster1",
            "-j",
            f"{jid},{ids(sim)['gpu-a100']}",
            "--json",
        )
    )["jobs"]
    assert [j["name"] for j in two] == ["gpu-a100"]
    assert "plain" in {
        j["name"]
        for j in json.loads(
            ok(sim, "squeue", "--noheader", "--cluster", "cluster1", "-t", "all", "--json")
        )["jobs"]
    }
    sim.set_now(end + 301)
    sc = json.loads(ok(sim, "scontrol", "--cluster", "cluster1", "show", "job", jid, "--json"))
    assert sc["jobs"] == []  # exit 0 with jobs [] (24.11 test bed)
    # purged: with exactly one id squeue fails without JSON
    p = run(sim, "squeue", "--noheader", "--cluster", "cluster1", "-j", jid, "--json")
    assert p.returncode == 1
    assert p.stdout == b""
    assert p.stderr == b"slurm_load_jobs error: Invalid job id specified\n"
    p = run(sim, "scontrol", "--cluster", "cluster1", "show", "job", jid)
    assert p.returncode == 1
    assert b"Invalid job id specified" in p.stderr


def test_dbd_lag(tmp_path: Path) -> None:
    sim = make(tmp_path, dbd_lag=5)
    jid = str(ids(sim)["plain"])
    sim.set_now(T0 + 3)  # started at T0+1
    j = json.loads(ok(sim, "sacct", "--cluster", "cluster1", "-j", jid, "--json"))["jobs"][0]
    assert j["state"]["current"] == ["PENDING"]
    assert j["time"]["start"] == int(T0 + 1)
    assert j["nodes"] != "None assigned"
    assert j["time"]["eligible"] == 0
    sim.set_now(T0 + 7)
    j = json.loads(ok(sim, "sacct", "--cluster", "cluster1", "-j", jid, "--json"))["jobs"][0]
    assert j["state"]["current"] == ["RUNNING"]


def test_cluster_header_and_scontrol_text(sim: SimCluster) -> None:
    sim.set_now(T0 + 200)
    out = ok(sim, "squeue", "--cluster", "cluster1", "--all", "--json")
    assert out.startswith(b"CLUSTER: cluster1\n{")
    assert ok(sim, "sinfo", "--cluster", "cluster1", "--json").startswith(b"CLUSTER: cluster1\n")
    assert ok(sim, "squeue", "--all", "--json").startswith(b"{")  # no --cluster, no header
    assert b"\\/" in out  # the CLI escapes slashes
    het = next(t for t in sim.jobs() if t.name == "het")
    text = ok(sim, "scontrol", "--cluster", "cluster1", "show", "job", str(het.job_id)).decode()
    records = text.split("\n   \n")
    assert records[0].startswith(f"JobId={het.job_id} HetJobId={het.job_id} HetJobOffset=0 ")
    assert f"JobId={het.job_id + 1} " in records[1]
    assert "JobState=RUNNING" in records[0]
    assert "UserId=bob(2002)" in records[0]
    assert f"NodeList={het.nodes[0].hostname}" in records[0]
    script = ok(
        sim, "scontrol", "--cluster", "cluster1", "write", "batch_script", str(het.job_id), "-"
    )
    assert script.startswith(b"#!/bin/bash\n")
    # Slurm 24.11 (test bed): an unknown id exits 0, writes nothing, and says why on stderr
    p = run(sim, "scontrol", "--cluster", "cluster1", "write", "batch_script", "999999", "-")
    assert (p.returncode, p.stdout) == (0, b"")
    assert p.stderr == b"job script retrieval failed: Invalid job id specified\n"
    # so does a job that slurmctld has already forgotten (MinJobAge after its end)
    plain = ids(sim)["plain"]
    sim.set_now(T0 + 1 + 300 + 301)  # plain ends at T0+301; MinJobAge is 300 s
    gone = run(sim, "scontrol", "write", "batch_script", str(plain), "-")
    assert (gone.returncode, gone.stdout) == (0, b"")
    assert b"job script retrieval failed" in gone.stderr
    assert run(sim, "scontrol", "write", "batch_script", "1,2", "-").returncode == 1


def test_batch_script_stored(tmp_path: Path) -> None:
    sim = make(tmp_path, store_scripts=True)
    sim.set_now(T0 + 100)
    jid = str(ids(sim)["plain"])
    j = json.loads(ok(sim, "sacct", "-j", jid, "--batch-script", "--json"))["jobs"][0]
    assert j["script"].startswith("#!/bin/bash")
    plain = json.loads(ok(sim, "sacct", "-j", jid, "--json"))["jobs"][0]
    assert plain["script"] == ""


def test_sinfo_groups(sim: SimCluster) -> None:
    sim.set_now(T0 + 200)
    groups = json.loads(ok(sim, "sinfo", "--cluster", "cluster1", "--noheader", "--json"))["sinfo"]
    spec = sim.spec()
    for p in spec.partitions:
        nodes = [n for g in groups if g["partition"]["name"] == p.name for n in g["nodes"]["nodes"]]
        expect = [n for grp in spec.groups if grp.prefix in p.groups for n in grp.names()]
        assert sorted(nodes) == sorted(expect)
    used = [g["gres"]["used"] for g in groups if g["gres"]["total"] == "gpu:h100:2,gpu:h200:4"]
    assert "gpu:h100:2(IDX:0-1),gpu:h200:4(IDX:2-5)" in used
    for g in groups:
        assert g["cpus"]["total"] == g["cpus"]["maximum"] * g["nodes"]["total"]


#: Keys of one ``sinfo --json`` group and of its partition, in order, as the real Slurm 24.11.5
#: test bed printed them (data_parser v0.0.42, docs/real-slurm.md; no sinfo fixture exists).
REAL_SINFO_KEYS = [
    "port",
    "node",
    "nodes",
    "cpus",
    "sockets",
    "cores",
    "threads",
    "disk",
    "memory",
    "weight",
    "features",
    "gres",
    "cluster",
    "comment",
    "extra",
    "reason",
    "reservation",
    "resource_spec",
    "partition",
]
REAL_SINFO_PARTITION_KEYS = [
    "nodes",
    "accounts",
    "groups",
    "qos",
    "alternate",
    "tres",
    "cluster",
    "select_type",
    "cpus",
    "defaults",
    "grace_time",
    "maximums",
    "minimums",
    "name",
    "node_sets",
    "priority",
    "timeouts",
    "partition",
    "suspend_time",
]


@pytest.mark.parametrize("dp", DPS)
def test_sinfo_group_keys_match_real_slurm(sims: dict[str, SimCluster], dp: str) -> None:
    sim = sims[dp]
    sim.set_now(T0 + 200)
    groups = json.loads(ok(sim, "sinfo", "--noheader", "--json"))["sinfo"]
    assert groups
    n = int(dp.rsplit(".", 1)[1])
    for g in groups:
        want = REAL_SINFO_KEYS if n >= 42 else [k for k in REAL_SINFO_KEYS if k != "resource_spec"]
        assert list(g) == want
        assert "flags" not in g["partition"]
        extra = ["topology"] if n >= 43 else []
        assert list(g["partition"]) == REAL_SINFO_PARTITION_KEYS + extra
        if n >= 42:
            assert g["resource_spec"] == {"cpus": "", "memory": 0}


# --------------------------------------------------------------------------------------------
# shapes against the real fixtures


def shape_of(obj: Any, path: str, out: dict[str, set[str]]) -> None:
    """Every key path (list elements as ``[]``) with the JSON types seen there."""
    out.setdefault(path, set()).add(type(obj).__name__)
    if isinstance(obj, dict):
        for k, v in obj.items():
            shape_of(v, f"{path}.{k}", out)
    elif isinstance(obj, list):
        for v in obj:
            shape_of(v, f"{path}[]", out)


@functools.cache
def real_shapes(fixtures: Path) -> dict[tuple[str, str], dict[str, set[str]]]:
    """(kind, data_parser) -> shape of every job object in the real fixtures."""
    out: dict[tuple[str, str], dict[str, set[str]]] = {}
    for f in fixtures.glob("*/*.json"):
        try:
            d = json.loads(f.read_bytes())
        except ValueError:
            continue
        if not isinstance(d, dict) or not d.get("jobs"):
            continue
        dp = str(d.get("meta", {}).get("plugin", {}).get("data_parser", "")).split("/")[-1]
        kind = "squeue" if "job_state" in d["jobs"][0] else "sacct"
        for j in d["jobs"]:
            shape_of(j, "", out.setdefault((kind, dp), {}))
    return out


def read_fields(struct: type) -> set[str]:
    return {f.encode_name for f in msgspec.structs.fields(struct)}


#: list element types no real fixture shows because the lists are always empty there
#: (slurm-json.md §3.3: flag lists of strings)
NEVER_FILLED_IN_FIXTURES = {".shared[]", ".exclusive[]"}


@pytest.mark.parametrize("dp", DPS)
def test_shapes_match_real_fixtures(sims: dict[str, SimCluster], shared: Path, dp: str) -> None:
    """Every key path and JSON type we print occurs in real documents of the same data_parser,
    and every field ccsa's views read is there."""
    sim = sims[dp]
    sim.set_now(T0 + 200)
    acct = json.loads(ok(sim, "sacct", "--allusers", "-S", "2026-11-23", "--json"))["jobs"]
    queue = json.loads(ok(sim, "squeue", "--all", "--json"))["jobs"]
    shapes = real_shapes(shared / "fixtures" / "slurm")
    for kind, docs, struct in (("sacct", acct, sacct.SacctJob), ("squeue", queue, squeue.QueueJob)):
        real = shapes[(kind, dp)]
        mine: dict[str, set[str]] = {}
        for j in docs:
            shape_of(j, "", mine)
        drift = {
            p: (t, real.get(p))
            for p, t in mine.items()
            if not t <= real.get(p, set()) and p not in NEVER_FILLED_IN_FIXTURES
        }
        assert not drift, f"{kind} {dp}: shapes real Slurm never prints: {drift}"
        top = {p[1:] for p in real if p.count(".") == 1 and "[" not in p}
        for j in docs:
            missing = (read_fields(struct) & top) - set(j)
            assert not missing, f"{kind} {dp}: ccsa reads {missing}"


# --------------------------------------------------------------------------------------------
# faults


def test_faults(sim: SimCluster) -> None:
    sim.set_now(T0 + 200)
    sim.set_fault("dbd_down")
    p = run(sim, "sacct", "--cluster", "cluster1", "-j", "1000", "--json")
    assert p.returncode == 1
    assert p.stdout == b""
    assert p.stderr.endswith(b"sacct: error: Problem talking to the database: Connection refused\n")
    assert run(sim, "sacctmgr", "list", "clusters", "--json").returncode == 1
    assert ok(sim, "squeue", "--all", "--json")  # slurmctld still answers
    # ... but not for a named cluster: slurmdbd resolves it (24.11 test bed, real-slurm.md)
    named = run(sim, "squeue", "--cluster", "cluster1", "--all", "--json")
    assert named.returncode == 1
    assert named.stderr.endswith(
        b"squeue: error: Problem talking to the database: Connection refused\n"
    )
    assert run(sim, "sinfo", "-M", "cluster1", "--json").returncode == 1
    sim.clear_faults()
    sim.set_fault("ctld_down")
    assert run(sim, "squeue", "--all", "--json").returncode == 1
    assert run(sim, "sinfo", "--json").stderr.startswith(b"slurm_load_partitions: Unable")
    assert ok(sim, "sacct", "-j", "1000", "--json")
    sim.clear_faults()
    sim.set_fault("exit", command="squeue", exit_code=7, message="squeue: boom", calls=2)
    for _ in range(2):
        p = run(sim, "squeue", "--all", "--json")
        assert (p.returncode, p.stderr) == (7, b"squeue: boom\n")
    assert ok(sim, "squeue", "--all", "--json")  # the count is used up
    assert sim.faults() == []
    sim.set_fault("truncate", command="sacct", calls=1)
    with pytest.raises(SlurmDecodeError):
        sacct.decode(ok(sim, "sacct", "-j", "1000", "--json"))
    sim.set_fault("garbage", command="sacct", calls=1)
    with pytest.raises(SlurmDecodeError):
        sacct.decode(ok(sim, "sacct", "-j", "1000", "--json"))
    sim.set_fault("latency", command="sinfo", seconds=0.2, calls=1)
    assert ok(sim, "sinfo", "--json")
    sim.set_fault("exit", start=T0 + 1000, end=T0 + 2000)
    assert ok(sim, "sinfo", "--json")  # not yet active
    sim.set_now(T0 + 1500)
    assert run(sim, "sinfo", "--json").returncode == 1
    sim.set_now(T0 + 2000)
    assert ok(sim, "sinfo", "--json")


def test_hang_fault_is_killed_by_timeout(sim: SimCluster) -> None:
    sim.set_fault("hang", command="squeue", calls=1)
    with pytest.raises(subprocess.TimeoutExpired):
        run(sim, "squeue", "--all", "--json", timeout=1.5)
    with pytest.raises(ValueError, match="unknown fault kind"):
        sim.set_fault("explode")


def test_bad_input_is_rejected_like_slurm(sim: SimCluster) -> None:
    p = run(sim, "sacct", "--bogus", "--json")
    assert p.returncode == 1
    assert b"unrecognized option '--bogus'" in p.stderr
    p = run(sim, "sacct", "-S", "yesterday-ish", "--json")
    assert p.returncode == 1
    assert b"Invalid time specification" in p.stderr
    p = run(sim, "squeue", "--cluster", "nope", "--json")
    assert p.returncode == 1
    assert b"No cluster 'nope'" in p.stderr
    p = run(sim, "squeue", "--json=v0.0.40")
    assert p.returncode == 1
    assert b"data_parser/v0.0.40" in p.stderr
    older = json.loads(ok(sim, "squeue", "--all", "--json=v0.0.41"))
    assert older["meta"]["plugin"]["data_parser"] == "data_parser/v0.0.41"
    p = run(sim, "squeue", "-t", "pd,bogus", "--json")
    assert p.returncode == 1
    assert b"Invalid job state specified: BOGUS" in p.stderr
    sim.set_now(T0 + 200)
    pending = json.loads(ok(sim, "squeue", "-t", "PD", "--json"))["jobs"]
    assert pending
    assert {j["job_state"][0] for j in pending} == {"PENDING"}
    sim.set_now(T0 + 3000)
    done = json.loads(ok(sim, "sacct", "-s", "CD,f", "-S", "2026-11-23", "--json"))["jobs"]
    assert {j["state"]["current"][0] for j in done} == {"COMPLETED", "FAILED"}
    p = run(sim, "sacct", "-j", "abc", "--json")
    assert p.returncode == 1
    assert b"Invalid job id" in p.stderr


# --------------------------------------------------------------------------------------------
# scheduler, determinism, calls, CLI


def test_schedule_has_no_conflicts(tmp_path: Path) -> None:
    sim = SimCluster.create(tmp_path, seed=3, start=T0, operator="ccsa")
    sim.add_workload(400, rate_per_min=20)
    groups = sim.spec().group_of()
    events: list[tuple[float, int, str, tuple[int, ...], tuple[int, ...], str]] = []
    for j in sim.records():
        runs = [*j.prior, *([j.run] if j.run else [])]
        for r in runs:
            assert r.start >= j.eligible
            assert r.end > r.start
            for a in r.allocs:
                events.append((r.start, 1, a.node, a.cores, a.gpus, j.shared))
                events.append((r.end, 0, a.node, a.cores, a.gpus, j.shared))
    events.sort()
    cores: dict[str, set[int]] = {n: set() for n in groups}
    gpus: dict[str, set[int]] = {n: set() for n in groups}
    for _, start, node, c, g, _shared in events:
        if start:
            assert not cores[node] & set(c), f"core conflict on {node}"
            assert not gpus[node] & set(g), f"gpu conflict on {node}"
            assert max(c) < groups[node].ncores
            assert not g or max(g) < groups[node].ngpus
            cores[node] |= set(c)
            gpus[node] |= set(g)
        else:
            cores[node] -= set(c)
            gpus[node] -= set(g)
    kinds = {j.state for j in sim.records()}
    assert {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"} <= kinds


def test_same_seed_same_documents(tmp_path: Path) -> None:
    outs = []
    for name in ("a", "b"):
        sim = SimCluster.create(tmp_path / name, seed=11, start=T0, operator="ccsa")
        sim.add_workload(60, rate_per_min=30)
        sim.advance(1800)
        outs.append(ok(sim, "sacct", "--allusers", "-S", "2026-11-23", "--json"))
    assert outs[0] == outs[1]
    other = SimCluster.create(tmp_path / "c", seed=12, start=T0, operator="ccsa")
    other.add_workload(60, rate_per_min=30)
    other.advance(1800)
    assert ok(other, "sacct", "--allusers", "-S", "2026-11-23", "--json") != outs[0]


def test_calls_are_logged_and_real_clock(tmp_path: Path) -> None:
    sim = SimCluster.create(tmp_path, clock="real", operator="ccsa")
    sim.submit(JobSpec(user="alice", duration=3600))
    j = json.loads(ok(sim, "squeue", "--all", "--json"))["jobs"]
    assert [x["job_state"] for x in j] == [["RUNNING"]]
    assert [c["command"] for c in sim.calls()] == ["squeue"]
    with pytest.raises(ValueError):
        sim.advance(10)


def test_cli(tmp_path: Path) -> None:
    py = [sys.executable, "-m", "ccsa.sim.slurm"]
    env = {**os.environ, "TZ": "UTC"}
    h = subprocess.run([*py, "--help"], capture_output=True, text=True, check=True, env=env)
    assert "PATH" in h.stdout
    assert "advance" in h.stdout
    d = str(tmp_path / "c")
    bin_dir = subprocess.run(
        [*py, "create", d, "--jobs", "20", "--seed", "2", "--start", str(T0)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert Path(bin_dir.stdout.strip(), "sacct").is_file()
    subprocess.run([*py, "advance", d, "600"], check=True, capture_output=True, env=env)
    lines = subprocess.run(
        [*py, "jobs", d], capture_output=True, text=True, check=True, env=env
    ).stdout.splitlines()
    assert len(lines) >= 20
    assert all(json.loads(x)["cluster"] == "cluster1" for x in lines)
    bad = subprocess.run(
        [*py, "fault", d, "latency"], capture_output=True, text=True, env=env, check=False
    )
    assert bad.returncode == 1
    assert "seconds > 0" in bad.stderr
    bad = subprocess.run(
        [*py, "advance", str(tmp_path / "nope"), "1"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert bad.returncode == 1
    assert "not a simulated Slurm directory" in bad.stderr


def test_two_clusters(tmp_path: Path) -> None:
    sim = SimCluster.create(
        tmp_path,
        clusters=("alpha", "beta"),
        nodes=40,
        start=T0,
        operator="ccsa",
        admin_level="None",
    )
    users = json.loads(ok(sim, "sacctmgr", "show", "user", "ccsa", "--json"))["users"]
    assert [u["administrator_level"] for u in users] == [["None"]]
    assert json.loads(ok(sim, "sacctmgr", "show", "user", "nobody", "--json"))["users"] == []
    assert sum(g.count for g in sim.spec("beta").groups) == 40
    sim.submit(JobSpec(user="alice", cluster="beta", submit=T0, duration=600))
    sim.set_now(T0 + 10)
    names = [
        c["name"] for c in json.loads(ok(sim, "sacctmgr", "list", "clusters", "--json"))["clusters"]
    ]
    assert names == ["alpha", "beta"]
    beta = json.loads(ok(sim, "squeue", "--noheader", "--cluster", "beta", "--json"))["jobs"]
    assert [j["cluster"] for j in beta] == ["beta"]
    assert beta[0]["nodes"].startswith("bcn")
    alpha = json.loads(ok(sim, "squeue", "--noheader", "--cluster", "alpha", "--json"))["jobs"]
    assert alpha == []


def test_documents_convert_to_cc_backend_bodies(sim: SimCluster) -> None:
    """Every job kind goes through ccsa's conversion: start bodies carry the true resources."""
    import re

    from ccsa import convert
    from ccsa.ccbackend.models import StartJob

    gpu_map = tuple(
        (re.compile(f"^{g.prefix}"), tuple(f"0000:{i:02x}:00.0" for i in range(g.ngpus)))
        for g in sim.spec().groups
        if g.gpus
    )
    opts = convert.ConvertOptions(gpu_pci_addrs=gpu_map)
    sim.set_now(T0 + 200)
    queue = {j.job_id: j for j in squeue.decode(ok(sim, "squeue", "--all", "--json")).jobs}
    acct = sacct.decode(ok(sim, "sacct", "--allusers", "-S", "2026-11-23", "--json")).jobs
    truth = {t.job_id: t for t in sim.jobs()}
    started = 0
    for a in acct:
        q = queue.get(a.job_id)
        res = convert.capture_resources(q, opts) if q is not None else None
        body = convert.start_body(a, resources=res, queue=q, opts=opts)
        t = truth.get(a.job_id)
        if t is None or t.start is None or q is None or res is None:
            continue
        assert isinstance(body, StartJob), body
        started += 1
        assert body.start_time == t.start
        assert body.num_nodes == len(t.nodes)
        for r, n in zip(body.resources, t.nodes, strict=True):
            assert r.hostname == n.hostname
            assert tuple(r.hwthreads or ()) == n.hwthreads
            assert [x.split(":")[1] for x in r.accelerators or []] == [f"{i:02x}" for i in n.gpus]
    assert started >= 10
    nodes = convert.node_state(sinfo.decode(ok(sim, "sinfo", "--json")), "cluster1", opts).nodes
    gpus_used: dict[str, int] = {}
    cores_used: dict[str, int] = {}
    for t in truth.values():
        if t.state == "RUNNING":
            for n in t.nodes:
                gpus_used[n.hostname] = gpus_used.get(n.hostname, 0) + len(n.gpus)
                cores_used[n.hostname] = cores_used.get(n.hostname, 0) + len(n.hwthreads)
    assert {n.hostname for n in nodes} == set(sim.spec().group_of())
    for payload in nodes:
        assert payload.gpus_allocated == gpus_used.get(payload.hostname, 0), payload.hostname
        assert (payload.states[0] == "idle") == (payload.hostname not in cores_used)
    sim.set_now(T0 + 3000)
    for a in sacct.decode(ok(sim, "sacct", "--allusers", "-S", "2026-11-23", "--json")).jobs:
        start = convert.start_time(a)
        if start is not None and convert.is_finished(a):
            stop = convert.stop_body(a, start)
            assert stop.stop_time >= start


def test_cached_sacct_records_are_identical(sim: SimCluster) -> None:
    import shutil

    sim.set_now(T0 + 3000)  # warms the cache of finished records
    assert sim.warm() > 10
    cached = ok(sim, "sacct", "--allusers", "-S", "2026-11-23", "--json")
    shutil.rmtree(sim.directory / "cache")
    assert ok(sim, "sacct", "--allusers", "-S", "2026-11-23", "--json") == cached
