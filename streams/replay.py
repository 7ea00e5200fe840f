"""Offline replay: broker records from JSON-lines files folded into one tracker per conversation.

Rules of this module:

* Input lines are broker records as Rasa's Kafka broker writes them (an event object plus
  ``sender_id``), conversations interleaved. Each line is decoded by ``events.wire`` and applied to
  its conversation's tracker (``processors``), in file order.
* A line that cannot be used is a :class:`Reject` (source, line number, reason, raw bytes) and the
  replay goes on; nothing is dropped silently. Blank lines are skipped and are not rejects.
* Missing (or falsy) timestamps become ``options.now`` — the CLI passes the wall-clock time at the
  start of the run, one value for the whole run.
* With ``options.conversations`` only those conversations are folded; records of the others are
  still decoded (so bad lines are rejected whatever their conversation) and counted as skipped.
* Output lists conversations in the order their first usable record appeared. With
  ``options.until`` each tracker is folded completely, then travelled back in time
  (Rasa's ``GET /conversations/{id}/tracker?until=``).
* No clock, no terminal: progress and summaries are the caller's (``streams.cli``).
* Callers fold inside :func:`paused_gc`: trackers keep every event alive, so with millions of
  live objects each of Python's full cyclic collections costs time proportional to everything
  read so far (it halves throughput at 10^5 events); folding creates no garbage cycles worth
  collecting early.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from events import DEFAULT_MAX_RECORD_BYTES, EventError, RecordTooLarge, decode_record, dumps
from events.stories import UnsupportedStoryFormat, yaml_stories
from processors import DialogueStateTracker, Domain, EventVerbosity
from streams.sources import Line, Source

PROGRESS_EVERY = 2048  # lines between progress callbacks


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector (reference counting goes on) for the block."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _ignore(count: int) -> None:
    """A progress callback that does nothing."""


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """What to replay and how; built once from the command line."""

    verbosity: EventVerbosity = EventVerbosity.NONE
    until: float | None = None
    conversations: frozenset[str] = frozenset()  # empty: every conversation
    domain: Domain | None = None
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    now: float | None = None  # stamp for events without a timestamp


@dataclass(frozen=True, slots=True)
class Reject:
    """One input line that could not be folded, and why."""

    source: str
    line: int
    error: EventError
    raw: bytes

    def as_dict(self) -> dict[str, Any]:
        """The rejects-file record (``raw`` decoded as UTF-8 with replacement characters)."""
        error = self.error
        return {
            "source": self.source,
            "line": self.line,
            "conversation_id": error.where.conversation_id,
            "error": type(error).__name__,
            "reason": error.reason,
            "expected": error.expected,
            "got": error.got,
            "raw": self.raw.decode("utf-8", errors="replace"),
        }


@dataclass(slots=True)
class Counts:
    """What a replay has read so far."""

    lines: int = 0  # non-blank lines
    events: int = 0  # folded into a tracker
    skipped: int = 0  # valid records of conversations not asked for
    rejected: int = 0


@dataclass(slots=True)
class Replay:
    """The trackers being folded, fed source by source."""

    options: ReplayOptions = field(default_factory=ReplayOptions)
    trackers: dict[str, DialogueStateTracker] = field(default_factory=dict)
    counts: Counts = field(default_factory=Counts)

    def feed(self, source: Source, tick: Callable[[], None] | None = None) -> Iterator[Reject]:
        """Fold every line of ``source``; yields the rejected ones. ``tick`` is called every
        ``PROGRESS_EVERY`` lines (for a progress display)."""
        options, trackers, counts = self.options, self.trackers, self.counts
        wanted, now, limit = options.conversations, options.now, options.max_record_bytes
        for line in source.lines(limit):
            data = line.data
            if not data or data.isspace():
                continue
            counts.lines += 1
            if tick is not None and counts.lines % PROGRESS_EVERY == 0:
                tick()
            try:
                if line.cut:
                    raise _cut_record(limit)
                record = decode_record(data, now=now, max_bytes=limit)
            except EventError as error:
                counts.rejected += 1
                yield _reject(source, line, error)
                continue
            sender = record.sender_id
            if wanted and sender not in wanted:
                counts.skipped += 1
                continue
            tracker = trackers.get(sender)
            if tracker is None:
                tracker = trackers[sender] = DialogueStateTracker(sender, options.domain)
            tracker.update(record.event)
            counts.events += 1

    def results(self) -> Iterator[DialogueStateTracker]:
        """The trackers to output, in first-seen order (travelled back when ``until`` is set)."""
        until = self.options.until
        for tracker in self.trackers.values():
            yield tracker if until is None else tracker.travel_back_in_time(until)

    def write_states(self, out: IO[bytes], tick: Callable[[int], None] = _ignore) -> int:
        """One ``current_state()`` JSON object per line (orjson); returns how many.
        ``tick`` is told how many were written so far."""
        verbosity = self.options.verbosity
        count = 0
        for tracker in self.results():
            out.write(dumps(tracker.current_state(verbosity)) + b"\n")
            count += 1
            tick(count)
        return count

    def write_stories(
        self, out: IO[bytes], warn: Callable[[str], None], tick: Callable[[int], None] = _ignore
    ) -> int:
        """Every conversation as a YAML story, one document with one header; returns how many.

        A conversation Rasa's story writer would fail on is left out and reported to ``warn``;
        with no stories at all the document is only the header, as Rasa writes it.
        """
        count = 0
        for tracker in self.results():
            try:
                text = tracker.export_stories(should_append_stories=count > 0)
            except UnsupportedStoryFormat as error:
                warn(f"conversation {tracker.sender_id!r}: no story written: {error}")
                continue
            out.write(text.encode("utf-8"))
            count += 1
            tick(count)
        if not count:
            out.write(yaml_stories([]).encode("utf-8"))
        return count

    def missing(self) -> list[str]:
        """Conversations asked for with ``conversations`` that never appeared."""
        return sorted(self.options.conversations - self.trackers.keys())


def _cut_record(limit: int) -> RecordTooLarge:
    return RecordTooLarge(
        f"record is longer than the limit of {limit} bytes (see --max-record-bytes)",
        expected=f"at most {limit} bytes",
        got=f"more than {limit} bytes",
    )


def _reject(source: Source, line: Line, error: EventError) -> Reject:
    return Reject(
        source.name, line.number, error.at(source=source.name, line=line.number), line.data
    )
