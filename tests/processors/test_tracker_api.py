"""The tracker API of the issue-2 contract, with Rasa 3.6 behaviour (rasa-semantics.md §2.2-2.11).

Expected values come from the contract and the semantics document, never from the code.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from events.errors import EventError
from events.model import (
    ActionExecuted,
    BotUttered,
    Event,
    ReminderScheduled,
    SlotSet,
    UserUttered,
)
from processors import Dialogue, DialogueStateTracker, Domain, EventVerbosity, apply, fold
from tests.processors.conftest import NAME_CITY, build, render, seq, stamps

# --- EventVerbosity ------------------------------------------------------------------------------


def test_event_verbosity_values() -> None:
    """§2.5: NONE=1, APPLIED=2, AFTER_RESTART=3, ALL=4."""
    assert [(v.name, int(v)) for v in EventVerbosity] == [
        ("NONE", 1),
        ("APPLIED", 2),
        ("AFTER_RESTART", 3),
        ("ALL", 4),
    ]


def test_event_verbosity_parse() -> None:
    """Contract: case-insensitive names, ValueError otherwise."""
    assert EventVerbosity.parse("applied") is EventVerbosity.APPLIED
    assert EventVerbosity.parse("After_Restart") is EventVerbosity.AFTER_RESTART
    assert EventVerbosity.parse("ALL") is EventVerbosity.ALL
    assert EventVerbosity.parse("none") is EventVerbosity.NONE
    with pytest.raises(ValueError, match="bogus"):
        EventVerbosity.parse("bogus")


# --- building trackers ---------------------------------------------------------------------------


def test_constructor_and_properties() -> None:
    """Contract: sender_id, events (a tuple), max_event_history, fresh values (§2.1)."""
    tracker = DialogueStateTracker("s1", max_event_history=5)
    assert tracker.sender_id == "s1"
    assert tracker.events == ()
    assert isinstance(tracker.events, tuple)
    assert tracker.max_event_history == 5
    assert DialogueStateTracker("s2").max_event_history is None
    assert tracker.latest_message.text is None
    assert tracker.latest_bot_utterance.text is None
    assert tracker.latest_action == {}
    assert tracker.latest_action_name is None
    assert tracker.followup_action == "action_listen"
    assert tracker.active_loop is None
    assert tracker.active_loop_name is None
    assert tracker.is_active_loop_interrupted is False
    assert tracker.is_active_loop_rejected is False
    assert tracker.paused is False
    assert tracker.slots == {}


def test_update_from_events_fold_apply_agree() -> None:
    """Contract: update, update_with_events, from_events, fold and apply are the same fold."""
    events = seq("L U:hi(greet) A:utter_a S:name=x B:hey L U:bye pause")
    one = DialogueStateTracker("c")
    for event in events:
        one.update(event)
    many = DialogueStateTracker("c")
    many.update_with_events(events)
    applied = DialogueStateTracker("c")
    for event in events:
        assert apply(applied, event) is applied
    built = DialogueStateTracker.from_events("c", events)
    folded = fold(events, sender_id="c")
    expected = one.current_state(EventVerbosity.ALL)
    for other in (many, applied, built, folded):
        assert other.current_state(EventVerbosity.ALL) == expected
        assert other.events == tuple(events)


def test_update_with_events_keeps_timestamps() -> None:
    """Contract: processors/ never reads the clock, so timestamps are kept as given."""
    tracker = DialogueStateTracker("c")
    tracker.update_with_events(seq("L U:hi"))
    assert stamps(tracker.events) == [1.0, 2.0]


def test_fold_defaults_and_continuation() -> None:
    """Contract: fold(events) starts a tracker for sender "default"; fold(b, t) continues t."""
    assert fold(seq("L")).sender_id == "default"
    first = fold(seq("L U:hi"), sender_id="c")
    again = fold(seq("A:utter_a", start=3), first)
    assert again.sender_id == "c"
    assert render(again.events) == "L U:hi A:utter_a"


def test_fold_with_domain() -> None:
    """Contract: fold(..., domain=) uses the domain's slots."""
    tracker = fold(seq("S:name=a S:other=b"), domain=Domain.from_dict(NAME_CITY))
    assert tracker.get_slot("name") == "a"
    assert "other" not in tracker.current_slot_values()


