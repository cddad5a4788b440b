"""Conversion of real Slurm jobs into cc-backend bodies, validated against cc-backend's swagger."""

from __future__ import annotations

import copy
import json
import logging
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
from jsonschema import Draft4Validator  # type: ignore[import-untyped]

from ccsa import convert as cv
from ccsa.ccbackend.models import VALID_STOP_STATES, StartJob, encode
from ccsa.slurm import sacct, sinfo, squeue
from ccsa.slurm.squeue import QueueJob
from tests.conftest import shared_dir

PCI = tuple(f"00000000:{0x10 + i:02X}:00.0" for i in range(8))
ALL_HOSTS = cv.ConvertOptions(gpu_pci_addrs=((re.compile(r".*"), PCI),))

_SHARED = shared_dir()
_FIX = _SHARED / "fixtures" / "slurm" if _SHARED else None


def _index() -> list[dict[str, Any]]:
    if _FIX is None:
        return [{"file": "", "equiv_cli": ""}]
    return list(json.loads((_FIX / "index.json").read_text()))


_SACCT = [e["file"] for e in _index() if e["equiv_cli"] == "sacct"] or [""]
_QUEUE = [e["file"] for e in _index() if e["equiv_cli"] in ("squeue", "scontrol-job")] or [""]
_TESTBED_SACCT = ["sacct-allusers.json", "sacct-array-failed-cancelled.json"]


# --------------------------------------------------------------------------- schema


