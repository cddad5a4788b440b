"""ccsa.permissions: who may read the JWT, connect to the socket, read the hook's config.

Real files, modes and a real Unix socket where this machine allows (the tests run as one user,
so owners and groups other than ours are given as FileFacts values)."""

from __future__ import annotations

import grp
import os
import socket as pysocket
from pathlib import Path

import pytest

from ccsa import permissions
from ccsa.permissions import FileFacts, facts

REPO = Path(__file__).resolve().parents[1]
JWT = "the cc-backend JWT"
MY_GROUP = grp.getgrgid(os.getgid()).gr_name


def make(tmp_path: Path, mode: int, name: str = "config.json", text: str = "{}") -> str:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return str(path)


@pytest.mark.parametrize(
    ("mode", "hook_group", "level"),
    [
        (0o600, MY_GROUP, "ok"),
        (0o400, MY_GROUP, "ok"),
        (0o644, "slurm", "fail"),  # every user
        (0o604, "slurm", "fail"),
        (0o640, MY_GROUP, "fail"),  # the file's group is the hook's group
    ],
)
def test_secret_file_on_real_files(tmp_path: Path, mode: int, hook_group: str, level: str) -> None:
    path = make(tmp_path, mode)
    verdict = permissions.secret_file(facts(path), JWT, hook_group)
    assert verdict.level == level, verdict
    assert path in verdict.detail
    if level == "fail":
        assert verdict.fix.startswith(f"chmod 0600 {path}")


def test_secret_file_groups() -> None:
    def level(owner: str, group: str, mode: int = 0o100640) -> str:
        return permissions.secret_file(
            FileFacts("/c", True, mode, owner, group), JWT, "slurm"
        ).level

    # README used to create the user with -g slurm: the JWT became readable by slurm
    assert level("cc-slurm-adapter", "slurm") == "fail"
    assert level("root", "slurm") == "fail"
    assert level("cc-slurm-adapter", "cc-slurm-adapter") == "ok"  # user-private group
    assert level("root", "cc-slurm-adapter") == "ok"  # root writes, the service user reads
    assert level("cc-slurm-adapter", "staff") == "warn"
    assert level("cc-slurm-adapter", "slurm", 0o100600) == "ok"
    assert permissions.secret_file(FileFacts("/c", False), JWT, "slurm").level == "info"


def test_socket_on_a_real_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "daemon.sock")
    assert permissions.socket(facts(path), MY_GROUP).level == "info"
    sock = pysocket.socket(pysocket.AF_UNIX)
    try:
        sock.bind(path)
        os.chmod(path, 0o660)
        ok = permissions.socket(facts(path), MY_GROUP)
        assert ok.level == "ok", ok
        wrong_group = permissions.socket(facts(path), "no-such-group-x")
        assert wrong_group.level == "fail"
        assert "no-such-group-x" in wrong_group.detail
        os.chmod(path, 0o600)
        assert permissions.socket(facts(path), MY_GROUP).level == "fail"
        os.chmod(path, 0o666)
        world = permissions.socket(facts(path), MY_GROUP)
        assert (world.level, world.fix.split()[:2]) == ("fail", ["chmod", "0660"])
    finally:
        sock.close()
    regular = make(tmp_path, 0o660, "not-a-socket")
    assert permissions.socket(facts(regular), MY_GROUP).level == "fail"


def test_hook_config(tmp_path: Path) -> None:
    default = "/run/cc-slurm-adapter/daemon.sock"
    other = "unix:/srv/ccsa/daemon.sock"
    absent = facts(str(tmp_path / "hook.json"))
    assert permissions.hook_config(absent, None, default, MY_GROUP).level == "ok"
    missing = permissions.hook_config(absent, None, other, MY_GROUP)
    assert missing.level == "warn"
    assert "/srv/ccsa/daemon.sock" in missing.fix

    good = facts(make(tmp_path, 0o640, "hook.json"))
    content: dict[str, object] = {"prepSockConnectPath": "/srv/ccsa/daemon.sock"}
    assert permissions.hook_config(good, content, other, MY_GROUP).level == "ok"
    stale = permissions.hook_config(good, content, "tcp:127.0.0.1:7000", MY_GROUP)
    assert stale.level == "warn"
    leaky = permissions.hook_config(good, {**content, "ccRestJwt": "x"}, other, MY_GROUP)
    assert (leaky.level, "ccRestJwt" in leaky.detail) == ("fail", True)
    assert permissions.hook_config(good, None, other, MY_GROUP).level == "fail"
    private = facts(make(tmp_path, 0o600, "hook2.json"))
    assert permissions.hook_config(private, content, other, MY_GROUP).level == "fail"


def test_hook_sh_reads_the_hook_config_path() -> None:
    """hooks/hook.sh passes permissions.HOOK_CONFIG, the file check verifies."""
    text = (REPO / "hooks" / "hook.sh").read_text()
    assert f"[ -e {permissions.HOOK_CONFIG} ]" in text
    assert "config.json" not in text.split("ADAPTER=", 1)[1]
