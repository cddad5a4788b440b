"""Every real Slurm JSON fixture decodes with the right view; bad input gives SlurmDecodeError."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ccsa.errors import SlurmDecodeError
from ccsa.slurm import sacct, sacctmgr, sinfo, squeue
from ccsa.slurm.decode import decode_any, detect
from ccsa.slurm.types import NV, first, flags, num
from tests.conftest import shared_dir

_SHARED = shared_dir()
_FIXTURES = _SHARED / "fixtures" / "slurm" if _SHARED else None
_INDEX: list[dict[str, Any]] = (
    json.loads((_FIXTURES / "index.json").read_text()) if _FIXTURES else [{"file": ""}]
)
_KIND = {
    "sacct": "sacct",
    "squeue": "squeue",
    "scontrol-job": "squeue",
    "scontrol-node": "scontrol-node",
    "scontrol-nodes": "scontrol-node",
}
_DOCS = [e for e in _INDEX if e.get("equiv_cli") in _KIND] or [{"file": ""}]
_TESTBED = (
    sorted(p.name for p in (_FIXTURES / "24.11-testbed").glob("*.json")) if _FIXTURES else [""]
)


def _decode_direct(kind: str, data: bytes) -> Any:
    if kind == "sacct":
        return sacct.decode(data, command="sacct")
    if kind == "squeue":
        return squeue.decode(data, command="squeue")
    return sinfo.decode_nodes(data, command="scontrol show node")


@pytest.mark.parametrize("entry", _DOCS, ids=[e["file"] for e in _DOCS])
def test_every_fixture_decodes(shared: Path, entry: dict[str, Any]) -> None:
    data = (shared / "fixtures" / "slurm" / entry["file"]).read_bytes()
    kind = _KIND[entry["equiv_cli"]]
    doc = _decode_direct(kind, data)
    raw = json.loads(data)
    assert doc.meta.data_parser == entry["data_parser"]
    assert doc.meta.version == entry["release"]
    assert doc.meta.major == int(entry["release"].split(".")[0])
    items = doc.nodes if kind == "scontrol-node" else doc.jobs
    assert len(items) == len(raw.get("nodes" if kind == "scontrol-node" else "jobs", []))
    if kind != "scontrol-node":
        assert [j.job_id for j in items] == [j["job_id"] for j in raw["jobs"]]
    if "nodes" not in raw and "jobs" not in raw:
        # Slurm error document without payload: decode_any names Slurm's own error.
        with pytest.raises(SlurmDecodeError, match="Slurm reported an error"):
            decode_any(data, source=entry["file"])
        return
    assert detect(data, source=entry["file"]) == kind
    assert type(decode_any(data, source=entry["file"])) is type(doc)


@pytest.mark.parametrize("entry", _DOCS, ids=[e["file"] for e in _DOCS])
def test_fixture_fields_match_raw_json(shared: Path, entry: dict[str, Any]) -> None:
    """The views read the same values a plain json.loads walk finds (state, times, nodes)."""
    data = (shared / "fixtures" / "slurm" / entry["file"]).read_bytes()
    raw = json.loads(data)
    kind = _KIND[entry["equiv_cli"]]
    doc = _decode_direct(kind, data)
    if kind == "sacct":
        for job, rj in zip(doc.jobs, raw["jobs"], strict=True):
            cur = rj["state"]["current"]
            assert first(job.state.current) == (cur if isinstance(cur, str) else cur[0])
            assert num(job.time.start) == (
                rj["time"]["start"] if rj["time"]["start"] >= 0 else None
            )
            assert job.nodes == rj["nodes"]
            assert job.cluster == rj["cluster"]
    elif kind == "squeue":
        for job, rj in zip(doc.jobs, raw["jobs"], strict=True):
            assert flags(job.job_state) == rj["job_state"]
            assert job.gres_detail == rj.get("gres_detail", [])
            res = rj.get("job_resources") or {}
            if "allocated_nodes" in res:
                assert [a.nodename for a in job.job_resources.allocated_nodes] == [
                    a["nodename"] for a in res["allocated_nodes"]
                ]
            elif isinstance(res.get("nodes"), dict):
                names = [a["name"] for a in res["nodes"].get("allocation", [])]
                assert [a.name for a in job.job_resources.nodes.allocation] == names
    else:
        for node, rn in zip(doc.nodes, raw.get("nodes", []), strict=True):
            assert node.name == rn["name"]
            assert flags(node.state) == rn["state"]


_SACCT_DOCS = [e for e in _DOCS if e.get("equiv_cli") == "sacct"] or [{"file": ""}]


def _tres_tuples(recs: Any) -> list[tuple[str, str, Any]]:
    return [(r["type"], r["name"], r["count"]) for r in recs]


@pytest.mark.parametrize("entry", _SACCT_DOCS, ids=[e["file"] for e in _SACCT_DOCS])
def test_sacct_tres_match_raw_json(shared: Path, entry: dict[str, Any]) -> None:
    """Allocated TRES decode eagerly, requested ones on demand: both equal the raw JSON."""
    data = (shared / "fixtures" / "slurm" / entry["file"]).read_bytes()
    doc = sacct.decode(data, command="sacct")
    for job, rj in zip(doc.jobs, json.loads(data)["jobs"], strict=True):
        tres = rj.get("tres", {})
        alloc = [(t.type, t.name, t.count) for t in job.tres.allocated]
        assert alloc == _tres_tuples(tres.get("allocated", []))
        req = [(t.type, t.name, t.count) for t in sacct.requested_tres(job)]
        assert req == _tres_tuples(tres.get("requested", []))
        for t in job.tres.allocated:
            assert t.type is sacct.TresType(str(t.type))  # known types: the shared member


def test_tres_type_is_an_open_enum() -> None:
    recs = msgspec.json.decode(
        b'[{"type":"cpu","count":1},{"type":"ic","name":"ofed"},{"type":"quantum","count":2}]',
        type=list[sacct.TresRec],
    )
    assert recs[0].type is sacct.TresType.CPU
    assert recs[1].type is sacct.TresType.IC
    unknown = recs[2].type
    assert isinstance(unknown, str)
    assert unknown == "quantum"
    assert str(unknown) == "quantum"
    assert unknown not in (sacct.TresType.CPU, sacct.TresType.GRES)
    assert msgspec.json.encode(recs[2]) == b'{"type":"quantum","name":"","count":2}'
    with pytest.raises(msgspec.ValidationError, match=r"Expected `str`, got `int`"):
        msgspec.json.decode(b'[{"type":3}]', type=list[sacct.TresRec])


@pytest.mark.parametrize(
    ("requested", "where"),
    [
        (b"null", "tres.requested: Expected `array`, got `null`"),
        (b'[{"type":"cpu","count":[1]}]', "tres.requested[0].count: Expected `int | str"),
        (b'{"type":"cpu"}', "tres.requested: Expected `array`, got `object`"),
    ],
)
def test_garbled_requested_tres_name_the_job(requested: bytes, where: str) -> None:
    data = b'{"jobs":[{"job_id":41,"tres":{"allocated":[],"requested":%s}}]}' % requested
    job = sacct.decode(data, command="sacct").jobs[0]  # not decoded yet: the dump is fine
    with pytest.raises(SlurmDecodeError) as info:
        sacct.requested_tres(job)
    text = str(info.value)
    assert f"job 41: {where}" in text
    assert "\n" not in text


def test_requested_tres_absent_is_empty() -> None:
    job = sacct.decode(b'{"jobs":[{"job_id":1}]}', command="sacct").jobs[0]
    assert sacct.requested_tres(job) == []
    assert job.tres.allocated == []


def test_legacy_v0039_decodes_with_meta_capital_s(shared: Path) -> None:
    """Decision: v0.0.39 (Slurm 23.02) decodes (plain-string states, ``meta.Slurm`` ints); the
    daemon's version gate (major 24/25) is what refuses such a Slurm."""
    data = (shared / "fixtures/slurm/23.02/sacct.v0.0.39.legacy-unsupported.cli.json").read_bytes()
    doc = sacct.decode(data, command="sacct")
    assert doc.meta.major == 23
    assert doc.meta.version == "23.02.6"
    assert doc.meta.data_parser == "v0.0.39"
    assert first(doc.jobs[0].state.current) == json.loads(data)["jobs"][0]["state"]["current"]


