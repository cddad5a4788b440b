"""The simulator's Slurm job lifecycles (issue 18): requeue while running, preemption with
requeue, node power-up start reset, resize, slurmdbd lag with ``sdiag``, a skewed clock, het jobs.

Each test runs the simulated tools as subprocesses and reads their documents as ccsa does. Where
the real behaviour is documented is said per test (SchedMD source at github:SchedMD/slurm, the
24.11 test bed in ``shared/docs/testbed.md``); ``docs/simulator.md`` lists the same.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ccsa.sim.slurm import JobSpec, Shape, SimCluster
from ccsa.slurm import sacct, squeue
from ccsa.slurm.types import num

T0 = 1_795_465_000.0  # 2026-11-23T20:16:40Z
CLUSTER = "cluster1"


def make(tmp_path: Path, *specs: JobSpec, **kw: Any) -> tuple[SimCluster, list[int]]:
    sim = SimCluster.create(tmp_path / "sim", start=T0, operator="ccsa", **kw)
    ids = sim.submit_many(
        [msgspec.structs.replace(s, submit=T0 + 1 + i) for i, s in enumerate(specs)]
    )
    return sim, ids


def tool(sim: SimCluster, *argv: str) -> bytes:
    p = subprocess.run(
        [str(sim.bin_dir / argv[0]), *argv[1:]],
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", "TZ": "UTC"},
        timeout=60,
        check=False,
    )
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout


def sacct_jobs(sim: SimCluster, jid: int, *extra: str) -> list[dict[str, Any]]:
    out = tool(sim, "sacct", "--cluster", CLUSTER, "-j", str(jid), "--json", *extra)
    sacct.decode(out)  # ccsa's own view reads it
    jobs: list[dict[str, Any]] = json.loads(out)["jobs"]
    return jobs


def queue_job(sim: SimCluster, jid: int) -> dict[str, Any]:
    out = tool(sim, "squeue", "--noheader", "--cluster", CLUSTER, "--all", "--json")
    squeue.decode(out)
    return next(j for j in json.loads(out)["jobs"] if j["job_id"] == jid)


def truth(sim: SimCluster, jid: int) -> Any:
    return next(t for t in sim.jobs() if t.job_id == jid)


def test_requeue_while_running(tmp_path: Path) -> None:
    """Operator ``scontrol requeue`` of a running job (24.11 test bed, docs/real-slurm.md
    "Lifecycles of issue 18"; SchedMD job_mgr.c ``_job_requeue_op``): the record ends at the
    requeue time and reads ``["PENDING", "REQUEUED"]`` with ``restart_cnt`` 0 in
    ``sacct --duplicates``; plain sacct shows only the current record, PENDING, submitted at the
    requeue, eligible 121 s later (cred_expire + 1), ``restart_cnt`` 1; squeue says BeginTime;
    then the job runs again with a new start."""
    sim, (jid,) = make(tmp_path, JobSpec(user="alice", duration=300, requeue_after=60))
    sim.set_now(T0 + 30)
    q = queue_job(sim, jid)
    assert (q["job_state"], q["restart_cnt"]) == (["RUNNING"], 0)
    first = q["start_time"]["number"]
    assert first == int(T0 + 1)
    sim.set_now(T0 + 100)  # requeued at T0+61, eligible again at T0+182
    q = queue_job(sim, jid)
    assert (q["job_state"], q["restart_cnt"], q["state_reason"]) == (["PENDING"], 1, "BeginTime")
    (cur,) = sacct_jobs(sim, jid)
    assert (cur["state"]["current"], cur["time"]["start"], cur["restart_cnt"]) == (
        ["PENDING"],
        0,
        1,
    )
    assert (cur["time"]["submission"], cur["time"]["eligible"]) == (int(T0 + 61), int(T0 + 182))
    sim.set_now(T0 + 250)
    q = queue_job(sim, jid)
    assert q["job_state"] == ["RUNNING"]
    assert q["start_time"]["number"] == int(T0 + 182)
    plain = sacct_jobs(sim, jid)
    assert [(j["state"]["current"], j["time"]["start"]) for j in plain] == [
        (["RUNNING"], int(T0 + 182))
    ]
    dup = sacct_jobs(sim, jid, "--duplicates")
    assert [
        (j["state"]["current"], j["time"]["start"], j["time"]["end"], j["restart_cnt"]) for j in dup
    ] == [
        (["PENDING", "REQUEUED"], first, int(T0 + 61), 0),
        (["RUNNING"], int(T0 + 182), 0, 1),
    ]
    t = truth(sim, jid)
    assert (t.restarts, t.start) == (1, int(T0 + 182))
    assert [(r.start, r.end, r.state) for r in t.earlier] == [(first, int(T0 + 61), "REQUEUED")]


def test_cancel_while_the_requeued_job_pends(tmp_path: Path) -> None:
    """``scancel`` 2 s after the requeue (test bed job 35): plain sacct has one CANCELLED record
    with time.start 4294967294 (never started), end = the cancel time, restart_cnt 1; the first
    run is only in ``--duplicates``. Nothing but the first run ever ran."""
    sim, (jid,) = make(
        tmp_path, JobSpec(user="bob", duration=300, requeue_after=60, cancel_requeued_after=2)
    )
    sim.set_now(T0 + 1000)
    (cur,) = sacct_jobs(sim, jid)
    assert (cur["state"]["current"], cur["time"]["start"], cur["time"]["end"]) == (
        ["CANCELLED"],
        4294967294,
        int(T0 + 63),
    )
    assert (cur["restart_cnt"], cur["nodes"]) == (1, "None assigned")
    dup = sacct_jobs(sim, jid, "--duplicates")
    assert [j["state"]["current"] for j in dup] == [["PENDING", "REQUEUED"], ["CANCELLED"]]
    t = truth(sim, jid)
    assert (t.start, t.state, t.restarts) == (None, "CANCELLED", 1)
    assert [(r.start, r.end) for r in t.earlier] == [(int(T0 + 1), int(T0 + 61))]


def window(sim: SimCluster, *extra: str) -> list[tuple[str, int]]:
    """(last state, restart count) of each record a ``sacct`` time window prints."""
    out = tool(sim, "sacct", "--cluster", CLUSTER, "--allusers", "-S", "2026-11-23T20:00",
               "-E", "now", "--json", *extra)  # fmt: skip
    sacct.decode(out)
    return [(j["state"]["current"][-1], j["restart_cnt"]) for j in json.loads(out)["jobs"]]


def test_a_window_without_duplicates_shows_only_the_latest_record(tmp_path: Path) -> None:
    """A time window without ``--duplicates`` prints one record per job, the latest one the
    window selects (slurmdbd's ``as_mysql_jobacct_process.c`` drops older records of the same
    id unless they ended RESIZING). On the 24.11 test bed (2026-12-06, job 53: requeued 3 s
    after its start, cancelled 2 s later, ``cred_expire=10``) ``sacct --allusers -S .. -E now``
    printed the REQUEUED run until the cancelled record became eligible (11 s after the
    requeue), then only CANCELLED (never started); with ``-D`` both. So a daemon that polls
    later than that never sees the first run without ``--duplicates``."""
    sim, _ = make(
        tmp_path, JobSpec(user="bob", duration=300, requeue_after=60, cancel_requeued_after=2)
    )
    sim.set_now(T0 + 65)  # requeued at T0+61, cancelled at T0+63, eligible at T0+182
    assert window(sim) == [("REQUEUED", 0)]
    assert window(sim, "--duplicates") == [("REQUEUED", 0)]  # the other is not eligible yet
    sim.set_now(T0 + 200)
    assert window(sim) == [("CANCELLED", 1)]
    assert window(sim, "--duplicates") == [("REQUEUED", 0), ("CANCELLED", 1)]


def test_preemption_with_requeue(tmp_path: Path) -> None:
    """PreemptMode=REQUEUE: the preempted run's record says PREEMPTED (SchedMD job_mgr.c
    ``_job_requeue_op`` with ``preempt``: job_state_set(JOB_PREEMPTED) before
    job_completion_logger, then JOB_REQUEUE), the job runs again. A job requeued and later
    preempted has both records and restart_cnt 2."""
    sim, (pre, both) = make(
        tmp_path,
        JobSpec(user="bob", duration=300, preempt_after=50),
        JobSpec(user="carol", duration=300, requeue_after=40, preempt_after=30),
    )
    sim.set_now(T0 + 1000)
    dup = sacct_jobs(sim, pre, "--duplicates")
    assert [(j["state"]["current"][0], j["time"]["end"] - j["time"]["start"]) for j in dup] == [
        ("PREEMPTED", 50),
        ("COMPLETED", 300),
    ]
    assert dup[-1]["restart_cnt"] == 1
    dup = sacct_jobs(sim, both, "--duplicates")
    assert [j["state"]["current"][-1] for j in dup] == ["REQUEUED", "PREEMPTED", "COMPLETED"]
    assert [j["restart_cnt"] for j in dup] == [0, 1, 2]
    assert dup[-1]["restart_cnt"] == 2
    assert [r.state for r in truth(sim, both).earlier] == ["REQUEUED", "PREEMPTED"]
    # while the preempted job waits to run again, sacct's default shows it pending
    sim.set_now(T0 + 80)
    assert [j["state"]["current"] for j in sacct_jobs(sim, pre)] == [["PENDING"]]
    assert queue_job(sim, pre)["restart_cnt"] == 1


def test_power_up_resets_the_start_time(tmp_path: Path) -> None:
    """Powered-down nodes: the job is RUNNING+CONFIGURING+POWER_UP_NODE from its allocation
    while the nodes boot; then slurmctld sets start_time = now, extends the end time and sends
    slurmdbd a new job start that overwrites the record's start (SchedMD job_mgr.c
    ``job_config_fini``: "Resetting JobId=N start time for node power up";
    ``as_mysql_job_start`` updates the same db_index)."""
    sim, (jid,) = make(tmp_path, JobSpec(user="alice", duration=300, boot_delay=120))
    sim.set_now(T0 + 30)
    q = queue_job(sim, jid)
    assert q["job_state"] == ["RUNNING", "CONFIGURING", "POWER_UP_NODE"]
    assert q["start_time"]["number"] == int(T0 + 1)
    assert q["nodes"]
    (a,) = sacct_jobs(sim, jid)
    assert (a["state"]["current"], a["time"]["start"]) == (["RUNNING"], int(T0 + 1))
    st = squeue.decode(tool(sim, "squeue", "--noheader", "--cluster", CLUSTER, "--json"))
    assert [j.job_state for j in st.jobs] == [["RUNNING", "CONFIGURING", "POWER_UP_NODE"]]
    sim.set_now(T0 + 200)
    q = queue_job(sim, jid)
    assert q["job_state"] == ["RUNNING"]
    assert q["start_time"]["number"] == int(T0 + 121)
    (a,) = sacct_jobs(sim, jid)
    assert (a["time"]["start"], a["restart_cnt"]) == (int(T0 + 121), 0)
    assert sacct_jobs(sim, jid, "--duplicates") == [a]  # the same record, not a second one
    sim.set_now(T0 + 1000)
    t = truth(sim, jid)
    assert (t.allocated, t.start, t.end, t.restarts) == (
        int(T0 + 1),
        int(T0 + 121),
        int(T0 + 421),
        0,
    )


def test_resize_starts_a_new_record(tmp_path: Path) -> None:
    """``scontrol update JobId=N NumNodes=1``: slurmdbd's record ends RESIZING at the resize
    time and a new record starts then (submit = eligible = start = resize_time); slurmctld keeps
    the job's start time and reports resize_time (SchedMD job_mgr.c ``job_pre_resize_acctg``,
    ``job_post_resize_acctg``; as_mysql_job.c ``resize_time``)."""
    sim, (jid,) = make(
        tmp_path,
        JobSpec(
            user="dave",
            duration=600,
            shape=Shape(nodes=2, cpus_per_node=4),
            resize_after=100,
            resize_nodes=1,
        ),
    )
    sim.set_now(T0 + 50)
    q = queue_job(sim, jid)
    two = q["nodes"]
    assert q["node_count"]["number"] == 2
    sim.set_now(T0 + 300)
    q = queue_job(sim, jid)
    assert q["node_count"]["number"] == 1
    assert q["start_time"]["number"] == int(T0 + 1)
    assert q["resize_time"]["number"] == int(T0 + 101)
    (a,) = sacct_jobs(sim, jid)
    assert a["time"]["start"] == a["time"]["submission"] == int(T0 + 101)
    assert a["allocation_nodes"] == 1
    dup = sacct_jobs(sim, jid, "--duplicates")
    assert [(j["state"]["current"], j["nodes"], j["time"]["end"]) for j in dup] == [
        (["PENDING", "RESIZING"], two, int(T0 + 101)),
        (["RUNNING"], a["nodes"], 0),
    ]
    # a time window shows both records without --duplicates too (test bed job 31)
    out = tool(sim, "sacct", "--cluster", CLUSTER, "--allusers", "-S", "2026-11-23T20:00",
               "-E", "now", "--json")  # fmt: skip
    assert [j["state"]["current"][-1] for j in json.loads(out)["jobs"]] == ["RESIZING", "RUNNING"]
    t = truth(sim, jid)
    assert (t.start, t.restarts, len(t.nodes)) == (int(T0 + 1), 0, 1)


def test_dbd_lag_keeps_sacct_behind_squeue_and_sdiag_counts_it(tmp_path: Path) -> None:
    """slurmdbd stalls (database, rollup, restart): slurmctld queues its job messages (the DBD
    agent queue, ``sdiag``'s "DBD Agent queue size", SchedMD src/sdiag/sdiag.c) and sacct
    answers from what slurmdbd has. A job that starts and ends inside the stall is in squeue but
    not in sacct until the queue drains. The test bed makes this by stopping slurmdbd
    (issue 18)."""
    sim, (short, other) = make(
        tmp_path,
        JobSpec(user="alice", duration=60),
        JobSpec(user="bob", duration=600),
    )
    sim.set_fault("dbd_lag", seconds=300, start=T0, end=T0 + 120)
    sim.set_now(T0 + 30)
    assert queue_job(sim, short)["job_state"] == ["RUNNING"]
    window = ("--allusers", "--starttime", "2026-11-23T19:00:00", "--endtime", "now")
    out = tool(sim, "sacct", "--cluster", CLUSTER, *window, "--json")
    assert json.loads(out)["jobs"] == []  # slurmdbd has not even the submits yet
    text = tool(sim, "sdiag").decode()
    assert "DBD Agent queue size: 4\n" in text  # two submits, two starts
    assert f"sdiag output at Mon Nov 23 20:17:10 2026 ({int(T0 + 30)})\n" in text
    sim.set_now(T0 + 400)  # events up to T0+100 have arrived, the short job's end (T0+61) too
    got = {j["job_id"]: j["state"]["current"][0] for j in json.loads(
        tool(sim, "sacct", "--cluster", CLUSTER, *window, "--json"))["jobs"]}  # fmt: skip
    assert got == {short: "COMPLETED", other: "RUNNING"}
    stats = json.loads(tool(sim, "sdiag", "--json"))["statistics"]
    assert stats["dbd_agent_queue_size"] == 0
    assert stats["req_time"]["number"] == int(T0 + 400)
    sim.set_now(T0 + 700)
    assert json.loads(tool(sim, "sdiag", "--json"))["statistics"]["dbd_agent_queue_size"] == 0
    with pytest.raises(ValueError, match="not on calls"):
        sim.set_fault("dbd_lag", seconds=5, calls=2)


def test_dbd_lag_queue_drains_in_order(tmp_path: Path) -> None:
    """Events after the stall wait behind it (slurmctld's agent queue is FIFO)."""
    sim, (early, late) = make(
        tmp_path,
        JobSpec(user="alice", duration=600),
        JobSpec(user="bob", duration=600, begin_delay=200),  # starts at T0+202, after the stall
    )
    sim.set_fault("dbd_lag", seconds=300, start=T0, end=T0 + 100)
    sim.set_now(T0 + 250)  # early's events have not arrived; late's start waits behind them
    assert (
        json.loads(tool(sim, "sacct", "--cluster", CLUSTER, "-j", f"{early},{late}", "--json"))[
            "jobs"
        ]
        == []
    )
    assert "DBD Agent queue size: 4\n" in tool(sim, "sdiag").decode()  # 2 submits, 2 starts
    sim.set_now(T0 + 450)
    got = sacct_jobs(sim, early) + sacct_jobs(sim, late)
    assert [j["state"]["current"][0] for j in got] == ["RUNNING", "RUNNING"]


def test_skewed_clock(tmp_path: Path) -> None:
    """The Slurm hosts' clock 600 s behind this host's: every time Slurm prints is on its clock
    (squeue's last_update, sdiag's request time, job times), ``host_now`` is not."""
    sim, (jid,) = make(tmp_path, JobSpec(user="alice", duration=300))
    sim.set_now(T0 + 700)
    sim.set_skew(-600.0)
    assert (sim.host_now, sim.now, sim.skew) == (T0 + 700, T0 + 100, -600.0)
    doc = json.loads(tool(sim, "squeue", "--noheader", "--cluster", CLUSTER, "--all", "--json"))
    assert doc["last_update"]["number"] == int(T0 + 100)
    assert [j["job_state"] for j in doc["jobs"]] == [["RUNNING"]]  # on Slurm's clock: running
    assert json.loads(tool(sim, "sdiag", "--json"))["statistics"]["req_time"]["number"] == int(
        T0 + 100
    )
    sim.advance(300)
    assert (sim.host_now, sim.now) == (T0 + 1000, T0 + 400)
    assert truth(sim, jid).state == "COMPLETED"


def test_het_job_components(tmp_path: Path) -> None:
    """A het job (``sbatch : ...``) is one record per component, ids leader+0, leader+1, all
    starting together; squeue, scontrol and sacct carry het_job_id/offset (the 24.11 test bed's
    fixtures, shared/fixtures/slurm/24.11-testbed)."""
    sim, (leader,) = make(
        tmp_path,
        JobSpec(
            user="bob",
            duration=300,
            shape=Shape(cpus_per_node=2),
            het=(Shape(cpus_per_node=1, gpus_per_node=1, partition="gpu"),),
        ),
    )
    sim.set_now(T0 + 30)
    comps = sacct_jobs(sim, leader)
    assert [(j["job_id"], j["het"]["job_id"], j["het"]["job_offset"]["number"]) for j in comps] == [
        (leader, leader, 0),
        (leader + 1, leader, 1),
    ]
    assert len({j["time"]["start"] for j in comps}) == 1
    assert queue_job(sim, leader + 1)["het_job_id_set"] == f"{leader}-{leader + 1}"
    one = tool(sim, "scontrol", "show", "job", str(leader + 1), "--json")
    offset = squeue.decode(one, command="scontrol").jobs[0].het_job_offset
    assert offset is not None
    assert offset.number == 1


def test_workload_kinds_for_the_new_lifecycles(tmp_path: Path) -> None:
    sim = SimCluster.create(tmp_path / "sim", start=T0, operator="ccsa")
    sim.add_workload(40, rate_per_min=60, mix={"preempt": 1, "power_up": 1}, start=T0)
    recs = sim.records()
    assert {r.prior[0].ended for r in recs if r.prior} == {"PREEMPTED"}
    assert any(r.run is not None and r.run.alloc for r in recs)
    with pytest.raises(ValueError, match="unknown job kinds"):
        sim.add_workload(1, mix={"nope": 1})


def test_empty_user_and_corrupt_record_faults(tmp_path: Path) -> None:
    """Issue 17 items 3 and 5 as sacct answers: the host's user lookup fails for a while (empty
    user and group in every record), one record of an answer is malformed."""
    sim, (a, b) = make(
        tmp_path, JobSpec(user="alice", duration=60), JobSpec(user="bob", duration=600)
    )
    sim.set_now(T0 + 100)
    sim.set_fault("empty_user", calls=1)
    blank = json.loads(tool(sim, "sacct", "--cluster", CLUSTER, "-j", f"{a},{b}", "--json"))
    assert [(j["user"], j["group"]) for j in blank["jobs"]] == [("", ""), ("", "")]
    again = json.loads(tool(sim, "sacct", "--cluster", CLUSTER, "-j", f"{a},{b}", "--json"))
    assert [j["user"] for j in again["jobs"]] == ["alice", "bob"]
    sim.set_fault("corrupt_record", calls=1)
    bad = json.loads(tool(sim, "sacct", "--cluster", CLUSTER, "-j", f"{a},{b}", "--json"))
    assert [j["time"]["start"] for j in bad["jobs"]] == ["corrupt", int(T0 + 2)]
    assert sacct_jobs(sim, a)[0]["time"]["start"] == int(T0 + 1)
    assert json.loads(tool(sim, "squeue", "--json"))["jobs"]  # squeue is not touched
    assert sim.faults() == []


async def test_sdiag_through_ccsas_view(tmp_path: Path) -> None:
    """ccsa's ``Slurm.sdiag`` runs the simulated sdiag and reads slurmctld's clock and queue."""
    from ccsa.slurm.commands import Slurm
    from ccsa.slurm.runner import SlurmRunner

    sim, _ = make(tmp_path, JobSpec(user="alice", duration=60))
    sim.set_fault("dbd_lag", seconds=300, start=T0, end=T0 + 120)
    sim.set_now(T0 + 30)
    sim.set_skew(-5.0)
    slurm = Slurm(SlurmRunner(str(sim.bin_dir), max_concurrent=2, timeout=30))
    doc = await slurm.sdiag(CLUSTER)
    assert num(doc.statistics.req_time) == int(T0 + 25)
    assert num(doc.statistics.dbd_agent_queue_size) == 2  # the submit and the start


def test_cred_expire_sets_the_requeue_wait(tmp_path: Path) -> None:
    """``AuthInfo=cred_expire=10`` (the test bed's lifecycle config): a requeued job may start
    again 11 s after the requeue instead of 121 s (docs/real-slurm.md)."""
    sim, (jid,) = make(
        tmp_path, JobSpec(user="alice", duration=300, requeue_after=60), cred_expire=10.0
    )
    sim.set_now(T0 + 65)
    (cur,) = sacct_jobs(sim, jid)
    assert cur["time"]["eligible"] == int(T0 + 72)
    sim.set_now(T0 + 100)
    assert queue_job(sim, jid)["start_time"]["number"] == int(T0 + 72)
