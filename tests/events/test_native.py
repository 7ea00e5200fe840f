"""The compiled decoder (``events/native-decoder``) against the Python decoder, the reference.

For every input the compiled decoder returns exactly the record the Python decoder returns (same
classes, same value types, same key order) or None, and it must not return None for the
ordinary records it exists for. The test suite requires it to be built (``test_it_is_built``
says so when it is not).
"""

from __future__ import annotations

import importlib
import json
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.generate import Plan, write
from events import model as m
from events import wire
from events.errors import EventError
from events.model import Event
from events.wire import TAGS, Record, decode_record, dumps_rasa, encode_record
from tests.strategies import events as any_events
from tests.strategies import json_values, sender_ids

SAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "samples" / "conversations.jsonl"
NOW = 1_700_000_123.5
NATIVE_TAGS = frozenset(
    {
        "user",
        "user_featurization",
        "bot",
        "action",
        "slot",
        "reset_slots",
        "restart",
        "rewind",
        "undo",
        "pause",
        "resume",
        "followup",
        "session_started",
        "active_loop",
        "loop_interrupted",
        "action_execution_rejected",
    }
)
FAST = None if wire._NATIVE is None else wire._NATIVE.decode
ROOMY = settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])


def test_it_is_built() -> None:
    assert FAST is not None, (
        "events._native is not built: was a Rust toolchain (cargo) on PATH when `make setup` ran?"
    )
    assert wire.record_decoder() == "compiled"
    assert decode_record is not wire.decode_record_python


def test_decode_record_takes_the_python_arguments() -> None:
    """Anything the compiled path does not take goes to the Python decoder, unchanged."""
    line = b'{"sender_id":"c","event":"action","timestamp":0,"name":"a"}'
    for data in (line, line.decode(), bytearray(line), orjson.loads(line)):
        assert decode_record(data, now=5.0) == Record("c", m.ActionExecuted("a", timestamp=5.0))
    assert decode_record(line).event.timestamp == 0.0
    assert decode_record(line, conversation_id="c", max_bytes=len(line)).sender_id == "c"
    with pytest.raises(EventError, match="over the limit of 10 bytes"):
        decode_record(line, max_bytes=10)
    with pytest.raises(EventError, match="differs from the record key"):
        decode_record(line, conversation_id="d")
    with pytest.raises(EventError, match="over the limit"):
        decode_record(line, max_bytes=-1)
    with pytest.raises(TypeError):
        decode_record(line, 5.0)  # type: ignore[misc]


def reference(data: bytes, key: str | None) -> Record | EventError:
    try:
        return wire.decode_record_python(data, now=NOW, conversation_id=key)
    except EventError as error:
        return error


def check(data: bytes, key: str | None = None) -> Record | None:
    """The compiled decoder's answer, after checking it against the reference."""
    assert FAST is not None
    expected = reference(data, key)
    fast = FAST(data, NOW, key)
    if fast is not None:
        assert not isinstance(expected, EventError), f"compiled accepted, Python said {expected}"
        assert type(fast) is Record and type(fast.event) is type(expected.event)
        assert fast == expected
        assert repr(fast) == repr(expected)  # int/float and key order too
    # and through the public function, the compiled decoder's with the Python one behind it
    try:
        through = decode_record(data, now=NOW, conversation_id=key)
    except EventError as error:
        assert isinstance(expected, EventError) and str(error) == str(expected)
    else:
        assert repr(through) == repr(expected)
    return fast


def record_bytes(event: Event, sender_id: str) -> bytes:
    return dumps_rasa(encode_record(event, sender_id))


def test_sample_and_generated_logs_decode_compiled_and_equal() -> None:
    lines = SAMPLE.read_bytes().splitlines()
    generated = Path(os.environ.get("TMPDIR", "/tmp")) / f"native-check-{os.getpid()}.jsonl"
    with generated.open("w") as out:
        write(Plan(6000, seed=11), out)
    try:
        lines += generated.read_bytes().splitlines()
    finally:
        generated.unlink()
    compiled = dict.fromkeys(NATIVE_TAGS, 0)
    deferred = 0
    for line in lines:
        tag = orjson.loads(line)["event"]
        if check(line) is None:
            deferred += 1
            assert tag not in NATIVE_TAGS, line
        else:
            compiled[tag] += 1
    assert deferred / len(lines) < 0.05
    common = {"user", "user_featurization", "bot", "action", "slot", "session_started"}
    assert all(compiled[tag] > 0 for tag in common), compiled


