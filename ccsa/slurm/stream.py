"""Decode a Slurm ``{"jobs": [...], ...}`` answer job by job, holding one job's bytes at a time.

Contract: :func:`decode_jobs` reads a document from a binary file (the runner's temporary file,
or ``io.BytesIO`` for bytes in hand) in chunks, hands every element of the top-level ``jobs``
array to a msgspec decoder on its own, and returns the decoded jobs, the top-level values the
caller asked for (``meta``), and one :class:`BadRecord` per element that did not decode. Memory
is the decoded views plus one read chunk plus the largest single job, whatever the answer's size.
A document that is not JSON, not an object, or whose ``jobs`` is not an array fails as a whole
(:class:`SlurmDecodeError`, with the byte offset); one element that is valid JSON but not a job
the view accepts (a wrong type in one field) is a :class:`BadRecord` naming the job id when it
has one and the JSON path of the field, and the other jobs are kept (issue #17 item 5).

Why hand-written: msgspec only decodes whole documents (no incremental or ``raw_decode``
API), and decoding the envelope as ``{"jobs": list[msgspec.Raw]}`` needs the whole answer in
memory at once, which is what this module exists to avoid. No JSON grammar is written here
either: the end of every value is found by msgspec itself. Decoding a buffer that starts with a
complete value and continues fails with ``trailing characters (byte N)``, N - 1 being where the
value (and its trailing whitespace) ends; a value cut by the end of the chunk fails with
``Input data was truncated``, and the next chunk is read. Only the envelope's punctuation
(``{`` ``"key"`` ``:`` ``,`` ``[`` ``]``) is walked by hand. ``tests/test_slurm_stream.py`` pins
those two msgspec messages, so an msgspec release that rewords them fails the tests, not a site.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import BinaryIO, Generic, TypeVar

import msgspec

from ccsa.errors import SlurmDecodeError

__all__ = ["BadRecord", "Decoded", "decode_jobs", "split_error"]

#: Bytes read from the file at a time (a job that does not fit makes the next read larger).
CHUNK_SIZE = 1 << 20

T = TypeVar("T")

_TRAILING = re.compile(r"trailing characters \(byte (\d+)\)")
_AT_BYTE = re.compile(r"\(byte (\d+)\)")
_TRUNCATED = "Input data was truncated"
_WS = re.compile(rb"[ \t\r\n]*")
_raw_decoder = msgspec.json.Decoder(msgspec.Raw)
_key_decoder = msgspec.json.Decoder(str)


@dataclass(frozen=True, slots=True)
class BadRecord:
    """One ``jobs[]`` element that did not decode; the rest of the answer was kept."""

    #: position in the ``jobs`` array
    index: int
    #: the element's ``job_id`` when that much decodes, else None
    job_id: int | None
    #: JSON path of the offending field in the answer, e.g. ``$.jobs[3].time.start``
    path: str
    #: msgspec's reason, e.g. ``Expected `int`, got `str```
    reason: str

    @property
    def field(self) -> str:
        """The offending field within the record, e.g. ``time.start`` (``""``: the record)."""
        return self.path.partition("]")[2].removeprefix(".")

    def describe(self) -> str:
        """One line for the log: job id, field and reason."""
        who = f"job {self.job_id}" if self.job_id is not None else f"jobs[{self.index}] (no job id)"
        return f"{who}: {self.field or 'the record'}: {self.reason}"


@dataclass(slots=True)
class Decoded(Generic[T]):
    """What :func:`decode_jobs` found: the jobs that decoded, the other top-level values asked
    for (raw JSON bytes by key), and the elements that did not decode."""

    jobs: list[T]
    values: dict[str, bytes]
    bad: list[BadRecord]


class _JobId(msgspec.Struct):
    job_id: int | None = None


_id_decoder = msgspec.json.Decoder(_JobId)


def split_error(exc: msgspec.ValidationError | msgspec.DecodeError) -> tuple[str, str]:
    """(reason, path) of an msgspec error; path ``$`` when msgspec names none."""
    text, at, rest = str(exc).partition(" - at `")
    return text, (rest.rstrip("`") if at else "$")


class _Scanner:
    """A window onto the file: ``buf[pos:]`` is what has been read and not yet consumed."""

    def __init__(self, source: BinaryIO, command: str, chunk_size: int) -> None:
        self.source = source
        self.command = command
        self.chunk = chunk_size
        self.buf = bytearray()
        self.pos = 0
        self.offset = 0  # file offset of buf[0]
        self.eof = False

    def more(self, size: int) -> bool:
        """Read up to ``size`` more bytes (dropping consumed ones first); False at end of file."""
        if self.eof:
            return False
        if self.pos and self.pos * 2 >= len(self.buf):
            del self.buf[: self.pos]
            self.offset += self.pos
            self.pos = 0
        data = self.source.read(size)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def peek(self) -> int | None:
        """The next non-whitespace byte (consuming the whitespace), None at end of file."""
        while True:
            match = _WS.match(self.buf, self.pos)
            assert match is not None  # the pattern matches the empty string
            self.pos = match.end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more(self.chunk):
                return None

    def expect(self, chars: bytes, where: str) -> int:
        """Consume one of ``chars`` (after whitespace) and return it, else fail."""
        got = self.peek()
        if got is None or got not in chars:
            seen = "end of input" if got is None else repr(chr(got))
            wanted = " or ".join(repr(chr(c)) for c in chars)
            raise self.error(f"expected {wanted} {where}, found {seen}", self.pos)
        self.pos += 1
        return got

    def skip_header(self) -> None:
        """Drop a leading ``CLUSTER: name`` line (squeue/sinfo with ``--cluster``)."""
        self.peek()
        while len(self.buf) - self.pos < 8 and self.more(self.chunk):
            pass
        if self.buf.startswith(b"CLUSTER:", self.pos):
            while (newline := self.buf.find(b"\n", self.pos)) < 0:
                if not self.more(self.chunk):
                    self.pos = len(self.buf)
                    return
            self.pos = newline + 1

    def value(self) -> bytes:
        """The next JSON value's bytes (consumed); the end is found by msgspec."""
        if self.peek() is None:
            raise self.error("unexpected end of input", self.pos)
        size = self.chunk
        while True:
            end = self._end()
            if end is not None:
                with memoryview(self.buf) as whole, whole[self.pos : end] as view:
                    data = bytes(view)
                self.pos = end
                return data
            size = max(size, len(self.buf) - self.pos)  # a big value: read as much again
            if not self.more(size):
                raise self.error("truncated: the output ends inside a value", len(self.buf))

    def _end(self) -> int | None:
        """End of the value at ``pos``, or None when more input is needed to tell."""
        with memoryview(self.buf) as whole, whole[self.pos :] as view:
            try:
                _raw_decoder.decode(view)
            except msgspec.DecodeError as exc:
                text = str(exc)
            else:  # the value runs to the end of what is read: a number may go on
                return len(self.buf) if self.eof else None
        trailing = _TRAILING.search(text)
        if trailing:  # msgspec counts from 1 here: N is just past the first trailing byte
            return self.pos + int(trailing.group(1)) - 1
        if text.startswith(_TRUNCATED):
            return None
        at = _AT_BYTE.search(text)
        where = self.pos + int(at.group(1)) if at else self.pos
        raise self.error(_AT_BYTE.sub("", text).strip(), where)

    def error(self, text: str, pos: int) -> SlurmDecodeError:
        return SlurmDecodeError(self.command, f"{text} (byte {self.offset + pos})")


