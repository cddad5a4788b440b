"""Prolog/Epilog mode: tell the running daemon that slurmctld started or ended a job.

slurmctld runs this (through ``hooks/hook.sh``) for every job start and end, so it does one
blocking thing: collect the ``SLURM_*``/``CUDA_*`` variables, connect to ``prepSockConnectPath``
(Unix or TCP), send them as one flat JSON object (upstream's payload: env var name -> value), close.
Connect and send share one deadline of :data:`TIMEOUT` seconds. Any failure is one line on stderr
and exit status 1; ``hooks/hook.sh`` turns that into ``exit 0`` so a job never fails because of us.

Stdlib only and frugal even there, because the interpreter start is most of this command's cost
(``benchmarks/bench_hook.py`` measures it against a bare ``python -I -S``). The installed
``cc-slurm-adapter`` (``scripts/cc-slurm-adapter``, a shell/Python polyglot) runs this path with
``python -I -S``: no site, no ``.pth`` files, no console-script wrapper; ``os`` is not loaded
then, so this module uses ``posix`` (what ``os`` wraps) for the environment and ``_exit``.

* The payload is written by hand (:func:`encode`, a ``str.translate`` table) instead of with
  ``json``: ``json`` imports ``re``, which costs about as much as the interpreter start, and even
  the C encoder behind it is one more shared library to load. Writing it by hand also fixes what
  ``json.dumps`` gets wrong here: a variable holding bytes that are not UTF-8 reaches Python as
  lone surrogates (``surrogateescape``), which ``json.dumps`` writes as ``\\udcXX`` escapes that
  strict decoders (the daemon's msgspec) reject, losing the whole message. :func:`text` writes
  such bytes as ``\\xNN`` text instead, so the message stays valid and keeps what the bytes were.
* The config file is parsed only when it mentions ``prepSockConnectPath`` (otherwise the default
  socket applies), and then with the C scanner behind ``json.loads`` (``_json.make_scanner``),
  not ``json`` itself (``re`` again).
* It talks to ``_socket`` directly: ``socket`` drags in ``enum``, ``selectors`` and
  ``collections``, and all it adds here is ``create_connection``, a ten-line loop over
  ``getaddrinfo``.
* :func:`exit_now` ends the console script with ``posix._exit`` once stderr is flushed and the
  socket closed: the interpreter's teardown (module cleanup, final garbage collection) cost about
  a fifth of the interpreter start and had nothing left to do.
"""

import _socket
import posix  # what os wraps: `os` itself imports stat, posixpath, abc... (no site to pay it)
import sys
import time

from ccsa.sockaddr import SockAddr, TcpAddr, UnixAddr, parse

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs more than the hook
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any, NoReturn

DEFAULT_CONFIG_PATH = "/etc/cc-slurm-adapter/config.json"
DEFAULT_SOCK = "/run/cc-slurm-adapter/daemon.sock"
CONTEXTS = ("prolog_slurmctld", "epilog_slurmctld")
TIMEOUT = 2.0
PROG = "cc-slurm-adapter"

# The variables upstream sends (slurmctld's PrologSlurmctld/EpilogSlurmctld environment, see
# https://slurm.schedmd.com/prolog_epilog.html). They are always present in the payload, "" when
# unset, so a decoder written for upstream's fixed struct finds every key. Any other SLURM_* or
# CUDA_* variable slurmctld sets is sent as well.
UPSTREAM_VARS = (
    "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE",
    "CUDA_VISIBLE_DEVICES",
    "GPU_DEVICE_ORDINAL",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_MAX",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_STEP",
    "SLURM_CLUSTER_NAME",
    "SLURM_JOB_ACCOUNT",
    "SLURM_JOB_COMMENT",
    "SLURM_JOB_CONSTRAINTS",
    "SLURM_JOB_CPUS_PER_NODE",
    "SLURM_JOB_DERIVED_EC",
    "SLURM_JOB_END_TIME",
    "SLURM_JOB_EXIT_CODE",
    "SLURM_JOB_EXIT_CODE2",
    "SLURM_JOB_EXTRA",
    "SLURM_JOB_GID",
    "SLURM_JOB_GROUP",
    "SLURM_JOB_ID",
    "SLURM_JOB_LICENSES",
    "SLURM_JOB_NAME",
    "SLURM_JOB_NODELIST",
    "SLURM_JOB_NUM_NODES",
    "SLURM_JOB_OVERSUBSCRIBE",
    "SLURM_JOB_PARTITION",
    "SLURM_JOB_RESERVATION",
    "SLURM_JOB_RESTART_COUNT",
    "SLURM_JOB_START_TIME",
    "SLURM_JOB_STDERR",
    "SLURM_JOB_STDIN",
    "SLURM_JOB_STDOUT",
    "SLURM_JOB_UID",
    "SLURM_JOB_USER",
    "SLURM_JOB_WORK_DIR",
    "SLURM_SCRIPT_CONTEXT",
    "SLURM_WCKEY",
)


