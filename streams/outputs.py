"""Output files for offline tools: written completely or not at all.

Rules of this module:

* A path is written through a temporary file in the same directory, renamed over the target only
  when the ``with`` block succeeds; on any error the target is left untouched. The temporary file
  is created on entry, so an unwritable destination fails before any work is done.
* ``-`` is standard output, and an existing file that is not a regular file (``/dev/null``, a
  named pipe) is written directly. ``None`` means "not wanted": the context manager then yields
  ``None``.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from types import TracebackType
from typing import IO

STDOUT = "-"


class OutputFile:
    """A binary output for ``path`` (see the module rules); use as a context manager."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._stream: IO[bytes] | None = None
        self._temp: str | None = None

    def __enter__(self) -> IO[bytes] | None:
        if self.path is None:
            return None
        if self.path == STDOUT:
            self._stream = sys.stdout.buffer
            return self._stream
        if _is_special(self.path):  # /dev/null, a named pipe: nothing to replace, write directly
            self._stream = open(self.path, "wb")
            return self._stream
        directory = os.path.dirname(os.path.abspath(self.path))
        name = os.path.basename(self.path)
        fd, self._temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
        os.fchmod(fd, 0o666 & ~_umask())  # what open() would have given the file
        self._stream = os.fdopen(fd, "wb")
        return self._stream

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stream, temp = self._stream, self._temp
        self._stream = self._temp = None
        if stream is None:
            return
        if temp is None:
            if stream is sys.stdout.buffer:
                stream.flush()
            else:
                stream.close()
            return
        stream.close()
        if exc_type is None and self.path is not None:
            os.replace(temp, self.path)
        else:
            with contextlib.suppress(OSError):
                os.unlink(temp)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _is_special(path: str) -> bool:
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False
