"""Decode JSON bodies the way cc-backend's Go ``encoding/json`` + ``DisallowUnknownFields`` does.

Hand-written instead of msgspec on purpose: the stand-in must reproduce cc-backend's *error texts*
(``json: unknown field "foo"``, ``json: cannot unmarshal string into Go struct field Job.jobId of
type int64``, ``EOF``) and Go's quirks (``null`` leaves the default, keys match case-insensitively,
trailing bytes after the first value are ignored, the first error in document order wins), which
no strict decoding library reproduces. Also the Go-style encoder for response bodies (``<>&``
escaped, map keys sorted by the caller). Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["DecodeError", "Spec", "decode", "go_json"]


class DecodeError(Exception):
    """The body does not decode; ``str(exc)`` is Go's error text."""


class _FloatLit(float):
    """A JSON float that remembers its literal text (Go names it in type errors)."""

    text: str

    def __new__(cls, text: str) -> _FloatLit:
        obj = super().__new__(cls, text)
        obj.text = text
        return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


_DECODER = json.JSONDecoder(parse_float=_FloatLit, parse_constant=_reject_constant)

#: A type descriptor: a Go scalar name ("int64", "int32", "int", "string", "float64", "any"),
#: ("list", go_name, elem), ("map", go_name, elem) or ("struct", go_name, {key: descriptor}).
Spec = str | tuple[Any, ...]

_INT_RANGES = {
    "int64": (-(2**63), 2**63 - 1),
    "int": (-(2**63), 2**63 - 1),
    "int32": (-(2**31), 2**31 - 1),
}


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    return "object"


def _go_name(spec: Spec) -> str:
    return spec if isinstance(spec, str) else str(spec[1])


class _Ctx:
    def __init__(self, root: str) -> None:
        self.root = root
        self.error: str | None = None

    def fail(self, value: object, path: str, spec: Spec) -> None:
        if self.error is not None:
            return
        kind = _json_kind(value)
        if kind == "number":
            text = value.text if isinstance(value, _FloatLit) else str(value)
            kind = f"number {text}"
        where = f"Go struct field {self.root}.{path}" if path else "Go value"
        self.error = f"json: cannot unmarshal {kind} into {where} of type {_go_name(spec)}"

    def unknown(self, key: str) -> None:
        if self.error is None:
            self.error = f'json: unknown field "{key}"'


def _convert(value: object, spec: Spec, path: str, ctx: _Ctx) -> Any:
    """Convert one decoded JSON value; on a type error record it and return None."""
    if value is None:
        return None
    if isinstance(spec, str):
        if spec == "any":
            return value
        if spec in _INT_RANGES:
            lo, hi = _INT_RANGES[spec]
            if type(value) is not int or not lo <= value <= hi:
                ctx.fail(value, path, spec)
                return None
            return value
        if spec == "float64":
            if isinstance(value, bool) or not isinstance(value, int | float):
                ctx.fail(value, path, spec)
                return None
            return float(value)
        if not isinstance(value, str):  # "string" and named string types
            ctx.fail(value, path, spec)
            return None
        return value
    kind = spec[0]
    if kind == "list":
        if not isinstance(value, list):
            ctx.fail(value, path, spec)
            return None
        return [_convert(v, spec[2], path, ctx) for v in value]
    if kind == "map":
        if not isinstance(value, dict):
            ctx.fail(value, path, spec)
            return None
        out: dict[str, Any] = {}
        for k, v in value.items():
            converted = _convert(v, spec[2], path, ctx)
            out[k] = _zero(spec[2]) if converted is None else converted
        return out
    if not isinstance(value, dict):
        ctx.fail(value, path, spec)
        return None
    return _struct(value, spec[2], path, ctx)


def _zero(spec: Spec) -> Any:
    if spec in _INT_RANGES:
        return 0
    if spec == "float64":
        return 0.0
    if spec == "string":
        return ""
    return None


def _struct(obj: Mapping[str, Any], fields: Mapping[str, Spec], path: str, ctx: _Ctx) -> Any:
    folded = {k.lower(): k for k in fields}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = key if key in fields else folded.get(key.lower())
        if name is None:
            ctx.unknown(key)
            continue
        sub = f"{path}.{name}" if path else name
        converted = _convert(value, fields[name], sub, ctx)
        if converted is not None:
            out[name] = converted
    return out


def decode(raw: bytes, root: str, fields: Mapping[str, Spec]) -> dict[str, Any]:
    """Decode ``raw`` as the Go struct ``root`` with ``fields``; keys absent or null are omitted.

    Raises:
        DecodeError: with Go's text (``EOF``, syntax error, unknown field, type mismatch).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "replace")
    body = text.lstrip(" \t\r\n")
    if not body:
        raise DecodeError("EOF")
    try:
        value, _end = _DECODER.raw_decode(body)  # trailing bytes are ignored, as in Go
    except json.JSONDecodeError as exc:
        if exc.pos >= len(body):
            raise DecodeError("unexpected EOF") from None
        char = body[exc.pos]
        raise DecodeError(f"invalid character {char!r} at offset {exc.pos}") from None
    except RecursionError:
        raise DecodeError("exceeded max depth") from None
    except ValueError as exc:
        text = f"invalid character {str(exc)[:1]!r} looking for beginning of value"
        raise DecodeError(text) from None
    ctx = _Ctx(root)
    if value is None:
        return {}
    if not isinstance(value, dict):
        ctx.fail(value, "", ("struct", f"api.{root}", fields))
        raise DecodeError(str(ctx.error))
    out = _struct(value, fields, "", ctx)
    if ctx.error is not None:
        raise DecodeError(ctx.error)
    return dict(out)


_HTML = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def go_json(value: object) -> str:
    """Compact JSON as Go's ``json.Marshal`` writes it (``<>&`` escaped, integral floats bare)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_default)
    return text.translate(_HTML).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _default(value: object) -> object:
    raise TypeError(f"cannot encode {type(value).__name__}")
