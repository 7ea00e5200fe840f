"""The record-level fold: outcomes, deduplication, dead letters, re-keying and rebuilding."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from events.errors import InvalidField, InvalidJson, MissingField
from events.model import Event
from events.wire import decode_event, decode_record, encode_kept, encode_record
from processors import Domain, EventVerbosity
from processors.stream import (
    CONTROL_HEADER,
    REPLACE,
    Inbound,
    Outcome,
    StreamFolder,
    control_of,
    history_key,
)
from tests.processors.test_fold_properties import (
    DOMAIN_KEYS,
    DOMAINS,
    HISTORIES,
    SOME,
    streams,
    trackers,
)

SAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "samples" / "conversations.jsonl"


def records() -> list[Inbound]:
    out = []
    for offset, line in enumerate(SAMPLE.read_bytes().splitlines()):
        key = orjson.loads(line)["sender_id"].encode()
        out.append(Inbound("t.events", hash(key) % 3, offset, key, line, 1_700_000_000.0))
    return out


def folder() -> StreamFolder:
    return StreamFolder({}, {})


def test_every_sample_record_is_folded_and_equals_an_offline_fold() -> None:
    from events.wire import decode_record
    from processors import DialogueStateTracker

    stream = folder()
    kinds = [stream.process(r).kind for r in records()]
    assert set(kinds) == {"folded"}
    assert not stream.heads  # heads are written at flush, once per conversation
    flushed = stream.flush()
    offline: dict[str, DialogueStateTracker] = {}
    for r in records():
        assert r.value is not None
        rec = decode_record(r.value, now=r.timestamp)
        offline.setdefault(rec.sender_id, DialogueStateTracker(rec.sender_id)).update(rec.event)
    assert sorted(flushed) == sorted(offline) and stream.flush() == []
    for conversation_id, tracker in offline.items():
        assert stream.heads[conversation_id]["state"] == tracker.current_state()
        assert stream.heads[conversation_id]["count"] == len(tracker.events)


def test_a_redelivered_record_is_skipped_and_changes_nothing() -> None:
    stream = folder()
    first = records()[:50]
    for r in first[:30]:
        stream.process(r)
    stream.flush()
    for r in first[30:]:
        stream.process(r)
    # skipped both against flushed heads and against heads folded since the last flush
    assert {stream.process(r).kind for r in first} == {"skipped"}
    stream.flush()
    before = {k: dict(v) for k, v in stream.heads.items()}
    assert {stream.process(r).kind for r in first} == {"skipped"}
    assert stream.flush() == [] and stream.heads == before


def test_a_tracker_rebuilt_from_history_continues_exactly() -> None:
    all_records = records()
    continuous, restarted = folder(), folder()
    for r in all_records[:1000]:
        continuous.process(r)
        restarted.process(r)
    restarted.flush()
    restarted.forget()  # a new worker: nothing cached, state only in the stores
    for r in all_records[1000:]:
        continuous.process(r)
        restarted.process(r)
    continuous.flush()
    restarted.flush()
    assert restarted.heads == continuous.heads
    some = next(iter(continuous.heads))
    all_state = EventVerbosity.ALL
    assert restarted.tracker(some).current_state(all_state) == continuous.tracker(
        some
    ).current_state(all_state)


@pytest.mark.parametrize("window", [1, 5, 40])
def test_a_windowed_folder_is_rasas_windowed_tracker_even_when_rebuilt(window: int) -> None:
    """``max_event_history``: trackers hold the latest events only, history keeps all of them,
    and a tracker rebuilt from history is the one that folded the events one by one."""
    from events.wire import decode_record
    from processors import DialogueStateTracker

    all_records = records()
    continuous = StreamFolder({}, {}, max_event_history=window)
    restarted = StreamFolder({}, {}, max_event_history=window)
    offline: dict[str, DialogueStateTracker] = {}
    for number, r in enumerate(all_records):
        continuous.process(r)
        restarted.process(r)
        assert r.value is not None
        rec = decode_record(r.value, now=r.timestamp)
        tracker = offline.setdefault(
            rec.sender_id, DialogueStateTracker(rec.sender_id, max_event_history=window)
        )
        tracker.update(rec.event)
        if number == 1000:
            restarted.flush()
            restarted.forget()  # rebuilt from history from here on
    continuous.flush()
    restarted.flush()
    assert restarted.heads == continuous.heads
    for conversation_id, tracker in offline.items():
        assert continuous.heads[conversation_id]["state"] == tracker.current_state()
        assert continuous.heads[conversation_id]["count"] == tracker._count  # all kept
        assert len(continuous.tracker(conversation_id).events) <= window


def test_a_tracker_evicted_before_flush_is_rebuilt_with_the_unflushed_events() -> None:
    stream, reference = StreamFolder({}, {}, cache_size=1), folder()
    for r in records()[:300]:
        stream.process(r)
        reference.process(r)
    assert stream.flush() == reference.flush()
    assert stream.heads == reference.heads


def test_discard_drops_unflushed_heads_and_cached_trackers() -> None:
    stream = folder()
    first = records()[:40]
    for r in first:
        stream.process(r)
    stream.discard()
    assert stream.flush() == [] and not stream._cache
    # what was never flushed is folded again, not skipped
    assert {stream.process(r).kind for r in first} == {"folded"}


def test_forgetting_partitions_drops_only_their_trackers() -> None:
    stream = StreamFolder({}, {}, cache_size=2)
    for conversation, partition in (("a", 0), ("b", 1), ("c", 1)):
        line = orjson.dumps({"sender_id": conversation, "event": "pause", "timestamp": 1.0})
        stream.process(Inbound("t", partition, 0, conversation.encode(), line, 1.0))
    assert list(stream._cache) == ["b", "c"]  # the least recently used went first
    stream.forget({1})
    assert not stream._cache


@pytest.mark.parametrize(
    ("key", "value", "error", "words"),
    [
        (b"c1", b"{not json", InvalidJson, "line 1"),
        (b"c1", None, InvalidField, "tombstone"),
        (b"\xff\xfe", b'{"event": "pause"}', InvalidField, "not UTF-8"),
        (None, b'{"event": "pause"}', MissingField, "sender_id"),
        (b"c1", b'{"event": "teleport", "sender_id": "c1"}', Exception, "teleport"),
    ],
)
def test_bad_records_are_dead_with_a_located_reason(
    key: bytes | None, value: bytes | None, error: type[Exception], words: str
) -> None:
    outcome = folder().process(Inbound("t.events", 2, 41, key, value, 1.0))
    assert outcome.kind == "dead"
    assert isinstance(outcome.error, error)
    assert words in str(outcome.error)
    assert "topic 't.events' partition 2 offset 41" in str(outcome.error)


def test_a_keyless_record_is_rekeyed_by_its_sender_id_and_not_folded() -> None:
    stream = folder()
    line = b'{"sender_id": "c9", "event": "pause", "timestamp": 1.0}'
    outcome = stream.process(Inbound("t.events", 0, 7, None, line, 1.0))
    assert (outcome.kind, outcome.conversation_id) == ("rekeyed", "c9")
    assert not stream.heads and not stream.history


def test_history_keys_sort_by_conversation_then_sequence() -> None:
    keys = [history_key("a", 10), history_key("a", 9), history_key("b", 0)]
    assert sorted(keys) == [history_key("a", 9), history_key("a", 10), history_key("b", 0)]


@pytest.mark.parametrize("seq", [0, 7, 4095, 4096, 123_456, 10**12 - 1])
def test_a_history_key_is_the_conversation_a_unit_separator_and_twelve_digits(seq: int) -> None:
    # the first 4096 endings are made once; the rest are formatted: both read alike
    assert history_key("c-\u00e9", seq) == "c-\u00e9\x1f" + str(seq).rjust(12, "0")


def test_signals_come_out_with_their_source() -> None:
    stream = folder()
    line = b'{"sender_id": "c1", "event": "followup", "name": "utter_x", "timestamp": 3.0}'
    outcome = stream.process(Inbound("t.events", 1, 5, b"c1", line, 1.0))
    assert [s.as_dict() for s in outcome.signals] == [
        {
            "signal": "followup_action",
            "conversation_id": "c1",
            "timestamp": 3.0,
            "source": {"topic": "t.events", "partition": 1, "offset": 5},
            "action": "utter_x",
        }
    ]


def _replace(
    offset: int, key: bytes | None = b"c1", value: bytes = b'{"request": "r1"}'
) -> Inbound:
    return Inbound("t.events", 0, offset, key, value, 1.0, "replace")


def _event(offset: int, event: dict[str, object]) -> Inbound:
    line = orjson.dumps({"sender_id": "c1", "timestamp": 1.0 + offset, **event})
    return Inbound("t.events", 0, offset, b"c1", line, 1.0)


@pytest.mark.parametrize("flushed", [True, False])  # False: the control in the events' batch
def test_a_replace_control_starts_the_conversation_again(flushed: bool) -> None:
    from events.wire import decode_record
    from processors import DialogueStateTracker

    stream = folder()
    before = [_event(0, {"event": "pause"}), _event(1, {"event": "slot", "name": "a", "value": 1})]
    after = [_event(3, {"event": "slot", "name": "b", "value": 2})]
    for r in before:
        stream.process(r)
    if flushed:
        stream.flush()
    outcome = stream.process(_replace(2))
    assert (outcome.kind, outcome.conversation_id, outcome.signals) == ("replaced", "c1", ())
    for r in after:
        stream.process(r)
    stream.flush()
    expected = DialogueStateTracker("c1")
    for r in after:
        assert r.value is not None
        expected.update(decode_record(r.value).event)
    head = stream.heads["c1"]
    assert (head["count"], head["replaced"]) == (1, "r1")
    assert head["state"] == expected.current_state()
    assert sorted(stream.history) == [history_key("c1", 0)]  # the old second event is deleted
    # the replay of the control record is skipped, and a restarted worker rebuilds the new history
    assert stream.process(_replace(2)).kind == "skipped"
    stream.forget()
    assert stream.tracker("c1").current_state() == expected.current_state()


@pytest.mark.parametrize(
    ("record", "words"),
    [
        (Inbound("t.events", 0, 4, b"c1", b"{}", 1.0, "explode"), "unknown control 'explode'"),
        (_replace(4, key=None), "control record has no key"),
        (_replace(4, value=b"[1]"), "must be a JSON object"),
        (_replace(4, value=b"{no"), "must be a JSON object"),
        (_replace(4, value=b'{"request": 7}'), "must be a JSON object"),
    ],
)
def test_bad_control_records_are_dead(record: Inbound, words: str) -> None:
    outcome = folder().process(record)
    assert outcome.kind == "dead" and words in str(outcome.error)


def test_pending_reminders_are_kept_in_the_head_and_fired_once() -> None:
    due = "2026-11-21T10:00:00+00:00"
    stream = folder()
    stream.process(
        _event(0, {"event": "user", "text": "hi", "parse_data": {}, "input_channel": "web"})
    )
    stream.process(
        _event(1, {"event": "reminder", "name": "r", "intent": "nudge", "date_time": due})
    )
    stream.process(
        _event(2, {"event": "reminder", "name": "x", "intent": "other", "date_time": due})
    )
    stream.process(_event(3, {"event": "cancel_reminder", "name": "x"}))
    stream.flush()
    pending = stream.heads["c1"]["reminders"]
    assert list(pending) == ["r"]
    due_s = pending["r"]["due"]
    assert stream.fire("c1", "r", due_s + 1, due_s + 2, 60.0) is None  # re-armed for another time
    fired = stream.fire("c1", "r", due_s, due_s + 2, 60.0)
    assert fired is not None
    signal, external = fired
    assert signal.kind == "reminder_triggered" and signal.data["late_s"] == 2.0
    assert external is not None and external.input_channel == "web"
    assert stream.fire("c1", "r", due_s, due_s + 3, 60.0) is None  # fired already
    stream.flush()
    assert "reminders" not in stream.heads["c1"]


def test_a_replace_cancels_the_pending_reminders() -> None:
    due = "2026-11-21T10:00:00+00:00"
    stream = folder()
    stream.process(_event(0, {"event": "reminder", "name": "r", "intent": "i", "date_time": due}))
    stream.process(_replace(1))
    stream.flush()
    assert "reminders" not in stream.heads["c1"]


def test_a_reminder_firing_in_a_paused_conversation_is_logged_without_signals() -> None:
    due = "2026-11-21T10:00:00+00:00"
    stream = folder()
    stream.process(_event(0, {"event": "reminder", "name": "r", "intent": "i", "date_time": due}))
    stream.process(_event(1, {"event": "pause"}))
    held = stream.process(_event(2, {"event": "followup", "name": "utter_later"}))
    assert held.signals == []  # paused: the followup is held back
    stream.flush()
    due_s = stream.heads["c1"]["reminders"]["r"]["due"]
    fired = stream.fire("c1", "r", due_s, due_s, 60.0)
    assert fired is not None and fired[1] is not None
    from events.wire import dumps, encode_record

    external = Inbound("t.events", 0, 3, b"c1", dumps(encode_record(fired[1], "c1")), 1.0)
    outcome = stream.process(external)
    assert (outcome.kind, outcome.signals) == ("folded", [])  # logged; the followup stays held
    stream.flush()
    state = stream.heads["c1"]["state"]
    assert state["paused"] is True and state["latest_message"]["text"] == "EXTERNAL: i"


class Consumed(NamedTuple):
    """A consumed record as the Kafka client hands it to ``process_batch``."""

    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int  # milliseconds
    headers: tuple[tuple[str, bytes], ...] = ()


def _consumed(record: Inbound) -> Consumed:
    headers = (("RASA_ENVIRONMENT", b"production"),)
    if record.control is not None:
        headers += ((CONTROL_HEADER, record.control.encode()),)
    return Consumed(record.offset, record.key, record.value, int(record.timestamp * 1000), headers)


def _mixed(partition: int) -> list[Inbound]:
    """One partition's records of every kind: folded (with and without signals), duplicates,
    dead, re-keyed, controls, good and bad."""
    sample = [r for r in records() if r.partition == partition][:400]
    out = [r._replace(offset=offset) for offset, r in enumerate(sample)]
    n = len(out)
    pause = b'{"sender_id": "c1", "event": "pause", "timestamp": 2.0}'
    follow = b'{"sender_id": "c1", "event": "followup", "name": "utter_x", "timestamp": 3.0}'
    resume = b'{"sender_id": "c1", "event": "resume", "timestamp": 4.0}'
    more = [
        (b"c1", pause, None),
        (b"c1", follow, None),  # held back: paused
        (b"c1", resume, None),  # resumed, and the held followup comes out
        (b"c1", b"{not json", None),
        (b"c1", None, None),
        (None, b'{"sender_id": "c7", "event": "pause", "timestamp": 5.0}', None),
        (b"c1", b'{"request": "r9"}', REPLACE),
        (b"c1", b"{}", "explode"),
        (b"c1", follow, None),
    ]
    for offset, (key, value, control) in enumerate(more, n):
        out.append(Inbound("t.events", partition, offset, key, value, 1_700_000_000.0, control))
    return out[:150] + out[100:]  # offsets 100..149 come again: duplicates


def _plain(outcome: Outcome) -> Outcome:
    """The outcome with its error as (class, message): comparable with another's."""
    error = outcome.error
    return outcome._replace(error=None if error is None else (type(error), str(error)))


