"""Pending reminders, what cancels them and what firing produces (rasa-semantics.md §4)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from events import decode_event
from events.model import Event, UserUttered
from processors import DialogueStateTracker
from processors.reminders import (
    REMINDER_MISSED,
    REMINDER_TRIGGERED,
    Pending,
    epoch,
    fire,
    listing,
    observe,
)

DUE = "2026-11-21T10:00:00+00:00"
DUE_S = datetime(2026, 11, 21, 10, tzinfo=UTC).timestamp()


def ev(**fields: Any) -> Event:
    return decode_event({"timestamp": 1.0, **fields})


def reminder(name: str = "r1", intent: str | None = "remind", **more: Any) -> Event:
    return ev(event="reminder", name=name, intent=intent, date_time=DUE, **more)


def run(events: list[Event]) -> tuple[Pending, list[Pending | None]]:
    """Fold ``events`` into a tracker and the pending reminders; also each step's answer."""
    tracker, pending, answers = DialogueStateTracker("c1"), {}, []
    for seq, event in enumerate(events):
        tracker.update(event)
        before = dict(pending)
        changed = observe(pending, event, seq, tracker)
        assert pending == before  # never modified in place
        answers.append(changed)
        pending = pending if changed is None else changed
    return pending, answers


def names(pending: Pending) -> list[str]:
    return sorted(pending)


def test_a_reminder_is_armed_and_a_same_name_replaces_it() -> None:
    pending, _ = run([reminder("r1", "first"), reminder("r2"), reminder("r1", "second")])
    assert names(pending) == ["r1", "r2"]
    assert pending["r1"]["intent"] == "second" and pending["r1"]["seq"] == 2
    assert pending["r1"]["due"] == DUE_S and pending["r1"]["kill_on_user_message"] is True


def test_naive_date_times_are_utc_and_zoned_ones_keep_their_zone() -> None:
    assert epoch(datetime(2026, 11, 21, 10)) == DUE_S  # noqa: DTZ001 - naive on purpose
    plus_two = timezone(timedelta(hours=2))
    assert epoch(datetime(2026, 11, 21, 12, tzinfo=plus_two)) == DUE_S
    pending, _ = run([ev(event="reminder", name="n", intent="i", date_time="2026-11-21T10:00:00")])
    assert pending["n"]["due"] == DUE_S


@pytest.mark.parametrize(
    ("selectors", "cancelled"),
    [
        ({}, ["r1", "r2", "r3"]),
        ({"name": "r1"}, ["r1"]),
        ({"intent": "remind"}, ["r1", "r2"]),
        ({"intent": "remind", "entities": [{"entity": "name", "value": "Paul"}]}, ["r1"]),
        ({"entities": [{"value": "Paul", "entity": "name"}]}, ["r1"]),  # equal values
        ({"entities": [{"entity": "name", "value": "Anna"}]}, []),
        ({"entities": []}, ["r1", "r2", "r3"]),  # falsy: not a selector
        ({"name": "r1", "intent": "other"}, []),
        ({"name": "r"}, []),  # exact: no prefix matching
    ],
)
def test_cancel_reminder_selectors_match_exactly(
    selectors: dict[str, Any], cancelled: list[str]
) -> None:
    paul = [{"entity": "name", "value": "Paul"}]
    events = [
        reminder("r1", "remind", entities=paul),
        reminder("r2", "remind"),
        reminder("r3", "other"),
        ev(event="cancel_reminder", **selectors),
    ]
    pending, answers = run(events)
    assert names(pending) == sorted({"r1", "r2", "r3"} - set(cancelled))
    assert (answers[-1] is None) == (not cancelled)


def test_user_text_kills_only_reminders_that_ask_for_it() -> None:
    events = [
        reminder("kill"),
        reminder("stay", kill_on_user_msg=False),
        ev(event="user", text=None, parse_data={"intent": {"name": "greet"}}),
    ]
    pending, answers = run(events)
    assert names(pending) == ["kill", "stay"] and answers[-1] is None  # no text: no kill
    pending, _ = run([*events, ev(event="user", text="hi", parse_data={})])
    assert names(pending) == ["stay"]


def test_a_fired_reminders_external_message_kills_other_reminders() -> None:
    external = UserUttered.create_external("remind", timestamp=5.0)
    pending, _ = run([reminder("a"), reminder("b", kill_on_user_msg=False), external])
    assert names(pending) == ["b"]


@pytest.mark.parametrize("tag", ["restart", "session_started"])
def test_restarts_and_new_sessions_cancel_everything(tag: str) -> None:
    pending, _ = run([reminder("a"), reminder("b", kill_on_user_msg=False), ev(event=tag)])
    assert pending == {}


