"""The exception tree of ccsa. Every message names the file, key, command or job involved.

::

    CcsaError
     ├── ConfigError            bad config file: names the file and the key
     ├── SlurmError             a Slurm command could not give us what we need
     │    ├── SlurmCommandError     non-zero exit (carries argv, exit status, stderr)
     │    ├── SlurmTimeout          the command ran past its timeout and was killed
     │    └── SlurmDecodeError      the output is not the JSON we expect (JSON path, version)
     ├── BackendError           talking to cc-backend failed
     │    ├── BackendUnavailable    transport error, timeout, 5xx: try again later
     │    │    └── BackendBlocked       401/403 or an answer not from cc-backend: the channel waits
     │    └── BackendRejected       4xx that retrying will not change (status + cc-backend's text)
     ├── PublishError           NATS publish failed (connection down, timeout)
     ├── StateError             the durable state store cannot be opened or written
     └── DaemonError            the daemon cannot start (PID file, socket, Slurm version)

Low-level exceptions (``OSError``, ``msgspec.ValidationError``, ``httpx.TransportError``...)
are mapped onto these at the module boundary with ``raise ... from exc``; loops in the daemon
catch only the transient families (``SlurmError``, ``BackendUnavailable``, ``PublishError``).
"""

from __future__ import annotations

from collections.abc import Sequence


class CcsaError(Exception):
    """Base class of every error ccsa raises on purpose."""


class ConfigError(CcsaError):
    """The configuration file is missing, unreadable or invalid."""

    def __init__(self, file: str, message: str, key: str | None = None) -> None:
        self.file = file
        self.key = key
        self.message = message
        where = f"{file}: key {key!r}: " if key else f"{file}: "
        super().__init__(where + message)


class SlurmError(CcsaError):
    """A Slurm command failed or printed something we cannot use."""


def _short(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class SlurmCommandError(SlurmError):
    """A Slurm command exited non-zero (or could not be started)."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        status = "could not be started" if returncode is None else f"exited {returncode}"
        detail = f": {_short(stderr)}" if stderr.strip() else ""
        super().__init__(f"`{' '.join(self.argv)}` {status}{detail}")


class SlurmTimeout(SlurmError):
    """A Slurm command ran longer than its timeout and was killed."""

    def __init__(self, argv: Sequence[str], timeout: float, stderr: str = "") -> None:
        self.argv = list(argv)
        self.timeout = timeout
        self.stderr = stderr
        super().__init__(f"`{' '.join(self.argv)}` timed out after {timeout:g} s and was killed")


class SlurmDecodeError(SlurmError):
    """The output of a Slurm command does not decode into the shape ccsa needs."""

    def __init__(
        self,
        command: str,
        message: str,
        *,
        path: str | None = None,
        version: str | None = None,
        data_parser: str | None = None,
    ) -> None:
        self.command = command
        self.path = path
        self.version = version
        self.data_parser = data_parser
        self.message = message
        parts = [f"{command}: cannot decode output"]
        if path:
            parts.append(f"at {path}")
        origin = ", ".join(x for x in (f"Slurm {version}" if version else "", data_parser) if x)
        text = " ".join(parts) + f": {message}"
        if origin:
            text += f" ({origin})"
        super().__init__(text)


class BackendError(CcsaError):
    """cc-backend could not be reached or did not accept a request."""


class BackendUnavailable(BackendError):
    """Transient: connection refused/reset, timeout, or a 5xx answer. Retry later."""

    def __init__(self, what: str, reason: str, status: int | None = None) -> None:
        self.what = what
        self.reason = reason
        self.status = status
        super().__init__(f"cc-backend {what}: {reason}")


class BackendBlocked(BackendUnavailable):
    """The answer is about the channel, not the request: 401/403 (the token), or a 4xx/5xx
    without cc-backend's JSON error body (a reverse proxy's HTML 404/413/502). Every request
    would get it: pause the channel, retry with backoff, never park the job."""


class BackendRejected(BackendError):
    """Permanent: cc-backend answered 4xx with a reason that retrying does not change."""

    def __init__(self, what: str, status: int, reason: str) -> None:
        self.what = what
        self.status = status
        self.reason = reason
        super().__init__(f"cc-backend {what}: rejected with {status}: {reason}")


class PublishError(CcsaError):
    """A NATS publish could not be completed (not connected, timeout, server error)."""


class StateError(CcsaError):
    """The durable state store (SQLite) cannot be opened, read or written."""


class DaemonError(CcsaError):
    """The daemon cannot start: PID file held, socket not bindable, unsupported Slurm."""
