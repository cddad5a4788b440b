"""The test suite cleans up after itself: a passing test leaves nothing in pytest's temp root.

Issue 20 item 7: a full run left about 30 MB in /tmp/pytest-of-root (pytest keeps every
``tmp_path`` of the last three sessions by default). The largest were the state databases of
``test_store`` (10,000-action outboxes) and the simulated clusters of ``test_daemon_e2e``,
``test_delivery`` and ``test_backfill``. The project's pytest configuration
(``tmp_path_retention_policy = "failed"``) removes a passing test's directory at once and keeps
a failing test's for inspection. Checked here by running pytest, with this repository's
configuration, on a small test that writes 1 MiB into its ``tmp_path``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BIG = """
def test_writes_a_mebibyte(tmp_path):
    (tmp_path / "state.sqlite3").write_bytes(bytes(1 << 20))
"""


def _leftover_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def test_a_passing_test_leaves_nothing_in_the_temp_root(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_big.py").write_text(BIG)
    temp_root = tmp_path / "temproot"
    temp_root.mkdir()
    env = {**os.environ, "PYTEST_DEBUG_TEMPROOT": str(temp_root)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(suite), str(suite / "test_big.py")],
        capture_output=True, text=True, timeout=120, env=env, cwd=suite,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
    assert _leftover_bytes(temp_root) < 64 * 1024, sorted(temp_root.rglob("*"))