@ROOMY
@given(any_events(), sender_ids())
def test_every_written_event_decodes_equal(event: Event, sender_id: str) -> None:
    fast = check(record_bytes(event, sender_id))
    assert (fast is not None) == (event.TAG in NATIVE_TAGS)
    assert check(record_bytes(event, sender_id), sender_id) is not None or fast is None


KEYS = (
    "sender_id",
    "event",
    "timestamp",
    "metadata",
    "name",
    "policy",
    "confidence",
    "action_text",
    "hide_rule_turn",
    "text",
    "data",
    "value",
    "use_text_for_featurization",
    "parse_data",
    "input_channel",
    "message_id",
    "is_interrupted",
    "date_time",
    "entities",
    "extra",
)
ODD_VALUES = st.sampled_from(
    [
        0,
        -0.0,
        0.0,
        1,
        -1,
        True,
        False,
        None,
        "",
        "x",
        "é\n\u2028",
        2**63,
        -(2**63) - 1,
        2**64,
        1e308,
        5e-324,
        [],
        {},
        [{}],
        {"intent": None, "entities": None},
        {"entities": [1]},
        {"intent": [], "entities": []},
        {"intent": {"name": "x"}, "entities": [{"entity": "e"}], "text": "t"},
    ]
)
RAW_TOKENS = st.sampled_from(
    [b"1e400", b'"\\ud800"', b"18446744073709551616", b"[" * 200 + b"]" * 200, b"-0", b"1E2"]
)
"""JSON the two parsers may judge differently: out-of-range numbers, a lone surrogate, deep
nesting. Written in place of a value, after serialising."""
TAG_VALUES = st.sampled_from([*sorted(TAGS), "form", "form_validation", "topic", "nope", ""])


