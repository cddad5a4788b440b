"""ccsa.sockaddr: every upstream address form, the canonical text, and clear errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccsa.sockaddr import TcpAddr, UnixAddr, parse


@pytest.mark.parametrize(
    ("text", "expected", "canonical"),
    [
        ("/run/cc-slurm-adapter/daemon.sock", UnixAddr("/run/cc-slurm-adapter/daemon.sock"), None),
        ("unix:/tmp/x.sock", UnixAddr("/tmp/x.sock"), "unix:/tmp/x.sock"),
        ("UNIX:/tmp/x.sock", UnixAddr("/tmp/x.sock"), "unix:/tmp/x.sock"),
        ("relative.sock", UnixAddr("relative.sock"), None),
        ("tcp:127.0.0.1:1234", TcpAddr("127.0.0.1", 1234), "tcp:127.0.0.1:1234"),
        ("tcp:0.0.0.0:1234", TcpAddr("0.0.0.0", 1234), "tcp:0.0.0.0:1234"),
        ("tcp:[::1]:1234", TcpAddr("::1", 1234), "tcp:[::1]:1234"),
        ("tcp:[::]:1234", TcpAddr("::", 1234), "tcp:[::]:1234"),
        ("tcp::1234", TcpAddr("", 1234), "tcp::1234"),
        ("TCP:ctld.example:6000", TcpAddr("ctld.example", 6000), "tcp:ctld.example:6000"),
        ("tcp:127.0.0.1:0", TcpAddr("127.0.0.1", 0), "tcp:127.0.0.1:0"),
    ],
)
def test_accepted_forms(text: str, expected: object, canonical: str | None) -> None:
    addr = parse(text)
    assert addr == expected
    if canonical is not None:
        assert str(addr) == canonical
        assert parse(str(addr)) == addr


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("unix:", "empty Unix socket path"),
        ("udp:1.2.3.4:5", "unknown protocol 'udp'"),
        ("tcp:127.0.0.1", "port missing"),
        ("tcp:127.0.0.1:http", "is not a number"),
        ("tcp:127.0.0.1:70000", "above 65535"),
        ("tcp:::1:1234", "brackets"),
        ("tcp:[::1:1234", "expected tcp:[IPV6]:PORT"),
        ("tcp:[nothex]:1234", "not an IPv6 address"),
        ("tcp:127.0.0.1:-1", "is not a number"),
        (" /x", "whitespace"),
        ("/" + "x" * 200, "at most 107"),
    ],
)
def test_rejected_forms_name_the_text(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse(text)
    assert fragment in str(info.value)
    if text.strip():
        assert repr(text)[:20].strip("'") in str(info.value) or text[:20] in str(info.value)


def test_values_are_immutable_and_hashable() -> None:
    addr = parse("tcp:[::1]:9")
    with pytest.raises(AttributeError):
        addr.port = 10
    assert {addr, TcpAddr("::1", 9)} == {addr}
    assert UnixAddr("a") != TcpAddr("a", 1)
    assert repr(addr) == "TcpAddr(host='::1', port=9)"
    assert TcpAddr("", 5).connect_host == "localhost"


@given(host=st.ip_addresses(v=6), port=st.integers(0, 65535))
def test_ipv6_round_trip(host: object, port: int) -> None:
    addr = TcpAddr(str(host), port)
    assert parse(str(addr)) == addr


@given(port=st.integers(0, 65535), host=st.ip_addresses(v=4))
def test_ipv4_round_trip(port: int, host: object) -> None:
    addr = TcpAddr(str(host), port)
    assert parse(str(addr)) == addr
