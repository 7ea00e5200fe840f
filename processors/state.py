"""The compact tracker state (the "head") and how each event changes it.

Rules of this module:

* ``Head`` is everything ``current_state()`` needs and nothing that grows with the conversation.
  Snapshots of it are cheap: the slot dict is shared copy-on-write (``owned`` says whether this
  head may write to it), the other fields are immutable values.
* ``Folder.apply(head, event)`` is Rasa's ``apply_to`` for one event, by an explicit table of
  per-type functions. Reverts and the applied list are the tracker's business, not this module's.
* Rasa mutates user-event objects after the fact (``entities`` adds entities to the latest
  message, ``user_featurization`` sets its featurization flag) and those mutations outlive reverts.
  ``Folder.mutations`` records them per event object, so every view of the event sees them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from events.model import (
    ACTION_LISTEN,
    ACTION_SESSION_START,
    ActionExecuted,
    ActionExecutionRejected,
    ActiveLoop,
    AllSlotsReset,
    BotUttered,
    ConversationPaused,
    ConversationResumed,
    DefinePrevUserUtteredFeaturization,
    EntitiesAdded,
    Event,
    FollowupAction,
    JSONDict,
    LoopInterrupted,
    Restarted,
    SessionStarted,
    SlotSet,
    UserUttered,
)

SHOULD_NOT_BE_SET = "should_not_be_set"


class LoopState(NamedTuple):
    """The active loop: Rasa's ``TrackerActiveLoop``."""

    name: str
    is_interrupted: bool
    rejected: bool
    trigger_message: JSONDict


class Head:
    """Mutable compact state; see the module rules."""

    __slots__ = ("action", "bot", "followup", "loop", "message", "owned", "paused", "slots")

    def __init__(self) -> None:
        self.slots: dict[str, Any] = {}
        self.owned = True
        self.paused = False
        self.followup: str | None = ACTION_LISTEN
        self.action: dict[str, str | None] = {}
        self.message = UserUttered.create()
        self.bot = BotUttered()
        self.loop: LoopState | None = None

    def snapshot(self) -> Head:
        """An independent copy; the slot dict becomes shared copy-on-write."""
        copy = Head.__new__(Head)
        copy.slots, copy.owned, copy.paused = self.slots, False, self.paused
        copy.followup, copy.action, copy.message = self.followup, self.action, self.message
        copy.bot, copy.loop = self.bot, self.loop
        self.owned = False
        return copy

    @property
    def action_name(self) -> str | None:
        return self.action.get("action_name") or self.action.get("action_text")

    @property
    def loop_name(self) -> str | None:
        loop = self.loop
        if loop is None or loop.name == SHOULD_NOT_BE_SET:
            return None
        return loop.name

    def same_as(self, other: Head) -> bool:
        """Whether two heads describe the same state (values compared by identity)."""
        if (
            self.paused != other.paused
            or self.followup != other.followup
            or self.action != other.action
            or self.message is not other.message
            or self.bot is not other.bot
            or self.loop != other.loop
        ):
            return False
        mine, theirs = self.slots, other.slots
        if mine is theirs:
            return True
        missing = object()
        keys = mine.keys() | theirs.keys()
        return all(mine.get(k, missing) is theirs.get(k, missing) for k in keys)


@dataclass(slots=True)
class Mutation:
    """What Rasa changed on one user-event object after it was logged."""

    event: UserUttered
    entities: list[JSONDict]
    use_text_for_featurization: bool | None


Apply = Callable[["Folder", Head, Any], None]


