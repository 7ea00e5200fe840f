"""The tracker's Rasa 3.6 semantics: reverts, loop pruning, resets, current_state, slots.

Every expected value comes from rasa-semantics.md (§ cited per test), never from the
implementation. Events are written in the DSL of ``conftest.py`` and stamped 1.0, 2.0, ... so an
expected applied-event list is also given as the list of surviving timestamps.
"""

from __future__ import annotations

from typing import Any

import pytest

from events.model import (
    ActionExecuted,
    ActiveLoop,
    DefinePrevUserUtteredFeaturization,
    EntitiesAdded,
    SlotSet,
    UserUttered,
)
from processors import DialogueStateTracker, Domain, EventVerbosity, fold
from tests.processors.conftest import (
    NAME_CITY,
    build,
    ids,
    render,
    seq,
    stamps,
    token,
    wire_ids,
)

LISTEN = {"action_name": "action_listen"}
EMPTY_PARSE: dict[str, Any] = {
    "intent": {},
    "entities": [],
    "text": None,
    "message_id": None,
    "metadata": {},
}
STATE_KEYS = [
    "sender_id",
    "slots",
    "latest_message",
    "latest_event_time",
    "followup_action",
    "paused",
    "events",
    "latest_input_channel",
    "active_loop",
    "latest_action",
    "latest_action_name",
]


def act(name: str) -> dict[str, str]:
    return {"action_name": name}


def summary(tracker: DialogueStateTracker) -> dict[str, Any]:
    """The §2.4 "state": latest message text, latest action, followup, slots, paused."""
    return {
        "text": tracker.latest_message.text,
        "action": tracker.latest_action,
        "followup": tracker.followup_action,
        "slots": {"name": tracker.get_slot("name"), "city": tracker.get_slot("city")},
        "paused": tracker.paused,
    }


def state(
    text: str | None,
    action: dict[str, str],
    followup: str | None,
    name: str | None = None,
    city: str | None = None,
    *,
    paused: bool = False,
) -> dict[str, Any]:
    return {
        "text": text,
        "action": action,
        "followup": followup,
        "slots": {"name": name, "city": city},
        "paused": paused,
    }


def test_dsl_round_trip() -> None:
    """The test DSL itself: tokens render back to themselves; stamps are 1, 2, 3, ..."""
    text = (
        "L U:hi U:hi(greet) U: A:utter_a S:name=x S:city=null B:hey rewind undo restart "
        "session_started pause resume reset_slots agent export followup(utter_b) "
        "active_loop(my_form) active_loop(null) loop_interrupted(true) rejected(my_form) "
        "featurization(false) featurization(null) followup(null)"
    )
    events = seq(text, SlotSet("n", 1, timestamp=99.0))
    assert render(events[:-1]) == text
    assert stamps(events) == [*(float(i) for i in range(1, len(events))), 99.0]
    assert ids(events[:2]) == [("action", 1.0), ("user", 2.0)]
    quoted = seq('U:"hello there"(greet)')[0]
    assert isinstance(quoted, UserUttered)
    assert quoted.text == "hello there"
    assert render([ActionExecuted(action_text="e2e")]) == "A:e2e"
    with pytest.raises(ValueError, match="unknown DSL"):
        token("nonsense")
    with pytest.raises(ValueError, match="unknown DSL"):
        token("nonsense(x)")


# --- §2.4: every row of the table of tricky cases ------------------------------------------------