def _events(history: Mapping[str, bytes]) -> dict[str, str]:
    """What a history store holds, as events: a batch keeps a record's own bytes where one by
    one the encoder writes them."""
    return {key: repr(decode_event(kept, max_bytes=len(kept))) for key, kept in history.items()}


@pytest.mark.parametrize("size", [1, 7, 1000])
def test_a_batch_folds_like_its_records_one_by_one(size: int) -> None:
    one, batched = folder(), folder()
    for partition in (0, 1):
        mixed = _mixed(partition)
        expected = [one.process(r) for r in mixed]
        outcomes: dict[int, Outcome] = {}
        folded, latest = 0, 0.0
        for start in range(0, len(mixed), size):
            chunk = [_consumed(r) for r in mixed[start : start + size]]
            batch = batched.process_batch("t.events", partition, chunk)
            outcomes.update((start + index, _plain(outcome)) for index, outcome in batch.notable)
            folded, latest = folded + batch.folded, max(latest, batch.event_time)
            assert batch.failures == []
        simple = [o for o in expected if o.kind == "folded" and not o.signals]
        assert folded == len(simple)
        assert outcomes == {i: _plain(o) for i, o in enumerate(expected) if o not in simple}
        assert latest == max(o.event_time for o in expected)
        assert one.flush() == batched.flush()
    kinds = {o.kind for o in outcomes.values()}
    assert kinds == {"folded", "skipped", "dead", "rekeyed", "replaced"}
    assert one.heads == batched.heads and _events(one.history) == _events(batched.history)
    assert one.history.keys() == batched.history.keys() and one.history != batched.history