def _inline(node: Any, defs: dict[str, Any], strict: set[str], seen: tuple[str, ...]) -> Any:
    """Resolve swagger 2.0 ``#/definitions/...`` refs in place (cc-backend's bodies are strict)."""
    if isinstance(node, list):
        return [_inline(x, defs, strict, seen) for x in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/definitions/"):
        name = ref.removeprefix("#/definitions/")
        if name in seen:
            return {}
        target = copy.deepcopy(defs[name])
        if name in strict:
            target["additionalProperties"] = False
        return _inline(target, defs, strict, (*seen, name))
    return {k: _inline(v, defs, strict, seen) for k, v in node.items()}


@pytest.fixture(scope="module")
def schemas(shared: Path) -> dict[str, Draft4Validator]:
    swagger = json.loads((shared / "spec/cc-backend/swagger.json").read_text())
    defs = swagger["definitions"]
    strict = {"schema.Job", "schema.Resource", "api.StopJobAPIRequest"}
    out = {}
    for name in ("schema.Job", "api.StopJobAPIRequest"):
        schema = _inline({"$ref": f"#/definitions/{name}"}, defs, strict, ())
        Draft4Validator.check_schema(schema)
        out[name] = Draft4Validator(schema)
    return out


def _valid(validator: Draft4Validator, body: Any) -> dict[str, Any]:
    doc = json.loads(encode(body))
    errors = [e.message for e in validator.iter_errors(doc)]
    assert not errors, (doc, errors)
    return dict(doc)


# --------------------------------------------------------------------------- fixtures


def _twin(path: Path) -> Path:
    return path.with_name(path.name.replace("sacct.", "scontrol-job.", 1))


def _queue_jobs(path: Path) -> dict[int, QueueJob]:
    if not path.exists():
        return {}
    return {j.job_id: j for j in squeue.decode(path.read_bytes(), command="scontrol").jobs}


def _check_resources(job: QueueJob, body: StartJob, raw_pci: tuple[str, ...]) -> None:
    assert body.num_nodes == len(body.resources)
    res = job.job_resources
    assert res is not None
    sizes: dict[str, int] = {}
    if res.nodes is not None and not isinstance(res.nodes, str):
        for alloc in res.nodes.allocation:
            sizes[alloc.name] = len(alloc.sockets) * max(len(s.cores) for s in alloc.sockets)
    comment = {x.strip() for x in job.comment.split(",") if x.strip()}
    for r in body.resources:
        hw = r.hwthreads or []
        assert len(hw) == len(set(hw)), r
        assert all(h >= 0 for h in hw)
        if r.hostname in sizes:
            assert all(h < sizes[r.hostname] for h in hw), (r, sizes)
        assert set(r.accelerators or []) <= set(raw_pci) | comment


@pytest.mark.parametrize("name", _SACCT)
def test_every_sacct_job_converts(
    shared: Path, schemas: dict[str, Draft4Validator], name: str
) -> None:
    path = shared / "fixtures" / "slurm" / name
    doc = sacct.decode(path.read_bytes(), command="sacct")
    queue = _queue_jobs(_twin(path))
    for acct in doc.jobs:
        q = queue.get(acct.job_id)
        captured = cv.capture_resources(q, ALL_HOSTS) if q is not None else None
        body = cv.start_body(acct, resources=captured, queue=q, opts=ALL_HOSTS)
        if isinstance(body, cv.Skip):
            assert cv.start_time(acct) is None or not cv.host_resources(acct)
            continue
        sent = _valid(schemas["schema.Job"], body)
        assert sent["numNodes"] == len(sent["resources"])
        assert sent["startTime"] == acct.time.start
        assert sent["jobId"] == acct.job_id
        assert set(sent["metaData"]) <= {"jobName", "slurmInfo", "jobScript", "submitTime"}
        if captured and q is not None:
            _check_resources(q, body, PCI)
        if cv.is_finished(acct):
            stop = cv.stop_body(acct, body.start_time)
            sent_stop = _valid(schemas["api.StopJobAPIRequest"], stop)
            assert sent_stop["jobState"] in VALID_STOP_STATES
            assert sent_stop["stopTime"] >= sent["startTime"]


@pytest.mark.parametrize("name", _QUEUE)
def test_every_queue_job_converts(
    shared: Path, schemas: dict[str, Draft4Validator], name: str
) -> None:
    doc = squeue.decode((shared / "fixtures" / "slurm" / name).read_bytes(), command="squeue")
    for job in doc.jobs:
        captured = cv.capture_resources(job, ALL_HOSTS)
        body = cv.start_body_from_queue(job, resources=captured, opts=ALL_HOSTS)
        if isinstance(body, cv.Skip):
            continue
        _valid(schemas["schema.Job"], body)
        if captured is not None:
            _check_resources(job, body, PCI)
        if cv.queue_is_finished(job):
            stop = cv.stop_body_from_queue(job, body.start_time)
            assert _valid(schemas["api.StopJobAPIRequest"], stop)["jobState"] in VALID_STOP_STATES


# --------------------------------------------------------------------------- specific cases


def _tb(shared: Path, name: str) -> dict[str, Any]:
    return dict(json.loads((shared / "fixtures/slurm/24.11-testbed" / name).read_bytes()))


def _queue_job(raw: dict[str, Any], job_id: int) -> QueueJob:
    doc = squeue.decode(json.dumps(raw).encode(), command="scontrol")
    return next(j for j in doc.jobs if j.job_id == job_id)


def _acct_job(raw: dict[str, Any], job_id: int) -> sacct.SacctJob:
    doc = sacct.decode(json.dumps(raw).encode(), command="sacct")
    return next(j for j in doc.jobs if j.job_id == job_id)


def test_testbed_job_2_resources(shared: Path) -> None:
    """Job 2: node1, 2 CPUs (cores 0-1 of 1x8), gres_detail gpu:2(IDX:0-1)."""
    job = _queue_job(_tb(shared, "scontrol-show-job-2-running-gpu.json"), 2)
    opts = cv.ConvertOptions(gpu_pci_addrs=((re.compile(r"^node\d+$"), PCI[:4]),))
    res = cv.capture_resources(job, opts)
    assert res is not None
    assert [r.hostname for r in res] == ["node1"]
    assert res[0].accelerators == [PCI[0], PCI[1]]
    raw = _tb(shared, "scontrol-show-job-2-running-gpu.json")["jobs"][0]
    cores = [
        s["index"] * len(s["cores"]) + c["index"]
        for s in raw["job_resources"]["nodes"]["allocation"][0]["sockets"]
        for c in s["cores"]
        if c["status"][0] == "ALLOCATED"
    ]
    assert res[0].hwthreads == cores
    assert len(cores) == 2


def test_multinode_job_4(shared: Path) -> None:
    raw = _tb(shared, "scontrol-show-job-4-multinode-gpu.json")
    job = _queue_job(raw, 4)
    res = cv.capture_resources(job, ALL_HOSTS)
    assert res is not None
    assert [r.hostname for r in res] == ["node1", "node2"]
    assert all(r.accelerators == list(PCI[:4]) for r in res)
    acct = _acct_job(_tb(shared, "sacct-allusers.json"), 4)
    # sacct was captured while job 4 was still pending: not started there.
    assert isinstance(cv.start_body(acct, resources=res, queue=job, opts=ALL_HOSTS), cv.Skip)
    body = cv.start_body_from_queue(job, resources=res, opts=ALL_HOSTS)
    assert isinstance(body, StartJob)
    assert body.num_nodes == 2
    assert body.num_acc == 8
    assert body.num_hwthreads == 8


def test_multi_type_gpus_mapped_through_config(shared: Path) -> None:
    raw = _tb(shared, "scontrol-show-job-2-running-gpu.json")
    raw["jobs"][0]["gres_detail"] = ["gpu:h100:2(IDX:0-1),gpu:h200:4(IDX:2-5)"]
    job = _queue_job(raw, 2)
    addrs = ("A0", "A1", "A2", "A3", "A4", "A5")
    opts = cv.ConvertOptions(
        gpu_pci_addrs=((re.compile(r"^login"), ("X",)), (re.compile(r"^node"), addrs))
    )
    res = cv.capture_resources(job, opts)
    assert res is not None
    assert res[0].accelerators == ["A0", "A1", "A2", "A3", "A4", "A5"]


def test_real_multi_type_fixture(shared: Path) -> None:
    path = shared / "fixtures/slurm/24.11/scontrol-job.v0.0.42.gpus-multi-types.rest.json"
    job = squeue.decode(path.read_bytes(), command="scontrol").jobs[0]
    assert job.gres_detail == ["gpu:h100:1(IDX:0),gpu:h200:1(IDX:2)"]
    opts = cv.ConvertOptions(gpu_pci_addrs=((re.compile(r"^ia\d+$"), PCI),))
    res = cv.capture_resources(job, opts)
    assert res is not None
    assert res[0].accelerators == [PCI[0], PCI[2]]


def test_index_beyond_pci_list_is_skipped(shared: Path, caplog: pytest.LogCaptureFixture) -> None:
    raw = _tb(shared, "scontrol-show-job-2-running-gpu.json")
    raw["jobs"][0]["gres_detail"] = ["gpu:h100:2(IDX:0-1),gpu:h200:4(IDX:2-5)"]
    opts = cv.ConvertOptions(gpu_pci_addrs=((re.compile("node"), ("A0", "A1", "A2")),))
    with caplog.at_level(logging.WARNING):
        res = cv.capture_resources(_queue_job(raw, 2), opts)
    assert res is not None
    assert res[0].accelerators == ["A0", "A1", "A2"]
    assert "GPU index 3 beyond" in caplog.text


def test_host_matching_no_regex_gets_no_gpus(
    shared: Path, caplog: pytest.LogCaptureFixture
) -> None:
    job = _queue_job(_tb(shared, "scontrol-show-job-2-running-gpu.json"), 2)
    opts = cv.ConvertOptions(gpu_pci_addrs=((re.compile("^gpu"), PCI),))
    with caplog.at_level(logging.WARNING):
        res = cv.capture_resources(job, opts)
    assert res is not None
    assert res[0].accelerators is None
    assert res[0].hwthreads
    assert "matches no gpuPciAddrs" in caplog.text


@pytest.mark.parametrize("detail", ["gpu:h100:0(IDX:N/A)", "gpu:h200:0(IDX:)", "gpu(CNT:2)"])
def test_no_index_forms_give_no_accelerators(shared: Path, detail: str) -> None:
    raw = _tb(shared, "scontrol-show-job-2-running-gpu.json")
    raw["jobs"][0]["gres_detail"] = [detail]
    res = cv.capture_resources(_queue_job(raw, 2), ALL_HOSTS)
    assert res is not None
    assert res[0].accelerators is None


def test_comment_fallback(shared: Path) -> None:
    raw = _tb(shared, "scontrol-show-job-2-running-gpu.json")
    raw["jobs"][0]["gres_detail"] = []
    raw["jobs"][0]["comment"] = "00000000:3B:00.0, 00000000:5E:00.0"
    res = cv.capture_resources(_queue_job(raw, 2), cv.ConvertOptions())
    assert res is not None
    assert res[0].accelerators == ["00000000:3B:00.0", "00000000:5E:00.0"]


def test_pending_job_has_no_resources(shared: Path) -> None:
    raw = _tb(shared, "squeue.json")
    pending = [j for j in raw["jobs"] if j["job_state"][0] == "PENDING"]
    assert pending
    job = _queue_job(raw, pending[0]["job_id"])
    assert cv.capture_resources(job, ALL_HOSTS) is None
    skip = cv.start_body_from_queue(job, resources=None, opts=ALL_HOSTS)
    assert isinstance(skip, cv.Skip)


def test_v0040_allocated_nodes(shared: Path) -> None:
    path = shared / "fixtures/slurm/24.11/scontrol-job.v0.0.40.gpus-per-task.rest.json"
    raw = json.loads(path.read_bytes())
    job = squeue.decode(path.read_bytes(), command="scontrol").jobs[0]
    res = cv.capture_resources(job, ALL_HOSTS)
    assert res is not None
    nodes = raw["jobs"][0]["job_resources"]["allocated_nodes"]
    assert [r.hostname for r in res] == [n["nodename"] for n in nodes]
    for r, n in zip(res, nodes, strict=True):
        per = 1 + max(int(c) for s in n["sockets"].values() for c in s["cores"])
        want = sorted(int(s) * per + int(c) for s, v in n["sockets"].items() for c in v["cores"])
        assert r.hwthreads == want


def test_never_started_is_skipped(shared: Path) -> None:
    raw = _tb(shared, "sacct-array-failed-cancelled.json")
    rec = next(j for j in raw["jobs"] if j["job_id"] == 7)
    assert rec["time"]["start"] in (0, 4294967294)
    rec["time"]["start"] = 4294967294
    rec["nodes"] = "node1"  # even with a node list, NO_VAL start means never started
    skip = cv.start_body(_acct_job(raw, 7), resources=None, opts=ALL_HOSTS)
    assert isinstance(skip, cv.Skip)
    assert skip.job_id == 7
    assert "never started" in skip.reason


def test_none_assigned_is_not_started(shared: Path) -> None:
    raw = _tb(shared, "sacct-array-failed-cancelled.json")
    acct = _acct_job(raw, 7)
    assert acct.nodes == "None assigned"
    assert cv.start_time(acct) is None


def test_pending_with_start_is_started(shared: Path) -> None:
    """slurmdbd lag: state PENDING while time.start and nodes are set -> started, not finished."""
    found = 0
    for path in sorted((shared / "fixtures/slurm/24.05").glob("sacct.*.json")):
        for acct in sacct.decode(path.read_bytes(), command="sacct").jobs:
            if acct.state.current[0] == "PENDING" and acct.time.start and acct.time.end == 0:
                if acct.nodes == "None assigned":
                    continue
                found += 1
                body = cv.start_body(acct, resources=None, opts=ALL_HOSTS)
                assert isinstance(body, StartJob)
                assert body.start_time == acct.time.start
                assert not cv.is_finished(acct)
    assert found >= 1


def _finished(shared: Path) -> dict[str, Any]:
    return _tb(shared, "sacct-array-failed-cancelled.json")


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        (["NODE_FAIL"], "failed"),
        (["REQUEUED"], "cancelled"),
        (["PENDING", "REQUEUED"], "cancelled"),
        (["REVOKED"], "cancelled"),
        (["SPECIAL_EXIT"], "failed"),
        (["RESIZING"], "completed"),
        (["STOPPED"], "cancelled"),
        (["COMPLETED", "COMPLETING"], "completed"),
        (["OUT_OF_MEMORY"], "out_of_memory"),
        (["PREEMPTED", "REQUEUED"], "preempted"),
        (["RUNNING"], "failed"),
        (["TIMEOUT"], "timeout"),
    ],
)
def test_stop_state_mapping(shared: Path, states: list[str], expected: str) -> None:
    raw = _finished(shared)
    rec = next(j for j in raw["jobs"] if j["job_id"] == 6)
    rec["state"]["current"] = states
    acct = _acct_job(raw, 6)
    stop = cv.stop_body(acct, rec["time"]["start"])
    assert stop.job_state == expected
    assert stop.job_state in VALID_STOP_STATES


