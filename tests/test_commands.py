"""ccsa.slurm.commands and scontrol_text with fake Slurm binaries (real subprocesses).

Each fake is a small Python script written into tmp_path that appends its argv (JSON) to a log
and answers like Slurm would, mostly from the real 24.11 test bed fixtures.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from ccsa.errors import SlurmCommandError, SlurmDecodeError
from ccsa.slurm.commands import Slurm, slurm_time, strip_cluster_header
from ccsa.slurm.runner import SlurmRunner
from ccsa.slurm.scontrol_text import first_record, split_records

PRELUDE = """\
import json, os, sys, time
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps([os.path.basename(sys.argv[0])] + args) + "\\n")
def ids():
    return [int(x) for x in args[args.index("-j") + 1].split(",")]
"""


class Fake:
    """A bin dir of fake Slurm commands plus the log of their invocations."""

    def __init__(self, tmp_path: Path) -> None:
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.log = tmp_path / "argv.log"
        self.runner = SlurmRunner(bin_dir=str(self.bin), env={"FAKE_LOG": str(self.log)})

    def add(self, name: str, body: str) -> None:
        path = self.bin / name
        path.write_text(f"#!{sys.executable}\n{PRELUDE}{body}")
        path.chmod(0o755)

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def slurm(self, chunk_size: int = 1000) -> Slurm:
        return Slurm(self.runner, chunk_size=chunk_size)


@pytest.fixture
def fake(tmp_path: Path) -> Fake:
    return Fake(tmp_path)


@pytest.fixture
def testbed(shared: Path) -> Path:
    return shared / "fixtures/slurm/24.11-testbed"


async def test_clusters_argv_and_decode(fake: Fake) -> None:
    doc = {"clusters": [{"name": "alex", "nodes": "a[01-04]"}, {"name": "fritz"}], "meta": {}}
    fake.add("sacctmgr", f"print({json.dumps(json.dumps(doc))})\n")
    result = await fake.slurm().clusters()
    assert [c.name for c in result.clusters] == ["alex", "fritz"]
    assert fake.calls() == [["sacctmgr", "list", "clusters", "--noheader", "--json"]]


async def test_user_argv_and_decode(fake: Fake, testbed: Path) -> None:
    fake.add(
        "sacctmgr", f"sys.stdout.write(open({str(testbed / 'sacctmgr-show-user.json')!r}).read())\n"
    )
    result = await fake.slurm().user("ccsa")
    assert "alice" in [u.name for u in result.users]
    assert fake.calls() == [["sacctmgr", "show", "user", "ccsa", "--json"]]


async def test_sacct_window_argv_in_utc(fake: Fake, testbed: Path) -> None:
    fake.add("sacct", f"sys.stdout.write(open({str(testbed / 'sacct-allusers.json')!r}).read())\n")
    cest = timezone(timedelta(hours=2))
    start = datetime(2026, 11, 23, 22, 0, 5, tzinfo=cest)
    end = datetime(2026, 11, 23, 20, 30, 0)  # naive: already UTC
    doc = await fake.slurm().sacct_window("c1", start, end)
    assert doc.jobs
    assert fake.calls() == [
        [
            "sacct", "--cluster", "c1", "--allusers", "--duplicates",
            "--starttime", "2026-11-23T20:00:05", "--endtime", "2026-11-23T20:30:00",
            "--json",
        ]
    ]  # fmt: skip


def test_slurm_time() -> None:
    assert slurm_time(datetime(2026, 1, 2, 3, 4, 5, 999, tzinfo=UTC)) == "2026-01-02T03:04:05"
    assert slurm_time(datetime(2026, 1, 2, 0, 30, tzinfo=timezone(timedelta(hours=1)))) == (
        "2026-01-01T23:30:00"
    )


SACCT_BY_ID = """\
doc = json.load(open({path!r}))
want = set(ids())
doc["jobs"] = [j for j in doc["jobs"] if j["job_id"] in want or j["array"]["job_id"] in want]
time.sleep(0.2)
print(json.dumps(doc))
"""


async def test_sacct_jobs_chunks_filters_and_merges(fake: Fake, testbed: Path) -> None:
    fixture = str(testbed / "sacct-array-failed-cancelled.json")
    fake.add("sacct", SACCT_BY_ID.format(path=fixture))
    doc = await fake.slurm(chunk_size=2).sacct_jobs("c1", [6, 8, 5, 10, 6])
    calls = fake.calls()
    assert sorted(calls) == sorted(
        [
            ["sacct", "--cluster", "c1", "-j", "6,8", "--json"],
            ["sacct", "--cluster", "c1", "-j", "5,10", "--json"],
        ]
    )
    ids = [j.job_id for j in doc.jobs]
    # 7 is in the fixture but was not asked for; array tasks 9, 11 come with master 5;
    # task 10 (asked on its own and as part of 5) appears once.
    assert sorted(ids) == [5, 6, 8, 9, 10, 11]
    assert len(ids) == len(set(ids))
    assert ids[:2] == [6, 8]  # chunk order is kept
    assert doc.meta.version


async def test_sacct_jobs_filters_records_not_asked(fake: Fake, testbed: Path) -> None:
    # A sacct that answers with everything it has (like -j MASTER does for arrays).
    fixture = str(testbed / "sacct-array-failed-cancelled.json")
    fake.add("sacct", f"sys.stdout.write(open({fixture!r}).read())\n")
    doc = await fake.slurm().sacct_jobs("c1", [7])
    assert [j.job_id for j in doc.jobs] == [7]


async def test_sacct_jobs_without_ids_runs_nothing(fake: Fake) -> None:
    fake.add("sacct", "sys.exit(9)\n")
    assert (await fake.slurm().sacct_jobs("c1", [])).jobs == []
    assert fake.calls() == []


async def test_chunk_failure_is_a_plain_slurm_error(fake: Fake) -> None:
    fake.add(
        "sacct",
        "if 99 in ids():\n    sys.stderr.write('slurmdbd down\\n'); sys.exit(1)\n"
        "time.sleep(5)\nprint('{\"jobs\": []}')\n",
    )
    with pytest.raises(SlurmCommandError, match="slurmdbd down"):
        await fake.slurm(chunk_size=1).sacct_jobs("c1", [1, 99])


SQUEUE_BY_ID = """\
want = ids()
doc = json.load(open({path!r}))
known = {{j["job_id"] for j in doc["jobs"]}}
if len(want) == 1 and want[0] not in known:
    sys.stderr.write("slurm_load_jobs error: Invalid job id specified\\n")
    sys.exit(1)
