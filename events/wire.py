"""Rasa's wire format: JSON records to events and back, exactly as Rasa 3.6 reads and writes them.

Rules of this module:

* Decoding takes JSON bytes (orjson), JSON text or an already-parsed object. Bytes are checked in
  this order: size limit, UTF-8, JSON, top-level object. The object then goes through the explicit
  tag -> decoder table of ``events._decoders`` (Rasa 3.6 ``from_parameters`` semantics, stricter
  where Rasa crashes or its HTTP schema rejects; see that module for the reminder-name rule).
* Encoding is Rasa 3.6 ``as_dict()`` through an explicit class -> encoder table, key order
  included: ``event``, ``timestamp``, ``metadata`` (only when non-empty), then the class keys;
  ``user`` and ``bot`` always (re)write ``metadata``. trackerflow adds the keys Rasa drops
  (``cancel_reminder`` selectors, ``export`` path, the 0.14 reminder ``action``) only when set.
* A broker record is an event object plus ``sender_id``, as Rasa's Kafka broker publishes it;
  :func:`dumps_rasa` reproduces Rasa's bytes, :func:`dumps` is orjson for trackerflow's own output.
* Every failure is an :class:`~events.errors.EventError` saying what was expected and what arrived;
  nothing here does IO or reads the clock (``now`` is an argument).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, NamedTuple

import orjson

from events import model as m
from events._decoders import DECODERS, bad_tag
from events.errors import (
    EventError,
    InvalidField,
    InvalidJson,
    Location,
    MissingField,
    RecordTooLarge,
    show,
)
from events.fast import compiled, native_decoder
from events.model import EVENT_TYPES, Event, JSONDict

DEFAULT_MAX_RECORD_BYTES: Final = 1_048_576

TAGS: Final[Mapping[str, type[Event]]] = MappingProxyType({c.TAG: c for c in EVENT_TYPES})
"""The Rasa 3.6 ``event`` tags and their classes (legacy tags are accepted by the decoder only)."""

_ABSENT: Final[Any] = object()


class Record(NamedTuple):
    """One broker record: the conversation it belongs to and its event (an immutable pair)."""

    sender_id: str
    event: Event


def decode_event(
    data: bytes | str | Mapping[str, Any],
    *,
    now: float | None = None,
    max_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> Event:
    """One event from JSON bytes, JSON text or a parsed JSON object, with Rasa 3.6 semantics.

    Falsy or absent timestamps become ``now`` (0.0 if ``now`` is None). Extra keys (such as a
    broker record's ``sender_id``) are ignored. Raises an ``EventError`` subclass on bad input.
    """
    return _decode(_load(data, max_bytes), now)


def decode_record(
    data: bytes | str | Mapping[str, Any],
    *,
    now: float | None = None,
    max_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    conversation_id: str | None = None,
) -> Record:
    """One broker record (an event object plus ``sender_id``), as Rasa's Kafka broker writes it.

    ``conversation_id`` (e.g. the Kafka key; empty means unknown) stands in for an absent
    ``sender_id``; both given and different is an ``InvalidField``. Errors carry the
    conversation id in their location whenever it is known.
    """
    sender = conversation_id
    try:
        if data.__class__ is bytes and len(data) <= max_bytes:  # the common case, inline
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError:
                obj = _load(data, max_bytes)  # raises the precise error
            if obj.__class__ is not dict:
                obj = _load(data, max_bytes)  # raises: not an object
        else:
            obj = _load(data, max_bytes)
        sid = obj.get("sender_id")
        # the common case inline: a non-empty string sender_id agreeing with any given key
        if sid.__class__ is str and sid and (not conversation_id or sid == conversation_id):
            sender = sid
        else:
            sender = _sender_id(obj, conversation_id)
        try:
            decoder = DECODERS[obj.get("event")]
        except (KeyError, TypeError):
            raise bad_tag(obj) from None
        return Record(sender, decoder(obj, 0.0 if now is None else now))
    except EventError as error:
        raise error.at(conversation_id=sender or None) from None


decode_record_python: Final = decode_record
"""The Python decoder: the reference the compiled one must equal, and its fallback."""

_NATIVE = native_decoder(Record, decode_record_python, DEFAULT_MAX_RECORD_BYTES)
"""The compiled decoder (``events.fast``), None if the package was built without it."""

# the compiled decoder's decode_record when built: same arguments, same results, one call less
decode_record = decode_record_python if _NATIVE is None else _NATIVE.decode_record
_DECODE_BATCH: Final[Callable[..., Any] | None] = getattr(_NATIVE, "decode_batch", None)


Ready = tuple[str, Event, bytes | None]
"""A consumed record :func:`decode_ready` read: its conversation id, its event, and its history
record: the record's value itself when the event has the value's own timestamp (then
:func:`decode_event` reads the value as that event, ``sender_id`` ignored, and no bytes are
written for it), else ``encode_kept``'s bytes, or None when ``encode_kept`` must write them."""


_SKIM: Final[Callable[..., Any] | None] = None if _DECODE_BATCH is None else compiled("skim")


def skim(records: Sequence[Any], *, read: bool = True) -> Any | None:
    """Start reading ``records`` ahead for :func:`decode_ready`, in the compiled decoder's
    reader thread while this one goes on (each value's top-level JSON keys; see
    ``events/native-decoder/src/skim.rs``); what to hand it as ``skims``. ``read=False`` reads
    nothing and only stands for the records, so that later ones are found in order.
    None when the package was built without the compiled decoder. What comes out of
    ``decode_ready`` is the same with or without it: only the time it takes differs."""
    return None if _SKIM is None else _SKIM(records, read)


def decode_ready(
    records: Sequence[Any],
    *,
    max_bytes: int,
    control_header: str,
    skims: Sequence[Any] = (),
    start: int = 0,
) -> list[Ready | None] | None:
    """What the compiled decoder reads of a batch of consumed records, one call for them all.

    ``records`` have a ``key``, a ``value``, a ``timestamp`` (milliseconds) and ``headers``
    (name, value) pairs, as the Kafka client hands them over. For each record: a ``Ready`` when
    the record is keyed by UTF-8 bytes, has no ``control_header``, and its value is JSON bytes
    of at most ``max_bytes`` that ``decode_record(value, now=timestamp / 1000,
    max_bytes=max_bytes, conversation_id=key)`` decodes to that event with the compiled decoder;
    else None (the caller takes its own path: an error, a re-key, a control, a rare tag).
    None for the whole batch when the package was built without the compiled decoder.

    ``skims``: what :func:`skim` returned for these records, in order, the first from its record
    ``start`` on (a worker reads records ahead as they are fetched, and folds them in batches
    of its own size); a record found there is not parsed again.
    """
    if _DECODE_BATCH is None:
        return None
    ready: list[Ready | None] = _DECODE_BATCH(records, max_bytes, control_header, skims, start)
    return ready


def record_decoder() -> str:
    """Which decoder reads JSON bytes: ``"compiled"`` (then Python for what it defers) or
    ``"python"`` (the package was installed without the compiled module)."""
    return "python" if _NATIVE is None else "compiled"


def _decode(obj: Mapping[str, Any], now: float | None) -> Event:
    try:
        tag: Any = obj.get("event")
        decoder = DECODERS[tag]
    except (KeyError, TypeError):
        raise bad_tag(obj) from None
    return decoder(obj, 0.0 if now is None else now)


def _sender_id(obj: Mapping[str, Any], conversation_id: str | None) -> str:
    """The sender id off the inline path: absent, not a non-empty string, or not the key."""
    sid = obj.get("sender_id", _ABSENT)
    expected = "a non-empty string 'sender_id'"
    if sid is _ABSENT:
        if conversation_id:
            return conversation_id
        raise MissingField(
            "record has no 'sender_id' and no conversation id (record key) was given",
            expected=expected,
            got="no such key",
        )
    got = show(sid)
    if not isinstance(sid, str) or not sid:
        raise InvalidField(
            f"'sender_id' must be a non-empty string, got {got}", expected=expected, got=got
        )
    raise InvalidField(
        f"sender_id {sid!r} differs from the record key {conversation_id!r}",
        expected=f"sender_id {conversation_id!r} (the record key)",
        got=got,
    )


def _load(data: bytes | str | Mapping[str, Any], max_bytes: int) -> Mapping[str, Any]:
    """The JSON object in ``data``: size limit first, then UTF-8, then JSON, then an object."""
    if isinstance(data, dict):
        return data
    if isinstance(data, (bytes, bytearray)):
        if len(data) > max_bytes:
            raise _too_large(len(data), max_bytes)
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as error:
            raise _bad_bytes(bytes(data), error) from None
    elif isinstance(data, str):
        if len(data) * 4 > max_bytes:  # a character is at most 4 UTF-8 bytes: else surely fits
            size = len(data.encode("utf-8", "surrogatepass"))
            if size > max_bytes:
                raise _too_large(size, max_bytes)
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as error:
            raise _bad_text(data, error) from None
    else:
        obj = data
    if obj.__class__ is dict or isinstance(obj, Mapping):
        return obj
    got = show(obj)
    raise InvalidJson(
        f"a record must be a JSON object, got {got}", expected="a JSON object", got=got
    )


def _too_large(size: int, limit: int) -> RecordTooLarge:
    return RecordTooLarge(
        f"record is {size} bytes, over the limit of {limit} bytes",
        expected=f"at most {limit} bytes",
        got=f"{size} bytes",
    )


def _bad_bytes(data: bytes, error: orjson.JSONDecodeError) -> InvalidJson:
    """Invalid UTF-8 (named by the offset of the first bad byte), else orjson's JSON error."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as bad:
        got = f"byte 0x{data[bad.start]:02x} at byte offset {bad.start} ({bad.reason})"
        return InvalidJson(
            f"record is not valid UTF-8: {got}",
            expected="UTF-8 encoded JSON",
            got=got,
            where=Location(offset=bad.start),
        )
    return _bad_json(error)


def _bad_text(data: str, error: orjson.JSONDecodeError) -> InvalidJson:
    try:
        data.encode("utf-8")
    except UnicodeEncodeError as bad:
        got = f"lone surrogate U+{ord(data[bad.start]):04X} at character {bad.start}"
        return InvalidJson(
            f"record text is not valid Unicode: {got}",
            expected="text without lone surrogates",
            got=got,
        )
    return _bad_json(error)


def _bad_json(error: orjson.JSONDecodeError) -> InvalidJson:
    return InvalidJson(
        f"record is not valid JSON: {error}",
        expected="a JSON object",
        got=f"invalid JSON ({error})",
    )


def _head(e: Event) -> JSONDict:
    out: JSONDict = {"event": e.TAG, "timestamp": e.timestamp}
    if e.metadata:
        out["metadata"] = e.metadata
    return out


def _keys(*pairs: str) -> Callable[[Any], JSONDict]:
    """An encoder writing ``wire key: attribute`` pairs (given flat, in order) after the head."""
    fields = tuple(zip(pairs[::2], pairs[1::2], strict=True))

    def encode(e: Any) -> JSONDict:
        out = _head(e)
        for key, attribute in fields:
            out[key] = getattr(e, attribute)
        return out

    return encode


def _user(e: m.UserUttered) -> JSONDict:
    out = _head(e)
    out["text"] = e.text
    out["parse_data"] = e.parse_data
    out["input_channel"] = e.input_channel
    out["message_id"] = e.message_id
    out["metadata"] = e.metadata  # third key if non-empty (already there), else the last
    return out


def _bot(e: m.BotUttered) -> JSONDict:
    out = _head(e)
    out["text"] = e.text
    out["data"] = e.data
    out["metadata"] = e.metadata
    return out


def _action(e: m.ActionExecuted) -> JSONDict:
    out = _head(e)
    out["name"] = e.action_name
    out["policy"] = e.policy
    out["confidence"] = e.confidence
    out["action_text"] = e.action_text
    out["hide_rule_turn"] = e.hide_rule_turn
    return out


def _slot(e: m.SlotSet) -> JSONDict:
    out = _head(e)
    out["name"] = e.key
    out["value"] = e.value
    return out


def _reminder(e: m.ReminderScheduled) -> JSONDict:
    out = _head(e)
    out["intent"] = e.intent
    out["date_time"] = e.trigger_date_time.isoformat()
    out["entities"] = e.entities
    out["name"] = e.name
    out["kill_on_user_msg"] = e.kill_on_user_message
    if e.action is not None:
        out["action"] = e.action
    return out


def _cancel(e: m.ReminderCancelled) -> JSONDict:
    out = _head(e)
    for key, value in (("name", e.name), ("intent", e.intent), ("entities", e.entities)):
        if value is not None:
            out[key] = value
    return out


def _export(e: m.StoryExported) -> JSONDict:
    out = _head(e)
    if e.path is not None:
        out["path"] = e.path
    return out


_ENCODERS: Final[Mapping[type[Event], Callable[[Any], JSONDict]]] = {
    m.UserUttered: _user,
    m.DefinePrevUserUtteredFeaturization: _keys(
        "use_text_for_featurization", "use_text_for_featurization"
    ),
    m.EntitiesAdded: _keys("entities", "entities"),
    m.BotUttered: _bot,
    m.AgentUttered: _keys("text", "text", "data", "data"),
    m.ActionExecuted: _action,
    m.SlotSet: _slot,
    m.AllSlotsReset: _head,
    m.Restarted: _head,
    m.UserUtteranceReverted: _head,
    m.ActionReverted: _head,
    m.ConversationPaused: _head,
    m.ConversationResumed: _head,
    m.FollowupAction: _keys("name", "action_name"),
    m.ReminderScheduled: _reminder,
    m.ReminderCancelled: _cancel,
    m.StoryExported: _export,
    m.SessionStarted: _head,
    m.ActiveLoop: _keys("name", "name"),
    m.LoopInterrupted: _keys("is_interrupted", "is_interrupted"),
    m.ActionExecutionRejected: _keys(
        "name", "action_name", "policy", "policy", "confidence", "confidence"
    ),
}


def encode_event(event: Event) -> JSONDict:
    """The event as Rasa 3.6 ``as_dict()`` writes it, key order included (plus kept extras).

    Nested dicts and lists are the event's own (shared, not copied): treat them as read-only.
    """
    return _ENCODERS[type(event)](event)


def encode_record(event: Event, sender_id: str) -> JSONDict:
    """The broker record Rasa's tracker store publishes: ``{"sender_id": ..., **as_dict()}``."""
    out: JSONDict = {"sender_id": sender_id}
    out.update(_ENCODERS[type(event)](event))
    return out


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON via orjson, for trackerflow's own output."""
    return orjson.dumps(obj)


def dumps_kept(obj: Any) -> bytes:
    """:func:`dumps` for bytes that are kept in memory: orjson's result holds on to its whole
    working buffer (about 4 KiB, whatever the length), so it is copied to its own length."""
    return memoryview(orjson.dumps(obj)).tobytes()


def encode_kept_python(event: Event) -> bytes:
    """The bytes a history record keeps for ``event``: ``dumps_kept(encode_event(event))``."""
    return dumps_kept(encode_event(event))


def _compiled(encode: Callable[[Event], bytes | None]) -> Callable[[Event], bytes]:
    """``encode_kept`` with the compiled encoder first (None from it: the Python one)."""

    def encode_kept(event: Event) -> bytes:
        encoded = encode(event)
        return encoded if encoded is not None else encode_kept_python(event)

    return encode_kept


_ENCODE: Final[Callable[[Event], bytes | None] | None] = getattr(_NATIVE, "encode", None)
# the compiled encoder when built: exactly the Python encoder's bytes for the events it takes
encode_kept: Final = encode_kept_python if _ENCODE is None else _compiled(_ENCODE)


def dumps_rasa(obj: Any) -> bytes:
    """JSON byte-identical to Rasa's Kafka broker: ``json.dumps`` defaults, encoded as UTF-8."""
    return json.dumps(obj).encode("utf-8")