def test_every_slurm_state_maps_to_an_accepted_one() -> None:
    slurm = [
        "PENDING",
        "RUNNING",
        "SUSPENDED",
        "COMPLETED",
        "CANCELLED",
        "FAILED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
        "LAUNCH_FAILED",
        "REQUEUED",
        "REQUEUE_HOLD",
        "SPECIAL_EXIT",
        "RESIZING",
        "CONFIGURING",
        "COMPLETING",
        "STOPPED",
        "RECONFIG_FAIL",
        "POWER_UP_NODE",
        "REVOKED",
        "REQUEUE_FED",
        "RESV_DEL_HOLD",
        "SIGNALING",
        "STAGE_OUT",
        "UPDATE_DB",
        "EXPEDITING",
    ]
    for state in slurm:
        assert cv.job_state([state]) in VALID_STOP_STATES, state
        assert cv.job_state([state]) not in ("running", "pending"), state
    assert cv.job_state([]) in VALID_STOP_STATES


def test_requeued_record_is_finished(shared: Path) -> None:
    raw = _finished(shared)
    rec = next(j for j in raw["jobs"] if j["job_id"] == 6)
    rec["state"]["current"] = ["PENDING", "REQUEUED"]
    assert cv.is_finished(_acct_job(raw, 6))
    rec["state"]["current"] = ["RUNNING"]
    assert not cv.is_finished(_acct_job(raw, 6))