@pytest.mark.parametrize("name", _TESTBED)
def test_testbed_documents(shared: Path, name: str) -> None:
    path = shared / "fixtures" / "slurm" / "24.11-testbed" / name
    data = path.read_bytes()
    raw = json.loads(data)
    if "associations" in raw:
        with pytest.raises(SlurmDecodeError, match="not a Slurm document ccsa understands"):
            decode_any(data, source=name)
        return
    doc = decode_any(data, source=name)
    assert doc.meta.version == "24.11.5"
    assert doc.meta.data_parser == "v0.0.42"
    assert doc.meta.cluster == "testcluster"
    if "users" in raw:
        assert isinstance(doc, sacctmgr.UsersDoc)
        assert [(u.name, first(u.administrator_level)) for u in doc.users] == [
            (u["name"], u["administrator_level"][0]) for u in raw["users"]
        ]
    elif name.startswith("sacct"):
        assert isinstance(doc, sacct.SacctDoc)
        assert len(doc.jobs) == len(raw["jobs"])
    else:
        assert isinstance(doc, squeue.QueueDoc)
        assert [j.job_id for j in doc.jobs] == [j["job_id"] for j in raw["jobs"]]


def _testbed_sacct(shared: Path) -> bytes:
    return (shared / "fixtures/slurm/24.11-testbed/sacct-allusers.json").read_bytes()