TABLE: list[tuple[str, str, list[float], dict[str, Any]]] = [
    # (events, applied events, their timestamps, resulting state)
    (
        "L U:hi A:utter_a L U:bye A:utter_b rewind rewind",
        "",
        [],
        state(None, {}, "action_listen"),
    ),
    (
        "L U:hi A:utter_a L U:bye A:action_default_fallback rewind",
        "L U:hi A:utter_a",
        [1, 2, 3],
        state("hi", act("utter_a"), None),
    ),
    ("L U:hi A:utter_a B:hello undo", "L U:hi", [1, 2], state("hi", LISTEN, None)),
    ("L U:hi A:my_action S:name=x B:hello undo", "L U:hi", [1, 2], state("hi", LISTEN, None)),
    ("L U:hi A:utter_a L undo", "L U:hi A:utter_a", [1, 2, 3], state("hi", act("utter_a"), None)),
    ("L U:hi A:a1 A:a2 undo undo", "L U:hi", [1, 2], state("hi", LISTEN, None)),
    ("L U:hi A:x L U:bye undo", "L U:hi A:x", [1, 2, 3], state("hi", act("x"), None)),
    ("U:hi S:name=a undo", "", [], state(None, {}, "action_listen")),
    ("L U:hi A:utter_a restart rewind", "", [], state(None, {}, "action_listen")),
    ("L U:hi A:utter_a restart L rewind", "", [], state(None, {}, "action_listen")),
    ("L A:utter_a rewind", "", [], state(None, {}, "action_listen")),
    (
        "L U:hi A:action_session_start session_started L rewind",
        "",
        [],
        state(None, {}, "action_listen"),
    ),
    (
        "L U:hi S:name=bob A:action_restart restart",
        "",
        [],
        state(None, {}, "action_session_start"),
    ),
    (
        "L U:hi S:name=bob A:action_restart restart A:action_session_start session_started L",
        "L",
        [8],
        state(None, LISTEN, None),
    ),
    (
        "A:action_session_start session_started S:name=bob L U:hi S:city=berlin "
        "A:action_session_start session_started S:name=bob S:city=berlin L",
        "S:name=bob S:city=berlin L",
        [9, 10, 11],
        state(None, LISTEN, None, "bob", "berlin"),
    ),
    (
        "L U:hi S:city=berlin A:action_session_start session_started L",
        "L",
        [6],
        state(None, LISTEN, None),
    ),
    ("S:name=meta A:action_session_start session_started L", "L", [4], state(None, LISTEN, None)),
    ("L S:name=x U:hi A:utter_a rewind", "", [], state(None, {}, "action_listen")),
    ("L U:hi S:name=x A:utter_a rewind", "", [], state(None, {}, "action_listen")),
    ("L U:hi pause rewind", "", [], state(None, {}, "action_listen")),
    ("L pause U:hi A:x rewind", "", [], state(None, {}, "action_listen")),
    ("L U:hi A:x pause undo", "L U:hi", [1, 2], state("hi", LISTEN, None)),
    ("L pause U:hi resume", "L pause U:hi resume", [1, 2, 3, 4], state("hi", LISTEN, None)),
    ("L pause U:hi", "L pause U:hi", [1, 2, 3], state("hi", LISTEN, None, paused=True)),
    (
        "L U:hi followup(utter_b)",
        "L U:hi followup(utter_b)",
        [1, 2, 3],
        state("hi", LISTEN, "utter_b"),
    ),
    ("L followup(utter_x) U:hi", "L followup(utter_x) U:hi", [1, 2, 3], state("hi", LISTEN, None)),
    (
        "L U:hi A:act followup(utter_x) B:b L U:bye rewind",
        "L U:hi A:act followup(utter_x) B:b",
        [1, 2, 3, 4, 5],
        state("hi", act("act"), "utter_x"),
    ),
    ("L S:name=x reset_slots", "L S:name=x reset_slots", [1, 2, 3], state(None, LISTEN, None)),
]


@pytest.mark.parametrize(("events", "applied", "applied_stamps", "expected"), TABLE)
def test_tricky_cases_table(
    events: str, applied: str, applied_stamps: list[float], expected: dict[str, Any]
) -> None:
    """§2.4: applied events and resulting state of every row of the table."""
    tracker = build(events, domain=Domain.from_dict(NAME_CITY))
    assert render(tracker.applied_events()) == applied
    assert stamps(tracker.applied_events()) == applied_stamps
    assert summary(tracker) == expected
    current = tracker.current_state()
    assert current["latest_message"]["text"] == expected["text"]
    assert current["latest_action"] == expected["action"]
    assert current["followup_action"] == expected["followup"]
    assert current["paused"] is expected["paused"]
    assert tracker.is_paused() is expected["paused"]


def test_undo_after_bot_message_removes_the_bot_utterance() -> None:
    """§2.4 row 3: the bot message and the action are removed, latest action is the listen."""
    tracker = build("L U:hi A:utter_a B:hello")
    before = tracker.latest_bot_utterance
    tracker.update(seq("undo", start=5)[0])
    after = tracker.latest_bot_utterance
    assert (before.text, after.text) == ("hello", None)
    assert tracker.latest_action_name == "action_listen"


def test_two_rewinds_each_remove_one_turn() -> None:
    """§8.2: the first rewind leaves the first turn, the second removes it and its listen."""
    tracker = build("L U:hi A:utter_a L U:bye A:utter_b rewind")
    assert render(tracker.applied_events()) == "L U:hi A:utter_a"
    assert tracker.latest_message.text == "hi"
    assert tracker.latest_action_name == "utter_a"
    tracker.update(seq("rewind", start=8)[0])
    assert tracker.applied_events() == []
    assert tracker.latest_action == {}


def test_rewind_after_restart_loses_the_session_start_followup() -> None:
    """§2.4: a restart asks for action_session_start; a rewind right after resets to listen."""
    restarted = build("L U:hi A:utter_a restart")
    assert restarted.followup_action == "action_session_start"
    restarted.update(seq("rewind", start=5)[0])
    assert restarted.followup_action == "action_listen"


def test_restart_followup_vs_fresh_tracker() -> None:
    """§2.1, §2.6, §8.6: fresh/reset trackers follow up with action_listen, a restart with
    action_session_start, a session start with action_listen, any action or user event clears."""
    assert DialogueStateTracker("fresh").followup_action == "action_listen"
    assert build("L U:hi restart").followup_action == "action_session_start"
    assert build("L U:hi session_started").followup_action == "action_listen"
    assert build("L U:hi restart A:action_session_start").followup_action is None
    assert build("restart U:hi").followup_action is None
    assert build("followup(x)").followup_action == "x"
    assert build("followup(null)").followup_action is None


