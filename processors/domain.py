"""The slice of a Rasa domain the tracker needs: which slots exist and their initial values.

Conversations on a topic carry no domain, so without one the tracker accepts every slot name (as
Rasa's domain-less tracker does). A domain, when given, fixes the slot set: its slots in domain
order, plus Rasa's default ``session_started_metadata`` slot, plus ``requested_slot`` when the
domain has forms. Setting a slot the domain does not know is ignored for state (the event is kept).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from events.errors import InvalidField, show

SESSION_STARTED_METADATA_SLOT = "session_started_metadata"
REQUESTED_SLOT = "requested_slot"

SLOT_TYPES = frozenset({"text", "bool", "categorical", "float", "list", "any"})


@dataclass(frozen=True, slots=True)
class SlotDefinition:
    """One domain slot: its type (informational) and the value a reset returns it to."""

    name: str
    type: str = "any"
    initial_value: Any = None


@dataclass(frozen=True, slots=True)
class Domain:
    """Slots (in domain order) and form names."""

    slots: Mapping[str, SlotDefinition] = field(default_factory=dict)
    forms: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Domain:
        """Read a parsed ``domain.yml``; raises ``InvalidField`` naming the bad part."""
        if not isinstance(data, Mapping):
            raise InvalidField("a domain must be a mapping", expected="object", got=show(data))
        raw_slots = data.get("slots") or {}
        if not isinstance(raw_slots, Mapping):
            raise InvalidField(
                "domain 'slots' must map slot names to definitions",
                expected="object",
                got=show(raw_slots),
            )
        slots: dict[str, SlotDefinition] = {}
        for name, spec in raw_slots.items():
            slots[str(name)] = _slot_definition(str(name), spec)
        forms = _form_names(data.get("forms"))
        slots.setdefault(
            SESSION_STARTED_METADATA_SLOT, SlotDefinition(SESSION_STARTED_METADATA_SLOT)
        )
        if forms:
            slots.setdefault(REQUESTED_SLOT, SlotDefinition(REQUESTED_SLOT, "any"))
        return cls(slots=slots, forms=forms)

    def initial_values(self) -> dict[str, Any]:
        """Slot name -> initial value, in domain order."""
        return {name: slot.initial_value for name, slot in self.slots.items()}


def _slot_definition(name: str, spec: Any) -> SlotDefinition:
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        raise InvalidField(
            f"domain slot {name!r} must be a mapping", expected="object", got=show(spec)
        )
    slot_type = spec.get("type", "any")
    if not isinstance(slot_type, str):
        raise InvalidField(
            f"domain slot {name!r}: 'type' must be a string", expected="string", got=show(slot_type)
        )
    short = slot_type.rsplit(".", 1)[-1].lower().removesuffix("slot") or "any"
    if short not in SLOT_TYPES:
        short = "any"  # custom slot classes behave like 'any' for tracking values
    return SlotDefinition(name, short, spec.get("initial_value"))


def _form_names(forms: Any) -> tuple[str, ...]:
    if forms is None:
        return ()
    if isinstance(forms, Mapping):
        return tuple(str(name) for name in forms)
    if isinstance(forms, list):
        return tuple(str(name) for name in forms)
    raise InvalidField(
        "domain 'forms' must be a mapping or a list", expected="object", got=show(forms)
    )