def test_wrong_type_in_one_job_is_a_bad_record_and_the_rest_decode(shared: Path) -> None:
    """Issue #17 item 5: one record with a wrong type no longer fails the whole answer (before,
    this document raised SlurmDecodeError at $.jobs[0].time.start and every job was lost)."""
    raw = json.loads(_testbed_sacct(shared))
    raw["jobs"][0]["time"]["start"] = "yesterday"
    doc = sacct.decode(json.dumps(raw).encode(), command="sacct --allusers --json")
    assert [j.job_id for j in doc.jobs] == [j["job_id"] for j in raw["jobs"][1:]]
    assert doc.meta.version == "24.11.5"
    assert doc.meta.data_parser == "v0.0.42"
    (bad,) = doc.bad
    assert (bad.index, bad.job_id, bad.path) == (
        0,
        raw["jobs"][0]["job_id"],
        "$.jobs[0].time.start",
    )
    assert "got `str`" in bad.reason
    line = bad.describe()
    assert f"job {raw['jobs'][0]['job_id']}" in line
    assert "time.start" in line
    assert "\n" not in line


def test_wrong_type_in_meta_names_path_and_command(shared: Path) -> None:
    raw = json.loads(_testbed_sacct(shared))
    raw["meta"]["plugin"] = 5
    with pytest.raises(SlurmDecodeError) as info:
        sacct.decode(json.dumps(raw).encode(), command="sacct --allusers --json")
    assert info.value.path == "$.meta.plugin"
    assert "sacct --allusers --json" in str(info.value)
    assert "\n" not in str(info.value)


def test_wrong_type_deep_in_job_resources(shared: Path) -> None:
    data = (shared / "fixtures/slurm/24.11-testbed/squeue.json").read_bytes()
    raw = json.loads(data)
    idx = next(i for i, j in enumerate(raw["jobs"]) if j.get("job_resources"))
    raw["jobs"][idx]["job_resources"]["nodes"]["allocation"][0]["sockets"][0]["index"] = "x"
    doc = squeue.decode(json.dumps(raw).encode(), command="squeue --json")
    (bad,) = doc.bad
    assert bad.path == f"$.jobs[{idx}].job_resources.nodes.allocation[0].sockets[0].index"
    assert bad.job_id == raw["jobs"][idx]["job_id"]
    assert len(doc.jobs) == len(raw["jobs"]) - 1


