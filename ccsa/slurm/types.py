"""Shared building blocks of the Slurm views: NO_VAL numbers, flag lists, ``meta``, error mapping.

Slurm's data_parser writes some numbers as plain ints and others as ``{set, infinite, number}``
objects (``NV``), and enum-ish values as lists of strings (plain strings in the legacy v0.0.39).
Every view declares numbers as :data:`Num` and flags as :data:`Flags` and reads them through
:func:`num` / :func:`first`, so a field changing encoding between releases cannot break decoding.
:class:`OpenStrEnum` decodes strings that repeat in every job without allocating them.
:func:`decode_doc` turns every msgspec failure into one :class:`SlurmDecodeError` carrying the
JSON path, the Slurm version and the data_parser.
"""

from __future__ import annotations

import enum
import gc
import re
from typing import Self, TypeVar

import msgspec

from ccsa.errors import SlurmDecodeError


class NV(msgspec.Struct, gc=False):
    """Slurm's NO_VAL number object: ``{"set": bool, "infinite": bool, "number": n}``."""

    set: bool = False
    infinite: bool = False
    number: int | float = 0


#: A number that is a plain int in some fields/versions and an NV object in others.
Num = int | NV
#: A flag list (v0.0.40+) or a plain string (v0.0.39).
Flags = str | list[str]

#: Values at or above this are Slurm's NO_VAL/INFINITE leaking through 32-bit fields.
NO_VAL32_FLOOR = 0xFFFFFFF0


def num(x: Num | float | None) -> int | None:
    """The integer value of a Slurm number, or None when unset, infinite or NO_VAL-ish.

    Negative values (NO_VAL64 seen through INT64, e.g. the ``energy`` TRES count -2) are None.
    """
    if type(x) is int:  # the common case first: this runs for every number of every job
        return x if x >= 0 else None
    if x is None:
        return None
    if isinstance(x, NV):
        if not x.set or x.infinite:
            return None
        value = int(x.number)
    else:
        value = int(x)
    if value < 0:
        return None
    return value


def first(x: Flags | None) -> str:
    """The base value of a flag list (element 0), the string itself for v0.0.39, else ``""``."""
    if x is None:
        return ""
    if isinstance(x, str):
        return x
    return x[0] if x else ""


def flags(x: Flags | None) -> list[str]:
    """All values of a flag list (a v0.0.39 plain string becomes a one-element list)."""
    if x is None:
        return []
    if isinstance(x, str):
        return [x] if x else []
    return x


class OpenStrEnum(enum.StrEnum):
    """A string enum that also accepts values it does not list.

    msgspec decodes a listed value to its member (a shared object: nothing is allocated per
    value, which is the point for strings that repeat in every job); any other string becomes
    an ad-hoc member with that same value (still a ``str``, equal to it), so an unknown value
    never fails a decode and nothing is lost.
    """

    @classmethod
    def _missing_(cls, value: object) -> Self | None:
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_ = value
        member._value_ = value
        return member


class Plugin(msgspec.Struct):
    data_parser: str = ""
    type: str = ""


class Version(msgspec.Struct):
    major: str | int = ""
    minor: str | int = ""
    micro: str | int = ""


class SlurmMeta(msgspec.Struct):
    version: Version = msgspec.field(default_factory=Version)
    release: str = ""
    cluster: str = ""