def test_events_are_kept_in_order_as_given() -> None:
    """§2.1: events holds every logged event, reverted ones and no-ops included."""
    reminder = ReminderScheduled("remind", datetime(2030, 1, 1), "r1")  # noqa: DTZ001
    tracker = build("L U:hi A:x agent", reminder, "rewind export")
    assert render(tracker.events) == "L U:hi A:x agent ReminderScheduled rewind export"
    assert render(tracker.applied_events()) == "export"


# --- queries -------------------------------------------------------------------------------------

QUERY = "L U:hi A:utter_a B:hey L U:bye A:utter_b rewind"


def stamp_of(event: Event | None) -> float:
    assert event is not None
    return event.timestamp


def render_of(event: Event | None) -> str:
    assert event is not None
    return render([event])


def test_applied_events_is_a_list() -> None:
    """§2.3: applied_events() -> a list of the surviving events (the objects logged)."""
    tracker = build(QUERY)
    applied = tracker.applied_events()
    assert isinstance(applied, list)
    assert applied == list(tracker.events[:4])


def test_get_last_event_for() -> None:
    """§2.7: newest-first scan of the verbosity's list, with type tuples, exclusions, skip."""
    tracker = build(QUERY)
    assert stamp_of(tracker.get_last_event_for(UserUttered)) == 2
    last_all = tracker.get_last_event_for(UserUttered, event_verbosity=EventVerbosity.ALL)
    assert isinstance(last_all, UserUttered)
    assert last_all.text == "bye"
    assert render_of(tracker.get_last_event_for(ActionExecuted)) == "A:utter_a"
    excluded = tracker.get_last_event_for(ActionExecuted, action_names_to_exclude=["utter_a"])
    assert render_of(excluded) == "L"
    assert stamp_of(tracker.get_last_event_for(ActionExecuted, skip=1)) == 1
    assert tracker.get_last_event_for(ActionExecuted, skip=2) is None
    either = tracker.get_last_event_for((UserUttered, BotUttered))
    assert render_of(either) == "B:hey"
    assert tracker.get_last_event_for(SlotSet) is None
    assert tracker.get_last_event_for(UserUttered, event_verbosity=EventVerbosity.NONE) is None


def test_get_last_event_for_after_restart() -> None:
    """§2.7: AFTER_RESTART scans everything after the restart, reverted events included."""
    tracker = build("L U:x restart L U:hi A:a rewind")
    assert tracker.get_last_event_for(UserUttered) is None
    found = tracker.get_last_event_for(UserUttered, event_verbosity=EventVerbosity.AFTER_RESTART)
    assert stamp_of(found) == 5
    assert (
        tracker.get_last_event_for(
            UserUttered, skip=1, event_verbosity=EventVerbosity.AFTER_RESTART
        )
        is None
    )
    found = tracker.get_last_event_for(UserUttered, skip=1, event_verbosity=EventVerbosity.ALL)
    assert stamp_of(found) == 2


def test_last_executed_action_has() -> None:
    """§2.7: the last applied action excluding action_listen."""
    tracker = build("L U:hi A:a1 A:a2 L")
    assert tracker.last_executed_action_has("a2") is True
    assert tracker.last_executed_action_has("action_listen") is False
    assert tracker.last_executed_action_has("a1") is False
    assert tracker.last_executed_action_has("a1", skip=1) is True
    assert tracker.last_executed_action_has("a1", skip=2) is False
    assert build("L U:hi A:a1 L U:x A:a2 rewind").last_executed_action_has("a1") is True
    assert DialogueStateTracker("c").last_executed_action_has("a1") is False


def test_restart_index_and_events_after_it() -> None:
    """§2.7: index just after the last restart (0 if none); session starts do not count."""
    tracker = build("L U:hi restart L restart A:x")
    assert tracker.idx_after_latest_restart() == 5
    assert render(tracker.events_after_latest_restart()) == "A:x"
    plain = build("L session_started U:hi")
    assert plain.idx_after_latest_restart() == 0
    assert render(plain.events_after_latest_restart()) == "L session_started U:hi"
    ends = build("L restart")
    assert ends.idx_after_latest_restart() == 2
    assert ends.events_after_latest_restart() == []


def test_get_slot_and_current_slot_values() -> None:
    """§2.7: slot values by name; current_slot_values = every slot."""
    tracker = build("S:name=a S:city=b", domain=Domain.from_dict(NAME_CITY))
    assert tracker.get_slot("name") == "a"
    assert tracker.get_slot("missing") is None
    assert tracker.current_slot_values() == {
        "name": "a",
        "city": "b",
        "session_started_metadata": None,
    }
    assert tracker.slots == tracker.current_slot_values()