def test_truncated_output(shared: Path) -> None:
    data = _testbed_sacct(shared)
    with pytest.raises(SlurmDecodeError) as info:
        sacct.decode(data[: len(data) // 2], command="sacct -j 1")
    assert "sacct -j 1" in str(info.value)
    assert "truncated" in str(info.value)


@pytest.mark.parametrize(
    "data",
    [b"", b"   \n", b"slurm_load_jobs error: Invalid job id specified\n", b"[1, 2]", b"null"],
)
@pytest.mark.parametrize(
    "decode",
    [sacct.decode, squeue.decode, sinfo.decode, sinfo.decode_nodes, sacctmgr.decode],
)
def test_garbage_is_a_decode_error(data: bytes, decode: Any) -> None:
    with pytest.raises(SlurmDecodeError) as info:
        decode(data, command="cmd --json")
    assert str(info.value).startswith("cmd --json: cannot decode output")


@pytest.mark.parametrize("data", [b"", b"{not json", b"{}", b'{"foo": []}'])
def test_decode_any_rejects_garbage(data: bytes) -> None:
    with pytest.raises(SlurmDecodeError) as info:
        decode_any(data, source="saved.json")
    assert "saved.json" in str(info.value)


def test_empty_job_lists_are_told_apart(shared: Path) -> None:
    root = shared / "fixtures" / "slurm"
    sacct_empty = (root / "24.11/sacct.v0.0.40.unfound.rest.json").read_bytes()
    queue_empty = (root / "24.11/scontrol-job.v0.0.40.unfound.rest.json").read_bytes()
    assert json.loads(sacct_empty)["jobs"] == []
    assert json.loads(queue_empty)["jobs"] == []
    assert detect(sacct_empty, source="a") == "sacct"
    assert detect(queue_empty, source="b") == "squeue"


def test_v42_version_strings_and_v39_ints() -> None:
    doc = sacctmgr.decode(
        b'{"clusters":[{"name":"hpc","nodes":"cn[1-2]"}],"meta":{"plugin":{"data_parser":'
        b'"data_parser\\/v0.0.44"},"slurm":{"version":{"major":"25","minor":"05","micro":"1"}}}}',
        command="sacctmgr list clusters",
    )
    assert doc.clusters[0].name == "hpc"
    assert (doc.meta.version, doc.meta.major, doc.meta.data_parser) == ("25.05.1", 25, "v0.0.44")


def test_sinfo_and_cluster_detection() -> None:
    data = (
        b'{"sinfo":[{"node":{"state":["MIXED"]},"nodes":{"total":2,"nodes":["a1","a2"]},'
        b'"cpus":{"allocated":6},"gres":{"used":"gpu:h100:2(IDX:0-1)"}}],"meta":{}}'
    )
    doc = decode_any(data, source="sinfo.json")
    assert isinstance(doc, sinfo.SinfoDoc)
    assert doc.sinfo[0].nodes.nodes == ["a1", "a2"]
    clusters = decode_any(b'{"clusters":[{"name":"c"}]}', source="c.json")
    assert isinstance(clusters, sacctmgr.ClustersDoc)


def test_num_and_first_helpers() -> None:
    assert num(NV(set=True, number=5)) == 5
    assert num(NV(set=False, infinite=True)) is None
    assert num(NV(set=False)) is None
    assert num(NV(set=True, number=-3528)) is None
    assert num(-2) is None
    assert num(7) == 7
    assert num(NV(set=True, number=2.0)) == 2
    assert first(["COMPLETED", "COMPLETING"]) == "COMPLETED"
    assert first("RUNNING") == "RUNNING"
    assert first([]) == ""
    assert msgspec.json.decode(b'{"set":true,"number":3}', type=NV).number == 3


def test_generated_dumps_are_deterministic_and_decode() -> None:
    from benchmarks import gen_dumps

    data = gen_dumps.generate_sacct(40, seed=7)
    assert data == b"".join(gen_dumps.iter_sacct(40, seed=7))
    assert data != gen_dumps.generate_sacct(40, seed=8)
    raw = json.loads(data)
    doc = sacct.decode(data, command="sacct")
    assert [j.job_id for j in doc.jobs] == [j["job_id"] for j in raw["jobs"]]
    assert len(data) / 40 > 2000  # several KB per job, like real records
    queue = squeue.decode(gen_dumps.generate_squeue(40, seed=7), command="squeue")
    assert detect(gen_dumps.generate_squeue(3), source="g") == "squeue"
    assert len(queue.jobs) == 40
    assert doc.meta.version == "24.11.5"
    assert queue.meta.data_parser == "v0.0.42"