def test_stop_time_is_clamped(shared: Path) -> None:
    raw = _finished(shared)
    rec = next(j for j in raw["jobs"] if j["job_id"] == 6)
    start = rec["time"]["start"]
    rec["time"]["end"] = start - 100
    stop = cv.stop_body(_acct_job(raw, 6), start)
    assert stop.stop_time == start
    assert stop.start_time == start
    rec["time"]["end"] = start + 5
    assert cv.stop_body(_acct_job(raw, 6), start).stop_time == start + 5


def test_infinite_walltime_and_minutes(shared: Path) -> None:
    raw = _tb(shared, "sacct-allusers.json")
    rec = next(j for j in raw["jobs"] if j["job_id"] == 2)
    assert rec["time"]["limit"]["number"] == 10
    body = cv.start_body(_acct_job(raw, 2), resources=None, opts=ALL_HOSTS)
    assert isinstance(body, StartJob)
    assert body.walltime == 600
    rec["time"]["limit"] = {"set": False, "infinite": True, "number": 0}
    body = cv.start_body(_acct_job(raw, 2), resources=None, opts=ALL_HOSTS)
    assert isinstance(body, StartJob)
    assert body.walltime == 0
    assert "walltime" not in json.loads(encode(body))


@pytest.mark.parametrize(
    ("shared_flags", "exclusive", "expected"),
    [
        ([], None, "multi_user"),
        (["none"], None, "none"),
        (["user"], None, "single_user"),
        (["oversubscribe"], None, "multi_user"),
        ([], ["true"], "none"),
    ],
)
def test_shared_mode(
    shared: Path, shared_flags: list[str], exclusive: list[str] | None, expected: str
) -> None:
    raw = _tb(shared, "scontrol-show-job-2-running-gpu.json")
    raw["jobs"][0]["shared"] = shared_flags
    if exclusive is not None:
        raw["jobs"][0]["exclusive"] = exclusive
    job = _queue_job(raw, 2)
    acct = _acct_job(_tb(shared, "sacct-allusers.json"), 2)
    res = cv.capture_resources(job, ALL_HOSTS)
    body = cv.start_body(acct, resources=res, queue=job, opts=ALL_HOSTS)
    assert isinstance(body, StartJob)
    assert body.shared == expected
    no_queue = cv.start_body(acct, resources=None, opts=ALL_HOSTS)
    assert isinstance(no_queue, StartJob)
    assert no_queue.shared == "multi_user"


