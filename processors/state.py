"""The compact tracker state (the "head") and how each event changes it.

Rules of this module:

* ``Head`` is everything ``current_state()`` needs and nothing that grows with the conversation.
  Snapshots of it are cheap: the slot dict is shared copy-on-write (``owned`` says whether this
  head may write to it), the other fields are immutable values (the latest action is kept as
  its event; Rasa's ``latest_action`` dict is built when asked for).
* ``Folder.apply(head, event)`` is Rasa's ``apply_to`` for one event, by an explicit table of
  per-type functions. Reverts and the applied list are the tracker's business, not this module's.
* Rasa mutates user-event objects after the fact (``entities`` adds entities to the latest
  message, ``user_featurization`` sets its featurization flag) and those mutations outlive reverts.
  ``Folder`` records them per event object, so every view of the event sees them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, NamedTuple

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
    build_small,
)

SHOULD_NOT_BE_SET = "should_not_be_set"


class LoopState(NamedTuple):
    """The active loop: Rasa's ``TrackerActiveLoop`` (the trigger kept as the message itself,
    whose parse Rasa shows live: see ``Folder.parse_data``)."""

    name: str
    is_interrupted: bool
    rejected: bool
    trigger: UserUttered


Frozen = tuple[
    dict[str, Any],
    bool,
    "str | None",
    "ActionExecuted | None",
    UserUttered,
    BotUttered,
    "LoopState | None",
    int,
]
"""A head's state and the applied position it was taken at (one tuple per snapshot)."""

AT: Final = 7
"""Where in a ``Frozen`` snapshot its applied position is."""


def empty_bot() -> BotUttered:
    """``BotUttered()``, built without the frozen dataclass's slow ``__init__``."""
    return build_small(BotUttered, 0.0, {}, None, {})  # type: ignore[no-any-return]


class Head:
    """Mutable compact state; see the module rules."""

    __slots__ = ("action", "bot", "followup", "loop", "message", "owned", "paused", "slots")

    def __init__(self) -> None:
        self.slots: dict[str, Any] = {}
        self.owned = True
        self.paused = False
        self.followup: str | None = ACTION_LISTEN
        self.action: ActionExecuted | None = None
        self.message = UserUttered.create()
        self.bot = empty_bot()
        self.loop: LoopState | None = None

    def freeze(self, position: int) -> Frozen:
        """An immutable copy of this state, tagged with ``position``; the slot dict becomes
        shared copy-on-write."""
        self.owned = False
        return (
            self.slots,
            self.paused,
            self.followup,
            self.action,
            self.message,
            self.bot,
            self.loop,
            position,
        )

    @classmethod
    def thaw(cls, frozen: Frozen) -> Head:
        """A mutable head with a frozen state (its slot dict still shared copy-on-write)."""
        head = cls.__new__(cls)
        head.slots, head.paused, head.followup, head.action = (
            frozen[0],
            frozen[1],
            frozen[2],
            frozen[3],
        )
        head.message, head.bot, head.loop = frozen[4], frozen[5], frozen[6]
        head.owned = False
        return head

    @property
    def action_name(self) -> str | None:
        action = self.action
        return None if action is None else action.action_name or action.action_text

    def latest_action(self) -> dict[str, str | None]:
        """Rasa's ``latest_action``: ``{}``, ``{"action_name": …}`` or ``{"action_text": …}``."""
        action = self.action
        if action is None:
            return {}
        if action.action_name:
            return {"action_name": action.action_name}
        return {"action_text": action.action_text}

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
            or (self.action is not other.action and self.latest_action() != other.latest_action())
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


Apply = Callable[["Folder", Head, Any], None]


