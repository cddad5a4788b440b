"""``inspect``: saved Slurm documents in, one JSON line per job out (real files, real config)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from ccsa import inspect

TESTBED = "fixtures/slurm/24.11-testbed"
PCI = ["00000000:3B:00.0", "00000000:5E:00.0", "00000000:86:00.0", "00000000:AF:00.0"]


def _config(tmp_path: Path, **extra: Any) -> str:
    body = {"ccRestUrl": "http://127.0.0.1:1", "ccRestJwt": "x.y.z", **extra}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(body))
    return str(path)


def _run(paths: list[str], config: str | None) -> tuple[int, list[dict[str, Any]], str]:
    out, err = io.StringIO(), io.StringIO()
    rc = inspect.run(paths, config, out=out, err=err)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    return rc, lines, err.getvalue()


def _by_job(lines: list[dict[str, Any]], kind: str) -> dict[int, dict[str, Any]]:
    return {ln["body"]["jobId"]: ln["body"] for ln in lines if ln["kind"] == kind}


def test_testbed_sacct_and_squeue_merge(shared: Path, tmp_path: Path) -> None:
    cfg = _config(tmp_path, gpuPciAddrs={"^node[0-9]+$": PCI})
    rc, lines, _ = _run(
        [str(shared / TESTBED / "sacct-allusers.json"), str(shared / TESTBED / "squeue.json")], cfg
    )
    assert rc == 0
    starts = _by_job(lines, "start_job")
    # jobs 2, 3, 8 run on node1 with GPU indices 0-1, 2 and 3 (squeue gres_detail)
    assert starts[2]["resources"][0]["accelerators"] == PCI[0:2]
    assert starts[3]["resources"][0]["accelerators"] == [PCI[2]]
    assert starts[8]["resources"][0]["accelerators"] == [PCI[3]]
    assert starts[2]["resources"][0]["hwthreads"]
    assert starts[2]["user"] == "alice"
    stops = _by_job(lines, "stop_job")
    assert stops[6]["jobState"] == "failed"
    assert stops[1]["jobState"] == "completed"
    assert 2 not in stops
    skipped = {ln["jobId"]: ln["reason"] for ln in lines if ln["kind"] == "skipped"}
    assert 4 in skipped  # pending in this capture


def test_multi_type_gpus_with_config(shared: Path, tmp_path: Path) -> None:
    doc = shared / "fixtures/slurm/24.11/scontrol-job.v0.0.42.gpus-multi-types.rest.json"
    acct = shared / "fixtures/slurm/24.11/sacct.v0.0.42.gpus-multi-types.rest.json"
    cfg = _config(tmp_path, gpuPciAddrs={"^gpu": ["X"], "^ia[0-9]+$": PCI})
    rc, lines, _ = _run([str(acct), str(doc)], cfg)
    assert rc == 0
    (start,) = [ln["body"] for ln in lines if ln["kind"] == "start_job"]
    raw = json.loads(doc.read_bytes())["jobs"][0]
    assert raw["gres_detail"] == ["gpu:h100:1(IDX:0),gpu:h200:1(IDX:2)"]
    assert start["jobId"] == raw["job_id"]
    assert start["resources"] == [
        {"hostname": "ia1", "hwthreads": [0], "accelerators": [PCI[0], PCI[2]]}
    ]
    assert start["numAcc"] == 2


def test_without_config_says_so_and_maps_nothing(shared: Path) -> None:
    rc, lines, err = _run([str(shared / TESTBED / "scontrol-show-job-2-running-gpu.json")], None)
    assert rc == 0
    assert "no -config" in err
    (start,) = [ln["body"] for ln in lines if ln["kind"] == "start_job"]
    assert "accelerators" not in start["resources"][0]
    assert "matches no gpuPciAddrs regex" in err


def test_index_beyond_pci_list_is_reported(shared: Path, tmp_path: Path) -> None:
    cfg = _config(tmp_path, gpuPciAddrs={"^node": PCI[:1]})
    path = shared / TESTBED / "scontrol-show-job-2-running-gpu.json"
    rc, lines, err = _run([str(path)], cfg)
    assert rc == 0
    assert _by_job(lines, "start_job")[2]["resources"][0]["accelerators"] == [PCI[0]]
    assert "GPU index 1 beyond" in err


def test_ignore_hosts(shared: Path, tmp_path: Path) -> None:
    cfg = _config(tmp_path, ignoreHosts="^node1$")
    rc, lines, _ = _run([str(shared / TESTBED / "scontrol-show-job-2-running-gpu.json")], cfg)
    assert rc == 0
    assert lines == [
        {"kind": "skipped", "jobId": 2, "reason": "all hosts match ignoreHosts (node1)"}
    ]


def test_error_document_gives_error_line_and_exit_1(shared: Path, tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    data = (shared / TESTBED / "sacct-allusers.json").read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    missing = tmp_path / "missing.json"
    good = shared / TESTBED / "scontrol-show-job-8-running-gpu.json"
    rc, lines, _ = _run([str(bad), str(missing), str(good)], None)
    assert rc == 1
    errors = [ln for ln in lines if ln["kind"] == "error"]
    assert [e["file"] for e in errors] == [str(bad), str(missing)]
    assert "truncated" in errors[0]["message"]
    assert "cannot read" in errors[1]["message"]
    assert 8 in _by_job(lines, "start_job")  # the good document is still converted


def test_bad_config_is_an_error(shared: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text('{"ccRestUrl": "http://127.0.0.1:1"}')
    rc, lines, _ = _run([str(shared / TESTBED / "squeue.json")], str(cfg))
    assert rc == 1
    assert lines[0]["kind"] == "error"
    assert lines[0]["file"] == str(cfg)


def test_sinfo_document_gives_node_state(tmp_path: Path) -> None:
    doc = tmp_path / "sinfo.json"
    doc.write_text(
        json.dumps(
            {
                "sinfo": [
                    {
                        "node": {"state": ["ALLOCATED"]},
                        "nodes": {"total": 1, "nodes": ["n1"]},
                        "cpus": {"allocated": 8},
                        "gres": {"used": "gpu:4(IDX:0-3)"},
                        "cluster": "c1",
                    }
                ],
                "meta": {},
            }
        )
    )
    rc, lines, _ = _run([str(doc)], None)
    assert rc == 0
    assert lines == [
        {
            "kind": "node_state",
            "body": {
                "cluster": "c1",
                "nodes": [
                    {
                        "hostname": "n1",
                        "states": ["allocated"],
                        "cpusAllocated": 8,
                        "memoryAllocated": 0,
                        "gpusAllocated": 4,
                        "jobsRunning": 0,
                    }
                ],
            },
        }
    ]


def test_cli_inspect_subcommand(shared: Path, tmp_path: Path) -> None:
    """`cc-slurm-adapter inspect -config FILE DOC` (upstream single-dash spelling) end to end."""
    import subprocess
    import sys

    cfg = tmp_path / "config.json"
    cfg.write_text(
        json.dumps(
            {
                "ccRestUrl": "http://127.0.0.1:1",
                "ccRestJwt": "x",
                "gpuPciAddrs": {"^node[0-9]+$": [f"00000000:{i:02X}:00.0" for i in range(1, 5)]},
            }
        )
    )
    cfg.chmod(0o600)
    doc = shared / "fixtures/slurm/24.11-testbed/squeue.json"
    proc = subprocess.run(
        [sys.executable, "-m", "ccsa", "inspect", "-config", str(cfg), str(doc)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    starts = {x["body"]["jobId"]: x["body"] for x in lines if x["kind"] == "start_job"}
    # job 2 of the test bed holds GPUs IDX 0-1 on node1 -> the first two PCI addresses
    assert starts[2]["resources"][0]["accelerators"] == ["00000000:01:00.0", "00000000:02:00.0"]
    missing = subprocess.run(
        [sys.executable, "-m", "ccsa", "inspect"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr


def test_topology_gives_gpu_ids_and_threads(shared: Path, tmp_path: Path) -> None:
    """``--topology``: a saved GET /api/clusters/ answer decides ids as the daemon does (#16).

    Job 2 of the test bed: node1, cores 1-2 of 1 x 8, ``gpu:2(IDX:0-1)``. The topology numbers
    two threads per core consecutively and lists lower-case GPU ids: without sinfo (no Slurm
    shape) the topology's own shape is used.
    """
    from ccsa.sim.ccbackend import topologies

    sub = topologies.subcluster(
        "main", "node[1-2]", sockets=1, cores=8, threads=2, numbering="consecutive",
        accelerators=topologies.gpu_ids(4),
    )  # fmt: skip
    answer = tmp_path / "clusters.json"
    answer.write_text(json.dumps({"clusters": [topologies.cluster("testcluster", [sub])]}))
    out, err = io.StringIO(), io.StringIO()
    doc = str(shared / TESTBED / "scontrol-show-job-2-running-gpu.json")
    rc = inspect.run([doc], None, out=out, err=err, topology_path=str(answer))
    assert rc == 0, err.getvalue()
    (start,) = [json.loads(x)["body"] for x in out.getvalue().splitlines()]
    assert start["resources"] == [
        {"hostname": "node1", "hwthreads": [2, 3, 4, 5],
         "accelerators": ["00000000:0e:00.0", "00000000:1e:00.0"]}
    ]  # fmt: skip


def test_unusable_topology_file_is_one_error_line(tmp_path: Path) -> None:
    answer = tmp_path / "clusters.json"
    answer.write_text("<html>login</html>")
    out, err = io.StringIO(), io.StringIO()
    assert inspect.run([], None, out=out, err=err, topology_path=str(answer)) == 1
    (line,) = [json.loads(x) for x in out.getvalue().splitlines()]
    assert line["kind"] == "error"
    assert "GET /api/clusters/: answer does not decode" in line["message"]
