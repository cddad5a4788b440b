"""Load and validate the JSON config file (upstream's format) into one frozen ``Config``.

Only ``ccRestUrl`` and ``ccRestJwt`` are required. Every problem becomes a ``ConfigError`` that
names the file and the key; unknown keys, clamped values and a world-readable file become
warnings (kept in ``Config.warnings`` and logged). Regexes are compiled and socket addresses
parsed once, here. The two secrets are ``Secret`` values whose ``repr``/``str`` hide them, and are
registered with :func:`ccsa.logs.redact` so that no log line can show them.

Pure apart from reading the file and ``stat``-ing the paths it names.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
import stat
from typing import Any, ClassVar
from urllib.parse import urlsplit

import msgspec

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


# attribute -> JSON key. Keys in NEW_KEYS are ccsa's additions (defaults keep upstream behaviour).
KEYS: dict[str, str] = {
    "pid_file_path": "pidFilePath",
    "prep_sock_listen_path": "prepSockListenPath",
    "prep_sock_connect_path": "prepSockConnectPath",
    "last_run_path": "lastRunPath",
    "slurm_poll_interval": "slurmPollInterval",
    "slurm_query_delay": "slurmQueryDelay",
    "slurm_query_max_span": "slurmQueryMaxSpan",
    "slurm_max_retries": "slurmMaxRetries",
    "slurm_max_concurrent": "slurmMaxConcurrent",
    "cc_poll_interval": "ccPollInterval",
    "cc_rest_submit_jobs": "ccRestSubmitJobs",
    "cc_rest_url": "ccRestUrl",
    "cc_rest_jwt": "ccRestJwt",
    "gpu_pci_addrs": "gpuPciAddrs",
    "ignore_hosts": "ignoreHosts",
    "nats_server": "natsServer",
    "nats_port": "natsPort",
    "nats_subject": "natsSubject",
    "nats_user": "natsUser",
    "nats_password": "natsPassword",
    "nats_creds_file": "natsCredsFile",
    "nats_nkey_seed_file": "natsNKeySeedFile",
    "slurm_bin_dir": "slurmBinDir",
    "slurm_command_timeout": "slurmCommandTimeout",
    "state_db_path": "stateDbPath",
    "sync_overlap": "slurmQueryOverlap",
    "cc_rest_timeout": "ccRestTimeout",
    "cc_rest_ca_file": "ccRestCaFile",
    "cc_rest_insecure": "ccRestInsecure",
    "metrics_listen": "metricsListen",
}
NEW_KEYS = frozenset(
    {
        "slurmMaxConcurrent",
        "slurmBinDir",
        "slurmCommandTimeout",
        "stateDbPath",
        "slurmQueryOverlap",
        "ccRestTimeout",
        "ccRestCaFile",
        "ccRestInsecure",
        "metricsListen",
    }
)
_REMOVED = {
    "ipcSockPath": "it was removed upstream; use prepSockListenPath and prepSockConnectPath",
}


class _File(msgspec.Struct, rename=KEYS):
    """The file as written: upstream types and defaults, before validation."""

    pid_file_path: str = "/run/cc-slurm-adapter/daemon.pid"
    prep_sock_listen_path: str = DEFAULT_SOCK
    prep_sock_connect_path: str = DEFAULT_SOCK
    last_run_path: str = "/var/lib/cc-slurm-adapter/lastrun"
    slurm_poll_interval: float = 60
    slurm_query_delay: float = 1
    slurm_query_max_span: float = 7 * 24 * 3600
    slurm_max_retries: int = 10
    slurm_max_concurrent: int = 10
    cc_poll_interval: float = 6 * 3600
    cc_rest_submit_jobs: bool = True
    cc_rest_url: str | None = None
    cc_rest_jwt: str | None = None
    gpu_pci_addrs: dict[str, Any] = {}
    ignore_hosts: str = ""
    nats_server: str = ""
    nats_port: int = 4222
    nats_subject: str = "jobs"
    nats_user: str = ""
    nats_password: str = ""
    nats_creds_file: str = ""
    nats_nkey_seed_file: str = ""
    slurm_bin_dir: str = ""
    slurm_command_timeout: float = 120
    state_db_path: str = ""
    sync_overlap: float = 300
    cc_rest_timeout: float = 30
    cc_rest_ca_file: str = ""
    cc_rest_insecure: bool = False
    metrics_listen: str = ""


class Config(msgspec.Struct, frozen=True, kw_only=True):
    """The validated configuration. Attribute names are the snake_case of the JSON keys."""

    pid_file_path: str
    prep_sock_listen_path: SockAddr
    prep_sock_connect_path: SockAddr
    last_run_path: str
    slurm_poll_interval: float
    slurm_query_delay: float
    slurm_query_max_span: float
    slurm_max_retries: int
    slurm_max_concurrent: int
    cc_poll_interval: float
    cc_rest_submit_jobs: bool
    cc_rest_url: str
    cc_rest_jwt: Secret
    gpu_pci_addrs: tuple[GpuMap, ...]
    ignore_hosts: re.Pattern[str] | None
    nats_server: str
    nats_port: int
    nats_subject: str
    nats_user: str
    nats_password: Secret
    nats_creds_file: str
    nats_nkey_seed_file: str
    slurm_bin_dir: str
    slurm_command_timeout: float
    state_db_path: str
    sync_overlap: float
    cc_rest_timeout: float
    cc_rest_ca_file: str
    cc_rest_insecure: bool
    metrics_listen: str
    config_path: str
    warnings: tuple[str, ...] = ()

    KEYS: ClassVar[dict[str, str]] = KEYS

    @property
    def nats_enabled(self) -> bool:
        """NATS publishing is on exactly when ``natsServer`` is set (upstream rule)."""
        return bool(self.nats_server)

    def pci_addrs_for(self, host: str) -> tuple[str, ...] | None:
        """PCI addresses of the first ``gpuPciAddrs`` regex that matches ``host`` (file order).

        Upstream semantics: Go's ``regexp.MatchString``, i.e. a *search*; anchor with ``^...$``
        in the config to match whole names.
        """
        for entry in self.gpu_pci_addrs:
            if entry.pattern.search(host):
                return entry.addrs
        return None

    def host_ignored(self, host: str) -> bool:
        """Whether ``ignoreHosts`` matches ``host`` (a search, as upstream). A job is dropped
        when *all* of its hosts are ignored; that decision belongs to the caller."""
        return self.ignore_hosts is not None and self.ignore_hosts.search(host) is not None

    @classmethod
    def for_tests(cls, **overrides: Any) -> Config:
        """Same as :func:`make_config`."""
        return make_config(**overrides)


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
            f"fix: chmod 640 {path}"
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
        parsed = msgspec.convert(raw, _File)
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
        parsed = msgspec.convert({KEYS[k]: v for k, v in values.items()}, _File)
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
    """``Expected `int`, got `str` - at `$.natsPort` `` -> ("natsPort", "Expected ...")."""
    match = re.match(r"(.*) - at `\$\.([A-Za-z0-9_]+)(.*)`$", message)
    if not match:
        return None, message
    text, key, rest = match.groups()
    return key, f"{text}{' at ' + rest if rest else ''}"


def _build(f: _File, path: str, warnings: list[str]) -> Config:
    logged = len(warnings)

    def fail(attr: str, message: str) -> ConfigError:
        return ConfigError(path, message, KEYS[attr])

    def clamp(attr: str, value: float, low: float) -> float:
        if math.isnan(value) or value < low:
            warnings.append(f"{path}: {KEYS[attr]} {value:g} < {low:g}: using {low:g}")
            return low
        return value

    if f.cc_rest_url is None:
        raise fail("cc_rest_url", "required key is missing (cc-backend's URL)")
    if f.cc_rest_jwt is None:
        raise fail("cc_rest_jwt", "required key is missing (cc-backend's API token)")
    if not f.cc_rest_jwt.strip():
        raise fail("cc_rest_jwt", "must not be empty")
    url = f.cc_rest_url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise fail("cc_rest_url", f"{f.cc_rest_url!r} is not an http:// or https:// URL")

    socks: dict[str, SockAddr] = {}
    for attr in ("prep_sock_listen_path", "prep_sock_connect_path"):
        try:
            socks[attr] = sockaddr.parse(getattr(f, attr))
        except ValueError as exc:
            raise fail(attr, str(exc)) from None

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

    ignore: re.Pattern[str] | None = None
    if f.ignore_hosts:
        try:
            ignore = re.compile(f.ignore_hosts)
        except re.error as exc:
            raise fail("ignore_hosts", f"invalid regex {f.ignore_hosts!r}: {exc}") from None

    if not f.cc_rest_submit_jobs and not f.nats_server:
        raise fail(
            "cc_rest_submit_jobs",
            "is false and natsServer is not set: jobs would go nowhere "
            "(set ccRestSubmitJobs to true or configure NATS)",
        )
    if not 1 <= f.nats_port <= 65535:
        raise fail("nats_port", f"{f.nats_port} is not a TCP port (1..65535)")
    if f.nats_server and not f.nats_subject:
        raise fail("nats_subject", "must not be empty when natsServer is set")
    for attr in ("slurm_query_max_span", "slurm_command_timeout", "cc_rest_timeout"):
        value = getattr(f, attr)
        if not value > 0:
            raise fail(attr, f"{value:g} must be greater than 0")
    for attr in ("nats_creds_file", "nats_nkey_seed_file", "cc_rest_ca_file"):
        name = getattr(f, attr)
        if name and not os.path.isfile(name):
            raise fail(attr, f"{name!r} is not an existing file")
    if f.slurm_bin_dir and not os.path.isdir(f.slurm_bin_dir):
        raise fail("slurm_bin_dir", f"{f.slurm_bin_dir!r} is not an existing directory")
    if f.metrics_listen:
        text = f.metrics_listen
        try:
            addr = sockaddr.parse(text if text.lower().startswith("tcp:") else f"tcp:{text}")
        except ValueError as exc:
            raise fail("metrics_listen", f"{exc} (use HOST:PORT, e.g. 127.0.0.1:9105)") from None
        if not isinstance(addr, sockaddr.TcpAddr):
            raise fail("metrics_listen", f"{text!r} must be a TCP HOST:PORT")
    if f.cc_rest_insecure:
        warnings.append(
            f"{path}: ccRestInsecure is true: cc-backend's TLS certificate is not checked"
        )

    poll = clamp("slurm_poll_interval", f.slurm_poll_interval, 1)
    delay = clamp("slurm_query_delay", f.slurm_query_delay, 1)
    cc_poll = clamp("cc_poll_interval", f.cc_poll_interval, 1)
    overlap = clamp("sync_overlap", f.sync_overlap, 0)
    retries = int(clamp("slurm_max_retries", f.slurm_max_retries, 0))
    concurrent = int(clamp("slurm_max_concurrent", f.slurm_max_concurrent, 1))
    state_db = f.state_db_path or os.path.join(
        os.path.dirname(f.last_run_path) or ".", "state.sqlite3"
    )

    logs.redact(f.cc_rest_jwt)
    logs.redact(f.nats_password)
    for message in warnings[logged:]:
        log.warning("%s", message)
    return Config(
        pid_file_path=f.pid_file_path,
        prep_sock_listen_path=socks["prep_sock_listen_path"],
        prep_sock_connect_path=socks["prep_sock_connect_path"],
        last_run_path=f.last_run_path,
        slurm_poll_interval=poll,
        slurm_query_delay=delay,
        slurm_query_max_span=f.slurm_query_max_span,
        slurm_max_retries=retries,
        slurm_max_concurrent=concurrent,
        cc_poll_interval=cc_poll,
        cc_rest_submit_jobs=f.cc_rest_submit_jobs,
        cc_rest_url=url,
        cc_rest_jwt=Secret(f.cc_rest_jwt),
        gpu_pci_addrs=tuple(gpu),
        ignore_hosts=ignore,
        nats_server=f.nats_server,
        nats_port=f.nats_port,
        nats_subject=f.nats_subject,
        nats_user=f.nats_user,
        nats_password=Secret(f.nats_password),
        nats_creds_file=f.nats_creds_file,
        nats_nkey_seed_file=f.nats_nkey_seed_file,
        slurm_bin_dir=f.slurm_bin_dir,
        slurm_command_timeout=f.slurm_command_timeout,
        state_db_path=state_db,
        sync_overlap=overlap,
        cc_rest_timeout=f.cc_rest_timeout,
        cc_rest_ca_file=f.cc_rest_ca_file,
        cc_rest_insecure=f.cc_rest_insecure,
        metrics_listen=f.metrics_listen,
        config_path=path,
        warnings=tuple(warnings),
    )
