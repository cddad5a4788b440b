"""Shared fixtures: the ../shared reference directory, a clean environment, a trustme CA, a
short directory for Unix sockets."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path | None:
    """The shared reference folder (``../shared`` beside the checkout), or None if absent."""
    env = os.environ.get("CCSA_SHARED_DIR")
    path = Path(env) if env else REPO.parent / "shared"
    return path if (path / "docs").is_dir() else None


def require_shared() -> Path:
    """Return ../shared; skip (or fail under CI=true) when it is missing."""
    path = shared_dir()
    if path is None:
        reason = (
            f"../shared not found beside {REPO} (set CCSA_SHARED_DIR): the real Slurm fixtures "
            "and cc-backend spec live there"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def shared() -> Path:
    return require_shared()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory for AF_UNIX socket paths (pytest's tmp_path can exceed 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="ccsa-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxies or CA overrides leak into HTTP tests; no systemd sockets into daemon tests."""
    for var in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "JOURNAL_STREAM",
    ):
        monkeypatch.delenv(var, raising=False)