def test_a_batch_keeps_a_records_own_bytes_as_its_history_record_when_it_has_its_own_time() -> None:
    stamped = b'{"sender_id": "c1", "event": "slot", "timestamp": 7.5, "name": "a", "value": 1}'
    unstamped = b'{"sender_id": "c1", "event": "slot", "name": "b", "value": 2}'
    zero = b'{"sender_id": "c1", "event": "slot", "timestamp": 0, "name": "c", "value": 3}'
    chunk = [Consumed(i, b"c1", v, 9_000) for i, v in enumerate((stamped, unstamped, zero))]
    stream = folder()
    assert stream.process_batch("t.events", 0, chunk).folded == 3
    stream.flush()
    kept = [stream.history[history_key("c1", seq)] for seq in range(3)]
    assert kept[0] is stamped  # no bytes written for it
    for value, record in zip(kept[1:], (unstamped, zero), strict=True):
        # the record time stands in for its timestamp: the encoder writes the event with it
        event = decode_record(record, now=9.0).event
        assert value == encode_kept(event) and decode_event(value).timestamp == 9.0
    rebuilt = StreamFolder(stream.heads, stream.history).tracker("c1")
    assert rebuilt.current_state() == stream.tracker("c1").current_state()
    assert [e.timestamp for e in rebuilt.events] == [7.5, 9.0, 9.0]