class HookError(Exception):
    """A reason to give up, already phrased as the one stderr line."""


def collect(environ: "Mapping[str, str]") -> dict[str, str]:
    """Upstream's variables ("" when unset) plus every other ``SLURM_*``/``CUDA_*`` one."""
    env = {name: environ.get(name, "") for name in UPSTREAM_VARS}
    for name, value in environ.items():
        if name.startswith(("SLURM_", "CUDA_")):
            env[name] = value
    return env


def check(env: "Mapping[str, str]") -> None:
    """Refuse to run outside slurmctld's Prolog/Epilog (upstream errors there too)."""
    context = env.get("SLURM_SCRIPT_CONTEXT", "")
    if context not in CONTEXTS:
        shown = f"is {context!r}" if context else "is not set"
        raise HookError(
            f"SLURM_SCRIPT_CONTEXT {shown}, expected prolog_slurmctld or epilog_slurmctld: "
            "not run as PrologSlurmctld/EpilogSlurmctld (to start the daemon use -daemon; "
            "see -help)"
        )
    if not env.get("SLURM_JOB_ID"):
        raise HookError(f"{context}: SLURM_JOB_ID is not set, nothing to report")


# JSON's escapes for the characters a JSON string cannot hold as they are, the same spellings as
# ``json.dumps``: the quote, the backslash and the control characters U+0000-U+001F.
_ESCAPES = {code: f"\\u{code:04x}" for code in range(0x20)} | {
    ord('"'): '\\"',
    ord("\\"): "\\\\",
    ord("\b"): "\\b",
    ord("\f"): "\\f",
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
}


def text(value: str) -> str:
    """``value`` made encodable as UTF-8, keeping what it held.

    ``os.environ`` decodes bytes that are not UTF-8 to lone surrogates U+DC80-U+DCFF
    (``surrogateescape``); those bytes become the four characters ``\\xNN``. Any other lone
    surrogate (never from ``os.environ``) becomes ``\\udNNN``. Valid text is returned as it is.
    """
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return raw.decode("utf-8", "backslashreplace")
    return value


def quote(value: str) -> str:
    """One JSON string literal, as ``json.dumps(value, ensure_ascii=False)`` writes valid text."""
    value = text(value)
    # Most values need no escape; three C-level scans tell so faster than translate() finds out.
    if value.isprintable() and '"' not in value and "\\" not in value:
        return '"' + value + '"'
    return '"' + value.translate(_ESCAPES) + '"'


def encode(env: "Mapping[str, str]") -> bytes:
    """One flat JSON object in UTF-8, as ``json.dumps(env, ensure_ascii=False,
    separators=(",", ":"))`` writes it (without ``json``); undecodable bytes as :func:`text`."""
    body = ",".join(quote(name) + ":" + quote(value) for name, value in env.items())
    return ("{" + body + "}").encode("utf-8")


def connect_address(config_path: str | None) -> tuple[SockAddr, str]:
    """The daemon's address and where it came from (for the error line).

    Like upstream: without ``-config`` an unreadable or missing default file means the default
    socket; a file given with ``-config`` must be readable.
    """
    path = config_path or DEFAULT_CONFIG_PATH
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        if config_path is None:
            return parse(DEFAULT_SOCK), "default"
        raise HookError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if b'"prepsockconnectpath"' not in data.lower():
        return parse(DEFAULT_SOCK), "default"
    try:
        raw = _parse_json(data.decode("utf-8"))
    except (ValueError, StopIteration) as exc:
        raise HookError(f"{path}: not valid JSON: {_json_error(exc)}") from None
    if not isinstance(raw, dict):
        raise HookError(f"{path}: must hold one JSON object")
    # Exact spelling first, then any case (Go's encoding/json, upstream, ignores case).
    matches = [k for k in raw if isinstance(k, str) and k.lower() == "prepsockconnectpath"]
    key = "prepSockConnectPath" if "prepSockConnectPath" in raw else (matches or [""])[0]
    value = raw.get(key, DEFAULT_SOCK)
    if not isinstance(value, str):
        raise HookError(f"{path}: key 'prepSockConnectPath': must be a string")
    try:
        return parse(value), f"prepSockConnectPath in {path}"
    except ValueError as exc:
        raise HookError(f"{path}: key 'prepSockConnectPath': {exc}") from None


