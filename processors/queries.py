"""Read-only views of a tracker: Rasa 3.6's query API and ``current_state()``.

Nothing here changes state, with one deliberate exception copied from Rasa: on a domain-less
tracker ``get_slot`` of an unknown name creates that slot (value None), so it appears in
``current_state()["slots"]`` from then on.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableSequence, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from events.model import (
    ACTION_LISTEN,
    ActionExecuted,
    BotUttered,
    Event,
    UserUttered,
)
from events.stories import Story, UserView, yaml_stories
from events.wire import decode_event, encode_event

if TYPE_CHECKING:
    from processors.state import Folder, Head


class EventVerbosity(IntEnum):
    """Which events ``current_state()`` lists (Rasa's ``EventVerbosity``)."""

    NONE = 1
    APPLIED = 2
    AFTER_RESTART = 3
    ALL = 4

    @classmethod
    def parse(cls, text: str) -> EventVerbosity:
        """``"applied"`` / ``"APPLIED"`` -> ``EventVerbosity.APPLIED``; ValueError otherwise."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(member.name for member in cls)
            raise ValueError(f"unknown event verbosity {text!r}: expected one of {names}") from None


@dataclass(frozen=True, slots=True)
class Dialogue:
    """A conversation's id and all its events: the form Rasa's stores persist."""

    name: str
    events: Sequence[Event]

    def as_dict(self) -> dict[str, Any]:
        return {"events": [encode_event(e) for e in self.events], "name": self.name}

    @classmethod
    def from_parameters(cls, data: dict[str, Any], *, now: float | None = None) -> Dialogue:
        return cls(str(data["name"]), [decode_event(e, now=now) for e in data["events"]])


class TrackerQueries:
    """The read API; mixed into ``DialogueStateTracker``."""

    sender_id: str
    sender_source: str | None
    _events: MutableSequence[Event]
    _head: Head
    _folder: Folder
    _count: int
    _last_restart: int
    _last_user: int

    def applied_events(self) -> list[Event]:
        raise NotImplementedError

    # -- state -----------------------------------------------------------------------------

    @property
    def events(self) -> tuple[Event, ...]:
        """Every logged event (within ``max_event_history``), reverted ones included."""
        return tuple(self._events)

    @property
    def latest_message(self) -> UserUttered:
        return self._head.message

    @property
    def latest_bot_utterance(self) -> BotUttered:
        return self._head.bot

    @property
    def latest_action(self) -> dict[str, str | None]:
        return self._head.latest_action()

    @property
    def latest_action_name(self) -> str | None:
        return self._head.action_name

    @property
    def followup_action(self) -> str | None:
        return self._head.followup

    @property
    def paused(self) -> bool:
        return self._head.paused

    def is_paused(self) -> bool:
        return self._head.paused

    @property
    def active_loop(self) -> dict[str, Any] | None:
        loop = self._head.loop
        return None if loop is None else self._folder.loop_dict(loop)

    @property
    def active_loop_name(self) -> str | None:
        return self._head.loop_name

    @property
    def is_active_loop_interrupted(self) -> bool:
        loop = self._head.loop
        return loop is not None and loop.is_interrupted

    @property
    def is_active_loop_rejected(self) -> bool:
        loop = self._head.loop
        return loop is not None and loop.rejected

    @property
    def slots(self) -> dict[str, Any]:
        return self.current_slot_values()

    def current_slot_values(self) -> dict[str, Any]:
        return self._folder.slot_values(self._head)

    def get_slot(self, key: str) -> Any:
        folder = self._folder
        if key not in folder.slot_keys:
            if folder.accepts_any_slot:
                folder.slot_keys[key] = None
            return None
        return self._head.slots.get(key, folder.slot_keys[key])

    def get_latest_entity_values(
        self, entity_type: str, entity_role: str | None = None, entity_group: str | None = None
    ) -> Iterator[Any]:
        """Values of latest-message entities whose type, role and group all match."""
        entities = self._folder.live_entities(self._head.message)
        return (
            e.get("value")
            for e in entities
            if e.get("entity") == entity_type
            and e.get("group") == entity_group
            and e.get("role") == entity_role
        )

    def get_latest_input_channel(self) -> str | None:
        """The input channel of the last user event logged (reverted or not)."""
        if self._last_user < self._count - len(self._events):
            return None
        message = self._events[self._last_user - (self._count - len(self._events))]
        assert isinstance(message, UserUttered)
        return message.input_channel

    # -- event lists -----------------------------------------------------------------------

    def idx_after_latest_restart(self) -> int:
        """Index in ``events`` just after the latest ``restart`` (0 without one)."""
        base = self._count - len(self._events)
        return self._last_restart - base + 1 if self._last_restart >= base else 0

    def events_after_latest_restart(self) -> list[Event]:
        return list(self._events)[self.idx_after_latest_restart() :]

    def _events_for(self, verbosity: EventVerbosity) -> list[Event] | None:
        if verbosity == EventVerbosity.ALL:
            return list(self._events)
        if verbosity == EventVerbosity.AFTER_RESTART:
            return self.events_after_latest_restart()
        if verbosity == EventVerbosity.APPLIED:
            return self.applied_events()
        return None

    def get_last_event_for(
        self,
        event_type: type[Event] | tuple[type[Event], ...],
        action_names_to_exclude: Sequence[str] | None = None,
        skip: int = 0,
        event_verbosity: EventVerbosity = EventVerbosity.APPLIED,
    ) -> Event | None:
        """The latest event of ``event_type`` (skipping ``skip`` matches and excluded actions)."""
        exclude = action_names_to_exclude or ()
        for event in reversed(self._events_for(event_verbosity) or []):
            if not isinstance(event, event_type):
                continue
            if isinstance(event, ActionExecuted) and event.action_name in exclude:
                continue
            if skip == 0:
                return event
            skip -= 1
        return None

    def last_executed_action_has(self, name: str, skip: int = 0) -> bool:
        """Whether the latest applied action other than ``action_listen`` is ``name``."""
        last = self.get_last_event_for(ActionExecuted, [ACTION_LISTEN], skip=skip)
        return isinstance(last, ActionExecuted) and last.action_name == name

    # -- serialised views ------------------------------------------------------------------

    def current_state(self, verbosity: EventVerbosity = EventVerbosity.NONE) -> dict[str, Any]:
        """Rasa's ``current_state()``: the same 11 keys, in the same order, with the same values."""
        head, listed = self._head, self._events_for(verbosity)
        latest = dict(head.message.parse_data)
        latest["entities"] = self._folder.live_entities(head.message)
        return {
            "sender_id": self.sender_id,
            "slots": self.current_slot_values(),
            "latest_message": latest,
            "latest_event_time": self._events[-1].timestamp if self._events else None,
            "followup_action": head.followup,
            "paused": head.paused,
            "events": None if listed is None else [self._encode(e) for e in listed],
            "latest_input_channel": self.get_latest_input_channel(),
            "active_loop": self._folder.loop_dict(head.loop),
            "latest_action": head.latest_action(),
            "latest_action_name": head.action_name,
        }

    def _encode(self, event: Event) -> dict[str, Any]:
        """``encode_event`` with Rasa's live view of a user event's parse (see ``parse_data``)."""
        encoded = encode_event(event)
        if isinstance(event, UserUttered):
            encoded["parse_data"] = self._folder.parse_data(event)
        return encoded

    def user_view(self, index: int) -> UserView:
        """The live view of the user event at ``events[index]``: its entities merged with later
        ``entities`` events, and its featurization flag after ``user_featurization`` events."""
        event = self._events[index]
        if not isinstance(event, UserUttered):
            raise TypeError(f"events[{index}] is a {event.TAG!r} event, not a 'user' event")
        folder = self._folder
        return UserView(folder.live_entities(event), folder.featurized_by_text(event))

    def as_dialogue(self) -> Dialogue:
        """The id and all events (user events as logged; merged entities are tracker state)."""
        return Dialogue(self.sender_id, list(self._events))

    def as_story(self, include_source: bool = False) -> Story:
        """Every logged event as one story (reverted turns included, as Rasa 3.x exports)."""
        name = self.sender_id
        if include_source and self.sender_source:
            name = f"{self.sender_id} ({self.sender_source})"
        events = list(self._events)
        views = {
            index: self.user_view(index)
            for index, event in enumerate(events)
            if isinstance(event, UserUttered)
        }
        return Story(name, events, views)

    def export_stories(
        self,
        *,
        e2e: bool = False,
        include_source: bool = False,
        should_append_stories: bool = False,
    ) -> str:
        """The conversation as YAML stories (``e2e`` writes test stories with user text)."""
        return yaml_stories(
            [self.as_story(include_source)], header=not should_append_stories, test_stories=e2e
        )