def test_a_records_own_bytes_too_large_for_the_changelog_are_encoded_again() -> None:
    padded = b'{"sender_id": "c1", "event": "slot", "timestamp": 7.5, "name": "a", "value": 1%s}'
    value = padded % (b" " * 3000)  # JSON whitespace: the encoder writes it in 50 bytes
    stream = StreamFolder({}, {}, max_kept_bytes=2000)
    batch = stream.process_batch("t.events", 0, [Consumed(0, b"c1", value, 9_000)])
    assert batch.folded == 1 and batch.notable == []
    stream.flush()
    event = decode_record(value).event
    assert stream.history[history_key("c1", 0)] == encode_kept(event)


def test_history_records_larger_than_the_default_record_limit_are_read_back() -> None:
    big = 2 << 20
    value = orjson.dumps({"sender_id": "c1", "event": "bot", "text": "x" * (big - 200)})
    stream = StreamFolder({}, {}, max_record_bytes=big)
    assert stream.process(Inbound("t.events", 0, 0, b"c1", value, 1.0)).kind == "folded"
    stream.flush()
    assert len(stream.history[history_key("c1", 0)]) > 1 << 20  # over decode_event's default
    rebuilt = StreamFolder(stream.heads, stream.history).tracker("c1")
    assert rebuilt.current_state() == stream.tracker("c1").current_state()