class Folder:
    """Applies events to heads for one conversation (knows its slots and event mutations)."""

    __slots__ = ("accepts_any_slot", "added_entities", "flags", "slot_keys")

    def __init__(self, initial_slots: dict[str, Any] | None) -> None:
        self.accepts_any_slot = initial_slots is None
        self.slot_keys: dict[str, Any] = dict(initial_slots or {})
        # id(user event) -> (the event, kept alive so the id stays unique; its mutated value)
        self.added_entities: dict[int, tuple[UserUttered, list[JSONDict]]] = {}
        self.flags: dict[int, tuple[UserUttered, bool | None]] = {}

    def apply(self, head: Head, event: Event) -> None:
        """Rasa's ``event.apply_to(tracker)`` on ``head``."""
        handler = HANDLERS.get(type(event))
        if handler is not None:
            handler(self, head, event)

    def reset(self, head: Head) -> None:
        """Rasa's ``tracker._reset()``: a fresh state (slots back to initial values)."""
        head.slots, head.owned, head.paused = {}, True, False
        head.action, head.followup, head.loop = None, ACTION_LISTEN, None
        head.message, head.bot = UserUttered.create(), empty_bot()

    def slot_values(self, head: Head) -> dict[str, Any]:
        values = head.slots
        return {key: values.get(key, initial) for key, initial in self.slot_keys.items()}

    def mutated(self, message: UserUttered) -> bool:
        key = id(message)
        return key in self.added_entities or key in self.flags

    def live_entities(self, message: UserUttered) -> list[JSONDict]:
        found = self.added_entities.get(id(message))
        return message.entities if found is None else found[1]

    def featurized_by_text(self, message: UserUttered) -> bool | None:
        found = self.flags.get(id(message))
        return message.featurized_by_text if found is None else found[1]

    def parse_data(self, message: UserUttered) -> JSONDict:
        """The message's parse as Rasa shows it now.

        A user event read from JSON with a non-empty entity list shares that list with its
        ``parse_data`` (Rasa passes ``parse_data["entities"]`` as the event's entities and the
        overlay puts the same list back), so entities merged into the message show in its
        parse as well; an event without entities gets a fresh list and its parse is unchanged.
        """
        found = self.added_entities.get(id(message))
        parse = message.parse_data
        if found is None or not message.entities or parse.get("entities") is not message.entities:
            return parse
        return {**parse, "entities": found[1]}

    def loop_dict(self, loop: LoopState | None) -> JSONDict:
        """Rasa's ``dataclasses.asdict(tracker.active_loop)``, or ``{}`` without a loop."""
        if loop is None:
            return {}
        return {
            "name": loop.name,
            "is_interrupted": loop.is_interrupted,
            "rejected": loop.rejected,
            "trigger_message": self.parse_data(loop.trigger),
        }

    def share_mutations(self, other: Folder) -> None:
        """Let ``other`` see this conversation's event mutations (they live on shared events)."""
        other.added_entities = dict(self.added_entities)
        other.flags = dict(self.flags)

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
        message = head.message
        folder.flags[id(message)] = (message, event.use_text_for_featurization)


def _entities(folder: Folder, head: Head, event: EntitiesAdded) -> None:
    if head.action_name != ACTION_LISTEN:
        return
    message = head.message
    found = folder.added_entities.get(id(message))
    if found is None:
        found = folder.added_entities[id(message)] = (message, list(message.entities))
    live = found[1]
    for entity in event.entities:
        if entity not in live:
            live.append(entity)


def _bot(folder: Folder, head: Head, event: BotUttered) -> None:
    head.bot = event


def _action(folder: Folder, head: Head, event: ActionExecuted) -> None:
    name = event.action_name
    head.action = event
    loop = head.loop
    if loop is not None:
        loop_name = head.loop_name
        # Rasa: a loop name resets the interruption; the loop's own action (compared with the
        # loop name, which is None for the training sentinel) resets the rejection.
        interrupted = False if loop_name else loop.is_interrupted
        rejected = False if (name or None) == loop_name else loop.rejected
        if interrupted != loop.is_interrupted or rejected != loop.rejected:
            head.loop = loop._replace(is_interrupted=interrupted, rejected=rejected)
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
        head.loop = LoopState(event.name, False, False, head.message)


def _interrupted(folder: Folder, head: Head, event: LoopInterrupted) -> None:
    if head.loop is not None:
        head.loop = head.loop._replace(is_interrupted=event.is_interrupted)


def _rejected(folder: Folder, head: Head, event: ActionExecutionRejected) -> None:
    if head.loop is not None and event.action_name == head.loop_name:
        head.loop = head.loop._replace(rejected=True)


HANDLERS: dict[type[Any], Apply] = {
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