def test_start_body_fields_from_testbed(shared: Path) -> None:
    raw = _tb(shared, "sacct-allusers.json")
    rec = next(j for j in raw["jobs"] if j["job_id"] == 2)
    acct = _acct_job(raw, 2)
    body = cv.start_body(
        acct,
        resources=None,
        slurm_info="JobId=2 JobName=train-a",
        job_script="#!/bin/sh\n",
        opts=ALL_HOSTS,
    )
    assert isinstance(body, StartJob)
    sent = json.loads(encode(body))
    assert sent["user"] == "alice"
    assert sent["project"] == rec["account"]
    assert sent["partition"] == rec["partition"]
    assert sent["resources"] == [{"hostname": "node1"}]
    assert sent["numHwthreads"] == 2
    assert sent["numAcc"] == 2
    assert sent["metaData"] == {
        "jobName": "train-a",
        "slurmInfo": "JobId=2 JobName=train-a",
        "jobScript": "#!/bin/sh\n",
        "submitTime": str(rec["time"]["submission"]),
    }
    plain = cv.start_body(acct, resources=None, opts=ALL_HOSTS)
    assert isinstance(plain, StartJob)
    bare = json.loads(encode(plain))
    assert set(bare["metaData"]) == {"jobName", "submitTime"}


def test_array_tasks_are_their_own_jobs(shared: Path) -> None:
    raw = _tb(shared, "sacct-array-failed-cancelled.json")
    tasks = [j for j in raw["jobs"] if j["array"]["job_id"] == 5]
    assert len(tasks) == 4
    bodies = [
        cv.start_body(_acct_job(raw, t["job_id"]), resources=None, opts=ALL_HOSTS) for t in tasks
    ]
    starts = [b for b in bodies if isinstance(b, StartJob)]
    assert len(starts) == len(bodies)
    assert sorted(b.job_id for b in starts) == [5, 9, 10, 11]
    assert {b.array_job_id for b in starts} == {5}
    single = cv.start_body(_acct_job(raw, 6), resources=None, opts=ALL_HOSTS)
    assert isinstance(single, StartJob)
    assert "arrayJobId" not in json.loads(encode(single))