@pytest.mark.parametrize("compiled", ["fails", "missing"])
def test_a_batch_folds_the_same_record_by_record_without_the_compiled_batch_decoder(
    monkeypatch: pytest.MonkeyPatch, compiled: str
) -> None:
    from processors import stream

    def broken(records: Any, **_: Any) -> None:
        if compiled == "fails":
            raise MemoryError("no room for the batch")

    chunk = [_consumed(r) for r in _mixed(0)]
    compiled_folder = folder()
    expected = compiled_folder.process_batch("t.events", 0, chunk)
    assert stream.decode_ready(chunk, max_bytes=1 << 20, control_header=CONTROL_HEADER)
    monkeypatch.setattr(stream, "decode_ready", broken)
    alone = folder()
    batch = alone.process_batch("t.events", 0, chunk)
    assert batch.failures == [] and batch.folded == expected.folded > 100
    assert [(i, _plain(o)) for i, o in batch.notable] == [
        (i, _plain(o)) for i, o in expected.notable
    ]
    assert alone.flush() == compiled_folder.flush()
    assert alone.heads == compiled_folder.heads
    assert _events(alone.history) == _events(compiled_folder.history)
    # record by record, every history record is the encoder's bytes
    assert all(kept == encode_kept(decode_event(kept)) for kept in alone.history.values())