def test_restart_resets_everything() -> None:
    """§1.2 restart: slots, paused, latest action/message/bot utterance, active loop."""
    tracker = build(
        "L U:hi(request) A:my_form active_loop(my_form) S:name=x B:ask pause restart",
        domain=Domain.from_dict(NAME_CITY),
    )
    assert tracker.get_slot("name") is None
    assert tracker.paused is False
    assert tracker.latest_action == {}
    assert tracker.latest_action_name is None
    assert tracker.latest_message.text is None
    assert tracker.latest_bot_utterance.text is None
    assert tracker.active_loop is None
    assert tracker.active_loop_name is None
    assert tracker.current_state()["active_loop"] == {}
    assert tracker.current_state()["latest_message"] == EMPTY_PARSE


def test_session_start_resets_like_restart_without_followup() -> None:
    """§1.2 session_started: the same reset as a restart, followup action_listen."""
    tracker = build("L U:hi S:name=x A:my_form active_loop(my_form) pause session_started")
    assert tracker.current_slot_values() == {"name": None}
    assert tracker.active_loop is None
    assert tracker.paused is False
    assert tracker.latest_action == {}
    assert tracker.followup_action == "action_listen"


# --- §2.3: active-loop pruning -------------------------------------------------------------------

HAPPY_FORM = (
    "L U:hi A:my_form active_loop(my_form) S:requested_slot=a B:ask_a L U:a A:my_form S:a=1 "
    "S:requested_slot=b L U:b A:my_form S:b=2 active_loop(null) A:utter_done L"
)


def test_happy_form_pruning_example() -> None:
    """§2.3: intermediate listens, user turns and repeated form runs leave the applied list."""
    tracker = build(HAPPY_FORM)
    assert render(tracker.events) == HAPPY_FORM
    assert render(tracker.applied_events()) == (
        "L U:hi A:my_form active_loop(my_form) S:requested_slot=a B:ask_a S:a=1 "
        "S:requested_slot=b S:b=2 active_loop(null) A:utter_done L"
    )
    assert stamps(tracker.applied_events()) == [1, 2, 3, 4, 5, 6, 10, 11, 15, 16, 17, 18]
    # the live state still saw every event
    assert tracker.latest_message.text == "b"
    assert tracker.latest_action == LISTEN
    assert tracker.current_slot_values() == {"requested_slot": "b", "a": "1", "b": "2"}
    assert tracker.active_loop is None


def test_pruning_also_shows_in_applied_verbosity() -> None:
    """§8.4: the pruned list is what current_state(APPLIED) dumps."""
    tracker = build(HAPPY_FORM)
    assert wire_ids(tracker.current_state(EventVerbosity.APPLIED)["events"]) == ids(
        tracker.applied_events()
    )
    assert len(tracker.current_state(EventVerbosity.ALL)["events"]) == 18


def test_pruning_removes_user_featurization_but_keeps_other_kinds() -> None:
    """§2.3: ActionExecuted, UserUttered and user_featurization go; entities, bot, slot stay."""
    tracker = build(
        "L U:hi A:my_form active_loop(my_form) L U:a featurization(true)",
        EntitiesAdded([{"entity": "x", "value": 1}]),
        "S:a=1 B:ok A:my_form",
    )
    assert render(tracker.applied_events()) == (
        "L U:hi A:my_form active_loop(my_form) EntitiesAdded S:a=1 B:ok"
    )
    assert stamps(tracker.applied_events()) == [1, 2, 3, 4, 8, 9, 10]


def test_pruning_removes_other_actions_between_two_loop_runs() -> None:
    """§2.3: without an unhappy path, every action back to the previous run is removed."""
    tracker = build("L U:hi A:my_form active_loop(my_form) B:ask A:utter_done L U:again A:my_form")
    assert render(tracker.applied_events()) == "L U:hi A:my_form active_loop(my_form) B:ask"


def test_no_pruning_after_rejection_and_another_action() -> None:
    """§2.3: with action_execution_rejected + another action in between, nothing is pruned."""
    events = (
        "L U:hi A:my_form active_loop(my_form) B:ask L U:x rejected(my_form) A:utter_chitchat "
        "L U:y A:my_form"
    )
    tracker = build(events)
    assert render(tracker.applied_events()) == events
    assert tracker.applied_events() == list(tracker.events)


def test_first_run_after_deactivation_is_not_pruned() -> None:
    """§2.3 first_run_or_unhappy: an active_loop(null) before the previous run -> first run."""
    events = (
        "L U:hi A:my_form active_loop(my_form) B:ask active_loop(null) A:utter_done L U:again "
        "A:my_form"
    )
    assert render(build(events).applied_events()) == events


