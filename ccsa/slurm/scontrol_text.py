"""Split ``scontrol show job`` text output into per-job records (pure).

``scontrol show job`` (no id) prints every job slurmctld knows, one record per job, records
separated by blank (or whitespace-only) lines, each starting with ``JobId=N``. Array tasks and
heterogeneous components have their own ``JobId`` records, so one call serves many jobs, and each
job gets exactly the record upstream stores as ``slurmInfo`` (upstream runs one
``scontrol show job ID`` per job and keeps the text up to the first blank line).
`config_values` reads ``scontrol show config`` (``Key = Value`` lines) for ``check``.
"""

from __future__ import annotations

import re

__all__ = ["config_values", "first_record", "split_records"]

# One or more blank / whitespace-only lines end a record.
_SEPARATOR = re.compile(r"\n(?:[ \t]*\n)+")
_JOB_ID = re.compile(r"JobId=([0-9]+)")
_CONFIG_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)\s*=\s?(.*)$")


def _chunks(text: str) -> list[str]:
    text = text.replace("\r\n", "\n").strip("\n")
    if text.startswith("CLUSTER:"):
        text = text.partition("\n")[2]
    return [c.rstrip() for c in _SEPARATOR.split(text) if c.strip()]


def split_records(text: str) -> dict[int, str]:
    """Records of ``scontrol show job`` text keyed by JobId, in output order.

    A leading ``CLUSTER: name`` line is dropped; blocks that do not start with ``JobId=N``
    (``No jobs in the system``) are ignored; if a JobId occurs twice, the first record wins.
    """
    records: dict[int, str] = {}
    for chunk in _chunks(text):
        m = _JOB_ID.match(chunk)
        if m is None:
            continue
        records.setdefault(int(m.group(1)), chunk)
    return records


def first_record(text: str) -> str:
    """The text up to the first blank line (upstream's ``slurmInfo``), or "" if there is none."""
    chunks = _chunks(text)
    return chunks[0] if chunks else ""


def config_values(text: str) -> dict[str, str]:
    """``Key = Value`` lines of ``scontrol show config`` (first occurrence wins, values
    stripped). Header lines (``Configuration data as of ...``) and section titles without ``=``
    are ignored; so are the indented plugin blocks' duplicate keys, by first-wins."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        m = _CONFIG_LINE.match(line)
        if m is not None:
            values.setdefault(m.group(1), m.group(2).strip())
    return values