def decode_jobs(
    source: BinaryIO,
    decoder: msgspec.json.Decoder[T],
    *,
    command: str,
    keep: Collection[str] = ("meta",),
    finish: Callable[[T], T] | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> Decoded[T]:
    """Decode the top-level ``jobs`` array of ``source`` element by element.

    ``keep``: other top-level keys whose values are returned (as JSON bytes) in
    :attr:`Decoded.values`. ``finish`` is applied to every decoded job (e.g. to copy out what a
    job keeps of its own bytes, so that those can be freed); a ``ValidationError`` or
    ``DecodeError`` it raises makes the element a :class:`BadRecord` like a failed decode.
    Raises :class:`SlurmDecodeError` when the document as a whole is not one (see the module
    docstring). A document without ``jobs`` decodes to no jobs.

    The cyclic garbage collector is paused while the views are built (they hold no cycles; a
    big answer would otherwise trigger many young collections that can find nothing).
    """
    scan = _Scanner(source, command, chunk_size)
    out: Decoded[T] = Decoded([], {}, [])
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        scan.skip_header()
        if scan.peek() is None:
            raise scan.error("empty output", 0)
        scan.expect(b"{", "at the start of the document")
        if scan.peek() == ord("}"):
            scan.pos += 1
            return out
        while True:
            key = _decode_key(scan)
            scan.expect(b":", f"after key {key!r}")
            if key == "jobs":
                _read_jobs(scan, decoder, finish, out)
            elif key in keep:
                out.values[key] = scan.value()
            else:
                scan.value()
            if scan.expect(b",}", "after a top-level value") == ord("}"):
                break
        if scan.peek() is not None:
            raise scan.error("trailing characters after the document", scan.pos)
        return out
    finally:
        if was_enabled:
            gc.enable()


def _decode_key(scan: _Scanner) -> str:
    if scan.peek() != ord('"'):
        raise scan.error("expected a key string in the top-level object", scan.pos)
    pos = scan.pos
    try:
        return _key_decoder.decode(scan.value())
    except msgspec.DecodeError as exc:  # pragma: no cover - value() found a valid string
        raise scan.error(str(exc), pos) from exc


def _read_jobs(
    scan: _Scanner,
    decoder: msgspec.json.Decoder[T],
    finish: Callable[[T], T] | None,
    out: Decoded[T],
) -> None:
    if scan.peek() == ord("n"):  # "jobs": null
        scan.value()
        return
    scan.expect(b"[", "as the value of `jobs`")
    if scan.peek() == ord("]"):
        scan.pos += 1
        return
    index = 0
    while True:
        data = scan.value()
        try:
            job = decoder.decode(data)
            out.jobs.append(finish(job) if finish is not None else job)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            out.bad.append(_bad(index, data, exc))
        index += 1
        if scan.expect(b",]", "between jobs") == ord("]"):
            return


def _bad(index: int, data: bytes, exc: msgspec.ValidationError | msgspec.DecodeError) -> BadRecord:
    reason, path = split_error(exc)
    try:
        job_id = _id_decoder.decode(data).job_id
    except (msgspec.ValidationError, msgspec.DecodeError):
        job_id = None
    return BadRecord(index, job_id, f"$.jobs[{index}]{path[1:]}", reason)
