"""One broker record through the fold: decode, deduplicate, apply, decide — as effects.

Rules of this module (the shell owns the IO; this module owns the decisions):

* The shell hands over each record of the events topic (``Inbound``) and two key-value stores it
  keeps durable (dicts backed by changelog topics in the worker, plain dicts in tests):
  ``heads`` — conversation id -> compact head (a JSON-ready dict whose size does not grow with the
  conversation), and ``history`` — ``history_key(conversation, seq)`` -> one encoded event.
* ``process`` returns an ``Outcome``: the record was folded (with its signals), skipped as a
  duplicate (its offset is at or below the last one applied for its partition), re-keyed (it has
  no key: the shell forwards it under its ``sender_id``), replaced (a control record, below), or
  dead (it cannot be decoded; the shell sends the original bytes and the reason to the
  dead-letter topic). Every record is exactly one of these, so records in = folded + skipped +
  re-keyed + replaced + dead.
* ``process_batch`` folds a batch of one partition's records exactly as ``process`` would one
  by one, but answers only for the records the shell must act on (signals, skipped, re-keyed,
  replaced, dead) and counts the others; it never raises for a record: one that makes the fold
  fail (a bug, not bad input) is dead with an internal-error reason, and reported as a failure.
* A record with the header ``trackerflow.control: replace`` (keyed by the conversation id, value
  ``{"request": "<id>"}``) empties the conversation: its history records are deleted (the
  worker's changelog gets tombstones), its count starts again at 0, the events after it are its
  new history, and its head remembers the request id as ``replaced`` (so the HTTP API's ``PUT``
  knows when its replacement is folded). It causes no signals itself.
* A history record is one event as JSON that ``decode_event`` reads: the record's own value
  when the compiled decoder read it with its own timestamp (``process_batch``; no bytes are
  written for it), else ``encode_kept``'s bytes. A value over ``max_kept_bytes`` is encoded
  too before it is judged too large (the encoder's bytes are fewer: no ``sender_id``, no
  spaces).
* Heads are written at ``flush`` (the shell calls it before it persists a batch): a
  conversation's ``state`` is computed once per batch, not once per event. Until then the
  folder keeps the changed heads itself, so deduplication and rebuilding already see them.
  New history records are written at ``flush`` too, all at once (``update``, which the
  worker's stores do in one step), and before the folder reads ``history`` itself.
* What the changelogs cannot take is dead, not folded: with ``max_kept_bytes`` (the largest
  record value the worker's changelog topics accept), an event whose history record would be
  larger, a ``reminder`` event that would make the conversation's pending reminders take
  more than half of that, or a ``followup`` action name or ``replace`` request id (kept in the
  head) over an eighth of it, is a dead record (``RecordTooLarge``) and changes nothing. A head
  too large with its ``state`` is kept without it (``encode_head``): the state is the tracker's,
  which history rebuilds.
* Pending reminders live in the head (``reminders``, see ``processors.reminders``), updated as
  events are folded; ``fire`` takes a due one out and says what to publish.
* Trackers are cached in memory (least recently used first out). A conversation that is not
  cached is rebuilt once from its history, the only replay this module does.
* ``max_event_history`` is Rasa's: each tracker holds at most that many latest events (its state
  and reverts follow Rasa's windowed tracker). The history store still keeps every event, as
  Rasa's tracker store does, so a rebuilt tracker replays them all through its window and is
  the tracker that folded them one by one.
* Time: a record's missing timestamp is the broker's record time, so a replay decodes the same.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import MutableMapping, Sequence
from typing import Any, Final, Literal, NamedTuple, Protocol

import orjson

from events.errors import EventError, InvalidField, RecordTooLarge
from events.model import FollowupAction, ReminderScheduled, UserUttered
from events.wire import (
    DEFAULT_MAX_RECORD_BYTES,
    Ready,
    decode_event,
    decode_ready,
    decode_record,
    encode_kept,
)
from processors.domain import Domain
from processors.reminders import Pending, fire, observe
from processors.signals import Signal, SignalState, Source, decide, quiet
from processors.tracker import DialogueStateTracker

Head = dict[str, Any]
Kind = Literal["folded", "skipped", "rekeyed", "dead", "replaced"]
REPLACE = "replace"  # the one control: the conversation's history starts again, empty
CONTROL_HEADER = "trackerflow.control"


class Inbound(NamedTuple):
    """One consumed record of the events topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float  # the record's broker time, seconds
    control: str | None = None  # the record's ``trackerflow.control`` header, if any


