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
import sys

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


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit, contract and end-to-end tests (real subprocesses, real HTTP, real nats-server)."""
    session.install("-e", ".[test]")
    args = session.posargs or ["-m", "not slurm and not soak", "-p", "no:cacheprovider"]
    session.run("pytest", *args, env={"PYTHONDONTWRITEBYTECODE": "1"})


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
        "-m",
        "slurm",
        "-p",
        "no:cacheprovider",
        "-v",
        "-rs",  # the reason when the test bed cannot run here (a failure under CI=true)
        env={"CCSA_SLURM_TESTBED": os.environ.get("CCSA_SLURM_TESTBED", "1")},
    )