def test_ignore_hosts_all_and_partial(shared: Path) -> None:
    raw = _tb(shared, "sacct-allusers.json")
    rec = next(j for j in raw["jobs"] if j["job_id"] == 4)
    rec["time"]["start"] = rec["time"]["submission"] + 10  # as it was a minute later
    rec["nodes"] = "node[1-2]"
    acct4 = _acct_job(raw, 4)
    all_ignored = cv.ConvertOptions(ignore_hosts=re.compile(r"^node\d$"))
    skip = cv.start_body(acct4, resources=None, opts=all_ignored)
    assert isinstance(skip, cv.Skip)
    assert "ignoreHosts" in skip.reason
    partial = cv.ConvertOptions(ignore_hosts=re.compile(r"^node2$"))
    body = cv.start_body(acct4, resources=None, opts=partial)
    assert isinstance(body, StartJob)
    assert [r.hostname for r in body.resources] == ["node1", "node2"]
    assert body.num_nodes == 2


def test_typed_gpu_tres_only(shared: Path) -> None:
    raw = _tb(shared, "sacct-allusers.json")
    rec = next(j for j in raw["jobs"] if j["job_id"] == 2)
    for tres in (rec["tres"]["allocated"], rec["tres"]["requested"]):
        for t in tres:
            if t["type"] == "gres" and t["name"] == "gpu":
                t["name"] = "gpu:a100"
        tres.append({"type": "gres", "name": "gpu:h100", "id": 1002, "count": 1})
    assert cv.tres_counts(_acct_job(raw, 2))[1] == 3


