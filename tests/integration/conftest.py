"""Session fixtures for the real-Slurm suite: bring the shared test bed up once, ``down`` after.

The suite runs only when asked (``CCSA_SLURM_TESTBED=1``, which ``nox -s integration`` and
``nox -s tests`` set) and skips, with the reason, where the test bed cannot run: not root, no
``unshare``/``nsenter``/``chroot``/``flock``, no Debian mirror to build the root from, a failed
debootstrap/apt step, or another run using the same root.
Under ``CI=true`` a requested suite that cannot run fails with that reason instead of skipping.
A test bed whose root is built but whose daemons do not come up is a failure, not a skip.
At the end the terminal summary prints what each real job kind became in the stand-in.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .testbed import Testbed, TestbedError, script_command

# Rows of the job-kind report: (kind, Slurm's view, what reached the stand-in).
JOB_REPORT: list[tuple[str, str, str]] = []

_TOOLS = ("unshare", "nsenter", "chroot", "flock", "bash")


def _mirror_reachable(mirror: str, suite: str) -> str | None:
    """None if the Debian mirror answers, else why not (one line)."""
    url = f"{mirror.rstrip('/')}/dists/{suite}/Release"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10):
            return None
    except (urllib.error.URLError, OSError) as exc:
        return f"{url}: {exc}"


def cannot_run_reason(root: Path) -> str | None:
    """Why the test bed cannot run on this machine, or None."""
    if os.environ.get("CCSA_SLURM_TESTBED") != "1":
        return (
            "real Slurm test bed not requested: run `nox -s integration` or set "
            "CCSA_SLURM_TESTBED=1"
        )
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "the Slurm test bed needs root (nsenter/chroot/unshare, also to call its wrappers)"
    missing = [t for t in _TOOLS if shutil.which(t) is None]
    if missing:
        return f"the Slurm test bed needs {', '.join(missing)} (util-linux/coreutils)"
    if not (root / ".testbed-built").exists():
        mirror = os.environ.get("SLURM_TESTBED_MIRROR", "http://deb.debian.org/debian")
        suite = os.environ.get("SLURM_TESTBED_SUITE", "trixie")
        problem = _mirror_reachable(mirror, suite)
        if problem is not None:
            return f"no test bed root at {root} and the Debian mirror is not reachable ({problem})"
    return None


def _skip_or_fail(reason: str) -> None:
    """Skip with ``reason``; under ``CI=true`` a requested suite that cannot run fails instead
    (CI's machine is root with the Debian mirror: a skip there would hide a broken check)."""
    if os.environ.get("CI") == "true" and os.environ.get("CCSA_SLURM_TESTBED") == "1":
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def testbed(shared: Path) -> Iterator[Testbed]:
    """The running test bed (``slurm-testbed.sh up``, reusing an existing root); ``down`` after."""
    root = Path(os.environ.get("SLURM_TESTBED_ROOT", "/tmp/slurmroot"))
    reason = cannot_run_reason(root)
    if reason is not None:
        _skip_or_fail(reason)
    with _one_run_per_root(root):
        yield from _running_testbed(shared, root)


@contextlib.contextmanager
def _one_run_per_root(root: Path) -> Iterator[None]:
    """Hold ``ROOT.run.lock`` for the whole session. A second run on the same root (another
    ``nox -s tests`` on this machine) would cancel this run's jobs and take its test bed down,
    so it skips (fails under ``CI=true``) instead. Runs on different roots
    (``SLURM_TESTBED_ROOT``) go ahead at once: each test bed has its own mount, UTS and network
    namespaces and its own lock (../shared/docs/testbed.md), and no cgroups."""
    with open(f"{root}.run.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            busy = False
        except BlockingIOError:
            busy = True
        if busy:
            _skip_or_fail(
                f"another run is using the test bed {root} (it holds {root}.run.lock); "
                "set SLURM_TESTBED_ROOT to another directory to run beside it"
            )
        yield


def _running_testbed(shared: Path, root: Path) -> Iterator[Testbed]:
    script = shared / "testbed" / "slurm-testbed.sh"
    proc = script_command(script, "up", timeout=900)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-2:])
        if not (root / ".testbed-built").exists():
            _skip_or_fail(f"could not build the Slurm test bed root (debootstrap/apt): {tail}")
        pytest.fail(f"slurm-testbed.sh up failed on a built root: {tail}", pytrace=False)
    bindir = Path(proc.stdout.strip().splitlines()[-1])
    tb = Testbed(
        script=script,
        root=root,
        bindir=bindir,
        cluster=os.environ.get("SLURM_TESTBED_CLUSTER", "testcluster"),
    )
    # Leftovers of an aborted earlier run: hook lines (when the daemons kept running) and jobs.
    tb.unwire_hooks()
    tb.cancel_all()
    try:
        yield tb
    finally:
        try:
            tb.unwire_hooks()
        except (OSError, TestbedError):
            pass
        script_command(script, "down", timeout=180)


@pytest.fixture(scope="session")
def slurm_bin_dir(testbed: Testbed) -> Path:
    """The wrapper directory: real Slurm 24.11 clients for ccsa's ``slurmBinDir``."""
    return testbed.bindir


@pytest.fixture(scope="session")
def chroot_python(testbed: Testbed) -> str:
    """``python3`` inside the test bed (installed from the mirror when missing), for the hook."""
    if not testbed.chroot_has("python3"):
        try:
            testbed.install_chroot_packages(["python3-minimal", "libpython3-stdlib"])
        except (TestbedError, OSError) as exc:
            pytest.skip(f"no python3 in the test bed and it cannot be installed: {exc}")
    return "/usr/bin/python3"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the job-kind table: each real job kind and what arrived in the stand-in."""
    if not JOB_REPORT:
        return
    tr = terminalreporter
    tr.section("real Slurm jobs -> stand-in cc-backend")
    w0 = max(len("job kind"), *(len(r[0]) for r in JOB_REPORT))
    w1 = max(len("Slurm"), *(len(r[1]) for r in JOB_REPORT))
    tr.write_line(f"{'job kind':<{w0}}  {'Slurm':<{w1}}  stand-in")
    for kind, slurm, arrived in JOB_REPORT:
        tr.write_line(f"{kind:<{w0}}  {slurm:<{w1}}  {arrived}")
