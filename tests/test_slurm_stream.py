"""ccsa.slurm.stream: job-by-job decoding of real Slurm answers, read in chunks of any size.

The reference is msgspec decoding the whole document at once (what ccsa did before); the real
documents are the fixtures of ../shared/fixtures/slurm (Slurm 23.02-25.11 and the 24.11 test
bed). The corrupted-record test runs a real subprocess through the SlurmRunner.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ccsa.errors import SlurmDecodeError
from ccsa.slurm import sacct, squeue
from ccsa.slurm.commands import Slurm
from ccsa.slurm.decode import detect
from ccsa.slurm.runner import SlurmRunner
from ccsa.slurm.stream import decode_jobs


def test_msgspec_messages_the_splitter_relies_on() -> None:
    """The two msgspec messages stream.py reads (see its docstring) are still worded so."""
    raw = msgspec.json.Decoder(msgspec.Raw)
    with pytest.raises(
        msgspec.DecodeError, match=r"trailing characters \(byte 13\)"
    ):  # "," is [12]
        raw.decode(b'{"a": [1]}  ,{')
    with pytest.raises(msgspec.DecodeError, match=r"^Input data was truncated"):
        raw.decode(b'{"a": [1')


def _fixtures(shared: Path, kind: str) -> list[Path]:
    """Every fixture document of ``kind`` (as ``decode.detect`` tells) with at least one job."""
    found = []
    for path in sorted((shared / "fixtures" / "slurm").rglob("*.json")):
        data = path.read_bytes()
        try:
            if detect(data, source=path.name) != kind:
                continue
        except SlurmDecodeError:
            continue
        if json.loads(data).get("jobs"):
            found.append(path)
    return found


class _Whole(msgspec.Struct):
    jobs: list[sacct.SacctJob] = []


class _WholeQueue(msgspec.Struct):
    jobs: list[squeue.QueueJob] = []


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20])
def test_sacct_fixtures_decode_as_a_whole_document_does(shared: Path, chunk: int) -> None:
    paths = _fixtures(shared, "sacct")
    assert paths, "no sacct fixtures with jobs"
    for path in paths:
        data = path.read_bytes()
        whole = msgspec.json.decode(data, type=_Whole).jobs
        got = decode_jobs(
            io.BytesIO(data), msgspec.json.Decoder(sacct.SacctJob), command="x", chunk_size=chunk
        )
        assert got.bad == []
        assert msgspec.json.encode(got.jobs) == msgspec.json.encode(whole), path.name
        assert sacct.decode(data).meta == msgspec.json.decode(data, type=sacct.SacctDoc).meta


@pytest.mark.parametrize("chunk", [3, 1 << 20])
def test_squeue_fixtures_decode_as_a_whole_document_does(shared: Path, chunk: int) -> None:
    paths = _fixtures(shared, "squeue")
    assert paths, "no squeue fixtures with jobs"
    for path in paths:
        data = path.read_bytes()
        whole = msgspec.json.decode(data, type=_WholeQueue).jobs
        got = decode_jobs(
            io.BytesIO(data), msgspec.json.Decoder(squeue.QueueJob), command="x", chunk_size=chunk
        )
        assert got.bad == []
        assert [j.job_id for j in got.jobs] == [j.job_id for j in whole]
        doc = squeue.decode(data)
        for mine, ref in zip(doc.jobs, whole, strict=True):
            assert _allocated(mine) == _allocated(ref), path.name
            # the compact text holds only the declared fields: smaller than Slurm's
            assert len(mine.job_resources_json) <= len(ref.job_resources_json)


def _allocated(job: squeue.QueueJob) -> object:
    """The job's allocation with only the ALLOCATED cores' status kept (what ccsa reads)."""
    res = job.job_resources
    if res is None or not isinstance(res.nodes, squeue.ResNodes):
        return res
    out = []
    for a in res.nodes.allocation:
        cores = [(s.index, [(c.index, c.status[:1] == ["ALLOCATED"]) for c in s.cores])
                 for s in a.sockets]  # fmt: skip
        out.append((a.index, a.name, cores))
    return out


def test_a_job_larger_than_the_chunk_and_a_cluster_header() -> None:
    job = {"job_id": 5, "name": "x" * 50_000, "state": {"current": ["RUNNING"]}}
    data = b"CLUSTER: c1\n" + json.dumps({"meta": {}, "jobs": [job, job]}, indent=2).encode()
    got = decode_jobs(
        io.BytesIO(data), msgspec.json.Decoder(sacct.SacctJob), command="x", chunk_size=64
    )
    assert [(j.job_id, len(j.name)) for j in got.jobs] == [(5, 50_000)] * 2


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b'{"jobs": [{"job_id": 1}', "truncated"),
        (b'{"jobs": [{"job_id": 1}] } x', "trailing characters"),
        (b'{"jobs": [{"job_id": 1} {"job_id": 2}]}', "between jobs"),
        (b'{"jobs": [{"job_id": 1, }]}', "trailing comma in object (byte 24)"),
        (b"[]", "at the start of the document"),
    ],
)
def test_broken_documents_fail_as_a_whole_with_the_byte(data: bytes, text: str) -> None:
    with pytest.raises(SlurmDecodeError) as info:
        sacct.decode(data, command="sacct -j 1")
    assert text in str(info.value)
    assert str(info.value).startswith("sacct -j 1: cannot decode output")


def _corrupt_one(shared: Path) -> tuple[bytes, dict[str, Any]]:
    raw = json.loads((shared / "fixtures/slurm/24.11-testbed/sacct-allusers.json").read_bytes())
    victim = raw["jobs"][len(raw["jobs"]) // 2]
    victim["tres"]["allocated"][0]["count"] = [1]
    return json.dumps(raw, indent=2).encode(), victim


async def test_one_corrupt_record_through_the_runner_keeps_the_others(
    shared: Path, tmp_path: Path
) -> None:
    """A real sacct answer with one job's TRES count corrupted, printed by a real subprocess:
    the other jobs decode, the bad one is named by id and field (before: the whole call failed
    with SlurmDecodeError and the cluster's poll stopped there, issue #17 item 5)."""
    data, victim = _corrupt_one(shared)
    (tmp_path / "answer.json").write_bytes(data)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "sacct"
    fake.write_text(
        f"#!{sys.executable}\nimport sys\n"
        f"sys.stdout.buffer.write(open({str(tmp_path / 'answer.json')!r}, 'rb').read())\n"
    )
    fake.chmod(0o755)
    slurm = Slurm(SlurmRunner(bin_dir=str(bindir)))
    doc = await slurm.sacct_jobs("testcluster", [j["job_id"] for j in json.loads(data)["jobs"]])
    expected = [j["job_id"] for j in json.loads(data)["jobs"] if j["job_id"] != victim["job_id"]]
    assert sorted(j.job_id for j in doc.jobs) == sorted(expected)
    (bad,) = doc.bad
    assert bad.job_id == victim["job_id"]
    assert bad.path.endswith(".tres.allocated[0].count")