def test_rejection_alone_is_an_unhappy_path() -> None:
    """§2.3: an action_execution_rejected for this loop -> not pruned."""
    events = "L U:hi A:my_form active_loop(my_form) L U:x rejected(my_form) A:my_form"
    assert render(build(events).applied_events()) == events


def test_rejection_of_another_loop_does_not_count() -> None:
    """§2.3: only a rejection *for this loop* is an unhappy path; the rejection event is kept."""
    tracker = build("L U:hi A:my_form active_loop(my_form) L U:x rejected(other_form) A:my_form")
    assert render(tracker.applied_events()) == (
        "L U:hi A:my_form active_loop(my_form) rejected(other_form)"
    )


def test_user_message_answered_by_another_action_is_unhappy() -> None:
    """§2.3: a user message followed by another action than the loop -> not pruned."""
    events = "L U:hi A:my_form active_loop(my_form) L U:x A:utter_chitchat L U:y A:my_form"
    assert render(build(events).applied_events()) == events


def test_user_message_followed_by_a_listen_is_unhappy_too() -> None:
    """§2.3 read literally: the 'next action' remembered for U:x is the listen before U:y."""
    events = "L U:hi A:my_form active_loop(my_form) L U:x L U:y A:my_form"
    assert render(build(events).applied_events()) == events


def test_first_execution_of_a_loop_is_kept() -> None:
    """§2.3: end of the list without a previous run -> first run, appended."""
    assert render(build("L U:hi A:my_form active_loop(my_form)").applied_events()) == (
        "L U:hi A:my_form active_loop(my_form)"
    )


def test_loop_names_come_from_the_whole_history() -> None:
    """§2.3: loop_names are the active_loop names *anywhere* in events, so an activation logged
    later prunes earlier repeated runs of that action retroactively."""
    tracker = build("L U:hi A:f L U:x A:f")
    assert render(tracker.applied_events()) == "L U:hi A:f L U:x A:f"
    tracker.update(seq("active_loop(f)", start=7)[0])
    assert render(tracker.applied_events()) == "L U:hi A:f active_loop(f)"
    assert stamps(tracker.applied_events()) == [1, 2, 3, 7]


def test_null_activation_does_not_make_a_loop_name() -> None:
    """§2.3: only truthy active_loop names are loop names."""
    events = "L U:hi A:f L U:x A:f active_loop(null)"
    assert render(build(events).applied_events()) == events


def test_rewind_inside_a_form_replays_the_pruned_list() -> None:
    """§1.2 rewind = reset + replay of the applied events; after pruning, the latest surviving
    user message is the form's trigger message."""
    tracker = build(
        "L U:hi(request) A:my_form active_loop(my_form) S:requested_slot=a B:ask_a L U:a "
        "A:my_form S:a=1 S:requested_slot=b L U:b"
    )
    assert tracker.latest_message.text == "b"
    assert tracker.latest_action == LISTEN
    tracker.update(seq("rewind", start=14)[0])
    assert render(tracker.applied_events()) == (
        "L U:hi(request) A:my_form active_loop(my_form) S:requested_slot=a B:ask_a S:a=1 "
        "S:requested_slot=b"
    )
    assert stamps(tracker.applied_events()) == [1, 2, 3, 4, 5, 6, 10, 11]
    assert tracker.latest_message.text == "hi"
    assert tracker.latest_action == act("my_form")
    assert tracker.followup_action is None
    assert tracker.latest_bot_utterance.text == "ask_a"
    assert tracker.current_slot_values() == {"requested_slot": "b", "a": "1"}
    trigger = tracker.events[1]
    assert isinstance(trigger, UserUttered)
    assert tracker.active_loop == {
        "name": "my_form",
        "is_interrupted": False,
        "rejected": False,
        "trigger_message": trigger.parse_data,
    }


# --- §2.5: current_state -------------------------------------------------------------------------


def test_fresh_tracker_state_is_exactly_rasas() -> None:
    """§2.1: the fresh tracker's current_state, key for key."""
    assert DialogueStateTracker("fresh").current_state() == {
        "sender_id": "fresh",
        "slots": {},
        "latest_message": EMPTY_PARSE,
        "latest_event_time": None,
        "followup_action": "action_listen",
        "paused": False,
        "events": None,
        "latest_input_channel": None,
        "active_loop": {},
        "latest_action": {},
        "latest_action_name": None,
    }


def test_current_state_has_the_eleven_keys_in_order() -> None:
    """§2.5: always the same 11 keys, in Rasa's order, whatever the verbosity."""
    tracker = build("L U:hi A:utter_a")
    for verbosity in EventVerbosity:
        assert list(tracker.current_state(verbosity)) == STATE_KEYS
    assert list(DialogueStateTracker("x").current_state()) == STATE_KEYS


VERBOSITY_EVENTS = (
    "L U:hi A:utter_a restart A:action_session_start session_started S:name=bob L U:bye"
)


