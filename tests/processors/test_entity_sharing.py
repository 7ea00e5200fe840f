"""Rasa shares a decoded user event's entity list with its parse_data (checked in Rasa 3.6.21's
``UserUttered.__init__``: the parse overlay puts ``parse_data["entities"]`` back, which is the very
list the event holds), so entities merged by an ``entities`` event also show in that parse."""

from __future__ import annotations

from events.model import ActionExecuted, ActiveLoop, EntitiesAdded, UserUttered
from events.wire import decode_event
from processors import DialogueStateTracker, EventVerbosity

CITY = {"entity": "city", "value": "Berlin"}
NAME = {"entity": "name", "value": "Ada"}


def user_from_json(entities: list[dict[str, str]]) -> UserUttered:
    event = decode_event(
        {
            "event": "user",
            "timestamp": 2.0,
            "text": "hi",
            "parse_data": {"intent": {"name": "greet"}, "entities": entities, "text": "hi"},
        }
    )
    assert isinstance(event, UserUttered)
    return event


def fold(user: UserUttered) -> DialogueStateTracker:
    tracker = DialogueStateTracker("c")
    tracker.update(ActionExecuted("action_listen", timestamp=1.0))
    tracker.update(user)
    tracker.update(ActiveLoop("a_form", timestamp=3.0))
    tracker.update(ActionExecuted("action_listen", timestamp=4.0))
    tracker.update(EntitiesAdded([NAME], timestamp=5.0))
    return tracker


def test_merged_entities_show_in_the_parse_of_a_decoded_event_with_entities() -> None:
    state = fold(user_from_json([CITY])).current_state(EventVerbosity.APPLIED)
    assert state["latest_message"]["entities"] == [CITY, NAME]
    logged = next(e for e in state["events"] if e["event"] == "user")
    assert logged["parse_data"]["entities"] == [CITY, NAME]
    assert state["active_loop"]["trigger_message"]["entities"] == [CITY, NAME]


def test_a_decoded_event_without_entities_keeps_its_parse() -> None:
    user = user_from_json([])
    state = fold(user).current_state(EventVerbosity.APPLIED)
    assert state["latest_message"]["entities"] == [NAME]
    logged = next(e for e in state["events"] if e["event"] == "user")
    assert logged["parse_data"]["entities"] == []
    assert state["active_loop"]["trigger_message"]["entities"] == []
    assert user.entities == []  # the event itself is never mutated


def test_an_event_built_in_python_keeps_its_parse_as_rasas_constructor_does() -> None:
    user = UserUttered.create("hi", {"name": "greet"}, [CITY], timestamp=2.0)
    state = fold(user).current_state(EventVerbosity.APPLIED)
    assert state["latest_message"]["entities"] == [CITY, NAME]
    logged = next(e for e in state["events"] if e["event"] == "user")
    assert logged["parse_data"]["entities"] == [CITY]
