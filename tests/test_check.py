"""`cc-slurm-adapter check` against the simulated Slurm (real subprocesses) and the stand-in
cc-backend (real HTTP on loopback): every failure it detects is reported with its fix."""

from __future__ import annotations

import grp
import io
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from nats_server import NatsServer

from ccsa.check import Finding, exit_status, render, run_checks
from ccsa.check.rules import (
    Claims,
    DirInfo,
    gpu_regex_findings,
    jwt_claims,
    operator_finding,
    socket_dir_findings,
)
from ccsa.config import Config, load, make_config
from ccsa.sim.ccbackend import clusters
from ccsa.sim.ccbackend.auth import AuthConfig
from ccsa.sim.ccbackend.server import StandIn
from ccsa.sim.ccbackend.state import Backend
from ccsa.sim.slurm import SimCluster
from ccsa.slurm.scontrol_text import config_values

T0 = 1_700_000_000.0
ROOT_GROUP = grp.getgrgid(os.getgid()).gr_name  # stands in for "slurm" on a test machine
A100 = ["0000:01:00.0", "0000:41:00.0", "0000:81:00.0", "0000:c1:00.0"]


@pytest.fixture
def sim(tmp_path: Path) -> SimCluster:
    return SimCluster.create(tmp_path / "sim", clusters=("c1",), start=T0)


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A directory the current group can search (pytest's own tmp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="ccsa-check-", dir="/tmp"))
    path.chmod(0o750)
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


class Backend_:
    def __init__(self, standin: StandIn, auth: AuthConfig) -> None:
        self.standin = standin
        self.auth = auth
        self.token = auth.issue(exp=time.time() + 86400)


@pytest.fixture
async def backend(nursery: trio.Nursery) -> Backend_:
    auth = AuthConfig.generate()
    standin = StandIn(Backend({"c1": clusters.minimal("c1")}), auth=auth)
    await nursery.start(standin.serve)
    return Backend_(standin, auth)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(sim: SimCluster, backend: Backend_, sock_dir: Path, **over: Any) -> Config:
    values: dict[str, Any] = {
        "cc_rest_url": backend.standin.url,
        "cc_rest_jwt": backend.token,
        "slurm_bin_dir": str(sim.bin_dir),
        "prep_sock_connect_path": str(sock_dir / "daemon.sock"),
        "prep_sock_listen_path": str(sock_dir / "daemon.sock"),
        "gpu_pci_addrs": {"^cgpu": A100, "^chx": [*A100, "0000:e1:00.0", "0000:f1:00.0"]},
    }
    values.update(over)
    return make_config(**values)


async def check(cfg: Config, user: str | None = None) -> tuple[list[Finding], str]:
    findings = await run_checks(cfg, user=user, slurm_group=ROOT_GROUP, nats_timeout=1.0)
    out = io.StringIO()
    render(findings, out, rich=False)
    return findings, out.getvalue()


def failed(findings: list[Finding]) -> dict[str, Finding]:
    return {f.check: f for f in findings if f.level == "fail"}


async def test_everything_works(sim: SimCluster, backend: Backend_, sock_dir: Path) -> None:
    findings, text = await check(config(sim, backend, sock_dir))
    assert failed(findings) == {}, text
    assert exit_status(findings) == 0
    by = {f.check: f for f in findings}
    assert "Slurm 24.11.5" in by["slurm version"].detail
    assert "v0.0.42" in by["slurm version"].detail
    assert "c1" in by["slurm version"].detail
    assert by["operator rights"].level == "ok"
    assert by["cc-backend auth"].level == "ok"
    assert by["cc-backend clusters"].level == "ok"
    for cmd in ("sacct", "squeue", "scontrol show job", "sinfo"):
        assert by[f"{cmd} (c1)"].level == "ok"
    assert "14 nodes" in by["sinfo (c1)"].detail
    assert by["PrEp socket path"].level == "ok"
    assert backend.token not in text
    assert "everything needed works" in text


@pytest.mark.parametrize(
    ("private_data", "level", "status"), [("accounts,jobs", "fail", 1), ("none", "warn", 0)]
)
async def test_missing_operator(
    tmp_path: Path,
    backend: Backend_,
    sock_dir: Path,
    private_data: str,
    level: str,
    status: int,
) -> None:
    """A service user without Operator: a failure when PrivateData hides jobs (sacct would
    miss other users' jobs), a warning otherwise (only other users' batch scripts are refused).
    The simulator answers ``scontrol show config`` with the PrivateData it was given."""
    sim = SimCluster.create(
        tmp_path / "sim2",
        clusters=("c1",),
        start=T0,
        operator="ccsa-svc",
        admin_level="None",
        private_data=private_data,
    )
    findings, text = await check(config(sim, backend, sock_dir), user="ccsa-svc")
    op = {f.check: f for f in findings}["operator rights"]
    assert op.level == level, text
    assert op.fix == "sacctmgr modify user ccsa-svc set adminlevel=operator"
    assert "fix: sacctmgr modify user ccsa-svc set adminlevel=operator" in text
    assert f"PrivateData={'jobs' if level == 'fail' else 'none'}" in op.detail
    assert exit_status(findings) == status


async def test_root_needs_no_operator(tmp_path: Path, backend: Backend_, sock_dir: Path) -> None:
    sim = SimCluster.create(
        tmp_path / "sim3",
        clusters=("c1",),
        start=T0,
        operator="root",
        admin_level="None",
        private_data="jobs",
    )
    findings, text = await check(config(sim, backend, sock_dir), user="root")
    op = {f.check: f for f in findings}["operator rights"]
    assert op.level == "ok", text
    assert op.detail == "root is root: privileged in Slurm without AdminLevel"


def test_operator_finding_decisions() -> None:
    conf = {"PrivateData": "accounts,jobs,usage", "SlurmUser": "slurm(64030)"}
    assert operator_finding("slurm", [], True, conf).level == "ok"  # SlurmUser
    assert operator_finding("svc", ["Operator"], True, conf).level == "ok"
    assert operator_finding("svc", ["Administrator"], True, None).level == "ok"
    missing = operator_finding("svc", [], False, conf)
    assert missing.level == "fail"
    assert missing.fix == "sacctmgr add user svc account=root adminlevel=operator"
    assert "does not exist in slurmdbd" in missing.detail
    unknown = operator_finding("svc", ["None"], True, None)  # scontrol show config failed
    assert unknown.level == "fail"
    assert "unknown" in unknown.detail
    visible = operator_finding("svc", ["None"], True, {"PrivateData": "accounts, usage"})
    assert visible.level == "warn"
    assert "batch_script" in visible.detail


def test_config_values_parses_scontrol_show_config() -> None:
    text = (
        "Configuration data as of 2026-11-23T10:00:00\n"
        "AccountingStorageType   = accounting_storage/slurmdbd\n"
        "PrivateData             = accounts,jobs\n"
        "SlurmUser               = slurm(64030)\n"
        "SuspendExcNodes         = (null)\n"
        "\n"
        "Cgroup Support Configuration:\n"
        "AllowedRAMSpace         = 100.0%\n"
        "PrivateData             = shadowed\n"
    )
    values = config_values(text)
    assert values["PrivateData"] == "accounts,jobs"  # first wins
    assert values["SlurmUser"] == "slurm(64030)"
    assert values["SuspendExcNodes"] == "(null)"
    assert values["AllowedRAMSpace"] == "100.0%"
    assert "Configuration" not in values
    assert "Cgroup" not in values


async def test_unauthorized_explains_expired_token(
    sim: SimCluster, backend: Backend_, sock_dir: Path
) -> None:
    token = backend.auth.issue(roles=["user"], exp=time.time() - 3600)
    findings, text = await check(config(sim, backend, sock_dir, cc_rest_jwt=token))
    auth = failed(findings)["cc-backend auth"]
    assert auth.detail.startswith("401 from cc-backend")
    assert "expired" in auth.detail
    assert "lack 'api'" in auth.detail
    assert "role 'api'" in auth.fix
    assert token not in text
    assert "fix: issue a new API token" in text


async def test_unknown_cluster_in_backend(
    sim: SimCluster, nursery: trio.Nursery, sock_dir: Path
) -> None:
    auth = AuthConfig.generate()
    standin = StandIn(Backend({"other": clusters.minimal("other")}), auth=auth)
    await nursery.start(standin.serve)
    be = Backend_(standin, auth)
    findings, text = await check(config(sim, be, sock_dir))
    finding = failed(findings)["cc-backend clusters"]
    assert "c1" in finding.detail
    assert "other" in finding.detail
    assert "cluster.json" in finding.fix
    assert "fix: add a cluster.json" in text


async def test_nats_unreachable_and_subject_default(
    sim: SimCluster, backend: Backend_, sock_dir: Path
) -> None:
    cfg = config(sim, backend, sock_dir, nats_server="127.0.0.1", nats_port=free_port())
    findings, text = await check(cfg)
    nats = failed(findings)["nats"]
    assert "natsServer" in nats.fix
    warn = {f.check: f for f in findings if f.level == "warn"}
    assert "cc.job.event" in warn["nats subject"].fix
    assert "fix: check natsServer/natsPort" in text


async def test_nats_reachable(
    sim: SimCluster, backend: Backend_, sock_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "nats").mkdir()
    with NatsServer(tmp_path / "nats") as server:
        cfg = config(
            sim,
            backend,
            sock_dir,
            nats_server="127.0.0.1",
            nats_port=server.port,
            nats_subject="cc.job.event",
        )
        findings, _ = await check(cfg)
    by = {f.check: f for f in findings}
    assert by["nats"].level == "ok", by["nats"]
    assert "nats subject" not in by


async def test_gpu_regex_matching_no_gpu_node(
    sim: SimCluster, backend: Backend_, sock_dir: Path
) -> None:
    cfg = config(sim, backend, sock_dir, gpu_pci_addrs={"^gpu-node\\d+$": A100})
    findings, text = await check(cfg)
    gpu = failed(findings)["gpuPciAddrs"]
    assert "'^gpu-node\\\\d+$' matches none" in gpu.detail
    assert "cgpu001" in gpu.detail  # names the GPU nodes sinfo reports
    assert "fix: fix the regex" in text


async def test_unreachable_socket_dir(sim: SimCluster, backend: Backend_, sock_dir: Path) -> None:
    private = sock_dir / "private"
    private.mkdir(mode=0o700)
    try:
        cfg = config(sim, backend, sock_dir, prep_sock_connect_path=str(private / "d.sock"))
        findings, text = await check(cfg)
    finally:
        private.rmdir()
    sock = failed(findings)["PrEp socket path"]
    assert str(private) in sock.detail
    assert sock.fix.startswith(f"chgrp {ROOT_GROUP} {private} && chmod g+x {private}")
    assert f"fix: chgrp {ROOT_GROUP}" in text


async def test_slurm_command_missing(backend: Backend_, sock_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "nobin"
    empty.mkdir()
    cfg = make_config(
        cc_rest_url=backend.standin.url,
        cc_rest_jwt=backend.token,
        slurm_bin_dir=str(empty),
        prep_sock_connect_path=str(sock_dir / "d.sock"),
    )
    findings, text = await check(cfg)
    assert "slurmBinDir" in failed(findings)["sacctmgr list clusters"].detail
    assert exit_status(findings) == 1
    assert "1 check(s) failed" in text


# --- pure decisions --------------------------------------------------------------------------


def test_socket_dir_rules() -> None:
    gid = 4242
    ok = [DirInfo("/", 0o40755, 0), DirInfo("/run/x", 0o40750, gid)]
    assert socket_dir_findings("/run/x/s", ok, "slurm", gid).level == "ok"
    wrong_group = [DirInfo("/", 0o40755, 0), DirInfo("/run/x", 0o40750, 0)]
    assert socket_dir_findings("/run/x/s", wrong_group, "slurm", gid).level == "fail"
    absent = [DirInfo("/", 0o40755, 0), DirInfo("/run/x", 0, -1, exists=False)]
    assert socket_dir_findings("/run/x/s", absent, "slurm", gid).level == "warn"
    assert socket_dir_findings("/run/x/s", ok, "slurm", None).level == "warn"


def test_gpu_rules() -> None:
    nodes = {"g1": 4, "g2": 4, "h1": 6}
    found = gpu_regex_findings([("^g", 4), ("^h", 4)], nodes)
    assert [f.level for f in found] == ["ok", "warn"]  # h1 has 6 GPUs, 4 addresses listed
    found = gpu_regex_findings([("^g", 4)], nodes)
    assert found[-1].level == "warn"
    assert "h1" in found[-1].detail
    assert gpu_regex_findings([], nodes)[0].level == "info"


def test_jwt_claims_never_verifies() -> None:
    token = AuthConfig.generate().issue(sub="svc", roles=["api"], exp=123)
    assert jwt_claims(token) == Claims(exp=123, roles=("api",), sub="svc")
    assert jwt_claims("not-a-token") is None


async def test_cli_exit_status_and_table(
    sim: SimCluster, backend: Backend_, sock_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "ccRestUrl": backend.standin.url,
                "ccRestJwt": backend.token,
                "slurmBinDir": str(sim.bin_dir),
                "prepSockConnectPath": str(sock_dir / "d.sock"),
                "gpuPciAddrs": {"^nothing$": A100},
            }
        )
    )
    path.chmod(0o600)
    proc = await trio.run_process(
        [sys.executable, "-m", "ccsa", "check", "-config", str(path), "--slurm-group", ROOT_GROUP],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    out = proc.stdout.decode()
    assert proc.returncode == 1, out + proc.stderr.decode()
    assert "FAIL  gpuPciAddrs: regex '^nothing$' matches none" in out
    assert "OK    cc-backend auth" in out
    assert backend.token not in out + proc.stderr.decode()
    as_json = await trio.run_process(
        [sys.executable, "-m", "ccsa", "check", "--config", str(path), "--json"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    rows = [json.loads(line) for line in as_json.stdout.decode().splitlines()]
    assert as_json.returncode == 1
    gpu = next(r for r in rows if r["check"] == "gpuPciAddrs")
    assert gpu["level"] == "fail"
    assert gpu["fix"].startswith("fix the regex")
    bad = tmp_path / "bad.json"
    bad.write_text('{"ccRestUrl": "http://x"}')
    proc = await trio.run_process(
        [sys.executable, "-m", "ccsa", "check", "-config", str(bad)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "ccRestJwt" in proc.stderr.decode()
    assert "Traceback" not in proc.stderr.decode()


async def test_file_modes_config_and_socket(
    sim: SimCluster, backend: Backend_, sock_dir: Path, tmp_path: Path
) -> None:
    """The JWT-bearing config readable by the hook's group fails with the fix; 0600 passes. The
    socket the daemon would bind (mode 0660, our group) passes; world-writable fails."""
    values = {
        "ccRestUrl": backend.standin.url,
        "ccRestJwt": backend.token,
        "slurmBinDir": str(sim.bin_dir),
        "prepSockListenPath": str(sock_dir / "daemon.sock"),
        "prepSockConnectPath": str(sock_dir / "daemon.sock"),
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(values))
    path.chmod(0o640)  # group ROOT_GROUP stands in for slurm
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(sock_dir / "daemon.sock"))
        os.chmod(sock_dir / "daemon.sock", 0o660)
        findings, text = await check(load(str(path)))
        by = {f.check: f for f in findings}
        assert by["config file"].level == "fail", text
        assert by["config file"].fix.startswith(f"chmod 0600 {path}")
        assert by["PrEp socket"].level == "ok", text
        path.chmod(0o600)
        os.chmod(sock_dir / "daemon.sock", 0o666)
        findings, text = await check(load(str(path)))
        by = {f.check: f for f in findings}
        assert by["config file"].level == "ok", text
        assert by["PrEp socket"].level == "fail", text
        assert backend.token not in text
    finally:
        server.close()


async def test_gpu_map_is_skipped_when_slurm_cannot_be_reached(tmp_path: Path) -> None:
    """Issue 20 item 7: no Slurm answer means nothing is known about GPU nodes; "OK ... no GPU
    nodes" claimed a check that never ran."""
    (tmp_path / "empty").mkdir()
    cfg = make_config(
        slurm_bin_dir=str(tmp_path / "empty"),  # no Slurm command in it
        cc_rest_url="http://127.0.0.1:9",
        prep_sock_connect_path=str(tmp_path / "d.sock"),
    )
    findings = await run_checks(cfg, slurm_group=ROOT_GROUP, nats_timeout=1.0)
    out = io.StringIO()
    render(findings, out, rich=False)
    (gpu,) = [f for f in findings if f.check == "gpuPciAddrs"]
    assert gpu.level == "skip", out.getvalue()
    assert "SKIP  gpuPciAddrs: not checked" in out.getvalue()
    assert "OK    gpuPciAddrs" not in out.getvalue()


async def test_config_warning_with_its_own_fix_gets_no_generic_one(
    tmp_path: Path, sim: SimCluster, backend: Backend_, sock_dir: Path
) -> None:
    """A config warning that says its fix (``...; fix: chmod 0600 FILE``) shows that fix, not a
    second "edit the config file"; one without its own fix keeps the generic one."""
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "ccRestUrl": backend.standin.url,
                "ccRestJwt": backend.token,
                "slurmBinDir": str(sim.bin_dir),
                "prepSockListenPath": str(sock_dir / "daemon.sock"),
                "slurmPolInterval": 5,
            }
        )
    )
    path.chmod(0o644)
    findings, text = await check(load(str(path)))
    warned = {f.detail: f.fix for f in findings if f.check == "config" and f.level == "warn"}
    (mode,) = [d for d in warned if "accessible by all users" in d]
    assert warned[mode] == f"chmod 0600 {path}"
    assert "fix:" not in mode
    (unknown,) = [d for d in warned if "slurmPolInterval" in d]
    assert warned[unknown] == "edit the config file"
    assert text.count("fix: edit the config file") == 1, text


async def test_an_appended_producer_sees_the_facts_of_earlier_ones(
    sim: SimCluster, backend: Backend_, sock_dir: Path
) -> None:
    """Rows are extensible: a producer appended to PRODUCERS runs last and reads what the
    Slurm and cc-backend producers learned (cluster names, sinfo, GET /api/clusters/)."""
    from ccsa.check import PRODUCERS, CheckContext

    seen: list[CheckContext] = []

    async def topology_rows(ctx: CheckContext) -> list[Finding]:
        seen.append(ctx)
        return [Finding("topology", "info", f"{len(ctx.backend_clusters or b'')} bytes")]

    cfg = config(sim, backend, sock_dir)
    findings = await run_checks(
        cfg, slurm_group=ROOT_GROUP, nats_timeout=1.0, producers=[*PRODUCERS, topology_rows]
    )
    assert findings[-1].check == "topology"
    (ctx,) = seen
    assert ctx.slurm_reached
    assert ctx.clusters == ["c1"]
    assert ctx.sinfo
    assert ctx.backend_clusters is not None
    names = [c["name"] for c in json.loads(ctx.backend_clusters)["clusters"]]
    assert names == ["c1"]
