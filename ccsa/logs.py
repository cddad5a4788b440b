"""Logging setup: one stderr handler, upstream's ``-debug`` levels 0-5, journald priorities.

``-debug N`` maps onto the stdlib levels: 0 critical, 1 error, 2 warning (default), 3 info,
4 debug, 5 trace (``TRACE``, below DEBUG: one line per job and Slurm call). One logger is louder:
:data:`SUMMARY` logs at INFO from the default level up, so a healthy daemon shows one line per
sync in the journal (docs/admin-guide.md, "Log lines"). Under systemd
(``JOURNAL_STREAM`` set) every line starts with its syslog priority (``<3>`` ...) instead of a
timestamp, so journald files it at the right priority and adds its own time. Secrets registered
with :func:`redact` (the JWT, the NATS password) are replaced by ``***`` in every formatted line,
tracebacks included, so a careless ``log.debug("%r", headers)`` cannot leak them.

Stdlib only, so that importing it costs nothing.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

DEFAULT_LEVEL = 2
#: The logger of the lines a healthy daemon writes at the default level (one INFO line per sync
#: and cluster): enabled at INFO from ``-debug 2`` up, silent at 0 and 1 like everything else.
SUMMARY = "ccsa.summary"
_LEVELS = {
    0: logging.CRITICAL,
    1: logging.ERROR,
    2: logging.WARNING,
    3: logging.INFO,
    4: logging.DEBUG,
    5: TRACE,
}
# syslog priorities (sd-daemon(3)): 2 crit, 3 err, 4 warning, 6 info, 7 debug.
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))

# Shorter secrets would blank out ordinary words; the config's secrets are far longer.
MIN_REDACT_LEN = 6
_secrets: set[str] = set()


def level_for(debug: int) -> int:
    """The stdlib level for upstream's ``-debug`` value; ``ValueError`` outside 0..5."""
    if debug not in _LEVELS:
        raise ValueError(f"-debug {debug}: the log level must be 0..5 (default {DEFAULT_LEVEL})")
    return _LEVELS[debug]


def priority(levelno: int) -> int:
    """The syslog priority journald should file a record of ``levelno`` under."""
    for threshold, prio in _PRIORITIES:
        if levelno >= threshold:
            return prio
    return 7


def redact(secret: str) -> None:
    """Register a secret that must never appear in a log line (ignored when very short)."""
    if len(secret) >= MIN_REDACT_LEN:
        _secrets.add(secret)


def scrub(text: str) -> str:
    """Replace every registered secret in ``text`` by ``***``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class _Formatter(logging.Formatter):
    def __init__(self, journald: bool) -> None:
        fmt = (
            "%(name)s: %(message)s"
            if journald
            else "%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        super().__init__(fmt)
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        text = scrub(super().format(record))
        if not self.journald:
            return text
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in text.split("\n"))


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is at emit time (tests swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


_handler: _StderrHandler | None = None


def setup(level: int = DEFAULT_LEVEL) -> None:
    """Configure the ``ccsa`` logger tree once (calling again replaces the previous setup)."""
    global _handler
    stdlib_level = level_for(level)
    logger = logging.getLogger("ccsa")
    if _handler is not None:
        logger.removeHandler(_handler)
    _handler = _StderrHandler()
    _handler.setFormatter(_Formatter(journald=bool(os.environ.get("JOURNAL_STREAM"))))
    logger.addHandler(_handler)
    logger.setLevel(stdlib_level)
    summary = min(stdlib_level, logging.INFO) if level >= DEFAULT_LEVEL else stdlib_level
    logging.getLogger(SUMMARY).setLevel(summary)
