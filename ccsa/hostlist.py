"""Expand and compress Slurm hostlist expressions with Slurm's exact rules and order (pure).

``expand`` reproduces ``hostlist_create()`` of Slurm's ``src/common/hostlist.c`` (what
``scontrol show hostnames`` prints); ``compress`` builds Slurm-style ranged strings for log lines
and round-trips exactly through ``expand``.

Why hand-written: both installed libraries were checked against every recorded
``scontrol show hostnames`` case in ``shared/fixtures/slurm/hostlist/`` and neither reproduces
Slurm's order and rules:

* ClusterShell ``NodeSet`` (16 of 46 cases differ): it sorts and de-duplicates
  (``node[3,1-2,1]`` -> node1,node2,node3; ``node[1],node[1]`` -> node1), rejects mixed widths
  (``node[1-010]``, ``node[01-100]``, ``node[001-12]``), nests several bracket groups the wrong way
  (``rack[0-1]node[0-1]gpu[0-1]``), treats space/tab as part of a name, and accepts ``node[-1]``
  and ``node[1-2-3]``.
* python-hostlist ``expand_hostlist`` (6 of 46 differ): it de-duplicates, reorders
  ``node[3,1-2,1]``, nests several groups the other way and does not split on space/tab/newline.

Rules (slurm-json.md §13): separators are ``"\\t, \\n"`` outside brackets; a token without ``[``
is one literal host; otherwise the *last* ``[`` and the first ``]`` after it delimit the innermost
range list, earlier groups in the prefix are expanded right to left (loop nest
g(k-1) ⊃ … ⊃ g1 ⊃ gk); each element is ``N`` or ``LO-HI`` in ASCII decimal, zero-padded to the
character width of its low bound; no sorting, no de-duplication; any bad element invalidates the
whole expression. Expansion results are cached (the same node lists recur in every poll).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

__all__ = ["HostlistError", "compress", "expand"]

#: Slurm's hostlist_create() separators.
SEPARATORS = "\t, \n"
#: Most hosts one range element may produce, and most combinations of prefix groups (Slurm's cap).
MAX_RANGE = 65536
#: Slurm parses bounds with strtoul: anything above 2**64-1 cannot be represented.
MAX_NUMBER = 2**64 - 1

# A token is a run of non-separator characters, where a "[...]" group (or an unclosed "[" up to
# the end) is taken whole, so separators inside brackets do not split. Possessive quantifiers:
# no backtracking whatever the input.
_TOKEN = re.compile(r"(?:[^\t, \n\[]++|\[[^\]]*+\]?)++")
_ELEMENT = re.compile(r"([0-9]+)(?:-([0-9]+))?")
_DIGITS = "0123456789"
_FORBIDDEN_IN_HOST = frozenset(SEPARATORS + "[]")


class HostlistError(ValueError):
    """A hostlist expression (or a host name given to compress) is not valid."""


def expand(expr: str) -> list[str]:
    """Expand a Slurm hostlist expression into host names, in Slurm's order.

    >>> expand("cn[1,3-4],gpu[09-10]")
    ['cn1', 'cn3', 'cn4', 'gpu09', 'gpu10']

    Raises HostlistError naming the expression for anything Slurm rejects.
    """
    return list(_expand_cached(expr))


@lru_cache(maxsize=8192)
def _expand_cached(expr: str) -> tuple[str, ...]:
    if "[" not in expr:
        if "]" not in expr and not any(sep in expr for sep in "\t \n"):
            return tuple(h for h in expr.split(",") if h)
        return tuple(m.group() for m in _TOKEN.finditer(expr))
    hosts: list[str] = []
    for match in _TOKEN.finditer(expr):
        token = match.group()
        if "[" not in token:
            hosts.append(token)
            continue
        lb = token.rfind("[")
        rb = token.find("]", lb)
        if rb < 0:
            raise HostlistError(f"hostlist {expr!r}: missing ']' in {token!r}")
        inner = _range_list(token[lb + 1 : rb], expr)
        _expand_groups(token[:lb], inner, token[rb + 1 :], expr, hosts, 1)
    return tuple(hosts)


def _expand_groups(
    prefix: str, inner: list[str], suffix: str, expr: str, out: list[str], combos: int
) -> None:
    """Append prefix+n+suffix for n in inner, expanding bracket groups left in the prefix.

    The last group of the prefix is the outer loop here and the recursion goes leftwards, which
    gives Slurm's nest g(k-1) ⊃ … ⊃ g1 ⊃ gk.
    """
    lb = prefix.rfind("[")
    if lb < 0:
        out.extend([prefix + n + suffix for n in inner])
        return
    rb = prefix.find("]", lb)
    if rb < 0:
        raise HostlistError(f"hostlist {expr!r}: missing ']' in {prefix!r}")
    values = _range_list(prefix[lb + 1 : rb], expr)
    combos *= len(values)
    if combos > MAX_RANGE:
        raise HostlistError(f"hostlist {expr!r}: more than {MAX_RANGE} bracket combinations")
    head, tail = prefix[:lb], prefix[rb + 1 :]
    for value in values:
        _expand_groups(head + value + tail, inner, suffix, expr, out, combos)


def _range_list(body: str, expr: str) -> list[str]:
    """The formatted numbers of one bracket body such as ``01-03,7``."""
    numbers: list[str] = []
    for element in body.split(","):
        m = _ELEMENT.fullmatch(element)
        if m is None:
            raise HostlistError(f"hostlist {expr!r}: bad range {element!r} in [{body}]")
        lo_text, hi_text = m.group(1), m.group(2)
        lo = int(lo_text)
        hi = lo if hi_text is None else int(hi_text)
        if hi > MAX_NUMBER:
            raise HostlistError(f"hostlist {expr!r}: number too large in {element!r}")
        if lo > hi:
            raise HostlistError(f"hostlist {expr!r}: range {element!r} goes backwards")
        if hi - lo >= MAX_RANGE:
            raise HostlistError(f"hostlist {expr!r}: range {element!r} has more than {MAX_RANGE}")
        width = len(lo_text)
        if hi_text is None:
            numbers.append(lo_text)
        elif width == 1:
            numbers.extend([str(i) for i in range(lo, hi + 1)])
        else:
            numbers.extend([str(i).zfill(width) for i in range(lo, hi + 1)])
    return numbers


def compress(hosts: Iterable[str]) -> str:
    """Compress host names into a Slurm-style ranged string, preserving order and duplicates.

    Only *adjacent* hosts with the same prefix are bracketed together, and only a run of
    consecutive numbers that ``expand`` reproduces exactly (same zero-padding width) becomes
    ``LO-HI``; so ``expand(compress(x)) == x`` for every accepted list. Unsorted input is not
    sorted: ``["cn3", "cn1", "cn2"]`` -> ``cn[3,1-2]``; ``["a1", "b1", "a2"]`` -> ``a1,b1,a2``.
    Mixed widths stay separate: ``["n9", "n010", "n011"]`` -> ``n[9,010-011]``.

    Raises HostlistError for a name that cannot round-trip: empty, or containing a separator
    (tab, comma, space, newline) or a bracket.
    """
    tokens: list[str] = []
    group_prefix: str | None = None
    group: list[str] = []  # rendered range elements of the current prefix group
    run_lo = ""  # text of the current run's low bound
    run_last = -1  # integer value of the current run's last number
    run_len = 0

    def close_run() -> None:
        if run_len == 1:
            group.append(run_lo)
        elif run_len > 1:
            group.append(f"{run_lo}-{str(run_last).zfill(len(run_lo))}")

    def close_group() -> None:
        if group_prefix is None:
            return
        close_run()
        if len(group) == 1 and "-" not in group[0]:
            tokens.append(group_prefix + group[0])
        else:
            tokens.append(f"{group_prefix}[{','.join(group)}]")

    for host in hosts:
        if not host or not _FORBIDDEN_IN_HOST.isdisjoint(host):
            raise HostlistError(f"host name {host!r} cannot be written in a hostlist")
        digits = len(host) - len(host.rstrip(_DIGITS))
        number_text = host[len(host) - digits :] if digits else ""
        value = int(number_text) if digits else -1
        if not digits or value > MAX_NUMBER:
            close_group()
            group_prefix, group, run_len = None, [], 0
            tokens.append(host)
            continue
        prefix = host[: len(host) - digits]
        if prefix != group_prefix:
            close_group()
            group_prefix, group = prefix, []
            run_lo, run_last, run_len = number_text, value, 1
            continue
        if (
            value == run_last + 1
            and run_len < MAX_RANGE
            and str(value).zfill(len(run_lo)) == number_text
        ):
            run_last, run_len = value, run_len + 1
            continue
        close_run()
        run_lo, run_last, run_len = number_text, value, 1
    close_group()
    return ",".join(tokens)
