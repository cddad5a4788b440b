"""ccsa.hostlist against Slurm's recorded `scontrol show hostnames` output and a round trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccsa.hostlist import HostlistError, compress, expand


def _recorded_cases(shared: Path) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for path in sorted((shared / "fixtures/slurm/hostlist").glob("*.json")):
        cases.extend(json.loads(path.read_text())["cases"])
    return cases


def test_every_recorded_slurm_case(shared: Path) -> None:
    cases = _recorded_cases(shared)
    assert len(cases) >= 40
    failures: list[tuple[str, object, object]] = []
    for case in cases:
        expr = case["expression"]
        if case["invalid"]:
            try:
                got = expand(expr)
            except HostlistError as exc:
                if repr(expr) not in str(exc):
                    failures.append((expr, "message does not name it", str(exc)))
                continue
            failures.append((expr, "accepted", got))
        else:
            try:
                got = expand(expr)
            except HostlistError as exc:
                failures.append((expr, "rejected", str(exc)))
                continue
            if got != case["hosts"]:
                failures.append((expr, case["hosts"], got))
    assert failures == []


@pytest.mark.parametrize(
    ("expr", "hosts"),
    [
        ("", []),
        ("node[1,3],gpu[2-3]", ["node1", "node3", "gpu2", "gpu3"]),
        ("node[01-03]", ["node01", "node02", "node03"]),
        ("node[9,010-011]", ["node9", "node010", "node011"]),
        ("rack[1-2]-node[01-02]", ["rack1-node01", "rack1-node02", "rack2-node01", "rack2-node02"]),
        ("login,node[1-2]", ["login", "node1", "node2"]),
        ("c3cpu-a2-u1-[1-2]", ["c3cpu-a2-u1-1", "c3cpu-a2-u1-2"]),
        ("node0.example,192.168.1.1", ["node0.example", "192.168.1.1"]),
        ("a]b", ["a]b"]),
        ("x[1-2]y[3]", ["x1y3", "x2y3"]),
        # multi-group nest: g2 outermost, then g1, g3 innermost
        (
            "a[0-1]b[0-1]c[5]",
            ["a0b0c5", "a1b0c5", "a0b1c5", "a1b1c5"],
        ),
    ],
)
def test_expand_units(expr: str, hosts: list[str]) -> None:
    assert expand(expr) == hosts


@pytest.mark.parametrize(
    "expr",
    [
        "node[+1]",
        "node[ 1]",
        "node[1x]",
        "node[0-65536]",
        "node[18446744073709551616]",
        "a[1-2]b[1",
        "node[1]]x[",
        "a[0-300]b[0-300]c[1]",
        "node[١]",  # non-ASCII digit
    ],
)
def test_expand_rejects(expr: str) -> None:
    with pytest.raises(HostlistError, match="hostlist"):
        expand(expr)


def test_expand_returns_fresh_list() -> None:
    first = expand("cn[1-2]")
    first.append("junk")
    assert expand("cn[1-2]") == ["cn1", "cn2"]


def test_largest_single_range() -> None:
    hosts = expand("n[0-65535]")
    assert len(hosts) == 65536
    assert hosts[-1] == "n65535"


@pytest.mark.parametrize(
    ("hosts", "text"),
    [
        ([], ""),
        (["cn1", "cn3", "cn4"], "cn[1,3-4]"),
        (["cn004", "cn005", "cn006"], "cn[004-006]"),
        (["gpu1", "gpu2", "cn1", "cn2", "cn3"], "gpu[1-2],cn[1-3]"),
        (["login", "node1", "node2"], "login,node[1-2]"),
        (["node9", "node010", "node011"], "node[9,010-011]"),
        (["node09", "node10"], "node[09-10]"),
        (["cn5"], "cn5"),
        (["cn3", "cn1", "cn2"], "cn[3,1-2]"),
        (["a1", "b1", "a2"], "a1,b1,a2"),
        (["n1", "n1"], "n[1,1]"),
        (["0", "1", "2"], "[0-2]"),
    ],
)
def test_compress_units(hosts: list[str], text: str) -> None:
    assert compress(hosts) == text
    assert expand(text) == hosts


@pytest.mark.parametrize("bad", ["", "a,b", "a b", "a[1]", "x]", "tab\there"])
def test_compress_rejects_unrepresentable(bad: str) -> None:
    with pytest.raises(HostlistError, match="cannot be written"):
        compress(["ok1", bad])


_name = st.one_of(
    st.builds(
        lambda p, n, w: p + str(n).zfill(w),
        st.sampled_from(["cn", "gpu", "node-", "a.b", "", "x9y", "r1-n"]),
        st.integers(min_value=0, max_value=40),
        st.integers(min_value=0, max_value=4),
    ),
    st.text(
        alphabet=st.characters(exclude_characters="\t, \n[]", exclude_categories=["Cs"]),
        min_size=1,
        max_size=8,
    ),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_name, max_size=30))
def test_round_trip(hosts: list[str]) -> None:
    assert expand(compress(hosts)) == hosts


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet=st.sampled_from("ab1[]-,0 9"), max_size=20),
)
def test_expand_never_crashes(expr: str) -> None:
    try:
        hosts = expand(expr)
    except HostlistError:
        return
    assert all(h and not any(c in h for c in "\t, \n") for h in hosts)
