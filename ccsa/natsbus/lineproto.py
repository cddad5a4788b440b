"""Encode and decode ClusterCockpit job events as InfluxDB line protocol (pure, no I/O).

The encoder reproduces byte for byte what cc-slurm-adapter publishes (``ccmessage.NewEvent`` +
``ToLineProtocol``, i.e. influxdb-client-go v2.14 ``write.PointToLineProtocol``; shared
``docs/ccbackend.md`` §8.3): measurement ``job``, tags sorted by key, one string field ``event``,
a nanosecond timestamp and a trailing newline. It is hand-written because no Python line-protocol
library reproduces that encoder's quirks (a newline in a tag becomes backslash, backslash, ``n``)
and, unlike upstream, it leaves out tags with an empty value: cc-backend's decoder rejects
``key=`` and silently drops the whole message.

The decoder applies cc-backend's rules (§8.2), for the stand-in and for tests: several lines per
message; any syntax error (empty tag value, invalid escape, missing field, missing or zero
timestamp) rejects the WHOLE message with ``LineProtocolError``; lines of other measurements,
lines without a string field ``event`` and lines whose ``function`` tag is missing or not
``start_job``/``stop_job`` are skipped. In a string field only ``\\"``, ``\\\\``, ``\\n``, ``\\r``
and ``\\t`` are valid escapes; in measurements, tag and field keys and tag values ``\\,``,
``\\=`` and ``\\ `` unescape and any other backslash stays literal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ccsa.ccbackend.models import StartJob, StopJob, encode

__all__ = [
    "FUNCTIONS",
    "MEASUREMENT",
    "LineEvent",
    "LineProtocolError",
    "decode",
    "encode_event",
    "encode_start",
    "encode_stop",
]

MEASUREMENT = "job"
FUNCTIONS = frozenset({"start_job", "stop_job"})

Function = Literal["start_job", "stop_job"]

_NS = 1_000_000_000


class LineProtocolError(ValueError):
    """The message is not valid line protocol; cc-backend drops the whole message."""

    def __init__(self, line: int, message: str) -> None:
        self.line = line
        self.message = message
        super().__init__(f"line protocol, line {line}: {message}")


@dataclass(frozen=True, slots=True)
class LineEvent:
    """One decoded ``job`` line: its ``function`` tag, the ``event`` JSON text and the time."""

    function: Function
    event: str
    timestamp_ns: int
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def raw(self) -> bytes:
        """The event JSON as bytes, as cc-backend hands it to its start/stop logic."""
        return self.event.encode()


# --------------------------------------------------------------------------- encoder

_KEY_SPECIAL = frozenset(",= \n\r\t")


def _escape_key(text: str, *, escape_equal: bool) -> str:
    """influxdb-client-go ``escapeKey``: ``,`` and space (and ``=``) get a backslash;
    newline, CR and tab become backslash, backslash, letter (an encoder quirk, kept)."""
    if not _KEY_SPECIAL.intersection(text):
        return text
    out: list[str] = []
    for ch in text:
        if ch == "\n":
            out.append("\\\\n")
        elif ch == "\r":
            out.append("\\\\r")
        elif ch == "\t":
            out.append("\\\\t")
        elif ch in ", " or (ch == "=" and escape_equal):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _escape_string_field(text: str) -> str:
    """influxdb-client-go ``escapeValue``: only backslash and double quote get a backslash."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def encode_event(
    function: Function,
    event_json: bytes | str,
    *,
    hostname: str,
    timestamp_ns: int,
    partition: str | None = None,
) -> bytes:
    """One line-protocol line (with trailing newline) for a start or stop event.

    Tags ``function``, ``hostname``, ``partition`` (when given), ``type=node`` and
    ``type-id=0`` are written sorted by key; a tag whose value is empty is left out.
    """
    if function not in FUNCTIONS:
        raise ValueError(f"function must be start_job or stop_job, not {function!r}")
    event = event_json.decode() if isinstance(event_json, bytes) else event_json
    tags = {"function": function, "hostname": hostname, "type": "node", "type-id": "0"}
    if partition is not None:
        tags["partition"] = partition
    parts = [_escape_key(MEASUREMENT, escape_equal=False)]
    for key in sorted(tags):
        value = tags[key]
        if value:
            parts.append(
                _escape_key(key, escape_equal=True) + "=" + _escape_key(value, escape_equal=True)
            )
    line = ",".join(parts) + ' event="' + _escape_string_field(event) + '" ' + str(timestamp_ns)
    return (line + "\n").encode()