def test_allocated_tres_with_cpu_is_the_whole_truth(shared: Path) -> None:
    """A recorded run's GPUs are what allocated says, whatever the request asked for."""
    raw = _tb(shared, "sacct-allusers.json")
    rec = next(j for j in raw["jobs"] if j["job_id"] == 1)
    assert not any(t["type"] == "gres" for t in rec["tres"]["allocated"])
    rec["tres"]["requested"].append({"type": "gres", "name": "gpu", "id": 1001, "count": 4})
    rec["tres"]["requested"][0]["count"] = 64
    assert cv.tres_counts(_acct_job(raw, 1)) == (1, 0)
    # Allocated is consulted first even when the requested list is garbled (never decoded).
    rec["tres"]["requested"] = {"not": "a list"}
    assert cv.tres_counts(_acct_job(raw, 1)) == (1, 0)


def test_requested_tres_stand_in_without_allocated_cpu(shared: Path) -> None:
    raw = _tb(shared, "sacct-allusers.json")
    pending = next(j for j in raw["jobs"] if j["job_id"] == 4)
    assert pending["tres"]["allocated"] == []
    want = {t["type"] + t["name"]: t["count"] for t in pending["tres"]["requested"]}
    assert cv.tres_counts(_acct_job(raw, 4)) == (want["cpu"], want["gresgpu"])
    # Allocated without cpu but with GPUs: CPUs from the request, GPUs from the allocation.
    pending["tres"]["allocated"] = [{"type": "gres", "name": "gpu", "id": 1001, "count": 3}]
    assert cv.tres_counts(_acct_job(raw, 4)) == (want["cpu"], 3)
    # Neither list has a cpu: required.CPUs.
    pending["tres"]["requested"] = [t for t in pending["tres"]["requested"] if t["type"] != "cpu"]
    pending["required"]["CPUs"] = 5
    assert cv.tres_counts(_acct_job(raw, 4)) == (5, 3)


@pytest.mark.parametrize(
    "garbled", [None, "cpu=4", {"type": "cpu"}, [{"type": "cpu", "count": [1]}], [{"type": 7}]]
)
def test_garbled_requested_tres_count_as_empty(
    shared: Path, caplog: pytest.LogCaptureFixture, garbled: Any
) -> None:
    raw = _tb(shared, "sacct-allusers.json")
    rec = next(j for j in raw["jobs"] if j["job_id"] == 2)
    rec["tres"]["allocated"] = []
    rec["tres"]["requested"] = garbled
    rec["required"]["CPUs"] = 6
    acct = _acct_job(raw, 2)  # the document still decodes: only this job's fallback is bad
    with caplog.at_level(logging.WARNING):
        assert cv.tres_counts(acct) == (6, 0)
        body = cv.start_body(acct, resources=None, opts=ALL_HOSTS)
    assert isinstance(body, StartJob)
    assert body.num_hwthreads == 6
    lines = [r.getMessage() for r in caplog.records]
    assert lines
    assert all("job 2: tres.requested" in line and "\n" not in line for line in lines)


