"""The two files a host install needs besides the Python package: the systemd unit and the
Prolog/Epilog hook script, and ``cc-slurm-adapter files``, which lists, prints or installs them.

The wheel carries them as package data (``ccsa/data/``, copied at build time from the repository's
``systemd/`` and ``hooks/`` by ``[tool.hatch.build.targets.wheel.force-include]`` in
pyproject.toml), byte for byte; from a checkout (an editable install) they are read where they
sit in the repository. ``--install`` writes each one to its place under ``--root`` (default
``/``) with its mode, atomically (temporary file + rename), keeps a file it replaces as
``NAME.bak`` and leaves identical files alone, so re-running it after an upgrade is safe.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated

from cyclopts import Parameter

__all__ = ["FILES", "HostFile", "files_command", "install", "read"]


@dataclass(frozen=True)
class HostFile:
    """One file: its name in the package, its path in the repository, where it is installed."""

    name: str
    source: str
    target: str
    mode: int


FILES = (
    HostFile(
        "cc-slurm-adapter.service",
        "systemd/cc-slurm-adapter.service",
        "/etc/systemd/system/cc-slurm-adapter.service",
        0o644,
    ),
    HostFile("hook.sh", "hooks/hook.sh", "/opt/cc-slurm-adapter/hook.sh", 0o755),
)


def read(f: HostFile) -> bytes:
    """The file's bytes from the installed package, else from the checkout this module sits in."""
    packaged = resources.files("ccsa") / "data" / f.name
    if packaged.is_file():
        return packaged.read_bytes()
    checkout = Path(__file__).resolve().parent.parent / f.source
    if checkout.is_file():
        return checkout.read_bytes()
    raise FileNotFoundError(f"{f.name}: neither in the installed package nor at {checkout}")


def install(f: HostFile, root: Path) -> str:
    """Write ``f`` to ``root``/its target with its mode; return one line saying what happened."""
    dest = root / f.target.lstrip("/")
    data = read(f)
    if dest.is_file() and dest.read_bytes() == data:
        os.chmod(dest, f.mode)
        return f"unchanged {dest}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, f.mode)
    if dest.exists():
        os.replace(dest, dest.with_name(dest.name + ".bak"))
        os.replace(tmp, dest)
        return f"updated {dest} (mode {f.mode:04o}; the previous file is {dest.name}.bak)"
    os.replace(tmp, dest)
    return f"installed {dest} (mode {f.mode:04o})"


def files_command(
    *,
    print_file: Annotated[str | None, Parameter(name="--print")] = None,
    install_files: Annotated[bool, Parameter(name="--install")] = False,
    root: str = "/",
) -> int:
    """List, print or install the systemd unit and the Prolog/Epilog hook script.

    Parameters
    ----------
    print_file
        Print this file (cc-slurm-adapter.service or hook.sh) to stdout, byte for byte.
    install_files
        Install both files to their places (unit 0644, hook 0755); a changed file is kept as .bak.
    root
        Install below this directory instead of / (staging, packaging).
    """
    from ccsa import cli

    by_name = {f.name: f for f in FILES}
    try:
        if print_file is not None:
            if print_file not in by_name:
                names = ", ".join(by_name)
                return cli.fail(f"files --print: unknown file {print_file!r} (one of: {names})", 2)
            sys.stdout.buffer.write(read(by_name[print_file]))
            sys.stdout.flush()
            return 0
        if install_files:
            for f in FILES:
                print(install(f, Path(root)))
            print("then: systemctl daemon-reload (see docs/admin-guide.md for the procedure)")
            return 0
    except BrokenPipeError:
        raise  # the reader left (`files --print hook.sh | head -1`): cli.main ends quietly
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        return cli.fail(f"files:{where}: {exc.strerror or exc}", 1)
    for f in FILES:
        print(f"{f.name:26} -> {f.target} (mode {f.mode:04o})")
    print("print one with --print NAME, install both with --install [--root DIR]")
    return 0