CITY_A = {"entity": "city", "value": "A", "role": "from"}
CITY_B = {"entity": "city", "value": "B", "role": "to"}
CITY_C = {"entity": "city", "value": "C"}
CITY_D = {"entity": "city", "value": "D", "group": "1"}
CITY_E = {"entity": "city", "value": "E", "role": "from", "group": "1"}


def test_get_latest_entity_values_roles_and_groups() -> None:
    """§2.7: entity, role and group must all equal the arguments (defaults: no role, no group)."""
    user = UserUttered.create("x", {"name": "travel"}, [CITY_A, CITY_B, CITY_C, CITY_D, CITY_E])
    tracker = build("L", user)
    assert list(tracker.get_latest_entity_values("city")) == ["C"]
    assert list(tracker.get_latest_entity_values("city", entity_role="from")) == ["A"]
    assert list(tracker.get_latest_entity_values("city", entity_role="to")) == ["B"]
    assert list(tracker.get_latest_entity_values("city", entity_group="1")) == ["D"]
    assert list(tracker.get_latest_entity_values("city", "from", "1")) == ["E"]
    assert list(tracker.get_latest_entity_values("name")) == []
    assert list(DialogueStateTracker("c").get_latest_entity_values("city")) == []


def test_get_latest_entity_values_of_latest_applied_message() -> None:
    """§2.6/2.7: the latest message after a rewind is the previous surviving one."""
    tracker = build("L", UserUttered.create("x", entities=[CITY_C]), "A:a L U:other rewind")
    assert list(tracker.get_latest_entity_values("city")) == ["C"]


def test_is_paused() -> None:
    """§2.6: pause / resume."""
    assert build("L pause").is_paused() is True
    assert build("L pause resume").is_paused() is False
    assert build("L pause restart").is_paused() is False


def test_latest_bot_utterance() -> None:
    """§1.2 bot: latest_bot_utterance = the event."""
    tracker = build("L U:hi A:utter_a B:first B:second")
    assert tracker.latest_bot_utterance.text == "second"
    assert build("L U:hi B:x restart").latest_bot_utterance.text is None


# --- time travel and prior trackers --------------------------------------------------------------


def test_travel_back_in_time_stops_at_the_first_later_event() -> None:
    """§2.8: timestamps 1, 5, 3, 4 with t=4 keep only the first event."""
    events: list[Event] = [
        ActionExecuted("action_listen", timestamp=1.0),
        UserUttered.create("a", timestamp=5.0),
        ActionExecuted("x", timestamp=3.0),
        BotUttered("b", timestamp=4.0),
    ]
    tracker = fold(events, sender_id="t")
    past = tracker.travel_back_in_time(4.0)
    assert past is not tracker
    assert render(past.events) == "L"
    assert past.sender_id == "t"
    assert len(tracker.events) == 4


def test_travel_back_in_time_is_inclusive() -> None:
    """§2.8: events exactly at the target time are included; the state is rebuilt."""
    tracker = build("L U:hi S:name=x A:utter_a", domain=Domain.from_dict(NAME_CITY))
    past = tracker.travel_back_in_time(2.0)
    assert render(past.events) == "L U:hi"
    assert past.latest_message.text == "hi"
    assert past.get_slot("name") is None
    assert past.current_slot_values() == tracker.init_copy().current_slot_values()
    assert past.travel_back_in_time(0.5).events == ()
    assert tracker.travel_back_in_time(3.0).get_slot("name") == "x"
    assert tracker.travel_back_in_time(float("inf")).events == tracker.events


def test_generate_all_prior_trackers() -> None:
    """§2.8: a tracker before every applied action (with its hide_rule_turn), then the final
    one; the first is empty."""
    tracker = build("L U:hi", ActionExecuted("utter_a", hide_rule_turn=True), "B:hey L")
    seen = [
        (render(t.events), hide, t.sender_id) for t, hide in tracker.generate_all_prior_trackers()
    ]
    assert seen == [
        ("", False, "conv"),
        ("L U:hi", True, "conv"),
        ("L U:hi A:utter_a B:hey", False, "conv"),
        ("L U:hi A:utter_a B:hey L", False, "conv"),
    ]


def test_generate_all_prior_trackers_uses_applied_events() -> None:
    """§2.8: the replay is of applied_events(), so reverted turns never show up."""
    tracker = build("L U:hi A:a L U:bye A:action_default_fallback rewind")
    seen = [
        (render(t.events), t.latest_action_name) for t, _ in tracker.generate_all_prior_trackers()
    ]
    assert seen == [("", None), ("L U:hi", "action_listen"), ("L U:hi A:a", "a")]