class Outcome(NamedTuple):
    """What became of one record, and what the shell must do about it."""

    kind: Kind
    source: Source
    conversation_id: str | None = None
    signals: Sequence[Signal] = ()
    error: EventError | None = None
    event_time: float = 0.0  # the folded event's timestamp (0.0 for other outcomes)


class Received(Protocol):
    """One consumed record as the Kafka client hands it over (``ConsumerRecord``'s fields)."""

    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def timestamp(self) -> int: ...  # milliseconds
    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]]: ...


class Batch(NamedTuple):
    """What became of a batch of one partition's records (see ``StreamFolder.process_batch``)."""

    folded: int  # records folded that cause no signal (they need nothing of the shell)
    notable: list[tuple[int, Outcome]]  # (index in the batch, outcome) of every other record
    event_time: float  # the latest folded event's timestamp (0.0 if none)
    failures: list[tuple[int, Exception]]  # (index, error) of the records a bug made dead


def encode_head(head: Head, room: int | None = None) -> bytes:
    """A head as the heads store writes it: JSON, and without its ``state`` (null) if it would
    take more than ``room`` bytes; the state is then the tracker's (history rebuilds it).

    Raises ``ValueError`` if the head is too large even without its state; a fold with
    ``max_kept_bytes`` of ``room`` never makes one (see ``_check_room``).
    """
    data = orjson.dumps(head)
    if room is None or len(data) <= room:
        return data
    state = head.get("state") or {}
    smaller = orjson.dumps({**head, "state": None})
    if len(smaller) > room:
        raise ValueError(
            f"the head of conversation {state.get('sender_id')!r} is {len(smaller)} bytes "
            f"without its state, over the {room} bytes its changelog takes"
        )
    return smaller


def history_key(conversation_id: str, seq: int) -> str:
    """The history-store key of a conversation's ``seq``-th event (sorts by conversation, seq)."""
    if 0 <= seq < len(_SEQ_SUFFIXES):
        return conversation_id + _SEQ_SUFFIXES[seq]
    return f"{conversation_id}\x1f{seq:012d}"