def test_a_record_that_fails_to_fold_is_dead_and_the_batch_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from processors import DialogueStateTracker

    slots = [r for r in records() if r.value and b'"slot"' in r.value][:30]
    victim = slots[-1]  # the last of its conversation here: no later event sets its slot
    others = [r for r in records() if r.key != victim.key][-20:]  # folded after the failure
    mixed = [r._replace(partition=0, offset=offset) for offset, r in enumerate(slots + others)]
    reference = folder()
    for r in mixed[:29] + mixed[30:]:
        reference.process(r)
    update = DialogueStateTracker.update

    def failing(tracker: DialogueStateTracker, event: Any) -> None:
        update(tracker, event)  # half applied: the tracker has it, the head and history not
        if event.timestamp == orjson.loads(victim.value or b"")["timestamp"]:
            raise RuntimeError("boom")

    monkeypatch.setattr(DialogueStateTracker, "update", failing)
    stream = folder()
    batch = stream.process_batch("t.events", 0, [_consumed(r) for r in mixed])
    monkeypatch.setattr(DialogueStateTracker, "update", update)
    [(index, error)] = batch.failures
    assert index == 29 and isinstance(error, RuntimeError)
    [(at, dead)] = [(i, o) for i, o in batch.notable if o.kind == "dead"]
    assert at == index and "internal error while folding: RuntimeError: boom" in str(dead.error)
    assert "topic 't.events' partition 0 offset 29" in str(dead.error)
    assert batch.folded + len(batch.notable) == len(mixed)
    # the cached trackers were dropped: the conversations are rebuilt from their history, which
    # does not hold the failed event, so they are the reference's trackers
    assert stream.flush() == reference.flush() and stream.heads == reference.heads


@pytest.mark.parametrize(
    ("headers", "control"),
    [
        ((), None),
        ((("RASA_ENVIRONMENT", b"prod"),), None),
        ((("RASA_ENVIRONMENT", b"prod"), (CONTROL_HEADER, b"replace")), "replace"),
        (((CONTROL_HEADER, b"\xffx"),), "\ufffdx"),
        (((CONTROL_HEADER, None),), ""),
    ],
)
def test_the_control_header_is_read_from_the_record_headers(
    headers: tuple[tuple[str, bytes | None], ...], control: str | None
) -> None:
    assert control_of(headers) == control


