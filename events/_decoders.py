"""The decoders behind ``events.wire``: one per ``event`` tag, Rasa 3.6 ``from_parameters`` rules.

Rules of this module:

* ``DECODERS`` is the explicit tag -> decoder table: every Rasa 3.6 tag plus the legacy ``form``
  (read as ``ActiveLoop``) and ``form_validation`` (read as ``LoopInterrupted(not validate)``).
* A decoder takes the parsed JSON object and the timestamp to use for a falsy one, reads the keys
  Rasa reads, ignores the others, applies Rasa's defaults, and raises ``MissingField`` /
  ``InvalidField`` where Rasa crashes or its HTTP schema rejects the value. It builds the event
  once. Field readers take ``(obj, tag, key)`` and return the checked value.
* A reminder without a name gets a derived one (Rasa uses a random uuid1; this module is pure):
  ``"reminder_"`` + the first 16 hex digits of the SHA-256 of the canonical JSON
  (``json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False)``) of
  ``[intent, date_time string, entities, action, timestamp as given (null if absent)]``, so every
  replay of the same record derives the same name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final

from events import model as m
from events.errors import EventError, InvalidField, MissingField, UnknownEvent, show
from events.model import EVENT_TYPES, Event, JSONDict

Obj = Mapping[str, Any]
Decoder = Callable[[Obj, float], Event]
_Reader = Callable[[Obj, str, str], Any]
_ABSENT: Final[Any] = object()
_DATE_TIME = "an ISO 8601 date-time string"
_OPT_STR: Final = frozenset({str, type(None)})
_PARSE_KEYS: Final = (
    "intent",
    "entities",
    "text",
    "message_id",
    "metadata",
)  # fast paths: exact classes that need no check


def invalid(tag: str, key: str, expected: str, value: Any) -> InvalidField:
    """``key`` of a ``tag`` event has the wrong type or value."""
    got = show(value)
    return InvalidField(
        f"{tag!r} event: {key!r} must be {expected}, got {got}", expected=expected, got=got
    )


def missing(tag: str, key: str, expected: str, obj: Obj) -> MissingField:
    """``key`` of a ``tag`` event is absent or null (``obj`` tells which)."""
    got = "null" if key in obj else "no such key"
    return MissingField(
        f"{tag!r} event: required key {key!r} is missing ({got}); expected {expected}",
        expected=expected,
        got=got,
    )


def _base(d: Obj, tag: str, now: float) -> tuple[float, JSONDict]:
    """Timestamp (falsy -> ``now``; int or float kept as given) and metadata (null -> ``{}``)."""
    ts = d.get("timestamp")
    kind = ts.__class__
    if kind is not float and kind is not int:
        if ts is not None:
            raise invalid(tag, "timestamp", "a number (Unix epoch seconds) or null", ts)
        ts = now
    elif not ts:
        ts = now
    md = d.get("metadata")
    if md.__class__ is not dict:
        if md is None:
            return ts, {}
        if not isinstance(md, dict):
            raise invalid(tag, "metadata", "an object or null", md)
    return ts, md


def _text(d: Obj, tag: str, key: str) -> str | None:
    value = d.get(key)
    if value is None or isinstance(value, str):
        return value
    raise invalid(tag, key, "a string or null", value)


def _texts(d: Obj, tag: str, *keys: str) -> list[str | None]:
    return [_text(d, tag, key) for key in keys]


def _number(d: Obj, tag: str, key: str) -> float | None:
    value = d.get(key)
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    raise invalid(tag, key, "a number or null", value)


def _flag(default: bool | None) -> _Reader:
    """A boolean reader: absent -> ``default``; null is accepted only when ``default`` is None."""
    expected = "a boolean or null" if default is None else "true or false"

    def read(d: Obj, tag: str, key: str) -> bool | None:
        value = d.get(key, default)
        if value is True or value is False or (value is None and default is None):
            return value
        raise invalid(tag, key, expected, value)

    return read


def _any(d: Obj, tag: str, key: str) -> Any:
    return d.get(key)


def _objects(value: Any, tag: str, key: str) -> list[JSONDict]:
    if isinstance(value, list):
        for item in value:
            if not isinstance(item, dict):
                break
        else:
            return value
    raise invalid(tag, key, "an array of objects", value)


def _selector(d: Obj, tag: str, key: str) -> list[JSONDict] | JSONDict | None:
    """Reminder ``entities``: an array of objects, an object, or null."""
    value = d.get(key)
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, list):
        return _objects(value, tag, key)
    raise invalid(tag, key, "an array of objects, an object or null", value)


def _user(d: Obj, now: float) -> m.UserUttered:
    """``parse_data`` is required; intent and entities come from it; the full parse is rebuilt."""
    ts, md = _base(d, "user", now)
    text, message_id, channel = d.get("text"), d.get("message_id"), d.get("input_channel")
    ok = _OPT_STR
    if not (text.__class__ in ok and message_id.__class__ in ok and channel.__class__ in ok):
        text, message_id, channel = _texts(d, "user", "text", "message_id", "input_channel")
    parse = d.get("parse_data")
    if not isinstance(parse, dict):
        if parse is None:
            raise missing("user", "parse_data", "an object (the NLU parse)", d)
        raise invalid("user", "parse_data", "an object (the NLU parse)", parse)
    intent = parse.get("intent")
    if intent is None:
        intent = {}
    elif not isinstance(intent, dict):
        raise invalid("user", "parse_data.intent", "an object or null", intent)
    entities = parse.get("entities")
    entities = [] if entities is None else _objects(entities, "user", "parse_data.entities")
    if tuple(parse)[:5] == _PARSE_KEYS:
        full = parse  # written by Rasa: already complete, keys in Rasa's order; overlay is a no-op
    else:
        full = {
            "intent": intent,
            "entities": entities,
            "text": text,
            "message_id": message_id,
            "metadata": md,
        }
        full.update(parse)
    return m.build_user(ts, md, text, intent, entities, full, channel, message_id)


def _featurization(d: Obj, now: float) -> m.DefinePrevUserUtteredFeaturization:
    tag = "user_featurization"
    ts, md = _base(d, tag, now)
    flag = _FLAG_NONE(d, tag, "use_text_for_featurization")
    return m.build_small(m.DefinePrevUserUtteredFeaturization, ts, md, flag)  # type: ignore[no-any-return]


def _entities(d: Obj, now: float) -> m.EntitiesAdded:
    ts, md = _base(d, "entities", now)
    value = d.get("entities", _ABSENT)
    if value is _ABSENT:
        raise missing("entities", "entities", "an array of objects", d)
    return m.EntitiesAdded(_objects(value, "entities", "entities"), timestamp=ts, metadata=md)


def _bot(d: Obj, now: float) -> m.BotUttered:
    ts, md = _base(d, "bot", now)
    data = d.get("data")
    if data is None:
        data = {}
    elif not isinstance(data, dict):
        raise invalid("bot", "data", "an object or null", data)
    return m.build_small(m.BotUttered, ts, md, _text(d, "bot", "text"), data)  # type: ignore[no-any-return]


def _action(d: Obj, now: float) -> m.ActionExecuted:
    ts, md = _base(d, "action", now)
    name, policy, action_text = d.get("name"), d.get("policy"), d.get("action_text")
    ok = _OPT_STR
    if not (name.__class__ in ok and policy.__class__ in ok and action_text.__class__ in ok):
        name, policy, action_text = _texts(d, "action", "name", "policy", "action_text")
    if name is None and action_text is None:
        raise MissingField(
            "'action' event: needs a 'name' or an 'action_text', has neither",
            expected="a string 'name' or 'action_text'",
            got="neither",
        )
    confidence = d.get("confidence")
    if confidence.__class__ is not float:
        confidence = _number(d, "action", "confidence")
    hide = d.get("hide_rule_turn", False)
    if hide is not False:
        hide = _FLAG_FALSE(d, "action", "hide_rule_turn")
    return m.build_action(ts, md, name, policy, confidence, action_text, hide)


def _slot(d: Obj, now: float) -> m.SlotSet:
    ts, md = _base(d, "slot", now)
    name = d.get("name")
    if not name or not isinstance(name, str):
        if name is None:
            raise missing("slot", "name", "a non-empty string (the slot name)", d)
        raise invalid("slot", "name", "a non-empty string (the slot name)", name)
    value = d.get("value", _ABSENT)
    if value is _ABSENT:
        raise missing("slot", "value", "any JSON value (null allowed)", d)
    return m.build_small(m.SlotSet, ts, md, name, value)  # type: ignore[no-any-return]


def _reminder(d: Obj, now: float) -> m.ReminderScheduled:
    """``date_time`` is required (ISO 8601); a missing ``name`` is derived (module docstring)."""
    tag = "reminder"
    ts, md = _base(d, tag, now)
    raw = d.get("date_time")
    if not isinstance(raw, str):
        if raw is None:
            raise missing(tag, "date_time", _DATE_TIME, d)
        raise invalid(tag, "date_time", _DATE_TIME, raw)
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise invalid(
            tag, "date_time", f"{_DATE_TIME} (like 2030-01-01T12:00:00+00:00)", raw
        ) from None
    intent = _text(d, tag, "intent")
    entities = _selector(d, tag, "entities")
    action = _text(d, tag, "action")
    kill = _FLAG_TRUE(d, tag, "kill_on_user_msg")
    name = _text(d, tag, "name")
    if name is None:
        name = reminder_name(intent, raw, entities, action, d.get("timestamp"))
    return m.ReminderScheduled(
        intent, when, name, entities, kill, action, timestamp=ts, metadata=md
    )


def reminder_name(
    intent: str | None, date_time: str, entities: Any, action: str | None, timestamp: Any
) -> str:
    """The derived name of an unnamed reminder (see the module docstring)."""
    parts = [intent, date_time, entities, action, timestamp]
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "reminder_" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def _form_validation(d: Obj, now: float) -> m.LoopInterrupted:
    ts, md = _base(d, "form_validation", now)
    validate = _FLAG_TRUE(d, "form_validation", "validate")
    return m.LoopInterrupted(not validate, timestamp=ts, metadata=md)


def _fields(cls: Callable[..., Event], tag: str, *spec: tuple[str, _Reader]) -> Decoder:
    """A decoder passing the ``spec`` keys, read in order, as the positional fields of ``cls``."""

    def decode(d: Obj, now: float) -> Event:
        ts, md = _base(d, tag, now)
        return cls(*[read(d, tag, key) for key, read in spec], timestamp=ts, metadata=md)

    return decode


_FLAG_NONE: Final = _flag(None)
_FLAG_FALSE: Final = _flag(False)
_FLAG_TRUE: Final = _flag(True)
_NAME: Final = ("name", _text)

DECODERS: Final[Mapping[str, Decoder]] = {
    "user": _user,
    "user_featurization": _featurization,
    "entities": _entities,
    "bot": _bot,
    "agent": _fields(m.AgentUttered, "agent", ("text", _text), ("data", _any)),
    "action": _action,
    "slot": _slot,
    "reset_slots": _fields(m.AllSlotsReset, "reset_slots"),
    "restart": _fields(m.Restarted, "restart"),
    "rewind": _fields(m.UserUtteranceReverted, "rewind"),
    "undo": _fields(m.ActionReverted, "undo"),
    "pause": _fields(m.ConversationPaused, "pause"),
    "resume": _fields(m.ConversationResumed, "resume"),
    "followup": _fields(m.FollowupAction, "followup", _NAME),
    "reminder": _reminder,
    "cancel_reminder": _fields(
        m.ReminderCancelled, "cancel_reminder", _NAME, ("intent", _text), ("entities", _selector)
    ),
    "export": _fields(m.StoryExported, "export", ("path", _text)),
    "session_started": _fields(m.SessionStarted, "session_started"),
    "active_loop": _fields(m.ActiveLoop, "active_loop", _NAME),
    "form": _fields(m.ActiveLoop, "form", _NAME),
    "loop_interrupted": _fields(
        m.LoopInterrupted, "loop_interrupted", ("is_interrupted", _FLAG_FALSE)
    ),
    "form_validation": _form_validation,
    "action_execution_rejected": _fields(
        m.ActionExecutionRejected,
        "action_execution_rejected",
        _NAME,
        ("policy", _text),
        ("confidence", _number),
    ),
}

_KNOWN: Final = "a Rasa 3.6 event name (" + ", ".join(sorted(c.TAG for c in EVENT_TYPES)) + ")"


def bad_tag(obj: Obj) -> EventError:
    """The error for an object whose ``event`` is absent, null, not a string or unknown."""
    tag = obj.get("event")
    if tag is None:
        got = "null" if "event" in obj else "no such key"
        return MissingField(
            f"record has no event name ('event' is {got})", expected=_KNOWN, got=got
        )
    got = show(tag)
    if not isinstance(tag, str):
        return InvalidField(f"'event' must be a string, got {got}", expected=_KNOWN, got=got)
    if tag == "topic":
        return UnknownEvent(
            "'topic' is a long-removed Rasa event that Rasa silently skips; "
            "trackerflow does not drop records silently",
            expected=_KNOWN,
            got=got,
        )
    return UnknownEvent(
        f"unknown event name {tag!r}; the known names are the Rasa 3.6 event names "
        "(and the legacy 'form' and 'form_validation')",
        expected=_KNOWN,
        got=got,
    )