# The keys' endings for the first events of a conversation (most events), made once: a fold
# makes a key per event, and formatting the number was 6% of the fold.
_SEQ_SUFFIXES: Final = tuple(f"\x1f{seq:012d}" for seq in range(4096))


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
        max_event_history: int | None = None,
        max_kept_bytes: int | None = None,
    ) -> None:
        self.heads = heads
        self.history = history
        self.domain = domain
        self.max_event_history = max_event_history
        self.max_record_bytes = max_record_bytes
        self.max_kept_bytes = max_kept_bytes  # the changelogs' largest record value (None: any)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple[int, DialogueStateTracker]] = OrderedDict()
        self._live: dict[str, Head] = {}  # folded since the last flush; no "state" yet
        self._kept: dict[str, bytes] = {}  # history records folded since the last flush

    def process(self, record: Inbound) -> Outcome:
        """Fold one record (see the module rules for the outcomes)."""
        topic, partition, offset = record.topic, record.partition, record.offset
        step = self._step(
            topic, partition, offset, record.key, record.value, record.timestamp, record.control
        )
        if isinstance(step, Outcome):
            return step
        conversation_id, event = step
        partition_key = _partition_key(topic, partition)
        source = Source(topic, partition, offset)
        try:
            signals = self._fold(conversation_id, event, topic, partition, offset, partition_key)
        except EventError as error:  # the changelogs could not keep it (see max_kept_bytes)
            return _dead(error, source, conversation_id)
        if signals is None:
            return Outcome("skipped", source, conversation_id)
        return Outcome("folded", source, conversation_id, signals, None, event.timestamp)

    def process_batch(
        self,
        topic: str,
        partition: int,
        records: Sequence[Received],
        ahead: tuple[Sequence[Any], int] = ((), 0),
    ) -> Batch:
        """Fold a batch of one partition's consecutive records, as ``process`` would one by one,
        without an outcome for each record that is simply folded (most of them).

        It never raises for a record: one that makes the fold fail (a bug, not bad input) is
        dead, with an internal-error reason, and listed in ``failures``; cached trackers are
        dropped then (one may hold the event half applied; heads and history do not, as they
        change after the tracker), so they are rebuilt from history.

        The compiled decoder reads the batch first, all its records in one call
        (``events.wire.decode_ready``: the event and its history record); a record it does not
        take goes through ``_step`` as in ``process``, which judges it. ``ahead``: the records
        as ``events.wire.skim`` started reading them ahead, and the index of the first of
        ``records`` in the first of them (``decode_ready``'s ``skims`` and ``start``).
        """
        notable: list[tuple[int, Outcome]] = []
        failures: list[tuple[int, Exception]] = []
        folded, latest = 0, 0.0
        step_of, fold = self._step, self._fold
        partition_key = _partition_key(topic, partition)
        ready = self._ready(records, ahead)
        for index, record in enumerate(records):
            offset = record.offset
            try:
                decoded = ready[index] if ready is not None else None
                if decoded is not None:  # the common case: read by the compiled decoder
                    conversation_id, event, kept = decoded
                else:
                    headers = record.headers
                    control = control_of(headers) if headers else None
                    now = record.timestamp / 1000.0
                    step = step_of(topic, partition, offset, record.key, record.value, now, control)
                    if isinstance(step, Outcome):
                        notable.append((index, step))
                        continue
                    (conversation_id, event), kept = step, None
                signals = fold(
                    conversation_id, event, topic, partition, offset, partition_key, kept
                )
            except EventError as error:  # the changelogs could not keep it (see max_kept_bytes)
                source = Source(topic, partition, offset)
                notable.append((index, _dead(error, source, conversation_id)))
                continue
            except Exception as error:  # a bug: keep the batch, make the record dead
                self.forget()
                failures.append((index, error))
                notable.append((index, _internal_error(error, topic, partition, offset)))
                continue
            if signals is None:
                skipped = Outcome("skipped", Source(topic, partition, offset), conversation_id)
                notable.append((index, skipped))
                continue
            timestamp = event.timestamp
            if timestamp > latest:  # noqa: PLR1730 - max() is a call per record, this is not
                latest = timestamp
            if signals:
                source = Source(topic, partition, offset)
                outcome = Outcome("folded", source, conversation_id, signals, None, event.timestamp)
                notable.append((index, outcome))
            else:
                folded += 1
        return Batch(folded, notable, latest, failures)

    def _ready(
        self, records: Sequence[Received], ahead: tuple[Sequence[Any], int]
    ) -> list[Ready | None] | None:
        """The records the compiled decoder reads, decoded for the whole batch at once (see
        ``events.wire.decode_ready``); None: every record takes ``_step``."""
        skims, start = ahead
        try:
            return decode_ready(
                records,
                max_bytes=self.max_record_bytes,
                control_header=CONTROL_HEADER,
                skims=skims,
                start=start,
            )
        except Exception:  # record by record, such a failure is reported there (if it recurs)
            return None

    def _step(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        timestamp: float,
        control: str | None,
    ) -> Outcome | tuple[str, Any]:
        """A record up to its fold: an outcome if it is not folded (dead, re-keyed, a
        control), else its conversation id and event."""
        try:
            conversation_id = _key(key)
            if value is None:
                raise InvalidField(
                    "the record has no value (a tombstone); expected a Rasa event",
                    expected="a JSON event object",
                    got="null value",
                )
            if control is not None:
                source = Source(topic, partition, offset)
                return self._control(value, control, conversation_id, source)
            decoded = decode_record(
                value,
                now=timestamp,
                max_bytes=self.max_record_bytes,
                conversation_id=conversation_id,
            )
        except EventError as error:
            return _dead(error, Source(topic, partition, offset))
        if conversation_id is None:
            return Outcome("rekeyed", Source(topic, partition, offset), decoded.sender_id)
        return decoded.sender_id, decoded.event

    def _head(self, conversation_id: str) -> Head:
        """The conversation's head to change: the unflushed one, or a copy of the stored one."""
        head = self._live.get(conversation_id)
        if head is not None:
            return head
        stored = self.heads.get(conversation_id)
        if stored is None:
            return {"count": 0, "offsets": {}, "signals": list(SignalState())}
        head = {k: v for k, v in stored.items() if k != "state"}
        head["offsets"] = dict(stored["offsets"])
        return head

    def _control(
        self, value: bytes, control: str, conversation_id: str | None, source: Source
    ) -> Outcome:
        """A control record (``replace``): the conversation starts again with no events."""
        if control != REPLACE:
            raise InvalidField(
                f"unknown control {control!r} in header {CONTROL_HEADER!r}",
                expected=f"{REPLACE!r}",
                got=repr(control),
            )
        if conversation_id is None:
            raise InvalidField(
                "a control record has no key; expected the conversation id as its key",
                expected="the conversation id as the record key",
                got="no key",
            )
        try:
            body = orjson.loads(value)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("request", ""), str):
            raise InvalidField(
                "a replace control's value must be a JSON object with an optional string "
                "'request' (the id its sender waits for)",
                expected='{"request": "<id>"}',
                got=f"{len(value)} bytes that are not such an object",
            ).at(conversation_id=conversation_id)
        if self.max_kept_bytes is not None:
            request = body.get("request", "")
            _check_field("replace request id", request.encode(), self.max_kept_bytes)
        head = self._head(conversation_id)
        partition_key = _partition_key(source.topic, source.partition)
        if head["offsets"].get(partition_key, -1) >= source.offset:
            return Outcome("skipped", source, conversation_id)
        head["offsets"][partition_key] = source.offset
        self._write_kept()
        for seq in range(int(head["count"])):
            self.history.pop(history_key(conversation_id, seq), None)
        head.update(count=0, signals=list(SignalState()), replaced=body.get("request", ""))
        head.pop("reminders", None)  # their reminder events are gone with the history
        self._live[conversation_id] = head
        self._cache.pop(conversation_id, None)
        self._cache[conversation_id] = (source.partition, self._new_tracker(conversation_id))
        return Outcome("replaced", source, conversation_id)

    def _fold(
        self,
        conversation_id: str,
        event: Any,
        topic: str,
        partition: int,
        offset: int,
        partition_key: str,
        kept: bytes | None = None,
    ) -> Sequence[Signal] | None:
        """Fold the event into its conversation: the signals it causes, or None if its record
        was folded before (a duplicate). ``partition_key`` is ``_partition_key``'s; ``kept``
        the event's history record if it is already written (else ``encode_kept`` writes it)."""
        head = self._live.get(conversation_id) or self._head(conversation_id)
        offsets = head["offsets"]
        if offsets.get(partition_key, -1) >= offset:
            return None
        cached = self._cache.get(conversation_id)  # the tracker: cached, or else rebuilt
        if cached is not None:
            self._cache.move_to_end(conversation_id)
            tracker = cached[1]
        else:
            tracker = self.tracker(conversation_id, partition=partition)
        count = head["count"]
        if kept is None:
            kept = encode_kept(event)
        limit = self.max_kept_bytes
        if limit is not None and (len(kept) > limit or type(event) in _HEAD_GROWERS):
            if len(kept) > limit:  # the record's own bytes, maybe: the encoder's may be fewer
                kept = encode_kept(event)
            _check_room(head, event, kept, count, tracker, limit)
        tracker.update(event)
        self._kept[history_key(conversation_id, count)] = kept
        remembered = head["signals"]
        signals: Sequence[Signal] = ()
        memory: SignalState | None = None
        paused = tracker.paused
        if not quiet(remembered[0], remembered[1], event, paused):
            memory, signals = decide(
                conversation_id,
                SignalState(remembered[0], remembered[1]),
                event,
                paused,
                tracker.followup_action,
                Source(topic, partition, offset),
            )
        pending = head.get("reminders")
        if pending or type(event) is ReminderScheduled:
            changed = observe(pending or {}, event, count, tracker)
            if changed is not None:
                _set_reminders(head, changed)
        if memory is not None:
            head["signals"] = list(memory)
        head["count"] = count + 1
        offsets[partition_key] = offset
        self._live[conversation_id] = head
        return signals

    def fire(
        self, conversation_id: str, name: str, due: float, now: float, grace_s: float
    ) -> tuple[Signal, UserUttered | None] | None:
        """Fire the conversation's reminder ``name`` due at ``due``: it is no longer pending, and
        the shell publishes what :func:`processors.reminders.fire` returns. None if no such
        reminder is pending any more (cancelled, fired, or re-armed for another time)."""
        head = self._head(conversation_id)
        pending = head.get("reminders") or {}
        reminder = pending.get(name)
        if reminder is None or reminder["due"] != due:
            return None
        _set_reminders(head, {n: r for n, r in pending.items() if n != name})
        self._live[conversation_id] = head
        channel = self.tracker(conversation_id).get_latest_input_channel()
        return fire(conversation_id, reminder, now, grace_s, channel)

    def flush(self) -> list[str]:
        """Write the head of every conversation folded since the last flush to ``heads`` (its
        ``state`` computed once, however many of its events were folded) and their new history
        records to ``history``; return their ids."""
        self._write_kept()
        done = list(self._live)
        for conversation_id in done:
            head = self._live[conversation_id]
            head["state"] = self.tracker(conversation_id).current_state()
            self.heads[conversation_id] = head
        self._live.clear()
        return done

    def _write_kept(self) -> None:
        if self._kept:
            self.history.update(self._kept)
            self._kept = {}

    def discard(self) -> None:
        """Drop unflushed heads and history records and every cached tracker (the shell rolls
        its stores back)."""
        self._live.clear()
        self._kept = {}
        self._cache.clear()

    def tracker(self, conversation_id: str, *, partition: int = -1) -> DialogueStateTracker:
        """The conversation's tracker, from the cache or rebuilt from its history."""
        cached = self._cache.get(conversation_id)
        if cached is not None:
            self._cache.move_to_end(conversation_id)
            return cached[1]
        self._write_kept()
        tracker = self._new_tracker(conversation_id)
        head = self._live.get(conversation_id) or self.heads.get(conversation_id)
        for seq in range(0 if head is None else int(head["count"])):
            kept = self.history[history_key(conversation_id, seq)]
            # written by this fold, so within its limits: whatever its size, it is read
            tracker.update(decode_event(kept, max_bytes=len(kept)))
        self._cache[conversation_id] = (partition, tracker)
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return tracker

    def _new_tracker(self, conversation_id: str) -> DialogueStateTracker:
        return DialogueStateTracker(
            conversation_id, self.domain, max_event_history=self.max_event_history
        )

    def forget(self, partitions: set[int] | None = None) -> None:
        """Drop cached trackers (of ``partitions``, or all): another worker may own them now."""
        if partitions is None:
            self._cache.clear()
            return
        for conversation_id in [c for c, (p, _) in self._cache.items() if p in partitions]:
            del self._cache[conversation_id]


