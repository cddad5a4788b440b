"""Parse the PrEp socket address forms of ``prepSockListenPath`` / ``prepSockConnectPath``.

Accepted (upstream's forms): ``/path`` (or any text without a colon), ``unix:/path``,
``tcp:HOST:PORT``, ``tcp:[IPV6]:PORT`` and ``tcp::PORT`` (empty host: all interfaces when
listening, the local host when connecting). The protocol word is case-insensitive, as upstream.

Stdlib only: the Prolog/Epilog hook imports this on every job start and end. Hand-written because
no stdlib function splits ``HOST:PORT`` with bracketed IPv6 and validates the pieces.
"""

# sun_path holds 108 bytes on Linux, including the terminating NUL.
UNIX_PATH_MAX = 107


class _Frozen:
    """Immutable value object with equality and hashing over ``__slots__``.

    Hand-written instead of ``@dataclass(frozen=True)``: importing ``dataclasses`` pulls in
    ``inspect`` and costs more than the rest of the hook path together (it runs once per job).
    """

    __slots__: tuple[str, ...] = ()

    def _key(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash((type(self).__name__, *self._key()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({fields})"


class UnixAddr(_Frozen):
    """A Unix domain socket path."""

    __slots__ = ("path",)
    path: str

    def __init__(self, path: str) -> None:
        object.__setattr__(self, "path", path)

    def __str__(self) -> str:
        return f"unix:{self.path}"


class TcpAddr(_Frozen):
    """A TCP endpoint. ``host == ""`` means all interfaces (listen) or the local host (connect)."""

    __slots__ = ("host", "port")
    host: str
    port: int

    def __init__(self, host: str, port: int) -> None:
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "port", port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp:{host}:{self.port}"

    @property
    def connect_host(self) -> str:
        """The host to connect to: ``localhost`` for the empty (any-interface) host."""
        return self.host or "localhost"


SockAddr = UnixAddr | TcpAddr


def parse(text: str) -> SockAddr:
    """Parse one address; raise ``ValueError`` with a message that quotes the text."""
    if not isinstance(text, str):
        raise ValueError(f"socket address must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("socket address is empty")
    if text != text.strip():
        raise ValueError(f"socket address {text!r} has leading or trailing whitespace")
    if text.startswith("/") or ":" not in text:
        return _unix(text, text)
    proto, _, rest = text.partition(":")
    proto = proto.lower()
    if proto == "unix":
        return _unix(rest, text)
    if proto == "tcp":
        return _tcp(rest, text)
    raise ValueError(
        f"socket address {text!r}: unknown protocol {proto!r} "
        "(use /path, unix:/path, tcp:HOST:PORT, tcp:[IPV6]:PORT or tcp::PORT)"
    )


def _unix(path: str, text: str) -> UnixAddr:
    if not path:
        raise ValueError(f"socket address {text!r}: empty Unix socket path")
    if "\0" in path:
        raise ValueError(f"socket address {text!r}: NUL character in Unix socket path")
    size = len(path.encode("utf-8", "surrogateescape"))
    if size > UNIX_PATH_MAX:
        raise ValueError(
            f"socket address {text!r}: Unix socket path is {size} bytes, "
            f"the kernel allows at most {UNIX_PATH_MAX}"
        )
    return UnixAddr(path)


def _tcp(rest: str, text: str) -> TcpAddr:
    if rest.startswith("["):
        close = rest.find("]")
        if close < 0 or rest[close + 1 : close + 2] != ":":
            raise ValueError(f"socket address {text!r}: expected tcp:[IPV6]:PORT")
        host, port_text = rest[1:close], rest[close + 2 :]
        import ipaddress  # only here: the hook's common path (a Unix socket) skips the import

        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"socket address {text!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = rest.rpartition(":")
        if not sep:
            raise ValueError(f"socket address {text!r}: expected tcp:HOST:PORT (port missing)")
        if ":" in host:
            raise ValueError(
                f"socket address {text!r}: put an IPv6 address in brackets, e.g. tcp:[::1]:PORT"
            )
        if any(c.isspace() or c in "[]/" for c in host):
            raise ValueError(f"socket address {text!r}: {host!r} is not a host name or address")
    if not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"socket address {text!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"socket address {text!r}: port {port} is above 65535")
    return TcpAddr(host, port)