class _JsonContext:
    """What ``_json.make_scanner`` reads from ``json.JSONDecoder``: plain JSON, nothing custom."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        raise ValueError(f"{name} is not JSON")


def _parse_json(text: str) -> object:
    """``json.loads`` through the C scanner directly (``json`` itself would import ``re``)."""
    from _json import make_scanner

    start = len(text) - len(text.lstrip(" \t\r\n"))
    try:
        value, end = make_scanner(_JsonContext())(text, start)  # type: ignore[arg-type]
    except SystemError:
        # Some syntax errors make the C scanner look up json.decoder.JSONDecodeError, which
        # only works once json is imported: on that (rare) path, let json say what is wrong.
        import json

        return json.loads(text)
    if text[end:].strip(" \t\r\n"):
        raise ValueError(f"extra data at character {end}")
    return value


def _json_error(exc: BaseException) -> str:
    if isinstance(exc, StopIteration):
        return f"expected a value at character {exc.value}"
    return str(exc)


def send(addr: SockAddr, payload: bytes, timeout: float = TIMEOUT) -> None:
    """Connect, send everything, close; connect and send together take at most ``timeout``."""
    deadline = time.monotonic() + timeout
    sock = _connect(addr, deadline)
    try:
        sock.settimeout(_remaining(deadline))
        sock.sendall(payload)
    finally:
        sock.close()


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left


def _connect(addr: SockAddr, deadline: float) -> _socket.socket:
    if isinstance(addr, UnixAddr):
        targets: list[tuple[int, int, int, str | tuple[Any, ...]]] = [
            (_socket.AF_UNIX, _socket.SOCK_STREAM, 0, addr.path)
        ]
    else:
        assert isinstance(addr, TcpAddr)
        infos = _socket.getaddrinfo(addr.connect_host, addr.port, 0, _socket.SOCK_STREAM)
        targets = [(family, kind, proto, sa) for family, kind, proto, _, sa in infos]
    error: OSError = OSError(f"no address for {addr}")
    for family, kind, proto, target in targets:
        while True:
            sock = _socket.socket(family, kind, proto)
            try:
                sock.settimeout(_remaining(deadline))
                sock.connect(target)
            except BlockingIOError:
                # A Unix socket whose listen backlog is full fails at once with EAGAIN instead of
                # waiting (a busy daemon during a burst of job starts): retry until the deadline.
                sock.close()
                _remaining(deadline)
                time.sleep(0.02)
                continue
            except OSError as exc:
                sock.close()
                error = exc
                break
            return sock
    raise error


def environ() -> dict[str, str]:
    """The process environment decoded as ``os.environ`` decodes it (file system encoding,
    ``surrogateescape``), read from ``posix`` directly."""
    enc, errors = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
    return {k.decode(enc, errors): v.decode(enc, errors) for k, v in posix.environ.items()}


def run(config_path: str | None, environ: "Mapping[str, str]") -> None:
    """The whole hook, raising ``HookError`` with the line to print."""
    env = collect(environ)
    check(env)
    addr, origin = connect_address(config_path)
    try:
        send(addr, encode(env))
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise HookError(
            f"job {env['SLURM_JOB_ID']} ({env['SLURM_SCRIPT_CONTEXT']}): cannot reach the daemon "
            f"at {addr} ({origin}): {reason}; is cc-slurm-adapter -daemon running?"
        ) from None


def main(config_path: str | None, argv: "Sequence[str]" = ()) -> int:
    """Entry point of hook mode. ``argv``: arguments the CLI did not recognise (an error)."""
    try:
        if argv:
            raise HookError(
                f"unexpected argument(s) {' '.join(argv)!r} in Prolog/Epilog mode (see -help)"
            )
        run(config_path, environ())
    except HookError as exc:
        line = " ".join(str(exc).split())
        sys.stderr.write(f"{PROG}: {line}\n")
        return 1
    return 0


def exit_now(status: int) -> "NoReturn":
    """End the process with ``status`` at once, skipping the interpreter's teardown.

    Only for the console script (:func:`ccsa.cli.main` without ``argv``), once :func:`main` has
    returned: the socket is closed and nothing else is open or registered, so all the teardown
    would do is free memory the kernel frees anyway. The standard streams are flushed first.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):  # None, a closed pipe, a closed file
            pass
    posix._exit(status)
