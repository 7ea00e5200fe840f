"""A progress bar for commands that read input files (rich, on standard error).

Rules of this module:

* Progress is drawn only when standard error is a terminal and the caller enables it; otherwise
  every method is a cheap no-op except :meth:`FileProgress.echo`, which always writes messages.
* The bar and the ETA follow bytes read from regular files (compressed bytes for gzip); the rate
  follows records. When an input is a pipe there is no total: the bar pulses and there is no ETA.
* After reading, :meth:`FileProgress.writing` adds a second bar for writing results (counted in
  the unit the caller names, e.g. conversations).
* Messages printed while the bar is up go through the same console, so they do not tear it.
"""

from __future__ import annotations

import time
from types import TracebackType

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from streams.sources import Source


class FileProgress:
    """Progress over a sequence of sources; use as a context manager."""

    def __init__(self, *, enabled: bool, total_bytes: int | None, noun: str = "events") -> None:
        self.console = Console(stderr=True)
        self.active = enabled and self.console.is_terminal
        self.noun = noun
        self._total = total_bytes
        self._done_bytes = 0
        self._source: Source | None = None
        self._started = self._writing_started = time.perf_counter()
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> FileProgress:
        self._started = time.perf_counter()
        if self.active:
            self._bar = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[records]:,} {task.fields[noun]}"),
                TextColumn("{task.fields[rate]:,.0f}/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._bar.start()
            self._task = self._bar.add_task(
                "reading", total=self._total, records=0, rate=0.0, noun=self.noun
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def start(self, source: Source) -> None:
        """Reading ``source`` begins."""
        self._source = source
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, description=source.name)

    def finish(self, source: Source) -> None:
        """Reading ``source`` is done (its whole size counts as read)."""
        self._done_bytes += source.size if source.size is not None else source.position()
        self._source = None

    def update(self, records: int) -> None:
        """Redraw with the number of records read so far."""
        if self._bar is None or self._task is None:
            return
        position = self._done_bytes + (self._source.position() if self._source else 0)
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        self._bar.update(self._task, completed=position, records=records, rate=records / elapsed)

    def writing(self, label: str, total: int) -> None:
        """Reading is over; show a bar for writing ``total`` items (see :meth:`wrote`)."""
        self._writing_started = time.perf_counter()
        if self._bar is not None:
            self._task = self._bar.add_task(label, total=total, records=0, rate=0.0, noun=label)

    def wrote(self, count: int) -> None:
        """``count`` items have been written so far."""
        if self._bar is None or self._task is None:
            return
        elapsed = max(time.perf_counter() - self._writing_started, 1e-9)
        self._bar.update(self._task, completed=count, records=count, rate=count / elapsed)

    def echo(self, message: str) -> None:
        """A message on standard error (above the bar when it is shown)."""
        if self._bar is not None:
            self._bar.console.print(message, markup=False, highlight=False, soft_wrap=True)
        else:
            click.echo(message, err=True)

    def elapsed(self) -> float:
        """Seconds since the progress started."""
        return time.perf_counter() - self._started