@st.composite
def mutated_records(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A written record with some keys set to odd values, removed or retagged, then bytes
    written with varying layout (sometimes a duplicate key)."""
    sender = draw(sender_ids())
    record: dict[str, Any] = encode_record(draw(any_events()), sender)
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(KEYS))
        action = draw(st.sampled_from(["set", "drop", "tag"]))
        if action == "drop":
            record.pop(key, None)
        elif action == "tag":
            record["event"] = draw(TAG_VALUES)
        else:
            record[key] = draw(st.one_of(ODD_VALUES, json_values))
    layout = draw(st.sampled_from(["compact", "spaced", "duplicate", "rasa"]))
    if layout == "rasa":
        data = dumps_rasa(record)
    elif layout == "compact":
        data = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()
    else:
        data = json.dumps(record, indent=1 if layout == "spaced" else None).encode()
    if layout == "duplicate" and len(record) > 1:
        first = next(iter(record))
        data = b"{" + json.dumps(first).encode() + b": null, " + data[1:]
    data = data.replace(b'"@raw@"', draw(RAW_TOKENS))
    key = draw(st.sampled_from([None, "", sender, sender + "-other"]))
    return data, key


@ROOMY
@given(mutated_records())
def test_mutated_records_decode_equal_or_defer(case: tuple[bytes, str | None]) -> None:
    check(*case)


@given(st.binary(max_size=40) | st.sampled_from([b"{}", b"[]", b'{"event": "action"}', b"\xff"]))
def test_arbitrary_bytes_decode_equal_or_defer(data: bytes) -> None:
    check(data)


def test_timestamps_numbers_and_flags_keep_their_python_types() -> None:
    line = b'{"sender_id":"c","event":"action","timestamp":%s,"name":"a","confidence":%s}'
    for ts, confidence in [(b"7", b"1"), (b"7.0", b"1.0"), (b"0", b"null"), (b"-0.0", b"0")]:
        fast = check(line % (ts, confidence))
        assert fast is not None
    assert check(line % (b"0", b"1")).event.timestamp == NOW  # type: ignore[union-attr]
    assert check(b'{"sender_id":"c","event":"slot","name":"s","value":[1,{"a":2.5}]}') is not None
    for value in (b'"x"', b"12", b"-1.5e3", b"true", b"false", b"null", b"18446744073709551615"):
        check(b'{"sender_id":"c","event":"slot","name":"s","value":%s}' % value)


def test_equal_metadata_data_and_names_are_shared() -> None:
    assert FAST is not None

    def decode(line: str) -> Any:
        return FAST(line.encode(), NOW, None).event

    action = '{"sender_id":"c","event":"action","metadata":{"m":%d},"name":"act","policy":"P"}'
    first, second, other = decode(action % 1), decode(action % 1), decode(action % 2)
    assert first.metadata is second.metadata and first.metadata is not other.metadata
    assert first.action_name is second.action_name and first.policy is second.policy
    bot = '{"sender_id":"c","event":"bot","text":"hi","data":{"buttons":null}}'
    assert decode(bot).data is decode(bot).data
    user = '{"sender_id":"c","event":"user","text":"hi","parse_data":{"intent":{}}}'
    assert decode(user).parse_data is not decode(user).parse_data  # parses are never shared


def test_threads_decode_concurrently() -> None:
    lines = SAMPLE.read_bytes().splitlines()
    expected = [reference(line, None) for line in lines]
    failures: list[str] = []

    def run() -> None:
        for _ in range(3):
            for line, want in zip(lines, expected, strict=True):
                got = decode_record(line, now=NOW)
                if repr(got) != repr(want):
                    failures.append(repr(got))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


def test_the_decoder_checks_what_it_is_given() -> None:
    native = importlib.import_module("events._native")
    classes = {cls.__name__: cls for cls in m.EVENT_TYPES}
    fallback, limit = wire.decode_record_python, 100
    without_slot_set = {k: v for k, v in classes.items() if k != "SlotSet"}
    with pytest.raises(ValueError, match="no class SlotSet"):
        native.Decoder(without_slot_set, Record, fallback, limit)
    with pytest.raises(ValueError, match="2-field named tuple"):
        native.Decoder(classes, tuple, fallback, limit)
    with pytest.raises(ValueError, match="not a slot"):
        native.Decoder({**classes, "SlotSet": _NotSlotted}, Record, fallback, limit)


class _NotSlotted:
    timestamp = 0.0


def test_keys_a_tag_does_not_read_still_count_as_json() -> None:
    """Python parses the whole record with orjson, so a value orjson rejects under any key
    rejects the record; the compiled decoder defers whatever key its tag does not read."""
    written = {
        "action": b'"name":"a"',
        "slot": b'"name":"s","value":1',
        "bot": b'"text":"hi"',
        "session_started": b'"metadata":{}',
    }
    for tag, fields in written.items():
        for key in KEYS[4:17]:
            for token in (b"1e400", b'"\\ud800"'):
                line = b'{"sender_id":"c","event":"%s",%s,"%s":%s}' % (
                    tag.encode(),
                    fields,
                    key.encode(),
                    token,
                )
                check(line)


def test_events_stay_out_of_the_cyclic_collector() -> None:
    """An event can be in no reference cycle, so the collector need not walk it (a run keeps
    millions); reference counting still frees it and what it holds."""
    import gc
    import tracemalloc

    line = (
        b'{"sender_id":"c","event":"user","text":"hi","parse_data":{"intent":{"name":"x"},'
        b'"entities":[{"e":1}],"intent_ranking":[{"name":"x"}]}}'
    )
    event = decode_record(line).event
    assert not gc.is_tracked(event)
    assert gc.is_tracked(event.entities)  # its JSON containers are the usual objects
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        records = [decode_record(line) for _ in range(2000)]
        kept = tracemalloc.get_traced_memory()[0] - before
        del records
        freed = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept > 2000 * 300 and freed < kept / 20


def test_long_metadata_is_not_kept_for_sharing() -> None:
    """The caches' memory stays bounded: metadata past 2 KiB of JSON is never shared."""
    assert FAST is not None
    big = '{"sender_id":"c","event":"action","name":"a","metadata":{"k":"%s"}}' % ("x" * 3000)
    first, second = FAST(big.encode(), NOW, None), FAST(big.encode(), NOW, None)
    assert first == second and first.event.metadata is not second.event.metadata


# -- the compiled history encoder (encode.rs): the Python encoder's bytes, or None -------------
ENCODE = None if wire._NATIVE is None else wire._NATIVE.encode


def encoded(event: Event) -> bytes | None:
    """The compiled encoder's bytes for ``event``, checked against the Python encoder's."""
    assert ENCODE is not None
    fast = ENCODE(event)
    assert fast is None or fast == wire.encode_kept_python(event)
    return fast


@ROOMY
@given(any_events())
def test_every_event_encodes_to_the_python_bytes_or_defers(event: Event) -> None:
    fast = encoded(event)
    assert (fast is not None) == (event.TAG in NATIVE_TAGS)
    assert wire.encode_kept(event) == wire.encode_kept_python(event)
    assert wire.decode_event(wire.encode_kept(event)) == event


@ROOMY
@given(json_values, st.floats(allow_nan=False, allow_infinity=False))
def test_json_values_and_floats_encode_as_orjson_writes_them(value: Any, number: float) -> None:
    assert encoded(m.SlotSet(key="s", value=value, timestamp=number)) is not None


@pytest.mark.parametrize(
    "value",
    [
        0.0,
        -0.0,
        1e16,
        1e15,
        1.5e-7,
        1e-5,
        5e-324,
        1.7976931348623157e308,
        2**63 - 1,
        -(2**63),
        2**64 - 1,
        True,
        None,
        '\x00\x1f\x7f"\\/\u2028é\n\t\r\b\f😀',
        {"a": [1, {"b": [None, 2.5]}], "": {}},
    ],
)
def test_edge_values_encode_as_orjson_writes_them(value: Any) -> None:
    assert encoded(m.SlotSet(key="s", value=value, timestamp=1.0)) is not None


class Subclassed(dict[str, Any]):
    pass


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "python"),
    [
        (float("nan"), b"null"),
        (float("inf"), b"null"),
        ((1, 2), b"[1,2]"),
        (Subclassed(a=1), b'{"a":1}'),
        (_nested(200), orjson.dumps(_nested(200))),
        (2**64, TypeError),
        ({1: "x"}, TypeError),
        ("\ud800", TypeError),
    ],
)
def test_values_json_decoding_does_not_make_are_left_to_the_python_encoder(
    value: Any, python: bytes | type[Exception]
) -> None:
    event = m.SlotSet(key="s", value=value, timestamp=1.0)
    assert encoded(event) is None
    if isinstance(python, bytes):
        assert (
            wire.encode_kept(event)
            == b'{"event":"slot","timestamp":1.0,"name":"s","value":%s}' % python
        )
    else:
        with pytest.raises(python):
            wire.encode_kept(event)