doc["jobs"] = [j for j in doc["jobs"] if j["job_id"] in want]
print("CLUSTER: c1")
print(json.dumps(doc))
"""


async def test_squeue_jobs_single_unknown_id_is_empty(fake: Fake, testbed: Path) -> None:
    fake.add("squeue", SQUEUE_BY_ID.format(path=str(testbed / "squeue.json")))
    slurm = fake.slurm()
    assert await slurm.squeue_jobs("c1", [999]) == []
    assert fake.calls() == [["squeue", "--noheader", "--cluster", "c1", "-j", "999", "--json"]]
    jobs = await slurm.squeue_jobs("c1", [2])
    assert [j.job_id for j in jobs] == [2]
    assert jobs[0].gres_detail == ["gpu:2(IDX:0-1)"]


async def test_squeue_jobs_chunked(fake: Fake, testbed: Path) -> None:
    fake.add("squeue", SQUEUE_BY_ID.format(path=str(testbed / "squeue.json")))
    jobs = await fake.slurm(chunk_size=2).squeue_jobs("c1", [8, 999, 3, 2, 4])
    assert sorted(j.job_id for j in jobs) == [2, 3, 4, 8]
    assert sorted(c[5] for c in fake.calls()) == ["3,2", "4", "8,999"]


async def test_squeue_single_id_other_error_raises(fake: Fake) -> None:
    fake.add("squeue", "sys.stderr.write('Unable to contact slurm controller\\n'); sys.exit(1)\n")
    with pytest.raises(SlurmCommandError, match="Unable to contact"):
        await fake.slurm().squeue_jobs("c1", [5])


async def test_squeue_all_strips_cluster_header(fake: Fake, testbed: Path) -> None:
    fixture = str(testbed / "squeue.json")
    fake.add("squeue", f"print('CLUSTER: c1')\nsys.stdout.write(open({fixture!r}).read())\n")
    doc = await fake.slurm().squeue_all("c1")
    assert sorted(j.job_id for j in doc.jobs) == [2, 3, 4, 8]
    assert fake.calls() == [["squeue", "--noheader", "--cluster", "c1", "--all", "--json"]]


async def test_decode_error_names_the_command(fake: Fake) -> None:
    fake.add("squeue", "print('CLUSTER: c1')\nprint('this is not json')\n")
    with pytest.raises(SlurmDecodeError) as info:
        await fake.slurm().squeue_all("c1")
    assert "squeue --noheader --cluster c1 --all --json" in str(info.value)


async def test_decode_error_on_wrong_shape_names_path(fake: Fake) -> None:
    fake.add("sinfo", 'print(json.dumps({"sinfo": [{"nodes": {"nodes": "n1"}}]}))\n')
    with pytest.raises(SlurmDecodeError) as info:
        await fake.slurm().sinfo("c1")
    assert "sinfo --cluster c1 --noheader --json" in str(info.value)
    assert info.value.path is not None
    assert "sinfo" in info.value.path


async def test_sinfo_argv_and_decode(fake: Fake) -> None:
    doc = {
        "sinfo": [{"nodes": {"nodes": ["n1", "n2"], "total": 2}, "gres": {"used": "gpu:0"}}],
        "meta": {},
    }
    fake.add("sinfo", f"print('CLUSTER: c1')\nprint({json.dumps(json.dumps(doc))})\n")
    result = await fake.slurm().sinfo("c1")
    assert result.sinfo[0].nodes.nodes == ["n1", "n2"]
    assert fake.calls() == [["sinfo", "--cluster", "c1", "--noheader", "--json"]]


async def test_scontrol_jobs_json_one_call_filtered(fake: Fake, testbed: Path) -> None:
    fixture = str(testbed / "scontrol-show-job-5-array-completed.json")
    fake.add("scontrol", f"sys.stdout.write(open({fixture!r}).read())\n")
    slurm = fake.slurm()
    jobs = await slurm.scontrol_jobs_json("c1", [5, 404])
    assert sorted(j.job_id for j in jobs) == [5, 9, 10, 11]  # array master 5 brings its tasks
    assert [j.job_id for j in await slurm.scontrol_jobs_json("c1", [10])] == [10]
    assert fake.calls() == [["scontrol", "--cluster", "c1", "show", "job", "--json"]] * 2


def _records(testbed: Path) -> str:
    job4 = (testbed / "scontrol-show-job-4-detail.txt").read_text()
    task = (
        "JobId={id} ArrayJobId=5 ArrayTaskId={task} JobName=sweep\n"
        "   UserId=alice(2001) GroupId=alice(2001) MCS_label=N/A\n"
        "   JobState=COMPLETED Reason=None Dependency=(null)\n"
        "   NodeList=node1\n"
    )
    return job4 + task.format(id=9, task=0) + "\n" + task.format(id=5, task=3) + "   \n\n"


async def test_scontrol_show_jobs_text_one_call(fake: Fake, testbed: Path) -> None:
    text_path = fake.bin.parent / "all-jobs.txt"
    text_path.write_text(_records(testbed))
    fake.add(
        "scontrol",
        "if args[-1] != 'job':\n"
        "    sys.stderr.write('slurm_load_jobs error: Invalid job id specified\\n'); sys.exit(1)\n"
        f"sys.stdout.write(open({str(text_path)!r}).read())\n",
    )
    slurm = fake.slurm()
    records = await slurm.scontrol_show_jobs_text("c1", [9, 4, 77, 5])
    assert list(records) == [9, 4, 5]
    assert records[4].startswith("JobId=4 JobName=bigjob\n")
    assert records[4].endswith("TresPerTask=cpu=4")
    assert "ArrayTaskId=0" in records[9]
    assert records[5].endswith("NodeList=node1")
    assert fake.calls() == [["scontrol", "--cluster", "c1", "show", "job"]]
    # one id: a targeted call; unknown -> empty, not an error
    assert await slurm.scontrol_show_jobs_text("c1", [77]) == {}
    assert fake.calls()[-1] == ["scontrol", "--cluster", "c1", "show", "job", "77"]
    assert await slurm.scontrol_show_jobs_text("c1", []) == {}
    assert len(fake.calls()) == 2


async def test_batch_scripts_concurrent_failures_absent(fake: Fake) -> None:
    fake.add(
        "scontrol",
        "job = int(args[4])\n"
        "if job == 3:\n    sys.stderr.write('job script retrieval failed\\n'); sys.exit(1)\n"
        "time.sleep(0.3)\n"
        "sys.stdout.write(f'#!/bin/bash\\necho job {job}\\n')\n",
    )
    slurm = fake.slurm()
    scripts = await slurm.batch_scripts("c1", [1, 2, 3, 4])
    assert scripts == {i: f"#!/bin/bash\necho job {i}\n" for i in (1, 2, 4)}
    assert sorted(fake.calls()) == [
        ["scontrol", "--cluster", "c1", "write", "batch_script", str(i), "-"] for i in (1, 2, 3, 4)
    ]
    assert await slurm.batch_script("c1", 3) is None
    stats = fake.runner.stats()["commands"]["scontrol"]
    assert stats["count"] == 5
    assert stats["errors"] == 2


def test_split_records_and_first_record(testbed: Path) -> None:
    text = "CLUSTER: c1\n" + _records(testbed)
    records = split_records(text)
    assert list(records) == [4, 9, 5]
    assert all(r.startswith(f"JobId={i} ") for i, r in records.items())
    assert all(not r.endswith("\n") and "\n\n" not in r for r in records.values())
    assert first_record(text) == records[4]
    assert first_record(_records(testbed).replace("\n", "\r\n")) == records[4]


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("", []),
        ("No jobs in the system\n", []),
        ("JobId=1 JobName=a\n   X=1\n\n\n\nJobId=2 JobName=b\n", [1, 2]),
        ("JobId=1 JobName=a\n \t \nJobId=1 JobName=dup\n", [1]),
        ("JobIdX=1\n\nJobId=12 A=b", [12]),
    ],
)
def test_split_records_units(text: str, ids: list[int]) -> None:
    assert list(split_records(text)) == ids


def test_first_record_dup_keeps_first() -> None:
    assert split_records("JobId=1 JobName=a\n\nJobId=1 JobName=dup\n")[1] == "JobId=1 JobName=a"
    assert first_record("\n\nJobId=3 A=1\n   B=2\n\nJobId=4\n") == "JobId=3 A=1\n   B=2"
    assert first_record("") == ""


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'CLUSTER: c1\n{"jobs": []}', b'{"jobs": []}'),
        (b'\nCLUSTER: c1\n{"a": 1}\n', b'{"a": 1}\n'),
        (b'{"jobs": []}', b'{"jobs": []}'),
        (b"CLUSTER: c1", b""),
    ],
)
def test_strip_cluster_header(data: bytes, expected: bytes) -> None:
    assert strip_cluster_header(data) == expected


def test_bad_chunk_size() -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        Slurm(SlurmRunner(), chunk_size=0)


async def test_batch_script_exit_0_with_empty_stdout_is_no_script(fake: Fake) -> None:
    """Real 24.11: an id slurmctld does not hold exits 0, prints nothing, explains on stderr."""
    fake.add(
        "scontrol",
        "job = int(args[4])\n"
        "if job == 4000000:\n"
        "    sys.stderr.write('job script retrieval failed: Invalid job id specified\\n')\n"
        "    sys.exit(0)\n"
        "sys.stdout.write(f'#!/bin/sh\\necho job {job}\\n')\n",
    )
    slurm = fake.slurm()
    assert await slurm.batch_script("c1", 4000000) is None
    assert await slurm.batch_script("c1", 7) == "#!/bin/sh\necho job 7\n"
    assert await slurm.batch_scripts("c1", [7, 4000000]) == {7: "#!/bin/sh\necho job 7\n"}


async def test_the_local_cluster_is_asked_without_cluster(fake: Fake, testbed: Path) -> None:
    """``scontrol show config``'s ClusterName, if sacctmgr lists it, is asked without
    ``--cluster`` (which needs slurmdbd, docs/real-slurm.md); other clusters and sacct keep it."""
    fixture = str(testbed / "squeue.json")
    fake.add("squeue", f"sys.stdout.write(open({fixture!r}).read())\n")
    fake.add("sdiag", "sys.exit(1)\n")
    fake.add("scontrol", "print('Configuration data as of x\\nClusterName             = c1')\n")
    slurm = fake.slurm()
    assert await slurm.learn_local_cluster(["c2"]) is None  # not one of sacctmgr's clusters
    assert await slurm.learn_local_cluster(["c1", "c2"]) == "c1"
    await slurm.squeue_all("c1")
    await slurm.squeue_all("c2")
    with pytest.raises(SlurmCommandError, match="/sdiag --json` exited 1"):
        await slurm.sdiag("c1")
    assert fake.calls()[2:] == [
        ["squeue", "--noheader", "--all", "--json"],
        ["squeue", "--noheader", "--cluster", "c2", "--all", "--json"],
        ["sdiag", "--json"],
    ]
    fake.add("scontrol", "sys.exit(1)\n")  # slurmctld down: keep --cluster for everything
    fresh = fake.slurm()
    assert await fresh.learn_local_cluster(["c1"]) is None
    await fresh.squeue_all("c1")
    assert fake.calls()[-1] == ["squeue", "--noheader", "--cluster", "c1", "--all", "--json"]
