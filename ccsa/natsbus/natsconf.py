"""Check NATS settings before connecting: the subject, credentials files and NKey seeds.

Every problem is a ``ConfigError`` naming the file and key (nats-py itself loops forever on a
creds file without a JWT block, or fails deep inside its reader on a bad seed).
"""

from __future__ import annotations

from pathlib import Path

from ccsa.errors import ConfigError

__all__ = [
    "DEFAULT_CC_BACKEND_SUBJECT",
    "UPSTREAM_DEFAULT_SUBJECT",
    "check_creds",
    "check_seed",
    "describe",
    "read_file",
    "subject_warning",
]

#: cc-slurm-adapter's default ``natsSubject``.
UPSTREAM_DEFAULT_SUBJECT = "jobs"
#: cc-backend's documented ``subject-job-event``.
DEFAULT_CC_BACKEND_SUBJECT = "cc.job.event"


def subject_warning(subject: str) -> str | None:
    """A warning when ``natsSubject`` is left at upstream's default (``jobs``), else None."""
    if subject != UPSTREAM_DEFAULT_SUBJECT:
        return None
    return (
        f"natsSubject is {subject!r} (cc-slurm-adapter's default) but cc-backend's documented "
        f"subject-job-event is {DEFAULT_CC_BACKEND_SUBJECT!r}: unless cc-backend's "
        "main.api-subjects.subject-job-event is also 'jobs', every published job is lost silently"
    )


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def read_file(path: str, key: str) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(path, f"cannot read: {reason}", key=key) from None


def check_seed(seed: str, path: str, key: str) -> None:
    try:
        import nkeys  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        raise ConfigError(
            path, "NKey/creds auth needs the 'nkeys' package (pip install 'nats-py[nkeys]')", key
        ) from None
    try:
        nkeys.from_seed(bytearray(seed.strip().encode()))
    except Exception as exc:  # nkeys raises its own error types and binascii errors
        raise ConfigError(path, f"not a valid NKey seed ({describe(exc)})", key=key) from None


def check_creds(path: str) -> None:
    """nats-py loops forever on a creds file without a JWT block, so check it up front."""
    key = "natsCredsFile"
    text = read_file(path, key)
    lines = text.splitlines()
    for marker in ("BEGIN NATS USER JWT", "BEGIN USER NKEY SEED"):
        index = next((i for i, line in enumerate(lines) if marker in line), None)
        if index is None or index + 1 >= len(lines) or not lines[index + 1].strip():
            raise ConfigError(path, f"not a NATS creds file: no '-----{marker}-----' block", key)
    seed_index = next(i for i, line in enumerate(lines) if "BEGIN USER NKEY SEED" in line)
    check_seed(lines[seed_index + 1], path, key)