def encode_start(body: StartJob, *, hostname: str) -> bytes:
    """The line for a start: the REST start_job JSON, timestamp ``startTime`` × 10⁹."""
    return encode_event(
        "start_job", encode(body), hostname=hostname, timestamp_ns=body.start_time * _NS
    )


def encode_stop(body: StopJob, *, hostname: str, partition: str) -> bytes:
    """The line for a stop: the REST stop_job JSON, timestamp ``stopTime`` × 10⁹, ``partition``
    tag (cc-energy-manager reads it; cc-backend ignores it; left out when empty)."""
    return encode_event(
        "stop_job",
        encode(body),
        hostname=hostname,
        timestamp_ns=body.stop_time * _NS,
        partition=partition,
    )


# --------------------------------------------------------------------------- decoder

_KEY_UNESCAPE = {",": ",", "=": "=", " ": " "}
_STRING_UNESCAPE = {'"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}
_BOOLS = frozenset({"t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE"})


@dataclass(slots=True)
class _Line:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, str | None]  # string fields -> text; other types -> None
    timestamp: int


class _Scanner:
    """Cursor over one message; lines end at a newline outside a quoted string field."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1

    def fail(self, message: str) -> LineProtocolError:
        return LineProtocolError(self.line, message)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def at_line_end(self) -> bool:
        return self.pos >= len(self.text) or self.text[self.pos] == "\n"

    def token(self, stops: str, what: str) -> str:
        """Read up to an unescaped character of ``stops`` (or line end); unescape ``\\,=``
        and space; other backslashes are kept literally; a backslash at line end is invalid."""
        out: list[str] = []
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == "\n" or ch in stops:
                break
            if ch == "\\":
                if self.pos + 1 >= len(text) or text[self.pos + 1] == "\n":
                    raise self.fail(f"invalid escape at end of {what}")
                nxt = text[self.pos + 1]
                if nxt in _KEY_UNESCAPE:
                    out.append(_KEY_UNESCAPE[nxt])
                    self.pos += 2
                    continue
            out.append(ch)
            self.pos += 1
        return "".join(out)

    def string_value(self, key: str) -> str:
        """A quoted string field value (cursor on the opening quote)."""
        self.pos += 1
        out: list[str] = []
        text = self.text
        while True:
            if self.pos >= len(text):
                raise self.fail(f"unterminated string in field {key!r}")
            ch = text[self.pos]
            if ch == '"':
                self.pos += 1
                return "".join(out)
            if ch == "\\":
                nxt = text[self.pos + 1] if self.pos + 1 < len(text) else ""
                if nxt not in _STRING_UNESCAPE:
                    raise self.fail(f"invalid escape \\{nxt} in string field {key!r}")
                out.append(_STRING_UNESCAPE[nxt])
                self.pos += 2
                continue
            if ch == "\n":
                self.line += 1
            out.append(ch)
            self.pos += 1

    def skip_spaces(self) -> int:
        start = self.pos
        while self.peek() == " ":
            self.pos += 1
        return self.pos - start

    def next_line(self) -> None:
        """Move past the newline that ends the current line."""
        if self.pos < len(self.text):
            self.pos += 1
            self.line += 1


def _check_scalar(value: str, key: str, scan: _Scanner) -> None:
    if value in _BOOLS:
        return
    body = value[:-1] if value[-1:] in ("i", "u") else value
    if value.endswith(("i", "u")):
        digits = body[1:] if body.startswith("-") and value.endswith("i") else body
        if digits.isdigit():
            return
        raise scan.fail(f"invalid integer value {value!r} for field {key!r}")
    try:
        float(value)
    except ValueError:
        raise scan.fail(f"invalid value {value!r} for field {key!r}") from None
    if value.lower() in ("nan", "inf", "+inf", "-inf", "infinity", "-infinity"):
        raise scan.fail(f"invalid value {value!r} for field {key!r}")


def _parse_line(scan: _Scanner) -> _Line:
    measurement = scan.token(", ", "measurement")
    if not measurement:
        raise scan.fail("empty measurement")
    tags: dict[str, str] = {}
    while scan.peek() == ",":
        scan.pos += 1
        key = scan.token("=, ", "tag key")
        if not key:
            raise scan.fail("expected tag key")
        if scan.peek() != "=":
            raise scan.fail(f"expected '=' after tag key {key!r}")
        scan.pos += 1
        value = scan.token(", ", "tag value")
        if not value:
            raise scan.fail(f"expected tag value after tag key {key!r}")
        tags[key] = value
    if scan.skip_spaces() == 0 or scan.at_line_end():
        raise scan.fail(f"missing field after measurement {measurement!r}")
    fields: dict[str, str | None] = {}
    while True:
        key = scan.token("=, ", "field key")
        if not key:
            raise scan.fail("expected field key")
        if scan.peek() != "=":
            raise scan.fail(f"expected '=' after field key {key!r}")
        scan.pos += 1
        if scan.peek() == '"':
            fields[key] = scan.string_value(key)
        else:
            value = scan.token(", ", f"field {key!r}")
            if not value:
                raise scan.fail(f"expected field value after field key {key!r}")
            _check_scalar(value, key, scan)
            fields[key] = None
        if scan.peek() != ",":
            break
        scan.pos += 1
    if scan.skip_spaces() == 0 or scan.at_line_end():
        if scan.at_line_end():
            raise scan.fail("missing timestamp (cc-backend: timestamp cannot be zero)")
        raise scan.fail("expected space before timestamp")
    stamp = scan.token(" ", "timestamp")
    digits = stamp[1:] if stamp.startswith("-") else stamp
    if not digits.isdigit() or not digits.isascii():
        raise scan.fail(f"invalid timestamp {stamp!r}")
    timestamp = int(stamp)
    if timestamp == 0:
        raise scan.fail("timestamp cannot be zero")
    scan.skip_spaces()
    if not scan.at_line_end():
        raise scan.fail("unexpected text after timestamp")
    return _Line(measurement, tags, fields, timestamp)


def decode(data: bytes, skipped: list[str] | None = None) -> list[LineEvent]:
    """Decode one NATS message into its ``job`` events, with cc-backend's rules.

    Raises ``LineProtocolError`` (the whole message is dropped) on any syntax error. Lines that
    cc-backend skips are not returned; when ``skipped`` is given, a reason per skipped line is
    appended to it.
    """
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise LineProtocolError(1, f"not UTF-8: {exc.reason}") from None
    scan = _Scanner(text)
    lines: list[tuple[int, _Line]] = []
    while scan.pos < len(text):
        scan.skip_spaces()
        if scan.at_line_end() or scan.peek() == "#":
            while not scan.at_line_end():
                scan.pos += 1
            scan.next_line()
            continue
        number = scan.line
        lines.append((number, _parse_line(scan)))
        scan.next_line()
    events: list[LineEvent] = []
    for number, line in lines:
        reason = _skip_reason(line)
        if reason is not None:
            if skipped is not None:
                skipped.append(f"line {number}: {reason}")
            continue
        event = line.fields["event"] or ""
        function: Function = "start_job" if line.tags["function"] == "start_job" else "stop_job"
        events.append(LineEvent(function, event, line.timestamp, line.tags))
    return events


def _skip_reason(line: _Line) -> str | None:
    if line.measurement != MEASUREMENT:
        return f"measurement {line.measurement!r} is not {MEASUREMENT!r}"
    if line.fields.get("event") is None:
        return "no string field 'event' (non-event)"
    function = line.tags.get("function")
    if function is None:
        return "no tag 'function'"
    if function not in FUNCTIONS:
        return f"unknown function {function!r}"
    return None