def _check_room(
    head: Head, event: Any, kept: bytes, count: int, tracker: DialogueStateTracker, limit: int
) -> None:
    """Raise ``RecordTooLarge`` if the changelogs cannot keep ``event`` (see the module rules);
    ``kept`` is its history record and ``count`` its sequence number."""
    if len(kept) > limit:
        raise RecordTooLarge(
            f"the event's history record would be {len(kept)} bytes, over the {limit} bytes "
            "the history changelog takes per record",
            expected=f"a history record of at most {limit} bytes",
            got=f"{len(kept)} bytes",
        )
    if type(event) is FollowupAction:
        _check_field("followup action name", (event.action_name or "").encode(), limit)
        return
    armed = observe(head.get("reminders") or {}, event, count, tracker)
    size = len(orjson.dumps(armed))
    if size > limit // 2:
        raise RecordTooLarge(
            f"with this reminder the conversation's pending reminders would take {size} bytes "
            f"of its head, over the {limit // 2} bytes they may (half of what the heads "
            "changelog takes per record)",
            expected=f"pending reminders of at most {limit // 2} bytes in all",
            got=f"{size} bytes",
        )


def _check_field(what: str, value: bytes, limit: int) -> None:
    """Raise ``RecordTooLarge`` if ``value``, kept in a head, is over an eighth of ``limit``
    (with the pending reminders' half, a head without its state always fits)."""
    if len(value) > limit // 8:
        raise RecordTooLarge(
            f"the {what} is {len(value)} bytes, over the {limit // 8} bytes a conversation's "
            "head keeps of it (an eighth of what the heads changelog takes per record)",
            expected=f"a {what} of at most {limit // 8} bytes",
            got=f"{len(value)} bytes",
        )