def test_events_of_other_tags_are_left_to_the_python_encoder() -> None:
    event = m.ReminderCancelled(name="r", timestamp=2.0)
    assert encoded(event) is None
    assert wire.encode_kept(event) == wire.encode_kept_python(event)


def test_random_floats_encode_as_orjson_writes_them() -> None:
    import random
    import struct

    rng = random.Random(7)
    numbers = [
        struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0] for _ in range(20_000)
    ]
    numbers += [rng.random() * 10 ** rng.randint(-12, 24) for _ in range(20_000)]
    finite = [x for x in numbers if math.isfinite(x)]
    assert len(finite) > 39_000
    event = m.SlotSet(key="s", value=finite, timestamp=1.0)
    assert encoded(event) is not None


# -- a batch of consumed records at once (decode_batch, through events.wire.decode_ready) ------
CONTROL = "trackerflow.control"
RASA_HEADERS = (("RASA_ENVIRONMENT", b"production"),)


class Consumed(NamedTuple):
    """What the decoder reads of a consumed record (the Kafka client's fields)."""

    key: Any
    value: Any
    timestamp: Any  # milliseconds
    headers: Any = RASA_HEADERS


def sample_records() -> list[Consumed]:
    """The sample conversations' events as consumed records, keyed by their conversation."""
    return [
        Consumed(orjson.loads(line)["sender_id"].encode(), line, 1_700_000_000_000 + i)
        for i, line in enumerate(SAMPLE.read_bytes().splitlines())
    ]


def ready(records: list[Consumed], max_bytes: int = wire.DEFAULT_MAX_RECORD_BYTES) -> list[Any]:
    """``decode_ready``'s answer for ``records``, each item checked against the Python path."""
    got = wire.decode_ready(records, max_bytes=max_bytes, control_header=CONTROL)
    assert got is not None and len(got) == len(records)
    for record, item in zip(records, got, strict=True):
        if item is None:
            continue
        conversation_id, event, kept = item
        # taken: keyed by UTF-8 bytes, JSON bytes within the limit, not a control ...
        assert type(record.key) is bytes and record.key.decode() == conversation_id != ""
        assert type(record.value) is bytes and len(record.value) <= max_bytes
        assert all(name != CONTROL for name, _ in record.headers or ())
        # ... and exactly what the Python path makes of it
        expected = wire.decode_record_python(
            record.value,
            now=record.timestamp / 1000.0,
            max_bytes=max_bytes,
            conversation_id=conversation_id,
        )
        assert repr(Record(conversation_id, event)) == repr(expected)
        assert type(event) is type(expected.event)
        # its history record: the record's own bytes when they decode to this event alone (it
        # has its own timestamp: none, or a falsy one, is the record time), else the Python
        # encoder's bytes (or None: the Python encoder writes them)
        own_time = bool(orjson.loads(record.value).get("timestamp"))
        assert (kept is record.value) == own_time
        if own_time:
            assert repr(wire.decode_event(kept)) == repr(event)
        else:
            assert kept is None or kept == wire.encode_kept_python(event)
    # read ahead (as a worker does while records wait), in two parts, the first starting with
    # records an earlier batch took: the same answer, and the taken records came from there
    earlier = [Consumed(b"c0", GOOD, 0), Consumed(b"c0", GOOD, 1)]
    cut = len(records) // 2
    skims = [wire.skim(earlier + records[:cut]), wire.skim(records[cut:])]
    ahead = wire.decode_ready(
        records, max_bytes=max_bytes, control_header=CONTROL, skims=skims, start=len(earlier)
    )
    assert repr(ahead) == repr(got)
    assert all(a is b for a, b in zip(ahead, got, strict=True) if a is None)
    taken = sum(item is not None for item in got)
    assert taken <= sum(s.used for s in skims) <= len(records)
    return got