def test_prior_trackers_of_an_empty_tracker() -> None:
    """§2.8: only the final (empty) tracker."""
    seen = [(t.events, hide) for t, hide in DialogueStateTracker("c").generate_all_prior_trackers()]
    assert seen == [((), False)]


# --- serialization: from_dict, dialogues ---------------------------------------------------------

DUMP: list[dict[str, Any]] = [
    {"event": "action", "timestamp": 1.0, "name": "action_listen"},
    {
        "event": "user",
        "timestamp": 2.0,
        "text": "hi",
        "parse_data": {
            "intent": {"name": "greet", "confidence": 0.9},
            "entities": [],
            "text": "hi",
        },
        "input_channel": "rest",
    },
    {"event": "slot", "timestamp": 3.0, "name": "name", "value": "Bob"},
    {"event": "restart", "timestamp": 4.0},
]


def test_from_dict_decodes_and_applies_incrementally() -> None:
    """§2.2 from_dict = decode + from_events (incremental: the restart's followup is kept)."""
    tracker = DialogueStateTracker.from_dict("s", DUMP)
    assert tracker.sender_id == "s"
    assert render(tracker.events) == "L U:hi(greet) S:name=Bob restart"
    assert stamps(tracker.events) == [1.0, 2.0, 3.0, 4.0]
    assert tracker.followup_action == "action_session_start"
    assert tracker.current_slot_values() == {"name": None}
    assert tracker.get_latest_input_channel() == "rest"


def test_from_dict_with_domain_and_history() -> None:
    """Contract: from_dict takes domain and max_event_history like from_events."""
    tracker = DialogueStateTracker.from_dict(
        "s", DUMP[:3], Domain.from_dict(NAME_CITY), max_event_history=2
    )
    assert render(tracker.events) == "U:hi(greet) S:name=Bob"
    assert tracker.get_slot("name") == "Bob"
    assert tracker.get_slot("city") is None


def test_from_dict_reads_legacy_forms() -> None:
    """§1.2 / §8.8: `form` is read as active_loop, `form_validation` as loop_interrupted with
    is_interrupted = not validate."""
    tracker = DialogueStateTracker.from_dict(
        "s",
        [
            {"event": "form", "timestamp": 1.0, "name": "my_form"},
            {"event": "form_validation", "timestamp": 2.0, "validate": False},
        ],
    )
    assert tracker.active_loop_name == "my_form"
    assert tracker.is_active_loop_interrupted is True


def test_from_dict_rejects_unknown_events() -> None:
    """§1.0 / §8.8: one unknown event name makes the whole load fail (a ValueError)."""
    with pytest.raises(EventError):
        DialogueStateTracker.from_dict("s", [*DUMP, {"event": "nonexistent"}])
    with pytest.raises(ValueError, match="nonexistent"):
        DialogueStateTracker.from_dict("s", [{"event": "nonexistent"}])


def test_from_dict_stamps_with_now() -> None:
    """Contract: falsy timestamps become `now`; with now=None they stay 0.0."""
    dump: list[dict[str, Any]] = [
        {"event": "action", "timestamp": 0, "name": "x"},
        {"event": "pause"},
    ]
    assert stamps(DialogueStateTracker.from_dict("s", dump, now=100.0).events) == [100.0, 100.0]
    assert stamps(DialogueStateTracker.from_dict("s", dump).events) == [0.0, 0.0]


def test_as_dialogue() -> None:
    """§2.2: Dialogue(sender_id, all events)."""
    tracker = build("L U:hi A:x rewind", sender_id="d1")
    dialogue = tracker.as_dialogue()
    assert dialogue.name == "d1"
    assert tuple(dialogue.events) == tracker.events


def test_dialogue_as_dict_and_back() -> None:
    """§2.2: Dialogue.as_dict() = {"events": [...as_dict...], "name": sender_id};
    Dialogue.from_parameters reverses it."""
    tracker = build("L U:hi(greet) A:x S:name=1 rewind", sender_id="d1")
    data = tracker.as_dialogue().as_dict()
    assert list(data) == ["events", "name"]
    assert data["name"] == "d1"
    assert [(d["event"], d["timestamp"]) for d in data["events"]] == [
        ("action", 1.0),
        ("user", 2.0),
        ("action", 3.0),
        ("slot", 4.0),
        ("rewind", 5.0),
    ]
    back = Dialogue.from_parameters(data)
    assert back.name == "d1"
    assert list(back.events) == list(tracker.events)


