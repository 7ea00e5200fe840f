"""Reading the slot part of a Rasa domain, and how a domain changes slot tracking."""

from __future__ import annotations

from typing import Any

import pytest

from events.errors import InvalidField
from events.model import SlotSet
from processors import DialogueStateTracker, Domain, SlotDefinition


def test_domain_slots_keep_order_types_and_initial_values_plus_rasas_defaults() -> None:
    domain = Domain.from_dict(
        {
            "slots": {
                "city": {"type": "text", "initial_value": "Paris"},
                "count": {"type": "rasa.shared.core.slots.FloatSlot"},
                "custom": {"type": "my.module.WeirdSlot"},
                "bare": None,
            },
            "forms": {"booking_form": {"required_slots": ["city"]}},
        }
    )
    assert list(domain.slots) == [
        "city",
        "count",
        "custom",
        "bare",
        "session_started_metadata",
        "requested_slot",
    ]
    assert domain.slots["city"] == SlotDefinition("city", "text", "Paris")
    assert domain.slots["count"].type == "float"
    assert domain.slots["custom"].type == "any"
    assert domain.forms == ("booking_form",)
    assert domain.initial_values()["city"] == "Paris"


def test_forms_as_a_list_and_no_forms_means_no_requested_slot() -> None:
    assert Domain.from_dict({"forms": ["a_form"]}).forms == ("a_form",)
    assert "requested_slot" not in Domain.from_dict({"slots": {}}).slots


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ([], "a domain must be a mapping"),
        ({"slots": ["city"]}, "'slots' must map slot names"),
        ({"slots": {"city": "text"}}, "slot 'city' must be a mapping"),
        ({"slots": {"city": {"type": 3}}}, "'type' must be a string"),
        ({"forms": "a_form"}, "'forms' must be a mapping or a list"),
    ],
)
def test_a_bad_domain_says_what_is_wrong(data: Any, words: str) -> None:
    with pytest.raises(InvalidField, match=words):
        Domain.from_dict(data)


def test_a_domain_fixes_the_slot_set_and_a_reset_returns_to_initial_values() -> None:
    domain = Domain.from_dict({"slots": {"city": {"type": "text", "initial_value": "Paris"}}})
    tracker = DialogueStateTracker("c", domain)
    tracker.update(SlotSet("city", "Berlin", timestamp=1.0))
    tracker.update(SlotSet("unknown", 1, timestamp=2.0))
    assert tracker.current_slot_values() == {"city": "Berlin", "session_started_metadata": None}
    assert len(tracker.events) == 2  # the ignored slot event is still logged
    assert tracker.get_slot("unknown") is None
    assert "unknown" not in tracker.current_slot_values()