def test_unknown_tres_types_decode_and_are_ignored(shared: Path) -> None:
    raw = _tb(shared, "sacct-allusers.json")
    rec = next(j for j in raw["jobs"] if j["job_id"] == 2)
    rec["tres"]["allocated"].insert(0, {"type": "gpu-ish", "name": "gpu", "id": 9, "count": 9})
    acct = _acct_job(raw, 2)
    assert [t.type for t in acct.tres.allocated] == [t["type"] for t in rec["tres"]["allocated"]]
    assert cv.tres_counts(acct) == (2, 2)


def test_node_state_from_sinfo() -> None:
    doc = sinfo.decode(
        msgspec.json.encode(
            {
                "sinfo": [
                    {
                        "node": {"state": ["MIXED"]},
                        "nodes": {"total": 2, "nodes": ["gpu1", "gpu2"]},
                        "cpus": {"allocated": 12, "total": 64},
                        "memory": {"allocated": 4096},
                        "gres": {"used": "gpu:h100:2(IDX:0-1),gpu:h200:1(IDX:2)"},
                    },
                    {
                        "node": {"state": ["IDLE", "DRAIN"]},
                        "nodes": {"total": 2, "nodes": ["gpu1", "login1"]},
                        "gres": {"used": "gpu:0"},
                    },
                ],
                "meta": {},
            }
        ),
        command="sinfo",
    )
    req = cv.node_state(doc, "hpc", cv.ConvertOptions(ignore_hosts=re.compile("^login")))
    sent = json.loads(encode(req))
    assert sent == {
        "cluster": "hpc",
        "nodes": [
            {
                "hostname": "gpu1",
                "states": ["mixed"],
                "cpusAllocated": 6,
                "memoryAllocated": 4096,
                "gpusAllocated": 3,
                "jobsRunning": 0,
            },
            {
                "hostname": "gpu2",
                "states": ["mixed"],
                "cpusAllocated": 6,
                "memoryAllocated": 4096,
                "gpusAllocated": 3,
                "jobsRunning": 0,
            },
        ],
    }


def test_het_components_are_their_own_jobs(shared: Path) -> None:
    path = shared / "fixtures/slurm/23.11/scontrol-job.v0.0.40.het-job-running.cli.json"
    raw = json.loads(path.read_bytes())
    doc = squeue.decode(path.read_bytes(), command="scontrol")
    bodies = []
    for job in doc.jobs:
        body = cv.start_body_from_queue(
            job, resources=cv.capture_resources(job, ALL_HOSTS), opts=ALL_HOSTS
        )
        assert isinstance(body, StartJob)
        bodies.append(body)
    assert [b.job_id for b in bodies] == [j["job_id"] for j in raw["jobs"]]
    assert [b.resources[0].hostname for b in bodies] == [j["nodes"] for j in raw["jobs"]]
    assert len({b.job_id for b in bodies}) == len(raw["jobs"]) > 1


def test_unmapped_host_warned_once(shared: Path, caplog: pytest.LogCaptureFixture) -> None:
    job = _queue_job(_tb(shared, "scontrol-show-job-2-running-gpu.json"), 2)
    opts = cv.ConvertOptions(gpu_pci_addrs=((re.compile("^gpu"), PCI),))
    with caplog.at_level(logging.WARNING):
        cv.capture_resources(job, opts)
        cv.capture_resources(job, opts)
    assert caplog.text.count("matches no gpuPciAddrs") == 1