@pytest.mark.parametrize(
    ("verbosity", "expected"),
    [
        (EventVerbosity.APPLIED, [7, 8, 9]),
        (EventVerbosity.AFTER_RESTART, [5, 6, 7, 8, 9]),
        (EventVerbosity.ALL, [1, 2, 3, 4, 5, 6, 7, 8, 9]),
    ],
)
def test_event_verbosity(verbosity: EventVerbosity, expected: list[float]) -> None:
    """§2.5 / §8.3: APPLIED resets at restart and session start, AFTER_RESTART only at restart."""
    tracker = build(VERBOSITY_EVENTS)
    events = seq(VERBOSITY_EVENTS)
    assert wire_ids(tracker.current_state(verbosity)["events"]) == [
        (e.TAG, e.timestamp) for e in events if e.timestamp in expected
    ]


def test_event_verbosity_none_and_default() -> None:
    """§2.5: NONE (the default) gives events null."""
    tracker = build(VERBOSITY_EVENTS)
    assert tracker.current_state()["events"] is None
    assert tracker.current_state(EventVerbosity.NONE)["events"] is None


def test_after_restart_keeps_reverted_events() -> None:
    """§2.5: AFTER_RESTART includes reverted events; APPLIED does not."""
    tracker = build("L U:x restart L U:hi A:a rewind")
    assert [d["event"] for d in tracker.current_state(EventVerbosity.AFTER_RESTART)["events"]] == [
        "action",
        "user",
        "action",
        "rewind",
    ]
    assert tracker.current_state(EventVerbosity.APPLIED)["events"] == []


def test_latest_event_time_is_the_last_event_of_any_kind() -> None:
    """§2.5: latest_event_time = timestamp of the last element of events."""
    assert build("L U:hi A:x rewind").current_state()["latest_event_time"] == 4.0
    assert build("L U:hi pause agent").current_state()["latest_event_time"] == 4.0
    assert (
        build("L U:hi", SlotSet("k", 1, timestamp=0.5)).current_state()["latest_event_time"] == 0.5
    )


def test_latest_input_channel_comes_from_reverted_user_events_too() -> None:
    """§2.5: the input channel of the last user event in all events, even a reverted one."""
    events = seq(
        "L",
        UserUttered.create("hi", input_channel="rest"),
        "A:utter_a L",
        UserUttered.create("bye", input_channel="slack"),
        "rewind",
    )
    tracker = fold(events, sender_id="c")
    assert tracker.latest_message.text == "hi"
    assert tracker.current_state()["latest_input_channel"] == "slack"
    assert tracker.get_latest_input_channel() == "slack"
    assert build("L U:hi").get_latest_input_channel() is None


def test_active_loop_dict_and_trigger_message() -> None:
    """§1.2 active_loop, §2.5: the 4-key dict, trigger_message = latest parse_data at activation."""
    request = UserUttered.create("hi", {"name": "request", "confidence": 1.0})
    tracker = build("L", request, "A:my_form active_loop(my_form) L U:other")
    expected = {
        "name": "my_form",
        "is_interrupted": False,
        "rejected": False,
        "trigger_message": {
            "intent": {"name": "request", "confidence": 1.0},
            "entities": [],
            "text": "hi",
            "message_id": None,
            "metadata": {},
        },
    }
    assert tracker.current_state()["active_loop"] == expected
    assert list(tracker.current_state()["active_loop"]) == list(expected)
    assert (tracker.active_loop, tracker.active_loop_name) == (expected, "my_form")
    tracker.update(seq("active_loop(null)", start=9)[0])
    assert (tracker.active_loop, tracker.active_loop_name) == (None, None)
    assert tracker.current_state()["active_loop"] == {}


def test_activation_without_a_user_message_triggers_on_the_empty_message() -> None:
    """§1.2 active_loop: trigger_message is the (empty) latest message's parse_data."""
    tracker = build("active_loop(my_form)")
    assert tracker.current_state()["active_loop"]["trigger_message"] == EMPTY_PARSE


def test_trigger_message_is_the_raw_parse_data_without_added_entities() -> None:
    """§1.2: entities events change the live entity list, not parse_data (the trigger)."""
    berlin = {"entity": "city", "value": "Berlin"}
    bob = {"entity": "name", "value": "Bob"}
    tracker = build(
        "L",
        UserUttered.create("hi", {"name": "request"}, [berlin]),
        EntitiesAdded([bob]),
        "A:my_form active_loop(my_form)",
    )
    assert tracker.current_state()["active_loop"]["trigger_message"]["entities"] == [berlin]
    assert tracker.current_state()["latest_message"]["entities"] == [berlin, bob]


LOOP = "L U:hi(request) A:my_form active_loop(my_form)"