class Folder:
    """Applies events to heads for one conversation (knows its slots and event mutations)."""

    __slots__ = ("accepts_any_slot", "mutations", "slot_keys")

    def __init__(self, initial_slots: dict[str, Any] | None) -> None:
        self.accepts_any_slot = initial_slots is None
        self.slot_keys: dict[str, Any] = dict(initial_slots or {})
        self.mutations: dict[int, Mutation] = {}

    def apply(self, head: Head, event: Event) -> None:
        """Rasa's ``event.apply_to(tracker)`` on ``head``."""
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, head, event)

    def reset(self, head: Head) -> None:
        """Rasa's ``tracker._reset()``: a fresh state (slots back to initial values)."""
        head.slots, head.owned, head.paused = {}, True, False
        head.action, head.followup, head.loop = {}, ACTION_LISTEN, None
        head.message, head.bot = UserUttered.create(), BotUttered()

    def slot_values(self, head: Head) -> dict[str, Any]:
        values = head.slots
        return {key: values.get(key, initial) for key, initial in self.slot_keys.items()}

    def mutation(self, message: UserUttered) -> Mutation:
        found = self.mutations.get(id(message))
        if found is None:
            found = Mutation(message, list(message.entities), message.featurized_by_text)
            self.mutations[id(message)] = found
        return found

    def live_entities(self, message: UserUttered) -> list[JSONDict]:
        found = self.mutations.get(id(message))
        return message.entities if found is None else found.entities

    def featurized_by_text(self, message: UserUttered) -> bool | None:
        found = self.mutations.get(id(message))
        return message.featurized_by_text if found is None else found.use_text_for_featurization

    def set_slot(self, head: Head, key: str, value: Any) -> None:
        if key not in self.slot_keys:
            if not self.accepts_any_slot:
                return
            self.slot_keys[key] = None
        if not head.owned:
            head.slots, head.owned = dict(head.slots), True
        head.slots[key] = value


def _user(folder: Folder, head: Head, event: UserUttered) -> None:
    head.message = event
    head.followup = None


def _featurization(folder: Folder, head: Head, event: DefinePrevUserUtteredFeaturization) -> None:
    if head.action_name == ACTION_LISTEN:
        folder.mutation(head.message).use_text_for_featurization = event.use_text_for_featurization


def _entities(folder: Folder, head: Head, event: EntitiesAdded) -> None:
    if head.action_name != ACTION_LISTEN:
        return
    live = folder.mutation(head.message).entities
    for entity in event.entities:
        if entity not in live:
            live.append(entity)


def _bot(folder: Folder, head: Head, event: BotUttered) -> None:
    head.bot = event


def _action(folder: Folder, head: Head, event: ActionExecuted) -> None:
    name = event.action_name
    head.action = {"action_name": name} if name else {"action_text": event.action_text}
    loop_name = head.loop_name
    if loop_name:
        loop = head.loop
        assert loop is not None
        rejected = False if name == loop_name else loop.rejected
        if loop.is_interrupted or rejected != loop.rejected:
            head.loop = loop._replace(is_interrupted=False, rejected=rejected)
    head.followup = None


def _slot(folder: Folder, head: Head, event: SlotSet) -> None:
    folder.set_slot(head, event.key, event.value)


def _reset_slots(folder: Folder, head: Head, event: AllSlotsReset) -> None:
    head.slots, head.owned = {}, True


def _restart(folder: Folder, head: Head, event: Restarted) -> None:
    folder.reset(head)
    head.followup = ACTION_SESSION_START


def _session_started(folder: Folder, head: Head, event: SessionStarted) -> None:
    folder.reset(head)


def _pause(folder: Folder, head: Head, event: ConversationPaused) -> None:
    head.paused = True


def _resume(folder: Folder, head: Head, event: ConversationResumed) -> None:
    head.paused = False


def _followup(folder: Folder, head: Head, event: FollowupAction) -> None:
    head.followup = event.action_name


def _active_loop(folder: Folder, head: Head, event: ActiveLoop) -> None:
    if event.name is None:
        head.loop = None
    else:
        head.loop = LoopState(event.name, False, False, head.message.parse_data)


def _interrupted(folder: Folder, head: Head, event: LoopInterrupted) -> None:
    if head.loop is not None:
        head.loop = head.loop._replace(is_interrupted=event.is_interrupted)


def _rejected(folder: Folder, head: Head, event: ActionExecutionRejected) -> None:
    loop_name = head.loop_name
    if loop_name and event.action_name == loop_name and head.loop is not None:
        head.loop = head.loop._replace(rejected=True)


_HANDLERS: dict[type[Any], Apply] = {
    UserUttered: _user,
    DefinePrevUserUtteredFeaturization: _featurization,
    EntitiesAdded: _entities,
    BotUttered: _bot,
    ActionExecuted: _action,
    SlotSet: _slot,
    AllSlotsReset: _reset_slots,
    Restarted: _restart,
    SessionStarted: _session_started,
    ConversationPaused: _pause,
    ConversationResumed: _resume,
    FollowupAction: _followup,
    ActiveLoop: _active_loop,
    LoopInterrupted: _interrupted,
    ActionExecutionRejected: _rejected,
}