def test_a_rewind_that_removes_the_reminder_event_cancels_it() -> None:
    user = ev(event="user", text=None, parse_data={"intent": {"name": "ask"}})
    # a rewind removes the last user event and the action before it (the listen), as in Rasa
    before = [ev(event="action", name="action_listen"), user, ev(event="action", name="utter_ok")]
    kept, _ = run([reminder("early", kill_on_user_msg=False), *before])
    rewound, _ = run(
        [
            reminder("early", kill_on_user_msg=False),
            *before,
            reminder("late"),
            ev(event="rewind"),
        ]
    )
    assert names(kept) == ["early"] and names(rewound) == ["early"]


def test_an_undo_that_removes_the_reminder_event_cancels_it() -> None:
    events = [ev(event="action", name="action_listen"), reminder("r"), ev(event="undo")]
    pending, answers = run(events)
    assert pending == {} and answers[-1] == {}
    untouched, answers = run(
        [reminder("r"), ev(event="action", name="a"), ev(event="action", name="b")]
    )
    assert names(untouched) == ["r"] and answers[-1] is None


def test_other_events_leave_pending_reminders_alone() -> None:
    pending, answers = run([reminder("r"), ev(event="slot", name="s", value=1), ev(event="pause")])
    assert names(pending) == ["r"] and answers[1:] == [None, None]
    empty, answers = run([ev(event="cancel_reminder"), ev(event="restart")])
    assert empty == {} and answers == [None, None]


def test_firing_on_time_gives_the_signal_and_rasas_external_message() -> None:
    pending, _ = run([reminder("r1", "remind", entities={"name": "Paul"})])
    signal, external = fire("c1", pending["r1"], DUE_S + 0.25, 60.0, "rest")
    assert signal.kind == REMINDER_TRIGGERED and signal.conversation_id == "c1"
    assert signal.data["late_s"] == 0.25 and signal.data["due"] == DUE_S
    assert signal.data["entities"] == {"name": "Paul"}
    assert external is not None
    assert external.text == "EXTERNAL: remind" and external.intent_name == "remind"
    assert external.entities == [{"entity": "name", "value": "Paul"}]
    assert external.metadata == {"is_external": True} and external.input_channel == "rest"
    assert external.timestamp == DUE_S + 0.25


def test_a_reminder_later_than_the_grace_period_is_missed() -> None:
    pending, _ = run([reminder("r1")])
    signal, external = fire("c1", pending["r1"], DUE_S + 61, 60.0, None)
    assert (signal.kind, external) == (REMINDER_MISSED, None)
    assert signal.data["late_s"] == 61.0


def test_an_action_reminder_fires_a_signal_without_a_message() -> None:
    legacy = ev(event="reminder", name="r", action="utter_hi", date_time=DUE)
    pending, _ = run([legacy])
    signal, external = fire("c1", pending["r"], DUE_S, 60.0, None)
    assert signal.data["action"] == "utter_hi" and external is None


def test_a_windowed_tracker_knows_its_applied_positions_too() -> None:
    tracker = DialogueStateTracker("c1", max_event_history=3)
    for event in [reminder("r"), ev(event="action", name="a"), ev(event="slot", name="s", value=1)]:
        tracker.update(event)
    tracker.update(ev(event="pause"))  # the window drops the reminder event
    assert tracker.applied_positions() == [1, 2, 3]


def test_the_listing_is_soonest_first_without_internal_fields() -> None:
    later = ev(event="reminder", name="a", intent="i", date_time="2026-11-21T11:00:00+00:00")
    pending, _ = run([later, reminder("z")])
    shown = listing(pending)
    assert [r["name"] for r in shown] == ["z", "a"]
    assert "seq" not in shown[0] and shown[0]["date_time"] == DUE


def test_is_applied_agrees_with_the_applied_positions_windowed_or_not() -> None:
    events = [
        reminder("r"),
        ev(event="action", name="action_listen"),
        ev(event="user", text="hi", parse_data={}),
        ev(event="action", name="a"),
        ev(event="rewind"),
        ev(event="pause"),
    ]
    found = {}
    for window in (None, 3):
        tracker = DialogueStateTracker("c1", max_event_history=window)
        for event in events:
            tracker.update(event)
        found[window] = tracker.applied_positions()
        assert [seq for seq in range(-1, 7) if tracker.is_applied(seq)] == found[window]
    assert 0 in found[None] and 2 not in found[None]  # the rewind took the user message back
    assert 0 not in found[3]  # outside the window