def test_loop_flags() -> None:
    """§2.6: loop_interrupted sets is_interrupted; any action resets it; a rejection for the loop
    sets rejected; only the loop's own action resets rejected."""
    tracker = build(LOOP, "L U:x rejected(my_form) A:utter_chitchat loop_interrupted(true)")
    assert tracker.is_active_loop_interrupted is True
    assert tracker.is_active_loop_rejected is True
    loop = tracker.current_state()["active_loop"]
    assert (loop["is_interrupted"], loop["rejected"]) == (True, True)
    assert tracker.current_state()["latest_action"] == act("utter_chitchat")
    tracker.update(seq("A:utter_other", start=10)[0])
    assert (tracker.is_active_loop_interrupted, tracker.is_active_loop_rejected) == (False, True)
    tracker.update_with_events(seq("loop_interrupted(true) A:my_form", start=11))
    assert (tracker.is_active_loop_interrupted, tracker.is_active_loop_rejected) == (False, False)


def test_listen_resets_interruption_too() -> None:
    """§1.2 action: *any* action while a loop is active resets is_interrupted (listen included)."""
    tracker = build(LOOP, "loop_interrupted(true)")
    assert tracker.is_active_loop_interrupted is True
    tracker.update(seq("L", start=6)[0])
    assert tracker.is_active_loop_interrupted is False


def test_loop_interrupted_false_and_rejections_of_other_actions() -> None:
    """§1.2: loop_interrupted(false) clears; a rejection of another action leaves rejected."""
    tracker = build(LOOP, "loop_interrupted(true) loop_interrupted(false) rejected(utter_x)")
    assert tracker.is_active_loop_interrupted is False
    assert tracker.is_active_loop_rejected is False


def test_loop_flag_events_without_an_active_loop_do_nothing() -> None:
    """§1.2: loop_interrupted / action_execution_rejected only act on an active loop."""
    tracker = build("L U:hi loop_interrupted(true) rejected(my_form)")
    assert tracker.active_loop is None
    assert tracker.current_state()["active_loop"] == {}
    assert (tracker.is_active_loop_interrupted, tracker.is_active_loop_rejected) == (False, False)


def test_new_activation_starts_with_fresh_flags() -> None:
    """§1.2 active_loop: activation = {name, False, False, trigger}, even over an active loop."""
    tracker = build(LOOP, "loop_interrupted(true) rejected(my_form) L U:y active_loop(other)")
    loop = tracker.current_state()["active_loop"]
    assert loop["name"] == "other"
    assert (loop["is_interrupted"], loop["rejected"]) == (False, False)
    assert loop["trigger_message"]["text"] == "y"


def test_training_sentinel_is_no_active_loop_name() -> None:
    """§2.6: active_loop_name is None for the sentinel name should_not_be_set; the loop itself
    is still there (current_state shows it)."""
    tracker = build("L U:hi active_loop(should_not_be_set) loop_interrupted(true) A:utter_a")
    assert tracker.active_loop_name is None
    loop = tracker.current_state()["active_loop"]
    assert loop["name"] == "should_not_be_set"
    assert loop["is_interrupted"] is True  # reset only while a loop *name* is active


def test_sentinel_loop_flags_compare_with_the_none_name() -> None:
    """§2.6 + §1.2 as Rasa 3.6 codes them: rejections and resets compare the event's action name
    with active_loop_name, which is None for the sentinel, so a rejection without a name
    rejects it and an end-to-end action (no name) clears the rejection."""
    tracker = build("L U:hi active_loop(should_not_be_set) rejected(null)")
    assert tracker.is_active_loop_rejected is True
    tracker.update(ActionExecuted(action_text="hello", timestamp=9.0))
    assert tracker.is_active_loop_rejected is False


def test_end_to_end_action_sets_action_text() -> None:
    """§1.2 action, §2.6: an e2e bot turn sets {"action_text": ...} and latest_action_name."""
    tracker = build("L U:hi", ActionExecuted(action_text="Hello!"))
    assert tracker.latest_action == {"action_text": "Hello!"}
    assert tracker.latest_action_name == "Hello!"
    assert tracker.current_state()["latest_action_name"] == "Hello!"


# --- §1.2: entities and user_featurization -------------------------------------------------------

BERLIN = {"entity": "city", "value": "Berlin", "start": 10, "end": 16}
BOB = {"entity": "name", "value": "Bob"}


def test_entities_event_merges_into_latest_message() -> None:
    """§1.2 entities: appended to the live list, shown by current_state; the serialized user
    event (its parse_data) and the event object stay unchanged."""
    tracker = build(
        "L", UserUttered.create("hi", {"name": "inform"}, [BERLIN]), EntitiesAdded([BOB])
    )
    assert tracker.current_state()["latest_message"] == {
        "intent": {"name": "inform"},
        "entities": [BERLIN, BOB],
        "text": "hi",
        "message_id": None,
        "metadata": {},
    }
    assert list(tracker.get_latest_entity_values("name")) == ["Bob"]
    user = tracker.current_state(EventVerbosity.ALL)["events"][1]
    assert user["parse_data"]["entities"] == [BERLIN]
    event = tracker.events[1]
    assert isinstance(event, UserUttered)
    assert event.entities == [BERLIN]
    assert event.parse_data["entities"] == [BERLIN]


