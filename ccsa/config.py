"""Load and validate the JSON config file (upstream's format) into one frozen ``Config``.

``ConfigFile`` declares each key once (name, type, default, constraints, clamp floor); ``KEYS``,
``NEW_KEYS`` and ``CLAMPS`` are derived from it, and ``Config`` is the same keys with their
validated types. Only ``ccRestUrl`` and ``ccRestJwt`` are required. Every problem becomes a
``ConfigError`` that names the file and the key; unknown keys, clamped values and a
world-readable file become warnings (kept in ``Config.warnings`` and logged). Regexes are
compiled and socket addresses parsed once, here. The two secrets are ``Secret`` values whose
``repr``/``str`` hide them, and are registered with :func:`ccsa.logs.redact` so that no log line
can show them.

Pure apart from reading the file and ``stat``-ing the paths it names.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
import stat
from typing import Annotated, Any, ClassVar, Literal, get_args
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from ccsa import logs, sockaddr
from ccsa.errors import ConfigError
from ccsa.sockaddr import SockAddr

DEFAULT_CONFIG_PATH = "/etc/cc-slurm-adapter/config.json"
DEFAULT_SOCK = "/run/cc-slurm-adapter/daemon.sock"

log = logging.getLogger(__name__)


class Secret:
    """A string that never shows itself in ``repr``/``str``/f-strings; ``.get()`` returns it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    def __str__(self) -> str:
        return "***" if self._value else ""

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


class GpuMap(msgspec.Struct, frozen=True):
    """One ``gpuPciAddrs`` entry: hostname regex -> PCI addresses in NVML order."""

    pattern: re.Pattern[str]
    source: str
    addrs: tuple[str, ...]


# Meta markers on ConfigFile's fields: ``_NEW`` marks ccsa's additions (defaults keep upstream
# behaviour; docs/config.md says "new"), ``_clamp(low)`` a value raised to ``low`` with a warning
# (upstream clamps these too) rather than refused.
_NEW = Meta(extra={"new": True})
_PORT = Meta(ge=1, le=65535, description="a TCP port, 1..65535")
_POSITIVE = Meta(gt=0, description="seconds, greater than 0")


def _clamp_to(low: float) -> Meta:
    return Meta(extra={"clamp": low})