def test_a_control_header_without_a_value_makes_the_record_dead() -> None:
    record = Consumed(0, b"c1", b"{}", 1000, ((CONTROL_HEADER, None),))  # type: ignore[arg-type]
    [(index, outcome)] = folder().process_batch("t.events", 0, [record]).notable
    assert index == 0 and outcome.kind == "dead" and "unknown control ''" in str(outcome.error)


def test_a_head_too_large_for_its_changelog_is_kept_without_its_state() -> None:
    from processors.stream import encode_head

    head = {"count": 3, "offsets": {"t.events:0": 2}, "signals": [False, None]}
    small = {**head, "state": {"sender_id": "c1", "slots": {"a": "x" * 10}}}
    assert encode_head(small, None) == encode_head(small, 1000) == orjson.dumps(small)
    big = {**head, "state": {"sender_id": "c1", "slots": {"a": "x" * 2000}}}
    assert orjson.loads(encode_head(big, 1000)) == {**head, "state": None}
    huge = {**big, "replaced": "r" * 2000}  # too large even without its state
    too_large = r"the head of conversation 'c1' is 2\d+ bytes without its state, over the 1000"
    with pytest.raises(ValueError, match=too_large):
        encode_head(huge, 1000)


def _sized(offset: int, event: dict[str, object]) -> Inbound:
    return _event(offset, event)._replace(partition=1)


def test_an_event_whose_history_record_the_changelog_cannot_take_is_dead() -> None:
    limit = 2000
    stream, reference = StreamFolder({}, {}, max_kept_bytes=limit), folder()
    fits = _sized(0, {"event": "slot", "name": "a", "value": "x" * 1500})
    too_big = _sized(1, {"event": "slot", "name": "b", "value": "y" * 2500})
    after = _sized(2, {"event": "slot", "name": "c", "value": "z"})
    for r in (fits, after):
        reference.process(r)
    assert stream.process(fits).kind == "folded"
    dead = stream.process(too_big)
    assert dead.kind == "dead" and dead.signals == () and dead.conversation_id is None
    assert dead.error is not None and dead.error.as_dict()["where"]["kafka_offset"] == 1
    assert "history record would be 25" in str(dead.error)
    assert "over the 2000 bytes the history changelog takes" in str(dead.error)
    assert "conversation 'c1'" in str(dead.error)
    assert stream.process(after).kind == "folded"  # it is the conversation's second event
    assert stream.flush() == reference.flush()
    assert stream.heads == reference.heads and stream.history == reference.history
    # the same in a batch: dead, and nothing else changes
    batched = StreamFolder({}, {}, max_kept_bytes=limit)
    batch = batched.process_batch("t.events", 1, [_consumed(r) for r in (fits, too_big, after)])
    assert [(i, o.kind) for i, o in batch.notable] == [(1, "dead")] and batch.folded == 2
    assert batch.failures == [] and _plain(batch.notable[0][1]) == _plain(dead)
    assert batched.flush() == ["c1"] and batched.heads == reference.heads


def test_a_reminder_that_would_fill_half_the_head_is_dead() -> None:
    due = "2026-11-21T10:00:00+00:00"
    stream = StreamFolder({}, {}, max_kept_bytes=4000)
    entity = [{"entity": "e", "value": "v" * 600}]
    kinds = [
        stream.process(
            _sized(n, {"event": "reminder", "name": f"r{n}", "date_time": due, "entities": entity})
        ).kind
        for n in range(4)
    ]
    # each pending reminder takes about 800 bytes: the third would make them more than 2000
    assert kinds == ["folded", "folded", "dead", "dead"]
    dead = stream.process(
        _sized(4, {"event": "reminder", "name": "r0", "date_time": due, "entities": entity * 3})
    )
    assert dead.kind == "dead" and "pending reminders would take" in str(dead.error)
    assert "over the 2000 bytes they may" in str(dead.error)
    # a reminder that replaces one of the same name within the room is folded
    again = {"event": "reminder", "name": "r1", "date_time": due, "entities": entity}
    assert stream.process(_sized(5, again)).kind == "folded"
    stream.flush()
    assert sorted(stream.heads["c1"]["reminders"]) == ["r0", "r1"]
    assert stream.heads["c1"]["count"] == 3


