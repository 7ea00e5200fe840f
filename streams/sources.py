"""Input files for offline tools: plain or gzip JSONL files, or standard input, read line by line.

Rules of this module:

* A source is a path or ``-`` (standard input). Compression is recognised by content (the gzip
  magic bytes), whatever the file is called, so ``zcat``-free pipes work too.
* Lines are read with a length limit: a line longer than ``max_bytes`` is never held in memory
  whole; its first ``max_bytes`` bytes are returned with ``cut=True`` and the rest is skipped.
* Every line is numbered from 1 (blank lines count) so callers can point at it.
* A file that cannot be opened or decompressed raises :class:`InputError` naming the file; that is
  a problem with the invocation, not with one record, so callers stop.
* ``position()`` tells how many bytes of the underlying file were consumed (compressed bytes for a
  gzip file), and ``size`` how many there are (``None`` for pipes): enough for a progress bar.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import sys
import zlib
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import BinaryIO, NamedTuple, cast

STDIN = "-"
GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 16
_ReadLine = Callable[[int], bytes]


class InputError(Exception):
    """An input file cannot be read: missing, unreadable, a directory, or broken compression."""


class Line(NamedTuple):
    """One line of input: its 1-based number, its bytes without the line break, and whether it
    was cut short because it is longer than the limit (then ``data`` is only its beginning)."""

    number: int
    data: bytes
    cut: bool = False


class Source:
    """One open input (file or standard input); use as a context manager.

    ``name`` is what messages and rejects call it: the path as given, or ``<stdin>``.
    """

    def __init__(self, path: str, *, stdin: BinaryIO | None = None) -> None:
        self.path = path
        self.name = "<stdin>" if path == STDIN else path
        self._raw = self._open_raw(path, stdin)
        self.size = _regular_size(self._raw)
        self._consumed = 0
        self._stream: BinaryIO = self._raw
        try:
            if self._sniff() == GZIP_MAGIC:
                self._stream = _checked_gzip(self._raw, self.name)
        except BaseException:
            self.close()
            raise

    def _open_raw(self, path: str, stdin: BinaryIO | None) -> BinaryIO:
        if path == STDIN:
            return stdin if stdin is not None else sys.stdin.buffer
        try:
            return open(path, "rb")
        except OSError as exc:
            raise InputError(f"cannot read {path!r}: {exc.strerror or exc}") from exc

    def _sniff(self) -> bytes:
        """The first two bytes, without consuming them."""
        raw = self._raw
        if isinstance(raw, io.BufferedReader):
            return raw.peek(2)[:2]
        if raw.seekable():
            head = raw.read(2)
            raw.seek(0)
            return head
        buffered = io.BufferedReader(cast(io.RawIOBase, raw))
        self._raw = buffered
        return buffered.peek(2)[:2]

    def position(self) -> int:
        """Bytes of the underlying file consumed so far (compressed bytes for gzip)."""
        if self.size is not None:
            try:
                return self._raw.tell()
            except OSError:
                return self._consumed
        return self._consumed

    def lines(self, max_bytes: int) -> Iterator[Line]:
        """Every line, numbered from 1; lines much longer than ``max_bytes`` come back cut."""
        limit = max_bytes + 2  # room for the content limit plus "\r\n"
        readline = self._stream.readline
        number = 0
        try:
            while chunk := readline(limit):
                number += 1
                self._consumed += len(chunk)
                if len(chunk) == limit and not chunk.endswith(b"\n"):
                    self._skip_rest_of_line(readline)
                    yield Line(number, chunk[:max_bytes], cut=True)
                    continue
                yield Line(number, chunk.rstrip(b"\r\n"))
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"cannot read {self.name!r}: {_describe(exc)}") from exc

    def _skip_rest_of_line(self, readline: _ReadLine) -> None:
        while True:
            rest = readline(_CHUNK)
            self._consumed += len(rest)
            if not rest or rest.endswith(b"\n"):
                return

    def close(self) -> None:
        """Close the file (standard input is left open)."""
        if self._stream is not self._raw:
            self._stream.close()
        if self.path != STDIN:
            self._raw.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _regular_size(raw: BinaryIO) -> int | None:
    """The size of a regular file, or None for pipes, terminals and other streams."""
    try:
        info = os.fstat(raw.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _checked_gzip(raw: BinaryIO, name: str) -> BinaryIO:
    """A gzip reader over ``raw``; the header and first block are checked now, so a file that is
    not really gzip fails before anything is replayed."""
    stream = gzip.GzipFile(fileobj=raw, mode="rb")
    try:
        stream.peek(1)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"cannot read {name!r}: {_describe(exc)}") from exc
    return stream  # type: ignore[return-value]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "the gzip data is truncated (compressed file ended before the end-of-stream marker)"
    if isinstance(exc, gzip.BadGzipFile | zlib.error):
        return f"not valid gzip data ({exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