class ConfigFile(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Every key of the file, declared once: JSON name (camelCase of the attribute unless
    ``name=`` says otherwise), type as written, default, constraints, clamp floor, new-ness."""

    pid_file_path: str = "/run/cc-slurm-adapter/daemon.pid"
    prep_sock_listen_path: str = DEFAULT_SOCK
    prep_sock_connect_path: str = DEFAULT_SOCK
    last_run_path: str = "/var/lib/cc-slurm-adapter/lastrun"
    slurm_poll_interval: Annotated[float, _clamp_to(1)] = 60
    slurm_query_delay: Annotated[float, _clamp_to(1)] = 1
    slurm_query_max_span: Annotated[float, _POSITIVE] = 7 * 24 * 3600
    slurm_max_retries: Annotated[int, _clamp_to(0)] = 10
    slurm_max_concurrent: Annotated[int, _clamp_to(1), _NEW] = 10
    cc_poll_interval: Annotated[float, _clamp_to(1)] = 6 * 3600
    cc_rest_submit_jobs: bool = True
    cc_rest_url: str | None = None
    cc_rest_jwt: str | None = None
    gpu_pci_addrs: dict[str, object] = {}
    ignore_hosts: str = ""
    nats_server: str = ""
    nats_port: Annotated[int, _PORT] = 4222
    nats_subject: str = "jobs"
    nats_user: str = ""
    nats_password: str = ""
    nats_creds_file: str = ""
    nats_nkey_seed_file: str = msgspec.field(default="", name="natsNKeySeedFile")
    slurm_bin_dir: Annotated[str, _NEW] = ""
    slurm_command_timeout: Annotated[float, _POSITIVE, _NEW] = 120
    state_db_path: Annotated[str, _NEW] = ""
    sync_overlap: Annotated[float, _clamp_to(0), _NEW] = msgspec.field(
        default=300, name="slurmQueryOverlap"
    )
    cc_rest_timeout: Annotated[float, _POSITIVE, _NEW] = 30
    cc_rest_ca_file: Annotated[str, _NEW] = ""
    cc_rest_insecure: Annotated[bool, _NEW] = False
    metrics_listen: Annotated[str, _NEW] = ""
    #: Seconds parked rows (and their jobs' rows) of a cluster cc-backend does not know are
    #: kept before they are dropped (issue 17 item 7).
    unknown_cluster_retention: Annotated[float, _POSITIVE, _NEW] = 3 * 86400
    #: How the OS numbers the hardware threads of a core where cc-backend has no topology:
    #: "spread" (Linux on x86: thread t of core c is c + t * cores per node) or "consecutive".
    sibling_numbering: Annotated[
        Literal["spread", "consecutive"], _NEW, Meta(description='"spread" or "consecutive"')
    ] = "spread"


def _extra(field: msgspec.structs.FieldInfo) -> dict[str, object]:
    merged: dict[str, object] = {}
    for meta in get_args(field.type)[1:]:
        if isinstance(meta, Meta) and meta.extra:
            merged.update(meta.extra)
    return merged


_FIELDS = msgspec.structs.fields(ConfigFile)
#: attribute -> JSON key, derived from ConfigFile.
KEYS: dict[str, str] = {f.name: f.encode_name for f in _FIELDS}
#: ccsa's additions to upstream's keys.
NEW_KEYS = frozenset(f.encode_name for f in _FIELDS if _extra(f).get("new"))
#: attribute -> lowest accepted value (lower ones are raised to it with a warning).
CLAMPS: dict[str, float] = {
    f.name: float(low) for f in _FIELDS if isinstance(low := _extra(f).get("clamp"), int | float)
}
_DESCRIPTIONS = {
    f.encode_name: d
    for f in _FIELDS
    for d in (m.description for m in get_args(f.type)[1:] if isinstance(m, Meta))
    if d
}
_REMOVED = {
    "ipcSockPath": "it was removed upstream; use prepSockListenPath and prepSockConnectPath",
}


class Config(ConfigFile, frozen=True, kw_only=True):
    """The validated configuration: the file's keys (attribute names are their snake_case), with
    addresses parsed, regexes compiled, secrets wrapped, and where the file came from."""

    prep_sock_listen_path: SockAddr  # type: ignore[assignment]
    prep_sock_connect_path: SockAddr  # type: ignore[assignment]
    cc_rest_url: str
    cc_rest_jwt: Secret  # type: ignore[assignment]
    gpu_pci_addrs: tuple[GpuMap, ...]  # type: ignore[assignment]
    ignore_hosts: re.Pattern[str] | None  # type: ignore[assignment]
    nats_password: Secret  # type: ignore[assignment]
    config_path: str
    warnings: tuple[str, ...] = ()

    KEYS: ClassVar[dict[str, str]] = KEYS

    @property
    def nats_enabled(self) -> bool:
        """NATS publishing is on exactly when ``natsServer`` is set (upstream rule)."""
        return bool(self.nats_server)


def load(path: str) -> Config:
    """Read, parse and validate ``path``. Raises ``ConfigError`` naming the file (and key)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
            mode = os.fstat(fh.fileno()).st_mode
    except FileNotFoundError:
        raise ConfigError(path, "file not found (pass another one with -config FILE)") from None
    except IsADirectoryError:
        raise ConfigError(path, "is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(path, f"cannot read: {exc.strerror or exc}") from None
    raw = _decode(data, path)
    warnings: list[str] = []
    if mode & stat.S_IRWXO:
        warnings.append(
            f"{path}: the file is accessible by all users but holds the cc-backend JWT; "
            f"fix: chmod 0600 {path}"
        )
    known = set(KEYS.values())
    folded = {k.lower(): k for k in known}
    for key in list(raw):
        if key in known:
            continue
        canonical = folded.get(key.lower())
        if canonical is not None and canonical not in raw:
            # Go's encoding/json (upstream) matches keys case-insensitively: keep accepting them.
            raw[canonical] = raw.pop(key)
            warnings.append(f"{path}: key {key!r} is read as {canonical!r}; please spell it so")
            continue
        if key in _REMOVED:
            warnings.append(f"{path}: key {key!r} is ignored: {_REMOVED[key]}")
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        warnings.append(f"{path}: unknown key {key!r} is ignored{hint}")
    for message in warnings:  # now: they may explain an error found below
        log.warning("%s", message)
    try:
        parsed = msgspec.convert(raw, ConfigFile)
    except msgspec.ValidationError as exc:
        bad_key, message = _split_validation(str(exc))
        raise ConfigError(path, message, bad_key) from None
    return _build(parsed, path, warnings)


def make_config(**overrides: Any) -> Config:
    """A validated Config without a file, for tests: snake_case attributes as keywords.

    ``cc_rest_url`` and ``cc_rest_jwt`` default to a loopback URL and a dummy token. Values may
    be given in file form (str for addresses, secrets and regexes; a dict for gpu_pci_addrs) or as
    the typed values a Config holds. Runs the same validation as :func:`load`.
    """
    config_path = str(overrides.pop("config_path", "<make_config>"))
    unknown = set(overrides) - set(KEYS)
    if unknown:
        raise TypeError(f"make_config: unknown attribute(s) {sorted(unknown)}")
    values: dict[str, Any] = {"cc_rest_url": "http://127.0.0.1:8080", "cc_rest_jwt": "test-jwt"}
    for name, value in overrides.items():
        if isinstance(value, sockaddr.UnixAddr | sockaddr.TcpAddr):
            value = str(value)
        elif isinstance(value, Secret):
            value = value.get()
        elif isinstance(value, re.Pattern):
            value = value.pattern
        elif name == "ignore_hosts" and value is None:
            value = ""
        elif name == "gpu_pci_addrs" and isinstance(value, tuple | list):
            value = {m.source: list(m.addrs) for m in value}
        values[name] = value
    try:
        parsed = msgspec.convert({KEYS[k]: v for k, v in values.items()}, ConfigFile)
    except msgspec.ValidationError as exc:
        bad_key, message = _split_validation(str(exc))
        raise ConfigError(config_path, message, bad_key) from None
    return _build(parsed, config_path, [])


def _decode(data: bytes, path: str) -> dict[str, Any]:
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise ConfigError(path, f"not valid JSON: {_where(str(exc), data)}") from None
    except UnicodeDecodeError as exc:  # msgspec's answer to invalid UTF-8 inside a string
        raise ConfigError(path, f"not valid JSON: invalid UTF-8 at byte {exc.start}") from None
    except RecursionError:
        raise ConfigError(path, "not valid JSON: nested too deeply") from None
    if not isinstance(raw, dict):
        raise ConfigError(path, f"must hold one JSON object, not a {type(raw).__name__}")
    return raw


def _where(message: str, data: bytes) -> str:
    """Turn msgspec's ``(byte N)`` into ``line L column C``."""
    match = re.search(r"\(byte (\d+)\)$", message)
    if not match:
        return message
    offset = int(match.group(1))
    before = data[:offset]
    line = before.count(b"\n") + 1
    column = offset - (before.rfind(b"\n") + 1) + 1
    return f"{message[: match.start()].rstrip()} at line {line} column {column}"


def _split_validation(message: str) -> tuple[str | None, str]:
    """``Expected `int` >= 1 - at `$.natsPort` `` -> ("natsPort", "Expected ... (a TCP ...)")."""
    match = re.match(r"(.*) - at `\$\.([A-Za-z0-9_]+)(.*)`$", message)
    if not match:
        return None, message
    text, key, rest = match.groups()
    hint = f" ({_DESCRIPTIONS[key]})" if key in _DESCRIPTIONS and not rest else ""
    return key, f"{text}{' at ' + rest if rest else ''}{hint}"


def _build(f: ConfigFile, path: str, warnings: list[str]) -> Config:
    """Check what the types cannot say, derive the typed values, warn once for what is odd."""
    logged = len(warnings)
    url, jwt = _required(f, path)
    gpu, ignore = _regexes(f, path)
    socks = _sockets(f, path)
    _relations(f, path, warnings)
    clamped = _clamp(f, path, warnings)
    state_db = f.state_db_path or os.path.join(
        os.path.dirname(f.last_run_path) or ".", "state.sqlite3"
    )
    logs.redact(jwt)
    logs.redact(f.nats_password)
    for message in warnings[logged:]:
        log.warning("%s", message)
    values: dict[str, Any] = msgspec.structs.asdict(f)
    values.update(clamped)
    values.update(socks)
    return Config(
        **values
        | {
            "cc_rest_url": url,
            "cc_rest_jwt": Secret(jwt),
            "nats_password": Secret(f.nats_password),
            "gpu_pci_addrs": gpu,
            "ignore_hosts": ignore,
            "state_db_path": state_db,
            "config_path": path,
            "warnings": tuple(warnings),
        }
    )


def _required(f: ConfigFile, path: str) -> tuple[str, str]:
    """ccRestUrl (normalised, without a trailing slash) and ccRestJwt, both present and sane."""
    if f.cc_rest_url is None:
        raise ConfigError(path, "required key is missing (cc-backend's URL)", "ccRestUrl")
    if f.cc_rest_jwt is None:
        raise ConfigError(path, "required key is missing (cc-backend's API token)", "ccRestJwt")
    if not f.cc_rest_jwt.strip():
        raise ConfigError(path, "must not be empty", "ccRestJwt")
    url = f.cc_rest_url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        message = f"{f.cc_rest_url!r} is not an http:// or https:// URL"
        raise ConfigError(path, message, "ccRestUrl")
    return url, f.cc_rest_jwt


def _regexes(f: ConfigFile, path: str) -> tuple[tuple[GpuMap, ...], re.Pattern[str] | None]:
    """gpuPciAddrs compiled in file order (first match wins) and ignoreHosts (None if empty)."""
    gpu: list[GpuMap] = []
    for source, addrs in f.gpu_pci_addrs.items():
        where = f"gpuPciAddrs[{source!r}]"
        if not isinstance(addrs, list) or not all(isinstance(a, str) for a in addrs):
            raise ConfigError(path, "must be a list of PCI address strings", where)
        try:
            pattern = re.compile(source)
        except re.error as exc:
            raise ConfigError(path, f"invalid regex: {exc}", where) from None
        gpu.append(GpuMap(pattern=pattern, source=source, addrs=tuple(addrs)))
    if not f.ignore_hosts:
        return tuple(gpu), None
    try:
        return tuple(gpu), re.compile(f.ignore_hosts)
    except re.error as exc:
        message = f"invalid regex {f.ignore_hosts!r}: {exc}"
        raise ConfigError(path, message, "ignoreHosts") from None


def _sockets(f: ConfigFile, path: str) -> dict[str, SockAddr]:
    """The two PrEp socket addresses parsed; metricsListen checked to be a TCP HOST:PORT."""
    socks: dict[str, SockAddr] = {}
    for attr in ("prep_sock_listen_path", "prep_sock_connect_path"):
        try:
            socks[attr] = sockaddr.parse(getattr(f, attr))
        except ValueError as exc:
            raise ConfigError(path, str(exc), KEYS[attr]) from None
    text = f.metrics_listen
    if text:
        hint = " (use HOST:PORT, e.g. 127.0.0.1:9105)"
        try:
            addr = sockaddr.parse(text if text.lower().startswith("tcp:") else f"tcp:{text}")
        except ValueError as exc:
            raise ConfigError(path, f"{exc}{hint}", "metricsListen") from None
        if not isinstance(addr, sockaddr.TcpAddr):
            raise ConfigError(path, f"{text!r} must be a TCP HOST:PORT", "metricsListen")
    return socks


def _relations(f: ConfigFile, path: str, warnings: list[str]) -> None:
    """Rules across keys, and the files and directories the config names must exist."""
    if not f.cc_rest_submit_jobs and not f.nats_server:
        message = (
            "is false and natsServer is not set: jobs would go nowhere "
            "(set ccRestSubmitJobs to true or configure NATS)"
        )
        raise ConfigError(path, message, "ccRestSubmitJobs")
    if f.nats_server and not f.nats_subject:
        raise ConfigError(path, "must not be empty when natsServer is set", "natsSubject")
    for attr in ("nats_creds_file", "nats_nkey_seed_file", "cc_rest_ca_file"):
        name = getattr(f, attr)
        if name and not os.path.isfile(name):
            raise ConfigError(path, f"{name!r} is not an existing file", KEYS[attr])
    if f.slurm_bin_dir and not os.path.isdir(f.slurm_bin_dir):
        message = f"{f.slurm_bin_dir!r} is not an existing directory"
        raise ConfigError(path, message, "slurmBinDir")
    if f.cc_rest_insecure:
        warnings.append(
            f"{path}: ccRestInsecure is true: cc-backend's TLS certificate is not checked"
        )


def _clamp(f: ConfigFile, path: str, warnings: list[str]) -> dict[str, float]:
    """Values below their floor (``CLAMPS``) raised to it, each with a warning (as upstream)."""
    clamped: dict[str, float] = {}
    for attr, low in CLAMPS.items():
        value = getattr(f, attr)
        if math.isnan(value) or value < low:
            warnings.append(f"{path}: {KEYS[attr]} {value:g} < {low:g}: using {low:g}")
            clamped[attr] = type(value)(low)  # int keys stay int
    return clamped
