"""`check`'s report rows: `Finding` (check, level, detail, fix), the exit status, and `render`.

`render` prints a rich table on a terminal and plain lines otherwise; the exit status is 0 only
when no finding is a failure (warnings are allowed).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TextIO

__all__ = ["Finding", "Level", "exit_status", "render"]

#: ``skip``: the check could not run because something it needs failed (reported in its own row).
Level = Literal["ok", "warn", "fail", "info", "skip"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One row of the report: ``fix`` says what to do (empty when nothing is needed)."""

    check: str
    level: Level
    detail: str
    fix: str = ""


def exit_status(findings: Iterable[Finding]) -> int:
    """0 when nothing failed (warnings are allowed), else 1."""
    return 1 if any(f.level == "fail" for f in findings) else 0


_MARK = {"ok": "OK", "warn": "WARN", "fail": "FAIL", "info": "INFO", "skip": "SKIP"}
_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "info": "cyan", "skip": "dim"}


def render(findings: Sequence[Finding], out: TextIO, *, rich: bool | None = None) -> None:
    """A table (check, result, what to do): rich on a terminal, plain text otherwise."""
    use_rich = out.isatty() if rich is None else rich
    if use_rich:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="cc-slurm-adapter check", show_lines=False)
        table.add_column("check", no_wrap=True)
        table.add_column("result")
        table.add_column("what to do")
        for f in findings:
            result = f"[{_STYLE[f.level]}]{_MARK[f.level]}[/] {_escape(f.detail)}"
            table.add_row(f.check, result, _escape(f.fix))
        Console(file=out, soft_wrap=False).print(table)
    else:
        for f in findings:
            out.write(f"{_MARK[f.level]:<4}  {f.check}: {f.detail}\n")
            if f.fix:
                out.write(f"      fix: {f.fix}\n")
    failed = sum(f.level == "fail" for f in findings)
    warned = sum(f.level == "warn" for f in findings)
    out.write(
        f"{'everything needed works' if not failed else f'{failed} check(s) failed'}"
        f"{f', {warned} warning(s)' if warned else ''}\n"
    )


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