class Meta(msgspec.Struct):
    """The ``meta`` block of every document (v0.0.39's ``Slurm``/``plugins`` spelling included)."""

    plugin: Plugin | None = None
    plugins: Plugin | None = None
    slurm: SlurmMeta | None = None
    slurm_legacy: SlurmMeta | None = msgspec.field(default=None, name="Slurm")
    command: list[str] = []

    @property
    def _slurm(self) -> SlurmMeta | None:
        return self.slurm if self.slurm is not None else self.slurm_legacy

    @property
    def version(self) -> str:
        """The Slurm release, e.g. ``"24.11.5"`` (``""`` when the document does not say)."""
        info = self._slurm
        if info is None:
            return ""
        if info.release:
            return info.release
        v = info.version
        if v.major == "":
            return ""
        return f"{v.major}.{v.minor}.{v.micro}"

    @property
    def major(self) -> int | None:
        """The Slurm major version (24, 25, ...) as an int, None when absent or garbled."""
        info = self._slurm
        if info is None:
            return None
        try:
            return int(info.version.major)
        except ValueError:
            match = re.match(r"(\d+)\.", info.release)
            return int(match.group(1)) if match else None

    @property
    def data_parser(self) -> str:
        """The data_parser version, e.g. ``"v0.0.42"`` (``""`` when absent)."""
        plugin = self.plugin if self.plugin is not None else self.plugins
        if plugin is None:
            return ""
        return plugin.data_parser.rpartition("/")[2]

    @property
    def cluster(self) -> str:
        """The cluster named in ``meta.slurm.cluster`` (``""`` when absent)."""
        info = self._slurm
        return info.cluster if info is not None else ""


class _MetaOnly(msgspec.Struct):
    meta: Meta | None = None


_meta_decoder = msgspec.json.Decoder(_MetaOnly)
_PATH_RE = re.compile(r"^(?P<msg>.*?) - at `(?P<path>\$[^`]*)`$", re.DOTALL)

D = TypeVar("D")


def meta_of(data: bytes) -> Meta | None:
    """Leniently decode just ``meta`` (for diagnostics); None when even that fails."""
    try:
        return _meta_decoder.decode(data).meta
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


_meta_value_decoder = msgspec.json.Decoder(Meta | None)


def decode_meta(data: bytes | None, command: str) -> Meta:
    """Decode a document's ``meta`` value (JSON bytes; None or ``null`` when absent)."""
    if data is None:
        return Meta()
    try:
        return _meta_value_decoder.decode(data) or Meta()
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        text, at, path = str(exc).partition(" - at `$")
        raise SlurmDecodeError(
            command, text, path="$.meta" + (path.rstrip("`") if at else "")
        ) from exc


def decode_doc(decoder: msgspec.json.Decoder[D], data: bytes, command: str) -> D:
    """Decode ``data`` with ``decoder``; map any failure onto :class:`SlurmDecodeError`.

    The cyclic garbage collector is paused while msgspec builds the views: a big dump creates
    millions of lists, and generation-0 collections triggered by them (which can find nothing:
    freshly decoded data has no cycles) would otherwise cost about a third of the decode time.
    Afterwards the new objects are promoted straight to the oldest generation
    (:func:`_promote_young`) instead of being traversed by the next generation-0 and -1
    collections, which otherwise cost the *caller* 25-40% of its conversion time (measured on
    10k generated sacct jobs: 30k tracked lists, 20 + 40 ms of generation-0/-1 passes during
    150 ms of conversion).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        doc = decoder.decode(data)
        if was_enabled:
            _promote_young()
        return doc
    except msgspec.ValidationError as exc:
        raise decode_error(command, data, str(exc)) from exc
    except msgspec.DecodeError as exc:
        text = str(exc)
        if not data.strip():
            text = "empty output"
        raise decode_error(command, data, text) from exc
    finally:
        if was_enabled:
            gc.enable()


def _promote_young() -> None:
    """Move every object the collector tracks into its oldest generation, in O(1).

    ``gc.freeze()`` + ``gc.unfreeze()`` splice the generation lists together without traversing
    them. Cyclic garbage made just before the decode is then found by the next full collection
    instead of a young one (later, never lost). Skipped when something else froze objects: its
    frozen set must stay frozen.
    """
    if gc.get_freeze_count() == 0:
        gc.freeze()
        gc.unfreeze()


def decode_error(command: str, data: bytes, text: str) -> SlurmDecodeError:
    """Build the SlurmDecodeError for a failed decode, with path and version when known."""
    path = None
    match = _PATH_RE.match(text)
    if match:
        text, path = match.group("msg"), match.group("path")
    meta = meta_of(data) if data.strip() else None
    version = meta.version or None if meta else None
    parser = meta.data_parser or None if meta else None
    return SlurmDecodeError(command, text, path=path, version=version, data_parser=parser)