def test_entities_are_not_added_twice() -> None:
    """§1.2 entities: only entities not already present are appended."""
    tracker = build(
        "L",
        UserUttered.create("hi", entities=[BERLIN]),
        EntitiesAdded([BERLIN, BOB]),
        EntitiesAdded([BOB, BOB]),
    )
    assert tracker.current_state()["latest_message"]["entities"] == [BERLIN, BOB]


def test_entities_only_apply_right_after_a_listen() -> None:
    """§1.2 entities: ignored unless the latest action is action_listen."""
    tracker = build(
        "L", UserUttered.create("hi", entities=[BERLIN]), "A:utter_a", EntitiesAdded([BOB])
    )
    assert tracker.current_state()["latest_message"]["entities"] == [BERLIN]
    assert build("U:hi", EntitiesAdded([BOB])).current_state()["latest_message"]["entities"] == []


def test_latest_message_uses_the_event_entity_list_not_parse_data() -> None:
    """§2.5: latest_message = parse_data copy with entities replaced by the event's list."""
    user = UserUttered.create("hi", entities=[BERLIN], parse_data={"entities": [BOB]})
    tracker = build("L", user)
    assert user.parse_data["entities"] == [BOB]
    assert tracker.current_state()["latest_message"]["entities"] == [BERLIN]


def test_parse_data_extra_keys_are_in_latest_message() -> None:
    """§2.5: latest_message is a copy of the whole parse_data (NLU keys included)."""
    user = UserUttered.create(
        "hi", {"name": "greet"}, parse_data={"intent_ranking": [{"name": "greet"}]}
    )
    latest = build("L", user).current_state()["latest_message"]
    assert latest["intent_ranking"] == [{"name": "greet"}]


def test_rewind_removes_merged_entities_with_their_message() -> None:
    """§2.6: after a rewind the latest message is the previous surviving one, as it was."""
    tracker = build(
        "L",
        UserUttered.create("hi", entities=[BERLIN]),
        "A:utter_a L U:bye",
        EntitiesAdded([BOB]),
        "A:action_default_fallback rewind",
    )
    assert tracker.latest_message.text == "hi"
    assert tracker.current_state()["latest_message"]["entities"] == [BERLIN]


def test_entities_added_to_a_message_survive_its_replay() -> None:
    """§1.2 entities: Rasa appends to the user event *object*; a replay (undo) re-applies that
    same object, so an entity added by an event that the undo removed stays on it."""
    tracker = build("L U:hi L", EntitiesAdded([BOB]), "undo")
    assert render(tracker.applied_events()) == "L U:hi"
    assert tracker.current_state()["latest_message"]["entities"] == [BOB]


def test_user_featurization_only_after_listen() -> None:
    """§1.2 user_featurization: sets the flag of the latest message if the latest action is
    action_listen; otherwise nothing."""
    both = UserUttered.create("hi", {"name": "greet"})
    assert both.featurized_by_text is None
    tracker = build("L", both, DefinePrevUserUtteredFeaturization(True))
    assert tracker.user_view(1).use_text_for_featurization is True
    tracker = build("L", both, DefinePrevUserUtteredFeaturization(False))
    assert tracker.user_view(1).use_text_for_featurization is False
    tracker = build("L", both, "A:utter_x", DefinePrevUserUtteredFeaturization(True))
    assert tracker.user_view(1).use_text_for_featurization is None


def test_featurization_is_re_applied_by_a_replay() -> None:
    """§1.2 user_featurization mutates the message object and rewind/undo *replay* the applied
    events: a later flag set on the same message by events the undo removed is overwritten
    again by the surviving earlier featurization event."""
    tracker = build("L U:hi featurization(false) A:utter_chitchat L featurization(true)")
    assert tracker.user_view(1).use_text_for_featurization is True
    tracker.update(seq("undo", start=7)[0])
    assert render(tracker.applied_events()) == "L U:hi featurization(false) A:utter_chitchat"
    assert tracker.user_view(1).use_text_for_featurization is False


def test_user_view_defaults() -> None:
    """§1.2 user: text only -> featurized by text; intent only -> not; entities as logged."""
    tracker = build("L U:hi L U:(greet)", EntitiesAdded([BOB]))
    assert tracker.user_view(1).use_text_for_featurization is True
    assert tracker.user_view(1).entities == []
    assert tracker.user_view(3).use_text_for_featurization is False
    assert tracker.user_view(3).entities == [BOB]


# --- §2.10: slots -------------------------------------------------------------------------------


