"""The backfill's window (pure parts and its checkpoint): time arguments, chunks, resume file.

`parse_time` reads ``--since``/``--until``/``--chunk``; `chunks` cuts [since, until) into
windows; `Checkpoint` remembers per cluster and window where the walk got to, in
``<stateDbPath>.backfill.json`` (written atomically after each chunk's actions are queued).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ccsa.errors import ConfigError

__all__ = ["Checkpoint", "chunks", "parse_time", "utc"]

log = logging.getLogger(__name__)


def parse_time(text: str, now: float, what: str = "--since") -> float:
    """``2026-11-01``, ``2026-11-01T06:00[:00]`` (UTC unless it has an offset), an epoch number,
    or ``7d`` / ``12h`` / ``30m`` (that long before now). ConfigError names the option."""
    value = text.strip()
    rel = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([dhm])", value)
    if rel:
        factor = {"d": 86400, "h": 3600, "m": 60}[rel.group(2)]
        return now - float(rel.group(1)) * factor
    if re.fullmatch(r"\d{9,}(\.\d+)?", value):
        return float(value)
    if value == "now":
        return now
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            "command line",
            f"{text!r} is not a date (use YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS], an epoch, or 7d)",
            what,
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def chunks(since: float, until: float, step: float) -> list[tuple[float, float]]:
    """[since, until) cut into consecutive windows of at most ``step`` seconds."""
    if step <= 0:
        raise ValueError("chunk must be > 0")
    out: list[tuple[float, float]] = []
    begin = since
    while begin < until:
        end = min(begin + step, until)
        out.append((begin, end))
        begin = end
    return out


def utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S")


@dataclass
class Checkpoint:
    """Where each (cluster, window) walk got to, in ``<stateDbPath>.backfill.json``."""

    path: str
    done: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def key(cluster: str, since: float, until: float) -> str:
        return f"{cluster}|{int(since)}|{int(until)}"

    @classmethod
    def load(cls, path: str) -> Checkpoint:
        try:
            with open(path, encoding="utf-8") as fh:
                raw = json.load(fh)
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable backfill checkpoint %s: %s", path, exc)
            return cls(path)
        done = {str(k): float(v) for k, v in raw.items() if isinstance(v, int | float)}
        return cls(path, done)

    def get(self, cluster: str, since: float, until: float) -> float:
        return self.done.get(self.key(cluster, since, until), since)

    def save(self, cluster: str, since: float, until: float, reached: float) -> None:
        self.done[self.key(cluster, since, until)] = reached
        tmp = f"{self.path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(self.done, fh, indent=1, sort_keys=True)
        os.replace(tmp, self.path)