def test_user_view_of_a_non_user_event_is_an_error() -> None:
    """Contract: user_view(index) is the view of the *user* event at events[index]."""
    with pytest.raises((TypeError, ValueError)):
        build("L U:hi").user_view(0)


def test_recreate_after_trailing_restart_differs_from_incremental() -> None:
    """§2.2 / §8.6: replay does not re-apply the restart, so followup is action_listen."""
    tracker = build("L U:hi A:utter_a restart")
    assert tracker.followup_action == "action_session_start"
    rebuilt = DialogueStateTracker("conv")
    rebuilt.recreate_from_dialogue(tracker.as_dialogue())
    assert rebuilt.events == tracker.events
    assert rebuilt.followup_action == "action_listen"
    assert rebuilt.applied_events() == []


def test_recreate_replays_the_pruned_applied_list() -> None:
    """§2.2: recreate = reset + replay of applied events, which the loop pruning shortened."""
    tracker = build("L U:hi A:my_form active_loop(my_form) B:ask L U:a A:my_form")
    assert tracker.latest_message.text == "a"
    rebuilt = DialogueStateTracker("conv")
    rebuilt.recreate_from_dialogue(tracker.as_dialogue())
    assert rebuilt.latest_message.text == "hi"
    assert rebuilt.latest_action_name == "my_form"
    assert rebuilt.active_loop_name == "my_form"


def test_recreate_equals_incremental_for_plain_conversations() -> None:
    """§2.2: for a tracker without trailing restart or pruning both ways agree."""
    tracker = build(
        "L U:hi(greet) A:utter_a S:name=x B:hey L U:bye(goodbye) A:x rewind",
        domain=Domain.from_dict(NAME_CITY),
    )
    rebuilt = DialogueStateTracker("conv", Domain.from_dict(NAME_CITY))
    rebuilt.recreate_from_dialogue(tracker.as_dialogue())
    assert rebuilt.current_state(EventVerbosity.ALL) == tracker.current_state(EventVerbosity.ALL)


# --- copies --------------------------------------------------------------------------------------


def test_copy_is_an_independent_equal_tracker() -> None:
    """§2.2: copy() = travel_back_in_time(inf): same events, same state, independent."""
    tracker = build("L U:hi(greet) S:name=x A:utter_a B:hey L", sender_id="s1")
    copied = tracker.copy()
    assert copied is not tracker
    assert copied.current_state(EventVerbosity.ALL) == tracker.current_state(EventVerbosity.ALL)
    copied.update(seq("pause", start=10)[0])
    assert copied.paused is True
    assert tracker.paused is False
    assert len(tracker.events) == 6


def test_init_copy_keeps_sender_and_slots_reset() -> None:
    """§2.2: init_copy = a new tracker, same sender_id, same slots (values reset), same history."""
    domain = Domain.from_dict({"slots": {"name": {"type": "text", "initial_value": "x"}}})
    tracker = build("L U:hi S:name=y", domain=domain, sender_id="s1", max_event_history=10)
    blank = tracker.init_copy()
    assert blank.sender_id == "s1"
    assert blank.events == ()
    assert blank.max_event_history == 10
    assert blank.current_slot_values() == {"name": "x", "session_started_metadata": None}
    assert blank.latest_message.text is None


def test_copies_of_a_domainless_tracker_accept_no_new_slots() -> None:
    """§2.2 / §8: init_copy (and so copy) turns the any-slot dict into a plain dict."""
    tracker = build("L U:hi S:name=x")
    blank = tracker.init_copy()
    assert blank.current_slot_values() == {"name": None}
    blank.update_with_events(seq("S:other=1 S:name=y", start=10))
    assert blank.get_slot("other") is None
    assert blank.current_slot_values() == {"name": "y"}
    copied = tracker.copy()
    copied.update(seq("S:other=1", start=10)[0])
    assert copied.current_slot_values() == {"name": "x"}
    tracker.update(seq("S:other=1", start=10)[0])
    assert tracker.current_slot_values() == {"name": "x", "other": "1"}


# --- max_event_history ---------------------------------------------------------------------------