def test_a_batch_decodes_as_each_of_its_records_does() -> None:
    lines = SAMPLE.read_bytes().splitlines()
    records = sample_records()
    got = ready(records)
    for line, item in zip(lines, got, strict=True):
        assert (item is not None) == (orjson.loads(line)["event"] in NATIVE_TAGS), line
    # Rasa stamps every event: each record's own bytes are its history record
    taken = [(r, item) for r, item in zip(records, got, strict=True) if item is not None]
    assert all(item[2] is record.value for record, item in taken)
    # one string object per conversation in a batch (dicts keyed by it compare by identity)
    first: dict[str, str] = {}
    for item in got:
        if item is not None:
            assert first.setdefault(item[0], item[0]) is item[0]
    assert len(first) > 10


GOOD = b'{"sender_id": "c1", "event": "action", "timestamp": 0, "name": "act"}'


@pytest.mark.parametrize(
    "record",
    [
        Consumed(None, GOOD, 5000),  # no key: the record is re-keyed
        Consumed(b"", GOOD, 5000),
        Consumed(b"\xff", GOOD, 5000),  # a key that is not UTF-8
        Consumed(b"\xed\xa0\x80", GOOD, 5000),  # an encoded surrogate is not UTF-8 either
        Consumed(bytearray(b"c1"), GOOD, 5000),
        Consumed(b"c2", GOOD, 5000),  # another conversation's key
        Consumed(b"c1", None, 5000),  # a tombstone
        Consumed(b"c1", bytearray(GOOD), 5000),
        Consumed(b"c1", GOOD + b" " * 100, 5000),  # over max_bytes (below)
        Consumed(b"c1", b"{not json", 5000),
        Consumed(b"c1", b'{"sender_id": "c1", "event": "agent", "text": "hi"}', 5000),
        Consumed(b"c1", GOOD, 5000, ((CONTROL, b"replace"),)),
        Consumed(b"c1", GOOD, 5000, (("RASA_ENVIRONMENT", b"p"), (CONTROL, None))),
        Consumed(b"c1", GOOD, 5000, ((b"bytes-name", b"x"),)),
        Consumed(b"c1", GOOD, 5000, (("x",),)),  # a header without a value
        Consumed(b"c1", GOOD, 5000, 7),  # headers that are not pairs
        Consumed(b"c1", GOOD, "5000"),  # a timestamp that is not a number
        Consumed(b"c1", GOOD, 10**400),
        Consumed(b"c1", GOOD, True),  # a bool is an int, but not a record time
    ],
)
def test_records_the_python_path_must_judge_are_left_to_it(record: Consumed) -> None:
    assert ready([record], max_bytes=len(GOOD) + 10) == [None]


def test_a_missing_timestamp_is_the_record_time_and_headers_may_be_empty() -> None:
    for headers in ((), None, [], RASA_HEADERS, [("RASA_ENVIRONMENT", None)]):
        [item] = ready([Consumed(b"c1", GOOD, 1_700_000_000_123, headers)])
        assert item is not None and item[1].timestamp == 1_700_000_000.123
    [item] = ready([Consumed(b"c1", GOOD, 5000.0)])
    assert item[1].timestamp == 5.0