def test_domainless_tracker_accepts_any_slot() -> None:
    """§2.10 AnySlotDict: any slot name works; values of any JSON type."""
    tracker = build("L", SlotSet("anything", {"a": [1]}), SlotSet("n", 1.5))
    assert tracker.get_slot("anything") == {"a": [1]}
    assert tracker.slots == {"anything": {"a": [1]}, "n": 1.5}
    assert tracker.current_slot_values() == {"anything": {"a": [1]}, "n": 1.5}
    assert tracker.current_state()["slots"] == {"anything": {"a": [1]}, "n": 1.5}


def test_domainless_slots_stay_after_resets() -> None:
    """§2.10: resets put on-demand slots back to None; they do not disappear."""
    assert build("S:name=x restart").current_slot_values() == {"name": None}
    assert build("S:name=x reset_slots").current_slot_values() == {"name": None}
    assert build("L U:hi S:name=x A:utter_a rewind").current_slot_values() == {"name": None}
    assert build("L U:hi S:name=x session_started").current_slot_values() == {"name": None}


def test_domainless_get_slot_creates_the_slot() -> None:
    """§2.10: on a domain-less tracker merely reading a slot makes it appear (value None)."""
    tracker = build("S:name=x")
    assert tracker.get_slot("other") is None
    assert tracker.current_state()["slots"] == {"name": "x", "other": None}


FORM_DOMAIN: dict[str, Any] = {
    "slots": {"name": {"type": "text", "initial_value": "x"}, "city": {"type": "text"}},
    "forms": {"my_form": {"required_slots": ["city"]}},
}


def test_domain_slots_with_defaults() -> None:
    """§2.10: domain slots at their initial values, plus session_started_metadata and (with
    forms) requested_slot."""
    domain = Domain.from_dict(FORM_DOMAIN)
    assert domain.forms == ("my_form",)
    assert set(domain.slots) == {"name", "city", "session_started_metadata", "requested_slot"}
    tracker = DialogueStateTracker("c", domain)
    assert tracker.current_slot_values() == {
        "name": "x",
        "city": None,
        "session_started_metadata": None,
        "requested_slot": None,
    }


def test_domain_without_forms_has_no_requested_slot() -> None:
    """§2.10: requested_slot exists only if the domain has forms."""
    tracker = DialogueStateTracker("c", Domain.from_dict(NAME_CITY))
    assert tracker.current_slot_values() == {
        "name": None,
        "city": None,
        "session_started_metadata": None,
    }


def test_unknown_slot_is_ignored_for_state_but_kept_in_events() -> None:
    """§1.2 slot, §2.10: SlotSet of an unknown slot changes nothing but stays in events."""
    tracker = build("L S:unknown=1 S:city=berlin", domain=Domain.from_dict(FORM_DOMAIN))
    assert tracker.get_slot("unknown") is None
    assert "unknown" not in tracker.current_slot_values()
    assert "unknown" not in tracker.current_state()["slots"]
    assert tracker.get_slot("city") == "berlin"
    assert render(tracker.events) == "L S:unknown=1 S:city=berlin"
    assert render(tracker.applied_events()) == "L S:unknown=1 S:city=berlin"


def test_domain_resets_go_back_to_initial_values() -> None:
    """§1.2 reset_slots / restart / session_started: every slot back to its initial value."""
    domain = Domain.from_dict(FORM_DOMAIN)
    for reset in ("reset_slots", "restart", "session_started"):
        tracker = build(f"S:name=y S:city=z S:requested_slot=city {reset}", domain=domain)
        assert tracker.get_slot("name") == "x"
        assert tracker.get_slot("city") is None
        assert tracker.get_slot("requested_slot") is None
    tracker = build("L U:hi S:name=y A:utter_a rewind", domain=domain)
    assert tracker.get_slot("name") == "x"


def test_session_started_metadata_is_a_slot() -> None:
    """§2.10: session_started_metadata can be set (it is reset by the session start itself)."""
    meta = SlotSet("session_started_metadata", {"channel": "web"})
    domain = Domain.from_dict(NAME_CITY)
    tracker = build(meta, domain=domain)
    assert tracker.get_slot("session_started_metadata") == {"channel": "web"}
    tracker = build(meta, "A:action_session_start session_started L", domain=domain)
    assert tracker.get_slot("session_started_metadata") is None


def test_domain_tracker_get_slot_does_not_create_slots() -> None:
    """§2.7 get_slot: unknown -> None (with domain slots nothing is created)."""
    tracker = DialogueStateTracker("c", Domain.from_dict(NAME_CITY))
    assert tracker.get_slot("other") is None
    assert "other" not in tracker.current_slot_values()


def test_slot_in_current_state_follows_set() -> None:
    """§2.5: slots are all slot values."""
    tracker = build("S:name=a S:city=b S:name=c", domain=Domain.from_dict(NAME_CITY))
    assert tracker.current_state()["slots"] == {
        "name": "c",
        "city": "b",
        "session_started_metadata": None,
    }


def test_active_loop_object_event() -> None:
    """§1.2 active_loop: the event class directly (not only through the DSL)."""
    tracker = build("L U:hi", ActiveLoop("f"))
    assert tracker.active_loop_name == "f"