def test_a_followup_name_or_replace_request_too_large_for_the_head_is_dead() -> None:
    stream = StreamFolder({}, {}, max_kept_bytes=4000)  # an eighth: 500 bytes
    assert stream.process(_sized(0, {"event": "followup", "name": "a" * 500})).kind == "folded"
    dead = stream.process(_sized(1, {"event": "followup", "name": "a" * 501}))
    assert dead.kind == "dead" and "followup action name is 501 bytes, over the 500" in str(
        dead.error
    )
    fits = _replace(2, value=orjson.dumps({"request": "r" * 500}))._replace(partition=1)
    assert stream.process(fits).kind == "replaced"
    too_long = _replace(3, value=orjson.dumps({"request": "r" * 501}))._replace(partition=1)
    dead = stream.process(too_long)
    assert dead.kind == "dead" and "replace request id is 501 bytes" in str(dead.error)
    stream.flush()
    assert stream.heads["c1"]["replaced"] == "r" * 500 and stream.heads["c1"]["count"] == 0


@SOME
@given(
    interleaved=streams(),
    domain_key=DOMAIN_KEYS,
    window=HISTORIES,
    data=st.data(),
)
def test_the_record_fold_is_the_tracker_fold_across_evictions_and_restarts(
    interleaved: tuple[dict[str, list[Event]], list[tuple[str, Event]]],
    domain_key: str,
    window: int | None,
    data: st.DataObject,
) -> None:
    """Through the wire (Rasa's records in, history records kept), with one cached tracker (the
    other conversations evict it), and flushes and restarts (a new folder on the same stores:
    trackers rebuilt from history) anywhere: each conversation's head holds the state, and its
    tracker the events, of a tracker that folded the records' events directly (with the same
    ``max_event_history``). The records are folded one by one (``process``) or, as the worker
    does, in batches of what came between two flushes (``process_batch``)."""
    spec = DOMAINS[domain_key]
    domain = None if spec is None else Domain.from_dict(spec)
    batched = data.draw(st.booleans(), label="batched")

    def new_folder(
        heads: MutableMapping[str, Any], history: MutableMapping[str, bytes]
    ) -> StreamFolder:
        return StreamFolder(heads, history, domain=domain, cache_size=1, max_event_history=window)

    def fold(records: list[Inbound]) -> None:
        if not batched:
            for record in records:
                outcome = stream.process(record)
                assert outcome.kind == "folded", outcome
            return
        batch = stream.process_batch("t.events", 0, [_consumed(r) for r in records])
        assert batch.failures == []
        assert all(outcome.kind == "folded" for _, outcome in batch.notable), batch.notable
        assert batch.folded + len(batch.notable) == len(records)

    stream = new_folder({}, {})
    convs, order = interleaved
    next_event = dict.fromkeys(convs, 0)
    sent = {key: [orjson.dumps(encode_record(e, key)) for e in evs] for key, evs in convs.items()}
    pending: list[Inbound] = []
    for offset, (key, _) in enumerate(order):
        value = sent[key][next_event[key]]
        next_event[key] += 1
        pending.append(Inbound("t.events", 0, offset, key.encode(), value, 1.0))
        then = data.draw(st.sampled_from(["fold on", "fold on", "flush", "restart"]))
        if then != "fold on":
            fold(pending)
            pending = []
            stream.flush()
        if then == "restart":
            stream = new_folder(stream.heads, stream.history)
    fold(pending)
    stream.flush()
    for key, values in sent.items():
        if not values:
            continue
        direct, _ = trackers(key, domain_key, window)  # the events as read from the same bytes
        direct.update_with_events([decode_record(value).event for value in values])
        assert stream.heads[key]["state"] == direct.current_state()
        every = EventVerbosity.ALL
        assert stream.tracker(key).current_state(every) == direct.current_state(every)