def test_records_read_ahead_are_taken_from_there_only_for_the_very_values_read() -> None:
    records = sample_records()
    plain = wire.decode_ready(records, max_bytes=1 << 20, control_header=CONTROL)

    def decode(skims: list[Any], start: int = 0) -> list[Any] | None:
        return wire.decode_ready(
            records, max_bytes=1 << 20, control_header=CONTROL, skims=skims, start=start
        )

    skims = [wire.skim(records[:7]), wire.skim(records[7:])]
    assert repr(decode(skims)) == repr(plain)
    assert [s.used for s in skims] == [7, len(records) - 7]  # every record is a Rasa event
    # equal bytes in other objects, or the right objects out of place: parsed as before
    copies = [r._replace(value=bytes(bytearray(r.value))) for r in records]
    elsewhere = [wire.skim(copies)]
    assert repr(decode(elsewhere)) == repr(plain) and elsewhere[0].used == 0
    shifted = [wire.skim(records)]
    assert repr(decode(shifted, start=1)) == repr(plain) and shifted[0].used == 0
    # one that read nothing only keeps the place of its records
    kept = [wire.skim(records[:5], read=False), wire.skim(records[5:])]
    assert repr(decode(kept)) == repr(plain)
    assert [len(s) for s in kept] == [5, len(records) - 5]
    assert [s.used for s in kept] == [0, len(records) - 5]
    # a value that is not bytes, or no value at all, is left to the decoder
    odd = wire.skim([Consumed(b"c1", None, 0), Consumed(b"c1", bytearray(GOOD), 0), object()])
    assert len(odd) == 3 and odd.used == 0


def test_a_read_ahead_may_be_dropped_while_its_thread_reads() -> None:
    records = sample_records() * 20
    for _ in range(5):
        skimmed = wire.skim(records)  # its thread reads the values it keeps alive ...
        del skimmed  # ... and it waits for the thread before it lets them go
    last = wire.skim(records)
    assert repr(
        wire.decode_ready(records, max_bytes=1 << 20, control_header=CONTROL, skims=[last])
    ) == repr(wire.decode_ready(records, max_bytes=1 << 20, control_header=CONTROL))
    assert last.used == len(records)


def test_a_forked_process_reads_ahead_with_a_thread_of_its_own() -> None:
    records = sample_records()
    before = wire.skim(records)  # this process's reader thread is running now
    plain = repr(wire.decode_ready(records, max_bytes=1 << 20, control_header=CONTROL))
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's outcome is its exit status
        code = 1
        try:
            skims = [wire.skim(records)]  # a thread of its own reads them
            got = wire.decode_ready(records, max_bytes=1 << 20, control_header=CONTROL, skims=skims)
            del before  # the parent's: no thread here waits on it
            code = 0 if repr(got) == plain and skims[0].used == len(records) else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 20
    while (done := os.waitpid(child, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        pytest.fail("the forked process hung reading ahead")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert before.used == 0 and len(before) == len(records)


def test_without_the_compiled_decoder_no_batch_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "_DECODE_BATCH", None)
    monkeypatch.setattr(wire, "_SKIM", None)
    records = [Consumed(b"c1", GOOD, 5000)]
    assert wire.decode_ready(records, max_bytes=1000, control_header=CONTROL) is None
    assert wire.skim(records) is None


KEY_BYTES = st.sampled_from([None, b"", b"\xff", b"c"]) | sender_ids().map(str.encode)
HEADERS = st.sampled_from(
    [(), RASA_HEADERS, ((CONTROL, b"replace"),), ((b"x", b"y"),), (("RASA_ENVIRONMENT", None),)]
)


@st.composite
def consumed(draw: st.DrawFn) -> Consumed:
    """A consumed record: as Rasa writes it (most taken), or mutated (most left)."""
    if draw(st.booleans()):
        sender = draw(sender_ids())
        data, key = record_bytes(draw(any_events()), sender), sender
    else:
        data, key = draw(mutated_records())
    sender = orjson.loads(data).get("sender_id") if data.startswith(b"{") else None
    choices = [KEY_BYTES] + ([st.just(sender.encode())] if isinstance(sender, str) else [])
    key_bytes = draw(st.one_of(*choices)) if key is None else key.encode()
    timestamp = draw(st.integers(0, 2_000_000_000_000) | st.sampled_from([0.0, 1.5]))
    return Consumed(key_bytes, data, timestamp, draw(HEADERS))


@ROOMY
@given(st.lists(consumed(), max_size=6), st.integers(40, 2000) | st.just(1 << 20))
def test_every_batch_decodes_as_its_records_do_or_defers(
    records: list[Consumed], max_bytes: int
) -> None:
    ready(records, max_bytes)