def test_max_event_history_keeps_a_window_but_live_state_sees_everything() -> None:
    """§2.9: the oldest events are evicted; the live state reflects every event."""
    tracker = build("L U:hi A:utter_a S:name=x", max_event_history=2)
    assert render(tracker.events) == "A:utter_a S:name=x"
    assert render(tracker.applied_events()) == "A:utter_a S:name=x"
    assert tracker.latest_message.text == "hi"
    assert tracker.get_slot("name") == "x"
    assert len(tracker.current_state(EventVerbosity.ALL)["events"]) == 2
    assert tracker.current_state()["latest_event_time"] == 4.0


def test_rewind_replays_only_the_window() -> None:
    """§2.9: a rewind's replay only sees the window."""
    events = "L U:hi A:a L U:bye A:b rewind"
    assert build(events).latest_message.text == "hi"
    tracker = build(events, max_event_history=3)
    assert tracker.applied_events() == []
    assert tracker.latest_message.text is None
    assert tracker.latest_action == {}
    assert tracker.followup_action == "action_listen"


def test_window_changes_loop_pruning() -> None:
    """§2.9 with §2.3: loop names and earlier runs are only found inside the window."""
    events = "L U:hi A:my_form active_loop(my_form) B:ask L U:a A:my_form"
    kept = build(events, max_event_history=6)
    assert render(kept.applied_events()) == "A:my_form active_loop(my_form) B:ask"
    assert render(build(events, max_event_history=5).applied_events()) == (
        "active_loop(my_form) B:ask L U:a A:my_form"
    )
    assert render(build(events, max_event_history=4).applied_events()) == "B:ask L U:a A:my_form"


def test_window_and_restart_index() -> None:
    """§2.7 / §2.9: idx_after_latest_restart counts in the window."""
    tracker = build("L U:hi restart L U:bye", max_event_history=3)
    assert tracker.idx_after_latest_restart() == 1
    tracker.update(seq("A:x", start=6)[0])
    assert tracker.idx_after_latest_restart() == 0
    assert render(tracker.events_after_latest_restart()) == "L U:bye A:x"


def test_window_and_latest_input_channel() -> None:
    """§2.5 / §2.9: the input channel is looked up in the window of events."""
    tracker = build("L", UserUttered.create("hi", input_channel="rest"), "A:a", max_event_history=3)
    assert tracker.get_latest_input_channel() == "rest"
    tracker.update(seq("B:x", start=4)[0])
    assert tracker.get_latest_input_channel() == "rest"
    tracker.update(seq("L", start=5)[0])
    assert tracker.get_latest_input_channel() is None
    assert tracker.latest_message.text == "hi"


# --- stories -------------------------------------------------------------------------------------

STORY_EVENTS = (
    'L U:"hello there"(goodbye) rewind L U:"hello there"(greet) A:utter_goodbye B:bye undo '
    "A:utter_greet B:hi L"
)
STORY = """version: "3.1"
stories:
- story: interactive_story_1
  steps:
  - intent: goodbye
  - intent: greet
  - action: utter_goodbye
  - action: utter_greet"""


def test_export_stories_uses_all_events() -> None:
    """§2.11: YAML of all events; rewind/undo dropped, reverted turns exported."""
    tracker = build(STORY_EVENTS, sender_id="interactive_story_1")
    assert tracker.export_stories().rstrip("\n") == STORY


def test_export_stories_appendable() -> None:
    """§2.11: when appending, only the list items (no header)."""
    tracker = build(STORY_EVENTS, sender_id="interactive_story_1")
    body = STORY.split("stories:\n", 1)[1]
    assert tracker.export_stories(should_append_stories=True).rstrip("\n") == body


def test_export_stories_with_source() -> None:
    """§2.11: the story name is "<sender_id> (<sender_source>)" with include_source."""
    tracker = DialogueStateTracker("s", sender_source="data/stories.yml")
    tracker.update_with_events(seq("L U:hi(greet) A:utter_greet"))
    assert "- story: s (data/stories.yml)\n" in tracker.export_stories(include_source=True)
    assert "- story: s\n" in tracker.export_stories()


def test_export_stories_slot_and_loop_steps() -> None:
    """§2.11: only user, action, slot and active_loop events make steps."""
    tracker = build(
        "L U:hi(greet) S:name=Bob A:utter_greet B:hey active_loop(f) followup(x) pause "
        "active_loop(null) restart",
        sender_id="s",
    )
    text = tracker.export_stories()
    assert "  - intent: greet\n" in text
    assert "slot_was_set" in text
    assert "name: Bob" in text
    assert "  - action: utter_greet\n" in text
    assert "  - active_loop: f\n" in text
    assert "  - active_loop: null" in text
    assert "followup" not in text
    assert "restart" not in text
    assert "action_listen" not in text
