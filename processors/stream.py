"""One broker record through the fold: decode, deduplicate, apply, decide — as effects.

Rules of this module (the shell owns the IO; this module owns the decisions):

* The shell hands over each record of the events topic (``Inbound``) and two key-value stores it
  keeps durable (dicts backed by changelog topics in the worker, plain dicts in tests):
  ``heads`` — conversation id -> compact head (a JSON-ready dict whose size does not grow with the
  conversation), and ``history`` — ``history_key(conversation, seq)`` -> one encoded event.
* ``process`` returns an ``Outcome``: the record was folded (with its signals), skipped as a
  duplicate (its offset is at or below the last one applied for its partition), re-keyed (it has
  no key: the shell forwards it under its ``sender_id``), or dead (it cannot be decoded; the shell
  sends the original bytes and the reason to the dead-letter topic). Every record is exactly one
  of these, so records in = folded + skipped + re-keyed + dead.
* Heads are written at ``flush`` (the shell calls it before it persists a batch): a
  conversation's ``state`` is computed once per batch, not once per event. Until then the
  folder keeps the changed heads itself, so deduplication and rebuilding already see them.
* Trackers are cached in memory (least recently used first out). A conversation that is not
  cached is rebuilt once from its history, the only replay this module does.
* Time: a record's missing timestamp is the broker's record time, so a replay decodes the same.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from events.errors import EventError, InvalidField
from events.wire import (
    DEFAULT_MAX_RECORD_BYTES,
    decode_event,
    decode_record,
    dumps,
    encode_event,
)
from processors.domain import Domain
from processors.signals import Signal, SignalState, Source, decide
from processors.tracker import DialogueStateTracker

Head = dict[str, Any]
Kind = Literal["folded", "skipped", "rekeyed", "dead"]


class Inbound(NamedTuple):
    """One consumed record of the events topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float  # the record's broker time, seconds


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one record, and what the shell must do about it."""

    kind: Kind
    source: Source
    conversation_id: str | None = None
    signals: list[Signal] = field(default_factory=list)
    error: EventError | None = None


def history_key(conversation_id: str, seq: int) -> str:
    """The history-store key of a conversation's ``seq``-th event (sorts by conversation, seq)."""
    return f"{conversation_id}\x1f{seq:012d}"


class StreamFolder:
    """Folds records into per-conversation trackers kept in ``heads``/``history`` stores."""

    def __init__(
        self,
        heads: MutableMapping[str, Head],
        history: MutableMapping[str, bytes],
        *,
        domain: Domain | None = None,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        cache_size: int = 10_000,
    ) -> None:
        self.heads = heads
        self.history = history
        self.domain = domain
        self.max_record_bytes = max_record_bytes
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple[int, DialogueStateTracker]] = OrderedDict()
        self._live: dict[str, Head] = {}  # folded since the last flush; no "state" yet

    def process(self, record: Inbound) -> Outcome:
        """Fold one record (see the module rules for the four outcomes)."""
        source = Source(record.topic, record.partition, record.offset)
        try:
            conversation_id = _key(record)
            if record.value is None:
                raise InvalidField(
                    "the record has no value (a tombstone); expected a Rasa event",
                    expected="a JSON event object",
                    got="null value",
                )
            decoded = decode_record(
                record.value,
                now=record.timestamp,
                max_bytes=self.max_record_bytes,
                conversation_id=conversation_id,
            )
        except EventError as error:
            where = error.at(
                topic=record.topic, partition=record.partition, kafka_offset=record.offset
            )
            return Outcome("dead", source, error=where)
        if conversation_id is None:
            return Outcome("rekeyed", source, decoded.sender_id)
        return self._fold(decoded.sender_id, decoded.event, source)

    def _fold(self, conversation_id: str, event: Any, source: Source) -> Outcome:
        head = self._live.get(conversation_id)
        if head is None:
            stored = self.heads.get(conversation_id)
            head = (
                {"count": 0, "offsets": {}, "signals": list(SignalState())}
                if stored is None
                else {
                    "count": stored["count"],
                    "offsets": dict(stored["offsets"]),
                    "signals": stored["signals"],
                }
            )
        partition_key = f"{source.topic}:{source.partition}"
        if head["offsets"].get(partition_key, -1) >= source.offset:
            return Outcome("skipped", source, conversation_id)
        tracker = self.tracker(conversation_id, partition=source.partition)
        count = int(head["count"])
        tracker.update(event)
        self.history[history_key(conversation_id, count)] = dumps(encode_event(event))
        memory, signals = decide(
            conversation_id,
            SignalState(*head["signals"]),
            event,
            tracker.paused,
            tracker.followup_action,
            source,
        )
        head["count"] = count + 1
        head["offsets"][partition_key] = source.offset
        head["signals"] = list(memory)
        self._live[conversation_id] = head
        return Outcome("folded", source, conversation_id, signals)

    def flush(self) -> list[str]:
        """Write the head of every conversation folded since the last flush to ``heads`` (its
        ``state`` computed once, however many of its events were folded); return their ids."""
        done = list(self._live)
        for conversation_id in done:
            head = self._live[conversation_id]
            head["state"] = self.tracker(conversation_id).current_state()
            self.heads[conversation_id] = head
        self._live.clear()
        return done

    def discard(self) -> None:
        """Drop unflushed heads and every cached tracker (the shell rolls its stores back)."""
        self._live.clear()
        self._cache.clear()

    def tracker(self, conversation_id: str, *, partition: int = -1) -> DialogueStateTracker:
        """The conversation's tracker, from the cache or rebuilt from its history."""
        cached = self._cache.get(conversation_id)
        if cached is not None:
            self._cache.move_to_end(conversation_id)
            return cached[1]
        tracker = DialogueStateTracker(conversation_id, self.domain)
        head = self._live.get(conversation_id) or self.heads.get(conversation_id)
        for seq in range(0 if head is None else int(head["count"])):
            tracker.update(decode_event(self.history[history_key(conversation_id, seq)]))
        self._cache[conversation_id] = (partition, tracker)
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return tracker

    def forget(self, partitions: set[int] | None = None) -> None:
        """Drop cached trackers (of ``partitions``, or all): another worker may own them now."""
        if partitions is None:
            self._cache.clear()
            return
        for conversation_id in [c for c, (p, _) in self._cache.items() if p in partitions]:
            del self._cache[conversation_id]


def _key(record: Inbound) -> str | None:
    if not record.key:
        return None
    try:
        return record.key.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidField(
            "the record key is not UTF-8; expected the conversation id",
            expected="a UTF-8 conversation id",
            got=f"{len(record.key)} bytes",
        ) from None
