"""Issue 18's Slurm lifecycles on the real Slurm 24.11, through the daemon to the stand-in.

The module restarts the test bed with ``lifecycles.conf`` appended to slurm.conf (preemption by
partition priority, power saving on node2, ``cred_expire=10`` so a requeued job may run again after
11 s instead of 121 s, a backfill pass every 5 s instead of 30) and restores the session's
configuration afterwards. One daemon (``cc-slurm-adapter -daemon``: poll every 2 s,
``slurmQueryOverlap`` 5 s, slurmctld's PrologSlurmctld/EpilogSlurmctld wired to ccsa's hook) runs
for the whole module against one stand-in cc-backend, which logs every start_job/stop_job it answers
(``--request-log``), so each test asserts the exact requests, refused ones included, of its own
jobs.

What Slurm does in each case, with the real field values, is in docs/real-slurm.md
"Lifecycles of issue 18"; ccsa's rules are in docs/daemon.md.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import JOB_REPORT
from .processes import AdapterDaemon, StandIn, expected_resources
from .testbed import FINAL_STATES, ChrootHook, Testbed, install_ccsa_hook, script_command

pytestmark = pytest.mark.slurm

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CONF = HERE / "lifecycles.conf"
BOOT_SECONDS = 8  # how long the ResumeProgram "boots" node2
OVERLAP = 5  # the daemon's slurmQueryOverlap (s): the slurmdbd outage is longer than this


def _restart(tb: Testbed, extra_conf: Path | None) -> None:
    """``down`` then ``up`` (with ``extra_conf`` appended to slurm.conf, or the session's)."""
    script_command(tb.script, "down", timeout=180)
    up = script_command(tb.script, "up", timeout=300, extra_conf=extra_conf)
    if up.returncode != 0:
        tail = " | ".join(up.stderr.strip().splitlines()[-2:])
        pytest.fail(f"slurm-testbed.sh up ({extra_conf or 'session config'}): {tail}")


def _node_state(tb: Testbed, node: str) -> str:
    return tb.run("sinfo", "-h", "-N", "-n", node, "-o", "%t").stdout.split()[0]


@pytest.fixture(scope="module")
def bed(testbed: Testbed) -> Iterator[Testbed]:
    """The test bed restarted with lifecycles.conf and its power agent running (root, inside
    the test bed); the session's configuration again afterwards."""
    power = testbed.host_path("/opt/ccsa-tb")
    power.mkdir(parents=True, exist_ok=True)
    for name in ("suspend.sh", "resume.sh", "agent.sh"):
        shutil.copy(HERE / "power" / name, power / name)
        (power / name).chmod(0o755)
    requests = testbed.host_path("/tmp/ccsa-power")
    requests.mkdir(exist_ok=True)
    requests.chmod(0o1777)  # suspend.sh/resume.sh run as user slurm
    (requests / "boot-seconds").write_text(f"{BOOT_SECONDS}\n")
    testbed.unwire_hooks()
    _restart(testbed, CONF)
    agent = subprocess.Popen(
        [str(testbed.bindir / "tb-exec"), "/bin/sh", "/opt/ccsa-tb/agent.sh"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield testbed
    finally:
        try:
            testbed.unwire_hooks()
            testbed.cancel_all()
            if any(c in _node_state(testbed, "node2") for c in "~#%"):
                testbed.run("scontrol", "update", "nodename=node2", "state=power_up")
                testbed.wait_until(
                    "node2 powered up",
                    lambda: _node_state(testbed, "node2") in {"idle", "mix", "alloc"},
                    timeout=120,
                )
        finally:
            agent.terminate()
            agent.wait(10)
            _restart(testbed, None)


@dataclass
class Lifecycles:
    """The module's daemon and stand-in."""

    tb: Testbed
    standin: StandIn
    daemon: AdapterDaemon
    hook: ChrootHook


@pytest.fixture(scope="module")
def life(
    bed: Testbed, chroot_python: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lifecycles]:
    workdir = tmp_path_factory.mktemp("lifecycles")
    (workdir / "standin").mkdir()
    standin = StandIn(workdir / "standin", bed.cluster)
    hook = install_ccsa_hook(bed, REPO, python=chroot_python)
    bed.wire_hooks(hook.hook, hook.hook)
    daemon = AdapterDaemon(workdir / "daemon", standin, bed, hook, slurmQueryOverlap=OVERLAP)
    daemon.start()
    try:
        daemon.wait_for_log("synced", timeout=60)
        yield Lifecycles(bed, standin, daemon, hook)
    finally:
        bed.unwire_hooks()
        status = daemon.stop()
        standin.close()
    assert status == 0, daemon.log_tail()


# ---------------------------------------------------------------------- helpers


def _acct_runs(tb: Testbed, job: int) -> list[dict[str, Any]]:
    """Every run of a job: ``sacct -j JOB --duplicates --json`` records, oldest first."""
    doc = tb.json("sacct", "--cluster", tb.cluster, "--allusers", "-j", str(job), "--duplicates",
                  "--json")  # fmt: skip
    runs = [r for r in doc["jobs"] if r["job_id"] == job]
    return sorted(runs, key=lambda r: (r["time"]["submission"], r["time"]["start"]))


def _queued(tb: Testbed, job: int) -> dict[str, Any]:
    doc = tb.json("squeue", "--noheader", "--cluster", tb.cluster, "-j", str(job), "--json")
    return next(j for j in doc["jobs"] if j["job_id"] == job)


#: The stop of a run whose start cc-backend refused: cc-backend has no such job (404). Whether
#: ccsa sends it at all is #18 item 1's decision, so the tests accept it or its absence.
REFUSED_RUN_STOP = ("stop_job", 404)


def _wait_requests(
    life: Lifecycles,
    job: int,
    want: list[tuple[str, int]],
    *,
    timeout: float = 60,
    refused_run: bool = False,
) -> list[dict[str, Any]]:
    """Wait until the stand-in answered at least ``want`` (endpoint, status) for ``job``,
    then a few more polls (nothing else may follow); return the job's requests. With
    ``refused_run`` the last start was refused and its stop (REFUSED_RUN_STOP) may follow."""
    deadline = time.monotonic() + timeout
    while True:
        got = life.standin.requests(job)
        if len(got) >= len(want) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    time.sleep(6)  # three more polls: a late duplicate would show here
    got = life.standin.requests(job)
    seen = [(r["endpoint"], r["status"]) for r in got]
    allowed = [want, [*want, REFUSED_RUN_STOP]] if refused_run else [want]
    assert seen in allowed, f"job {job}: {_summary(got)}\n{life.daemon.log_tail()}"
    return got


def _summary(reqs: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"{r['endpoint']} {r['status']} start={r['body'].get('startTime')} "
        f"state={r['body'].get('jobState')} stop={r['body'].get('stopTime')}"
        for r in reqs
    )


def _stop(job: int, cluster: str, state: str, start: int, stop: int) -> dict[str, Any]:
    return {"jobId": job, "cluster": cluster, "jobState": state, "startTime": start,
            "stopTime": stop}  # fmt: skip


def _started(life: Lifecycles, job: int, *, timeout: float = 30) -> None:
    life.tb.wait_until(
        f"job {job}'s start in the stand-in",
        lambda: any(r["endpoint"] == "start_job" for r in life.standin.requests(job)),
        timeout=timeout,
    )


# ---------------------------------------------------------------------- requeue, preemption


def test_operator_requeue_of_a_running_job(life: Lifecycles) -> None:
    """The first run stops as cancelled at the requeue time; the second run's start is the
    one cc-backend v1.5.4 refuses (same jobId within 86,400 s, ``job.go``), and nothing else."""
    tb = life.tb
    job = tb.sbatch("-J", "requeued", "-w", "node1", "-c", "2", "--wrap", "sleep 15", user="bob")
    tb.wait_queue_state(job, ["RUNNING"], timeout=30)
    queued = _queued(tb, job)
    _started(life, job)
    tb.run("scontrol", "requeue", str(job))
    tb.wait_acct_final([job], timeout=120)
    first, second = _acct_runs(tb, job)
    assert first["state"]["current"] == ["PENDING", "REQUEUED"]
    assert second["state"]["current"] == ["COMPLETED"]
    assert second["restart_cnt"] == 1
    reqs = _wait_requests(
        life, job, [("start_job", 201), ("stop_job", 200), ("start_job", 422)], refused_run=True
    )
    s1, e1 = first["time"]["start"], first["time"]["end"]
    assert reqs[0]["body"]["startTime"] == s1
    assert reqs[0]["body"]["resources"] == expected_resources(queued)
    assert reqs[1]["body"] == _stop(job, tb.cluster, "cancelled", s1, e1)
    assert reqs[2]["body"]["startTime"] == second["time"]["start"]
    JOB_REPORT.append((f"operator requeue #{job}", "REQUEUED, then COMPLETED",
                       _summary(reqs)))  # fmt: skip


def test_cancel_while_the_requeued_job_pends(life: Lifecycles) -> None:
    tb = life.tb
    job = tb.sbatch("-J", "requeue-cancel", "-w", "node1", "--wrap", "sleep 60", user="bob")
    tb.wait_queue_state(job, ["RUNNING"], timeout=30)
    _started(life, job)
    tb.run("scontrol", "requeue", str(job))
    tb.wait_queue_state(job, ["PENDING"], timeout=30)
    tb.scancel(job)
    tb.wait_acct_final([job], timeout=60)
    first, last = _acct_runs(tb, job)
    assert first["state"]["current"] == ["PENDING", "REQUEUED"]
    assert last["state"]["current"] == ["CANCELLED"]
    assert last["time"]["start"] == 4294967294  # never ran again
    reqs = _wait_requests(life, job, [("start_job", 201), ("stop_job", 200)])
    s1, e1 = first["time"]["start"], first["time"]["end"]
    assert reqs[0]["body"]["startTime"] == s1
    assert reqs[1]["body"] == _stop(job, tb.cluster, "cancelled", s1, e1)
    JOB_REPORT.append((f"requeued, cancelled pending #{job}", "REQUEUED, then CANCELLED",
                       _summary(reqs)))  # fmt: skip


def test_cancel_while_the_requeued_job_pends_unseen_by_the_daemon(life: Lifecycles) -> None:
    """The daemon is down while the job runs, is requeued and is cancelled while it pends,
    until its CANCELLED record (never started) is eligible (requeue + cred_expire + 1 s). A
    sacct time window without ``--duplicates`` then prints only that record: the run is only
    in ``--duplicates`` (docs/real-slurm.md "Lifecycles of issue 18"). Restarted, the daemon
    reads its window with ``--duplicates`` and delivers the run (before: nothing)."""
    tb = life.tb
    assert life.daemon.stop() == 0
    try:
        job = tb.sbatch("-J", "requeue-unseen", "-w", "node1", "--wrap", "sleep 60", user="bob")
        tb.wait_queue_state(job, ["RUNNING"], timeout=30)
        time.sleep(2)
        tb.run("scontrol", "requeue", str(job))
        tb.wait_queue_state(job, ["PENDING"], timeout=30)
        tb.scancel(job)
        tb.wait_acct_final([job], timeout=60)

        def window(*extra: str) -> list[list[str]]:
            doc = tb.json("sacct", "--cluster", tb.cluster, "--allusers", "-S", "now-10minutes",
                          "-E", "now", *extra, "--json")  # fmt: skip
            return [j["state"]["current"] for j in doc["jobs"] if j["job_id"] == job]

        tb.wait_until("only the CANCELLED record in a plain window",
                      lambda: window() == [["CANCELLED"]], timeout=30)  # fmt: skip
        assert window("--duplicates") == [["PENDING", "REQUEUED"], ["CANCELLED"]]
    finally:
        life.daemon.start()
    first, _ = _acct_runs(tb, job)
    reqs = _wait_requests(life, job, [("start_job", 201), ("stop_job", 200)], timeout=90)
    s1, e1 = first["time"]["start"], first["time"]["end"]
    assert reqs[0]["body"]["startTime"] == s1
    assert reqs[1]["body"] == _stop(job, tb.cluster, "cancelled", s1, e1)
    JOB_REPORT.append((f"requeued, cancelled pending, unseen #{job}", "REQUEUED, then CANCELLED",
                       _summary(reqs)))  # fmt: skip


def test_preemption_with_requeue(life: Lifecycles) -> None:
    """``PreemptMode=REQUEUE``: the preempted run stops as preempted at the preemption time."""
    tb = life.tb
    low = tb.sbatch("-J", "low", "-p", "low", "-c", "8", "--mem=1G", "--wrap", "sleep 15",
                    user="alice")  # fmt: skip
    tb.wait_queue_state(low, ["RUNNING"], timeout=30)
    _started(life, low)
    high = tb.sbatch("-J", "high", "-p", "high", "-c", "8", "--mem=1G", "--wrap", "sleep 5",
                     user="bob")  # fmt: skip
    tb.wait_acct_final([low, high], timeout=150)
    preempted, rerun = _acct_runs(tb, low)
    (ran,) = _acct_runs(tb, high)
    assert preempted["state"]["current"] == ["PREEMPTED"]
    assert rerun["state"]["current"] == ["COMPLETED"]
    assert ran["state"]["current"] == ["COMPLETED"]
    low_reqs = _wait_requests(
        life, low, [("start_job", 201), ("stop_job", 200), ("start_job", 422)], refused_run=True
    )
    s1, e1 = preempted["time"]["start"], preempted["time"]["end"]
    assert low_reqs[0]["body"]["startTime"] == s1
    assert low_reqs[1]["body"] == _stop(low, tb.cluster, "preempted", s1, e1)
    assert low_reqs[2]["body"]["startTime"] == rerun["time"]["start"]
    high_reqs = _wait_requests(life, high, [("start_job", 201), ("stop_job", 200)])
    sh, eh = ran["time"]["start"], ran["time"]["end"]
    assert high_reqs[0]["body"]["startTime"] == sh
    assert high_reqs[1]["body"] == _stop(high, tb.cluster, "completed", sh, eh)
    JOB_REPORT.append((f"preempted #{low}", "PREEMPTED, then COMPLETED", _summary(low_reqs)))
    JOB_REPORT.append((f"preemptor #{high}", "COMPLETED", _summary(high_reqs)))


# ---------------------------------------------------------------------- power-up


def test_power_up_is_one_job_with_its_delivered_start_time(life: Lifecycles) -> None:
    """Node power-up: slurmctld resets the start time when the node is up (``job_mgr.c``
    ``job_config_fini``). One cc-backend job, started once after CONFIGURING, stopped once with
    the start time it was delivered with; the prolog event at allocation starts nothing."""
    tb = life.tb
    tb.run("scontrol", "update", "nodename=node2", "state=power_down")
    tb.wait_until("node2 powered down", lambda: _node_state(tb, "node2") == "idle~", timeout=60)
    job = tb.sbatch("-J", "power-up", "-p", "boot", "-c", "2", "--gres=gpu:1", "--wrap",
                    "sleep 15", user="carol")  # fmt: skip
    states: set[str] = set()

    def running() -> bool:
        doc = tb.json("squeue", "--noheader", "--cluster", tb.cluster, "-j", str(job), "--json")
        state = doc["jobs"][0]["job_state"] if doc["jobs"] else []
        states.update(state)
        return state == ["RUNNING"]

    tb.wait_until(f"job {job} RUNNING after the boot", running, timeout=150)
    assert {"CONFIGURING", "POWER_UP_NODE"} <= states
    queued = _queued(tb, job)
    tb.wait_acct_final([job], timeout=60)
    (run,) = _acct_runs(tb, job)  # one record: the reset overwrote the allocation's start
    assert run["state"]["current"] == ["COMPLETED"]
    assert run["restart_cnt"] == 0
    reqs = _wait_requests(life, job, [("start_job", 201), ("stop_job", 200)])
    start = reqs[0]["body"]["startTime"]
    assert start == run["time"]["start"] == queued["start_time"]["number"]
    assert reqs[0]["body"]["resources"] == expected_resources(queued)
    assert reqs[1]["body"] == _stop(job, tb.cluster, "completed", start, run["time"]["end"])
    JOB_REPORT.append((f"power-up #{job}", "CONFIGURING, start reset, COMPLETED",
                       _summary(reqs)))  # fmt: skip


# ---------------------------------------------------------------------- slurmdbd outage


def test_slurmdbd_outage_longer_than_the_overlap(life: Lifecycles) -> None:
    """slurmdbd stopped for longer than slurmQueryOverlap while short jobs start and end:
    sacct fails meanwhile, squeue shows them; every one is delivered once it is back.

    ccsa asks the local slurmctld's cluster without ``--cluster`` (which needs slurmdbd), so
    the prologs' ``squeue -j`` answers during the outage and holds the watermark until sacct
    has the jobs (docs/real-slurm.md "What ccsa does in these cases")."""
    tb = life.tb
    log = life.daemon.log_path.read_text(errors="replace")
    assert f"(local slurmctld: {tb.cluster})" in log, life.daemon.log_tail()
    tb.stop_daemon("slurmdbd")
    t_stop = time.monotonic()
    try:
        jobs = [
            tb.sbatch("-J", f"dbd-lag-{i}", "-w", "node1", "--wrap", "sleep 3", user="alice")
            for i in range(3)
        ]
        for job in jobs:
            tb.wait_queue_state(job, sorted(FINAL_STATES), timeout=60)
        queue_size = next(
            (x for x in tb.run("sdiag").stdout.splitlines() if "DBD Agent queue size" in x), ""
        )
        time.sleep(max(0.0, 3 * OVERLAP - (time.monotonic() - t_stop)))
    finally:
        tb.start_daemon("slurmdbd")
    outage = time.monotonic() - t_stop
    t_back = time.monotonic()
    tb.wait_until(
        "the jobs in sacct",
        lambda: all(str(j) in tb.acct_states(jobs) for j in jobs),
        timeout=90,
        interval=0.2,
    )
    lag = time.monotonic() - t_back  # sacct answered meanwhile, without these jobs
    assert outage > 2 * OVERLAP
    final = tb.wait_acct_final(jobs, timeout=60)
    rows = []
    deadline = time.monotonic() + 90  # for all three together
    for job in jobs:
        (run,) = _acct_runs(tb, job)
        left = max(0.0, deadline - time.monotonic())
        reqs = _wait_requests(life, job, [("start_job", 201), ("stop_job", 200)], timeout=left)
        s, e = run["time"]["start"], run["time"]["end"]
        assert reqs[0]["body"]["startTime"] == s
        # the stop carries whatever state Slurm recorded (COMPLETED unless the job failed)
        state = final[str(job)].lower()
        assert reqs[1]["body"] == _stop(job, tb.cluster, state, s, e)
        rows.append(f"#{job} {reqs[0]['body']['resources']}")
    held = life.daemon.log_path.read_text(errors="replace").count("the watermark waits behind")
    kind = f"slurmdbd down {outage:.0f} s, sacct {lag:.0f} s behind after, {held} holds"
    JOB_REPORT.append((kind, f"{final}; {queue_size.strip()}", "; ".join(rows)))


# ---------------------------------------------------------------------- het job


def test_het_job_components_are_separate_cc_backend_jobs(life: Lifecycles) -> None:
    """#18 item 5: each component is its own cc-backend job under its own raw id, with its own
    resources and counts, the common start time, the shared script, and its slurmInfo naming
    the leader (docs/real-slurm.md, docs/daemon.md)."""
    tb = life.tb
    leader = tb.sbatch("-J", "het", "-c", "1", "--gres=gpu:1", ":", "-c", "2", "--wrap",
                       "sleep 12", user="bob")  # fmt: skip
    comps = [leader, leader + 1]
    tb.wait_queue_state(leader, ["RUNNING"], timeout=90)  # started by the backfill scheduler
    queued = {c: _queued(tb, c) for c in comps}
    assert [queued[c]["het_job_offset"]["number"] for c in comps] == [0, 1]
    tb.wait_acct_final(comps, timeout=60)
    for offset, comp in enumerate(comps):
        (run,) = _acct_runs(tb, comp)
        assert run["het"]["job_id"] == leader
        reqs = _wait_requests(life, comp, [("start_job", 201), ("stop_job", 200)])
        body = reqs[0]["body"]
        s, e = run["time"]["start"], run["time"]["end"]
        assert body["startTime"] == s
        assert body["resources"] == expected_resources(queued[comp])
        assert body["numNodes"] == 1
        assert body["numHwthreads"] == (1, 2)[offset]
        assert body.get("numAcc", 0) == (1, 0)[offset]
        assert "sleep 12" in body["metaData"]["jobScript"]
        assert body["metaData"]["slurmInfo"].startswith(
            f"JobId={comp} HetJobId={leader} HetJobOffset={offset} "
        )
        assert "arrayJobId" not in body
        assert reqs[1]["body"] == _stop(comp, tb.cluster, "completed", s, e)
        JOB_REPORT.append((f"het {leader}+{offset} #{comp}", "COMPLETED", _summary(reqs)))