def _dead(error: EventError, source: Source, conversation_id: str | None = None) -> Outcome:
    """The record at ``source`` is dead: ``error``, located there (and in the conversation)."""
    where = {"conversation_id": conversation_id} if conversation_id is not None else {}
    located = error.at(
        topic=source.topic, partition=source.partition, kafka_offset=source.offset, **where
    )
    return Outcome("dead", source, error=located)


def _set_reminders(head: Head, pending: Pending) -> None:
    if pending:
        head["reminders"] = pending
    else:
        head.pop("reminders", None)


# the events that can make a head without its state larger (see _check_room)
_HEAD_GROWERS = frozenset({ReminderScheduled, FollowupAction})

_PARTITION_KEYS: dict[tuple[str, int], str] = {}


def _partition_key(topic: str, partition: int) -> str:
    """``"<topic>:<partition>"``, the head's offsets key (made once per partition)."""
    key = _PARTITION_KEYS.get((topic, partition))
    if key is None:
        key = _PARTITION_KEYS[topic, partition] = f"{topic}:{partition}"
    return key


def _key(key: bytes | None) -> str | None:
    if not key:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidField(
            "the record key is not UTF-8; expected the conversation id",
            expected="a UTF-8 conversation id",
            got=f"{len(key)} bytes",
        ) from None


def control_of(headers: Sequence[tuple[str, bytes | None]]) -> str | None:
    """The value of a record's ``trackerflow.control`` header, if it has one (a header
    without a value reads as ``""``, which no control is)."""
    for name, value in headers:
        if name == CONTROL_HEADER:
            return "" if value is None else bytes(value).decode("utf-8", "replace")
    return None


def _internal_error(error: Exception, topic: str, partition: int, offset: int) -> Outcome:
    bug = EventError(
        f"internal error while folding: {type(error).__name__}: {error}",
        expected="a record trackerflow can fold",
        got="an event that triggered a bug (please report it with this record)",
    )
    return _dead(bug, Source(topic, partition, offset))
