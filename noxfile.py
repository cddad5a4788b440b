"""nox sessions: tests, lint, typing, bench, demo, soak, integration.

``nox -s tests`` is what CI runs (``.ci/run``). Sessions install the project with the extras they
need into their own virtualenv, so a fresh machine needs only ``pip install nox``.

Every session runs on the interpreter that runs nox (``python3 -m nox``: the first ``python3`` on
PATH), whichever Python >= 3.11 that is; an older one is an error, not a skip, and so is any
interpreter nox cannot find (``error_on_missing_interpreters``): a session that did not run
must never end with exit status 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nox

MIN_PYTHON = (3, 11)
if sys.version_info < MIN_PYTHON:
    raise SystemExit(
        f"noxfile: ccsa needs Python >= {'.'.join(map(str, MIN_PYTHON))}, but nox runs on "
        f"{sys.version.split()[0]} ({sys.executable}); run nox with a newer python3"
    )

nox.options.sessions = ["lint", "typing", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True

PYTHON = None  # the interpreter running nox (checked above)

# The real-Slurm suite: its tests, their marker, -rs for the reason when the test bed cannot run
# here (a failure under CI=true), --durations to show where its time goes.
INTEGRATION_ARGS = (
    "tests/integration",
    "-m",
    "slurm",
    "-p",
    "no:cacheprovider",
    "-v",
    "-rs",
    "--durations=15",
)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit, contract and end-to-end tests, and beside them the real-Slurm suite.

    The real-Slurm suite (``tests/integration``, marker ``slurm``; what ``nox -s integration``
    runs alone) mostly waits for Slurm, so it runs as a second pytest process while the unit
    tests (``-m "not slurm and not soak"``: the short soak is in, the long one out) run in this
    one. Its output goes to ``.nox/integration.log`` and is printed once both are done; the
    session fails if either failed. It skips with the reason where it cannot run (not root, no
    Debian mirror to build the test bed root), fails instead under ``CI=true``, and is left out
    with ``CCSA_SLURM_TESTBED=0`` or when arguments are given (``nox -s tests -- ARGS`` runs
    only ``pytest ARGS``).
    """
    session.install("-e", ".[test]")
    env = {"PYTHONDONTWRITEBYTECODE": "1"}
    if session.posargs:
        session.run("pytest", *session.posargs, env=env)
        return
    unit = ["-m", "not slurm and not soak", "-p", "no:cacheprovider"]
    if os.environ.get("CCSA_SLURM_TESTBED", "1") != "1":
        session.run("pytest", *unit, env=env)
        return
    log = Path(".nox", "integration.log")
    log.parent.mkdir(exist_ok=True)
    python = str(Path(session.bin, "python"))
    argv = [python, "-m", "pytest", *INTEGRATION_ARGS]
    session.log(f"real-Slurm suite in the background: {' '.join(argv[1:])} > {log}")
    with log.open("wb") as out:
        slurm = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env, "CCSA_SLURM_TESTBED": "1"},
        )
    unit_failed: BaseException | None = None
    try:
        session.run("pytest", *unit, env=env)
    except BaseException as exc:  # nox's failure or Ctrl-C (which the suite's process got too:
        unit_failed = exc  # same process group; its fixtures stop the test bed): wait for it
    status = slurm.wait()
    print(f"\n===== real-Slurm suite ({log}, exit {status}) =====", flush=True)
    sys.stdout.write(log.read_text(errors="replace"))
    sys.stdout.flush()
    if unit_failed is not None:
        raise unit_failed
    if status != 0:
        session.error(f"the real-Slurm suite failed (exit {status}); its output is above")


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typing(session: nox.Session) -> None:
    """mypy --strict over the ccsa package."""
    session.install("-e", ".[test]", "mypy>=1.11")
    session.run("mypy", "--strict", "ccsa")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks: prints tables with machine info, writes benchmarks/results/*.json."""
    session.install("-e", ".[test,bench]")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The one-command demo: simulated Slurm + stand-in cc-backend + the daemon."""
    session.install("-e", ".[test]")
    session.run("cc-slurm-adapter", "demo", *session.posargs)


@nox.session(python=PYTHON)
def soak(session: nox.Session) -> None:
    """Long fault-injection soak (tens of thousands of jobs)."""
    session.install("-e", ".[test]")
    session.run(
        "pytest",
        "-m",
        "soak",
        "-p",
        "no:cacheprovider",
        "-o",
        "faulthandler_timeout=0",  # the long soak runs for tens of minutes on purpose
        "-s",  # its progress lines and the final counts table
        *session.posargs,
        env={"CCSA_SOAK": "long"},
    )


@nox.session(python=PYTHON)
def integration(session: nox.Session) -> None:
    """Against a real Slurm 24.11 test bed (needs root and the Debian mirror)."""
    session.install("-e", ".[test]")
    session.run(
        "pytest",
        *(session.posargs or ["tests/integration"]),
        *INTEGRATION_ARGS[1:],
        env={"CCSA_SLURM_TESTBED": os.environ.get("CCSA_SLURM_TESTBED", "1")},
    )
