"""The wire format against rasa-semantics.md §1 and §3.2: decoding, encoding, errors, round trips.

Also covers what ``events.model`` and ``events.errors`` do on their own (builders, properties,
locations), so that tests/events covers those modules completely.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import events
from events import (
    EVENT_TYPES,
    TAGS,
    ActionExecuted,
    ActionExecutionRejected,
    ActionReverted,
    ActiveLoop,
    AgentUttered,
    AllSlotsReset,
    BotUttered,
    ConversationPaused,
    ConversationResumed,
    DefinePrevUserUtteredFeaturization,
    EntitiesAdded,
    Event,
    EventError,
    FollowupAction,
    InvalidField,
    InvalidJson,
    Location,
    LoopInterrupted,
    MissingField,
    Record,
    RecordTooLarge,
    ReminderCancelled,
    ReminderScheduled,
    Restarted,
    SessionStarted,
    SlotSet,
    StoryExported,
    UnknownEvent,
    UserUtteranceReverted,
    UserUttered,
    decode_event,
    decode_record,
    dumps,
    dumps_rasa,
    encode_event,
    encode_record,
    stamped,
)
from events.errors import show
from tests.strategies import broker_records, conversation_events, sender_ids
from tests.strategies import events as any_events

TS = 1700000000.0
#: Generated conversations are big; a loaded CI machine must not turn them into flaky failures.
ROOMY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
MODEL = {"model_id": "9a1b", "assistant_id": "bot"}
SIX = dict.fromkeys(("elements", "quick_replies", "buttons", "attachment", "image", "custom"))
USER_PARSE: dict[str, Any] = {
    "intent": {"name": "inform", "confidence": 0.9},
    "entities": [{"entity": "city", "value": "Berlin", "start": 10, "end": 16}],
    "text": "I live in Berlin",
    "message_id": "m1",
    "metadata": {"a": 1},
}
NAIVE = datetime.fromisoformat("2030-01-01T10:00:00")  # reminders keep naive date-times naive
EMPTY_PARSE: dict[str, Any] = {
    "intent": {},
    "entities": [],
    "text": None,
    "message_id": None,
    "metadata": {},
}


def head(tag: str, **metadata: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"event": tag, "timestamp": TS}
    return out | ({"metadata": metadata} if metadata else {})


# Every event type exactly as Rasa 3.6 ``as_dict()`` writes it (§1.1/§1.2), with the event it
# decodes to. The first seven are the JSON examples of rasa-semantics.md §1.2 verbatim.
WRITTEN: list[tuple[dict[str, Any], Event]] = [
    (
        head("user", a=1)
        | {
            "text": "I live in Berlin",
            "parse_data": USER_PARSE,
            "input_channel": "rest",
            "message_id": "m1",
        },
        UserUttered(
            "I live in Berlin",
            USER_PARSE["intent"],
            USER_PARSE["entities"],
            USER_PARSE,
            "rest",
            "m1",
            timestamp=TS,
            metadata={"a": 1},
        ),
    ),
    (
        head("user")
        | {
            "text": None,
            "parse_data": EMPTY_PARSE,
            "input_channel": None,
            "message_id": None,
            "metadata": {},
        },
        UserUttered(None, {}, [], EMPTY_PARSE, timestamp=TS),
    ),
    (
        head("user_featurization") | {"use_text_for_featurization": True},
        DefinePrevUserUtteredFeaturization(True, timestamp=TS),
    ),
    (
        head("bot", utter_action="utter_greet") | {"text": "hi", "data": SIX},
        BotUttered("hi", SIX, timestamp=TS, metadata={"utter_action": "utter_greet"}),
    ),
    (
        head("action", **MODEL)
        | {
            "name": "utter_greet",
            "policy": "RulePolicy",
            "confidence": 1.0,
            "action_text": None,
            "hide_rule_turn": False,
        },
        ActionExecuted("utter_greet", "RulePolicy", 1.0, timestamp=TS, metadata=MODEL),
    ),
    (head("slot") | {"name": "city", "value": "Berlin"}, SlotSet("city", "Berlin", timestamp=TS)),
    (
        head("reminder")
        | {
            "intent": "remind",
            "date_time": "2030-01-01T12:00:00+00:00",
            "entities": [{"entity": "x", "value": 1}],
            "name": "r1",
            "kill_on_user_msg": False,
        },
        ReminderScheduled(
            "remind",
            datetime(2030, 1, 1, 12, tzinfo=UTC),
            "r1",
            [{"entity": "x", "value": 1}],
            False,
            timestamp=TS,
        ),
    ),
    (
        head("entities") | {"entities": [{"entity": "city", "value": "Paris"}]},
        EntitiesAdded([{"entity": "city", "value": "Paris"}], timestamp=TS),
    ),
    (head("agent") | {"text": "hello", "data": None}, AgentUttered("hello", None, timestamp=TS)),
    (head("reset_slots"), AllSlotsReset(timestamp=TS)),
    (head("restart", **MODEL), Restarted(timestamp=TS, metadata=MODEL)),
    (head("rewind"), UserUtteranceReverted(timestamp=TS)),
    (head("undo"), ActionReverted(timestamp=TS)),
    (head("pause"), ConversationPaused(timestamp=TS)),
    (head("resume"), ConversationResumed(timestamp=TS)),
    (head("followup") | {"name": "utter_x"}, FollowupAction("utter_x", timestamp=TS)),
    (head("cancel_reminder"), ReminderCancelled(timestamp=TS)),
    (head("export"), StoryExported(timestamp=TS)),
    (head("session_started", **MODEL), SessionStarted(timestamp=TS, metadata=MODEL)),
    (head("active_loop") | {"name": "my_form"}, ActiveLoop("my_form", timestamp=TS)),
    (head("active_loop") | {"name": None}, ActiveLoop(None, timestamp=TS)),
    (head("loop_interrupted") | {"is_interrupted": True}, LoopInterrupted(True, timestamp=TS)),
    (
        head("action_execution_rejected") | {"name": "f", "policy": None, "confidence": None},
        ActionExecutionRejected("f", timestamp=TS),
    ),
]


@pytest.mark.parametrize(("written", "event"), WRITTEN, ids=[w["event"] for w, _ in WRITTEN])
def test_rasa_json_decodes_and_reencodes_byte_for_byte(
    written: dict[str, Any], event: Event
) -> None:
    line = json.dumps(written).encode()  # what Rasa's Kafka broker puts on the wire
    decoded = decode_event(line)
    assert decoded == event
    assert list(encode_event(decoded).items()) == list(written.items())
    assert dumps_rasa(encode_event(decoded)) == line


def test_every_type_is_covered_by_the_written_examples() -> None:
    assert {type(e) for _, e in WRITTEN} == set(EVENT_TYPES)
    assert dict(TAGS) == {c.TAG: c for c in EVENT_TYPES}
    assert len(TAGS) == 21


def test_kafka_message_of_section_3_2_is_reproduced_byte_for_byte() -> None:
    value = (
        b'{"sender_id": "conv-1", "event": "user", "timestamp": 1700000000.0, '
        b'"metadata": {"client": "web", "model_id": "9a1b", "assistant_id": "my_bot"}, '
        b'"text": "hi", "parse_data": {"intent": {"name": "greet", "confidence": 0.98}, '
        b'"entities": [], "text": "hi", "message_id": "4f2c", "metadata": {"client": "web"}, '
        b'"intent_ranking": [{"name": "greet", "confidence": 0.98}]}, '
        b'"input_channel": "rest", "message_id": "4f2c"}'
    )
    record = decode_record(value)
    user = record.event
    assert record.sender_id == "conv-1"
    assert isinstance(user, UserUttered)
    assert user.intent_name == "greet"
    assert user.metadata["model_id"] == "9a1b"
    assert "model_id" not in user.parse_data["metadata"]
    assert dumps_rasa(encode_record(user, "conv-1")) == value


def test_metadata_key_position_for_user_and_bot() -> None:
    bare = encode_event(BotUttered("hi", timestamp=TS))
    assert list(bare) == ["event", "timestamp", "text", "data", "metadata"]
    rich = encode_event(BotUttered("hi", timestamp=TS, metadata={"m": 1}))
    assert list(rich) == ["event", "timestamp", "metadata", "text", "data"]
    assert list(encode_event(SlotSet("a", 1))) == ["event", "timestamp", "name", "value"]


def test_dumps_rasa_escapes_non_ascii_and_dumps_is_compact_utf8() -> None:
    obj = {"text": "Zoë", "n": [1, 2.5]}
    assert dumps_rasa(obj) == b'{"text": "Zo\\u00eb", "n": [1, 2.5]}'
    assert dumps(obj) == '{"text":"Zoë","n":[1,2.5]}'.encode()


# --- §1.3 edge cases, legacy forms, timestamps ------------------------------------------------


def test_user_parse_data_semantics() -> None:
    hi = decode_event({"event": "user", "text": "hi", "parse_data": {}})
    assert isinstance(hi, UserUttered)
    assert (hi.intent, hi.entities, hi.featurized_by_text) == ({}, [], True)
    ignored = decode_event(
        {
            "event": "user",
            "text": "hi",
            "intent": {"name": "greet"},
            "entities": [{"entity": "x"}],
            "parse_data": {"text": "hi"},
        }
    )
    assert isinstance(ignored, UserUttered)
    assert (ignored.intent, ignored.entities) == ({}, [])
    nulls = decode_event({"event": "user", "parse_data": {"intent": None, "entities": None}})
    assert isinstance(nulls, UserUttered)
    assert (nulls.intent, nulls.entities) == ({}, [])
    assert nulls.parse_data["intent"] is None  # the overlay wins, as in Rasa


def test_parse_data_is_built_with_overlay_order() -> None:
    parse = {"intent_ranking": [], "text": "other", "intent": {"name": "greet"}}
    user = decode_event({"event": "user", "text": "hi", "message_id": "m", "parse_data": parse})
    assert isinstance(user, UserUttered)
    assert list(user.parse_data) == [
        "intent",
        "entities",
        "text",
        "message_id",
        "metadata",
        "intent_ranking",
    ]
    assert user.parse_data["text"] == "other"
    assert user.text == "hi"
    assert user.intent_name == "greet"
    assert user == UserUttered.create("hi", {"name": "greet"}, parse_data=parse, message_id="m")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"event": "bot", "data": None, "metadata": None, "extra": True}, BotUttered(None, {})),
        ({"event": "followup"}, FollowupAction(None)),
        ({"event": "form", "name": "f"}, ActiveLoop("f")),
        ({"event": "form", "name": None}, ActiveLoop(None)),
        ({"event": "form_validation"}, LoopInterrupted(False)),
        ({"event": "form_validation", "validate": False}, LoopInterrupted(True)),
        ({"event": "form_validation", "validate": True}, LoopInterrupted(False)),
        ({"event": "loop_interrupted"}, LoopInterrupted(False)),
        ({"event": "export", "path": "a.yml"}, StoryExported("a.yml")),
        ({"event": "user_featurization"}, DefinePrevUserUtteredFeaturization(None)),
        ({"event": "action", "action_text": "Hi!"}, ActionExecuted(None, action_text="Hi!")),
        (
            {"event": "cancel_reminder", "name": "r", "intent": "i", "entities": {"x": 1}},
            ReminderCancelled("r", "i", {"x": 1}),
        ),
        ({"event": "agent", "data": [1, 2]}, AgentUttered(None, [1, 2])),
        ({"event": "slot", "name": "a", "value": None}, SlotSet("a", None)),
        # rasa_core 0.14 shapes
        (
            {
                "event": "user",
                "text": "hey",
                "parse_data": {"intent": {"name": "greet"}, "entities": []},
                "input_channel": None,
            },
            UserUttered.create(
                "hey", {"name": "greet"}, [], {"intent": {"name": "greet"}, "entities": []}
            ),
        ),
        ({"event": "bot", "text": "hey", "data": None}, BotUttered("hey", {})),
        (
            {"event": "action", "name": "utter_x", "policy": "p", "confidence": 1},
            ActionExecuted("utter_x", "p", 1),
        ),
        (
            {
                "event": "reminder",
                "action": "utter_remind",
                "date_time": "2030-01-01T10:00:00",
                "name": "n",
                "kill_on_user_msg": True,
            },
            ReminderScheduled(None, NAIVE, "n", None, True, "utter_remind"),
        ),
    ],
)
def test_lenient_where_rasa_is(data: dict[str, Any], expected: Event) -> None:
    assert decode_event(data) == expected


def test_legacy_forms_are_written_with_their_36_names() -> None:
    assert encode_event(decode_event({"event": "form", "name": "f"}))["event"] == "active_loop"
    written = encode_event(decode_event({"event": "form_validation", "validate": False}))
    assert written == {"event": "loop_interrupted", "timestamp": 0.0, "is_interrupted": True}


def test_kept_extras_rasa_drops() -> None:
    cancel = encode_event(ReminderCancelled("r1", None, [{"entity": "x", "value": 1}]))
    assert list(cancel) == ["event", "timestamp", "name", "entities"]
    assert encode_event(ReminderCancelled(intent="i"))["intent"] == "i"
    assert encode_event(StoryExported("s.yml"))["path"] == "s.yml"
    legacy = ReminderScheduled(None, NAIVE, "n", action="utter_remind")
    assert list(encode_event(legacy))[-2:] == ["kill_on_user_msg", "action"]
    assert encode_event(legacy)["date_time"] == "2030-01-01T10:00:00"


def test_reminder_date_time_and_derived_name() -> None:
    base = {"event": "reminder", "intent": "x", "date_time": "2030-01-01 10:00"}
    first = decode_event(base)
    assert isinstance(first, ReminderScheduled)
    assert first.trigger_date_time == NAIVE
    assert first.trigger_date_time.tzinfo is None  # naive stays naive
    assert first.kill_on_user_message is True
    assert first.name.startswith("reminder_")
    assert len(first.name) == len("reminder_") + 16
    again = decode_event(dict(base), now=5.0)
    assert isinstance(again, ReminderScheduled)
    assert again.name == first.name  # same record, same name, whatever `now`
    for change in (
        {"intent": "y"},
        {"date_time": "2030-01-01T10:00"},
        {"entities": [{"e": 1}]},
        {"action": "a"},
        {"timestamp": 1.5},
    ):
        other = decode_event(base | change)
        assert isinstance(other, ReminderScheduled)
        assert other.name != first.name, change
    aware = decode_event(base | {"date_time": "2030-01-01T10:00:00+05:30"})
    assert isinstance(aware, ReminderScheduled)
    assert aware.trigger_date_time.utcoffset() == timedelta(hours=5, minutes=30)


@pytest.mark.parametrize("falsy", [None, 0, 0.0, "absent"])
def test_falsy_timestamps_become_now(falsy: object) -> None:
    data = {"event": "restart"} | ({} if falsy == "absent" else {"timestamp": falsy})
    assert decode_event(data, now=42.5).timestamp == 42.5
    assert decode_event(data).timestamp == 0.0


def test_timestamps_keep_int_or_float() -> None:
    as_int = decode_event(b'{"event": "pause", "timestamp": 1700000000}')
    assert type(as_int.timestamp) is int
    assert dumps_rasa(encode_event(as_int)) == b'{"event": "pause", "timestamp": 1700000000}'
    assert type(decode_event({"event": "pause", "timestamp": 1.5}).timestamp) is float


def test_inputs_bytes_bytearray_str_and_mappings_agree() -> None:
    text = '{"event": "slot", "name": "city", "value": "Zoë", "sender_id": "c"}'
    expected = SlotSet("city", "Zoë", timestamp=1.0)
    inputs: list[Any] = [text, text.encode(), bytearray(text.encode()), json.loads(text)]
    for data in inputs:
        assert decode_event(data, now=1.0) == expected
    from types import MappingProxyType

    assert decode_event(MappingProxyType(json.loads(text)), now=1.0) == expected
    wide = '{"event": "slot", "name": "x", "value": "' + "é" * 400 + '"}'  # 443 chars, 843 bytes
    assert isinstance(decode_event(wide, max_bytes=843), SlotSet)
    with pytest.raises(RecordTooLarge, match="843 bytes"):
        decode_event(wide, max_bytes=842)
    from collections import OrderedDict

    ordered = OrderedDict(a=1)
    assert decode_event({"event": "undo", "metadata": ordered}).metadata is ordered


# --- errors ------------------------------------------------------------------------------------


def fails(data: Any, kind: type[EventError], *fragments: str, **kwargs: Any) -> EventError:
    with pytest.raises(kind) as caught:
        decode_event(data, **kwargs)
    error = caught.value
    assert type(error) is kind
    for fragment in fragments:
        assert fragment in str(error), (fragment, str(error))
    assert error.expected
    assert error.got
    return error


def test_invalid_utf8_names_the_first_bad_byte() -> None:
    error = fails(
        b'{"event": "bot", "text": "ok\xc3\xa9\xff"}', InvalidJson, "byte offset 30", "0xff"
    )
    assert error.where.offset == 30
    assert "byte 30" in str(error)
    fails(b'{"a": "\xed\xa0\x80"}', InvalidJson, "not valid UTF-8", "0xed at byte offset 7")


def test_invalid_json_reports_orjson_position() -> None:
    error = fails(b'{"event": "bot",', InvalidJson, "not valid JSON", "line 1 column 17")
    assert error.expected == "a JSON object"
    fails("{'event': 1}", InvalidJson, "not valid JSON", "line 1 column 2")
    fails(b"", InvalidJson, "not valid JSON")
    fails('{"a": "\ud800"}', InvalidJson, "lone surrogate U+D800 at character 7")


@pytest.mark.parametrize("value", [b"[1, 2]", '"text"', b"null", [{"event": "bot"}], 5])
def test_top_level_must_be_an_object(value: Any) -> None:
    error = fails(value, InvalidJson, "must be a JSON object")
    assert error.got is not None
    assert error.got.split()[0] in {"array", "string", "null", "number"}


def test_size_limit_comes_first() -> None:
    fails(b"\xff" * 11, RecordTooLarge, "11 bytes", "limit of 10 bytes", max_bytes=10)
    fails("é" * 6, RecordTooLarge, "12 bytes", max_bytes=10)
    fails("x" * 11, RecordTooLarge, "11 bytes", max_bytes=10)
    assert decode_event(b'{"event":"undo"}', max_bytes=16) == ActionReverted()


def test_event_name_errors() -> None:
    unknown = fails({"event": "nonexistent"}, UnknownEvent, "'nonexistent'", "Rasa 3.6 event names")
    assert unknown.expected is not None
    assert "action_execution_rejected" in unknown.expected
    fails({"event": "topic"}, UnknownEvent, "'topic'", "Rasa silently skips", "not drop")
    fails({"text": "x"}, MissingField, "no event name", "no such key")
    fails({"event": None}, MissingField, "no event name", "null")
    fails({"event": ["user"]}, InvalidField, "'event' must be a string", "array")
    fails({"event": 7}, InvalidField, "number 7")


@pytest.mark.parametrize(
    ("data", "kind", "fragments"),
    [
        ({"event": "user", "text": "hi"}, MissingField, ("'parse_data'", "no such key")),
        ({"event": "user", "parse_data": None}, MissingField, ("'parse_data'", "null")),
        ({"event": "user", "parse_data": []}, InvalidField, ("'parse_data'", "an object", "array")),
        (
            {"event": "user", "parse_data": {"intent": "greet"}},
            InvalidField,
            ("parse_data.intent",),
        ),
        ({"event": "user", "parse_data": {"entities": {}}}, InvalidField, ("parse_data.entities",)),
        (
            {"event": "user", "parse_data": {"entities": ["city"]}},
            InvalidField,
            ("array of objects",),
        ),
        ({"event": "user", "parse_data": {}, "text": 5}, InvalidField, ("'text'", "number 5")),
        ({"event": "user", "parse_data": {}, "message_id": 5}, InvalidField, ("'message_id'",)),
        (
            {"event": "user", "parse_data": {}, "input_channel": []},
            InvalidField,
            ("'input_channel'",),
        ),
        ({"event": "slot"}, MissingField, ("'name'", "no such key")),
        ({"event": "slot", "name": None, "value": 1}, MissingField, ("'name'", "null")),
        ({"event": "slot", "name": "", "value": 1}, InvalidField, ("non-empty string",)),
        ({"event": "slot", "name": 3, "value": 1}, InvalidField, ("number 3",)),
        ({"event": "slot", "name": "a"}, MissingField, ("'value'", "null allowed")),
        ({"event": "action"}, MissingField, ("'name' or an 'action_text'",)),
        ({"event": "action", "name": 1}, InvalidField, ("'name'",)),
        ({"event": "action", "name": "a", "policy": 1}, InvalidField, ("'policy'",)),
        ({"event": "action", "name": "a", "action_text": 1}, InvalidField, ("'action_text'",)),
        ({"event": "action", "name": "a", "confidence": "high"}, InvalidField, ("'confidence'",)),
        ({"event": "action", "name": "a", "confidence": True}, InvalidField, ("boolean",)),
        (
            {"event": "action", "name": "a", "hide_rule_turn": None},
            InvalidField,
            ("true or false",),
        ),
        ({"event": "entities"}, MissingField, ("'entities'", "no such key")),
        ({"event": "entities", "entities": None}, InvalidField, ("array of objects", "null")),
        ({"event": "entities", "entities": [1]}, InvalidField, ("array of objects",)),
        ({"event": "bot", "data": []}, InvalidField, ("'data'",)),
        ({"event": "bot", "text": 1}, InvalidField, ("'text'",)),
        ({"event": "reminder", "intent": "x"}, MissingField, ("'date_time'", "ISO 8601")),
        ({"event": "reminder", "date_time": None}, MissingField, ("'date_time'", "null")),
        ({"event": "reminder", "date_time": 5}, InvalidField, ("'date_time'", "number 5")),
        (
            {"event": "reminder", "date_time": "Jan 1 2030"},
            InvalidField,
            ("ISO 8601", "'Jan 1 2030'"),
        ),
        (
            {"event": "reminder", "date_time": "2030-01-01", "kill_on_user_msg": None},
            InvalidField,
            ("'kill_on_user_msg'", "true or false", "null"),
        ),
        (
            {"event": "reminder", "date_time": "2030-01-01", "kill_on_user_msg": "yes"},
            InvalidField,
            ("'kill_on_user_msg'",),
        ),
        (
            {"event": "reminder", "date_time": "2030-01-01", "entities": "x"},
            InvalidField,
            ("array of objects, an object or null",),
        ),
        (
            {"event": "reminder", "date_time": "2030-01-01", "entities": [1]},
            InvalidField,
            ("array of objects",),
        ),
        ({"event": "reminder", "date_time": "2030-01-01", "name": 1}, InvalidField, ("'name'",)),
        ({"event": "cancel_reminder", "intent": 1}, InvalidField, ("'intent'",)),
        (
            {"event": "loop_interrupted", "is_interrupted": None},
            InvalidField,
            ("'is_interrupted'",),
        ),
        ({"event": "form_validation", "validate": "no"}, InvalidField, ("'validate'",)),
        (
            {"event": "user_featurization", "use_text_for_featurization": 1},
            InvalidField,
            ("a boolean or null",),
        ),
        ({"event": "active_loop", "name": 1}, InvalidField, ("'active_loop' event", "'name'")),
        ({"event": "form", "name": 1}, InvalidField, ("'form' event",)),
        ({"event": "pause", "timestamp": "123"}, InvalidField, ("'timestamp'", "string '123'")),
        ({"event": "pause", "timestamp": True}, InvalidField, ("'timestamp'", "boolean")),
        ({"event": "pause", "timestamp": False}, InvalidField, ("'timestamp'",)),
        ({"event": "pause", "metadata": []}, InvalidField, ("'metadata'", "an object or null")),
        ({"event": "pause", "metadata": "m"}, InvalidField, ("'metadata'",)),
    ],
)
def test_strict_where_rasa_crashes_or_its_schema_rejects(
    data: dict[str, Any], kind: type[EventError], fragments: tuple[str, ...]
) -> None:
    error = fails(data, kind, *fragments)
    assert f"'{data['event']}' event" in str(error)


# --- records -----------------------------------------------------------------------------------


def test_record_sender_id_and_conversation_id() -> None:
    line = b'{"sender_id": "c1", "event": "restart", "timestamp": 2.0}'
    assert decode_record(line) == Record("c1", Restarted(timestamp=2.0))
    assert decode_record(line, conversation_id="c1").sender_id == "c1"
    assert decode_record(line, conversation_id="").sender_id == "c1"
    keyless = {"event": "restart"}
    assert decode_record(keyless, conversation_id="k", now=3.0) == Record(
        "k", Restarted(timestamp=3.0)
    )


def test_record_errors_name_the_conversation() -> None:
    with pytest.raises(InvalidField) as mismatch:
        decode_record({"sender_id": "a", "event": "undo"}, conversation_id="b")
    assert "differs from the record key 'b'" in str(mismatch.value)
    assert mismatch.value.where.conversation_id == "b"
    with pytest.raises(MissingField, match="no 'sender_id'"):
        decode_record({"event": "undo"})
    for bad in ("", None, 5):
        with pytest.raises(InvalidField, match="non-empty string") as wrong:
            decode_record({"sender_id": bad, "event": "undo"}, conversation_id="k")
        assert wrong.value.where.conversation_id == "k"
    with pytest.raises(UnknownEvent) as unknown:
        decode_record({"sender_id": "c9", "event": "nope"})
    assert str(unknown.value).startswith("conversation 'c9': unknown event name 'nope'")
    assert unknown.value.as_dict()["where"] == {"conversation_id": "c9"}
    with pytest.raises(InvalidJson) as garbage:
        decode_record(b"\xff", conversation_id="k2")
    assert garbage.value.as_dict()["where"] == {"offset": 0, "conversation_id": "k2"}
    with pytest.raises(InvalidJson) as anonymous:
        decode_record(b"[]")
    assert anonymous.value.where == Location()


# --- properties --------------------------------------------------------------------------------


@ROOMY
@given(any_events())
def test_decode_inverts_encode(event: Event) -> None:
    written = encode_event(event)
    assert list(written)[:2] == ["event", "timestamp"]
    assert decode_event(written) == event
    assert decode_event(dumps(written)) == event
    assert decode_event(dumps_rasa(written).decode()) == event


@ROOMY
@given(any_events(), sender_ids())
def test_records_round_trip_through_rasa_bytes(event: Event, sender_id: str) -> None:
    line = dumps_rasa(encode_record(event, sender_id))
    assert decode_record(line) == Record(sender_id, event)
    assert decode_record(line, conversation_id=sender_id) == Record(sender_id, event)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "event",
                "timestamp",
                "metadata",
                "name",
                "text",
                "parse_data",
                "date_time",
                "value",
                "entities",
            ]
        ),
        st.none()
        | st.booleans()
        | st.integers()
        | st.text(max_size=4)
        | st.sampled_from(sorted(TAGS))
        | st.just({})
        | st.just([{}]),
    )
)
def test_decoding_arbitrary_objects_yields_an_event_or_an_event_error(data: dict[str, Any]) -> None:
    try:
        event = decode_event(data)
    except EventError as error:
        assert error.reason
    else:
        assert type(event) in EVENT_TYPES


@ROOMY
@given(conversation_events())
def test_conversation_strategy_is_ordered(conversation: list[Event]) -> None:
    stamps = [e.timestamp for e in conversation]
    assert stamps == sorted(set(stamps))
    assert all(decode_event(dumps(encode_event(e))) == e for e in conversation)


@ROOMY
@given(broker_records())
def test_broker_records_keep_each_conversation_in_order(records: list[Record]) -> None:
    by_sender: dict[str, list[float]] = {}
    for record in records:
        by_sender.setdefault(record.sender_id, []).append(record.event.timestamp)
    assert all(stamps == sorted(stamps) for stamps in by_sender.values())


# --- events.model and events.errors on their own ------------------------------------------------


def test_user_builders_and_properties() -> None:
    external = UserUttered.create_external(
        "remind", [{"entity": "x", "value": 1}], input_channel="c"
    )
    assert external.text == "EXTERNAL: remind"
    assert external.metadata == {"is_external": True}
    assert external.parse_data["metadata"] == {"is_external": True}
    assert (external.intent_name, external.featurized_by_text) == ("remind", None)
    assert UserUttered.create(None, {"name": "greet"}).featurized_by_text is False
    assert UserUttered.create("hi").featurized_by_text is True
    assert UserUttered.create().featurized_by_text is None
    odd = UserUttered.create("hi", {"name": 5, "full_retrieval_intent_name": 7})
    assert (odd.intent_name, odd.full_retrieval_intent_name) == (None, None)
    faq = UserUttered.create("hi", {"name": "faq", "full_retrieval_intent_name": "faq/ask"})
    assert faq.full_retrieval_intent_name == "faq/ask"


def test_action_needs_a_name_or_a_text_and_stamping() -> None:
    with pytest.raises(ValueError, match="action name or an action text"):
        ActionExecuted()
    assert stamped(Restarted(), 9.0).timestamp == 9.0
    assert stamped(Restarted(timestamp=1.0), 9.0).timestamp == 1.0


def test_locations_and_error_descriptions() -> None:
    where = Location(
        line=3,
        index=4,
        offset=5,
        conversation_id="c",
        source="f.jsonl",
        topic="t",
        partition=1,
        kafka_offset=7,
    )
    assert where.describe() == (
        "f.jsonl, line 3, event #4, topic 't' partition 1 offset 7, byte 5, conversation 'c'"
    )
    error = MissingField("no x", expected="x", got="nothing").at(line=2, conversation_id="c")
    assert str(error) == "line 2, conversation 'c': no x"
    assert str(error.at(line=9)) == str(error)  # known facts are kept
    assert error.as_dict() == {
        "error": "MissingField",
        "reason": "no x",
        "expected": "x",
        "got": "nothing",
        "where": {"line": 2, "conversation_id": "c"},
    }
    assert error.retryable is False
    assert isinstance(error, ValueError)
    assert show(None) == "null"
    assert show([1]) == "array [1]"
    assert show({"a": 1}) == "object {'a': 1}"
    assert show(1.5) == "number 1.5"
    assert show(b"x") == "bytes b'x'"
    assert show("x" * 200).endswith("...")
    assert len(show("x" * 200)) == len("string ") + 80


def test_public_surface_is_exported() -> None:
    assert len(events.__all__) == len(set(events.__all__))
    assert all(hasattr(events, name) for name in events.__all__)
    wire = {
        "DEFAULT_MAX_RECORD_BYTES",
        "TAGS",
        "Record",
        "decode_event",
        "decode_record",
        "encode_event",
        "encode_record",
        "dumps",
        "dumps_rasa",
    }
    errors = {
        "TrackerflowError",
        "EventError",
        "InvalidJson",
        "RecordTooLarge",
        "UnknownEvent",
        "MissingField",
        "InvalidField",
        "Location",
    }
    model = {c.__name__ for c in EVENT_TYPES} | {"Event", "EVENT_TYPES", "stamped"}
    stories = {"UserView", "Story", "story_string", "yaml_stories", "markdown_story"}
    assert wire | errors | model | stories <= set(events.__all__)


def test_json_kept_in_memory_costs_its_length_not_orjsons_working_buffer() -> None:
    """orjson's result holds its whole working buffer (about 4 KiB with orjson 3.13), which made
    every history record in a worker's memory cost 4 KiB."""
    import tracemalloc

    from events.wire import dumps_kept

    record = {"event": "reminder", "name": "r", "intent": "nudge", "date_time": "2030-01-01"}
    assert dumps_kept(record) == json.dumps(record, separators=(",", ":")).encode()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [dumps_kept({**record, "n": n}) for n in range(1000)]
        per_record = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert per_record <= len(kept[-1]) + 100  # its length plus the bytes object's header


def test_without_the_compiled_module_python_decodes_everything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    from events import wire
    from events.fast import compiled, native_decoder

    assert compiled("NoSuchClass") is None  # a build older than what asks for it
    monkeypatch.setitem(sys.modules, "events._native", None)  # as if it was never built
    assert compiled("Decoder") is None
    assert native_decoder(Record, wire.decode_record_python, 100) is None
    monkeypatch.setattr(wire, "_NATIVE", None)
    assert wire.record_decoder() == "python"
    line = b'{"sender_id":"c","event":"action","timestamp":7,"name":"a"}'
    assert wire.decode_record_python(line) == Record("c", ActionExecuted("a", timestamp=7))
