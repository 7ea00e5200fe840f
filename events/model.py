"""Rasa dialogue events as frozen values: one class per Rasa 3.6 event type.

Rules of this module:

* Every class is a frozen, slotted dataclass tagged with Rasa's ``event`` string (``TAG``).
  ``Event`` is the closed union of all of them; the wire format (``events.wire``) maps tags to
  classes with an explicit table.
* ``timestamp`` is Unix epoch seconds. ``0.0`` means "not stamped yet", exactly like Rasa, which
  treats any falsy timestamp as "now": whoever logs the event (the decoder, a publisher) stamps it
  with the time it is given. Nothing here reads the clock.
* Dict and list fields hold JSON data as decoded. They are shared, never copied (the compiled
  decoder even gives records with equal ``metadata`` one dict), so treat them as read-only; the
  tracker never mutates them.
* Legacy forms are read into the 3.6 classes, as Rasa does: ``form`` -> ``ActiveLoop``,
  ``form_validation`` -> ``LoopInterrupted``; a rasa_core 0.14 ``reminder`` keeps the ``action``
  it names in ``ReminderScheduled.action``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, ClassVar, TypeAlias

JSONDict: TypeAlias = dict[str, Any]

ACTION_LISTEN = "action_listen"
ACTION_SESSION_START = "action_session_start"
EXTERNAL_MESSAGE_PREFIX = "EXTERNAL: "


@dataclass(frozen=True, slots=True, kw_only=True)
class _Base:
    """Fields every event has."""

    TAG: ClassVar[str]

    timestamp: float = 0.0
    metadata: JSONDict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UserUttered(_Base):
    """``user``: the user said something (text and/or an NLU parse).

    ``parse_data`` is the complete parse as Rasa builds it: intent, entities, text, message_id and
    metadata, overlaid with every key of the parse that was supplied. Build one with
    :meth:`create` to get that construction; the decoder builds it the same way.
    """

    TAG: ClassVar[str] = "user"

    text: str | None = None
    intent: JSONDict = field(default_factory=dict)
    entities: list[JSONDict] = field(default_factory=list)
    parse_data: JSONDict = field(default_factory=dict)
    input_channel: str | None = None
    message_id: str | None = None

    @classmethod
    def create(
        cls,
        text: str | None = None,
        intent: JSONDict | None = None,
        entities: list[JSONDict] | None = None,
        parse_data: JSONDict | None = None,
        *,
        timestamp: float = 0.0,
        input_channel: str | None = None,
        message_id: str | None = None,
        metadata: JSONDict | None = None,
    ) -> UserUttered:
        """Build a user event the way Rasa's constructor does (``parse_data`` assembled)."""
        intent = intent or {}
        entities = entities or []
        metadata = metadata or {}
        full: JSONDict = {
            "intent": intent,
            "entities": list(entities),
            "text": text,
            "message_id": message_id,
            "metadata": metadata,
        }
        if parse_data:
            full.update(parse_data)
        return build_user(
            timestamp, metadata, text, intent, entities, full, input_channel, message_id
        )

    @classmethod
    def create_external(
        cls,
        intent: str,
        entities: list[JSONDict] | None = None,
        *,
        input_channel: str | None = None,
        timestamp: float = 0.0,
    ) -> UserUttered:
        """The message Rasa logs when a reminder or an external intent fires."""
        return cls.create(
            f"{EXTERNAL_MESSAGE_PREFIX}{intent}",
            {"name": intent},
            entities,
            timestamp=timestamp,
            input_channel=input_channel,
            metadata={"is_external": True},
        )

    @property
    def intent_name(self) -> str | None:
        name = self.intent.get("name")
        return name if isinstance(name, str) else None

    @property
    def full_retrieval_intent_name(self) -> str | None:
        name = self.intent.get("full_retrieval_intent_name")
        return name if isinstance(name, str) else None

    @property
    def featurized_by_text(self) -> bool | None:
        """Rasa's initial ``use_text_for_featurization`` (``user_featurization`` may change it)."""
        if self.text and not self.intent_name:
            return True
        if self.intent_name and not self.text:
            return False
        return None


@dataclass(frozen=True, slots=True)
class DefinePrevUserUtteredFeaturization(_Base):
    """``user_featurization``: whether the last user message is featurized by its text."""

    TAG: ClassVar[str] = "user_featurization"

    use_text_for_featurization: bool | None = None


@dataclass(frozen=True, slots=True)
class EntitiesAdded(_Base):
    """``entities``: entities added to the latest user message (by a policy)."""

    TAG: ClassVar[str] = "entities"

    entities: list[JSONDict] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class BotUttered(_Base):
    """``bot``: the bot said something."""

    TAG: ClassVar[str] = "bot"

    text: str | None = None
    data: JSONDict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AgentUttered(_Base):
    """``agent``: a human agent said something (no effect on the tracker)."""

    TAG: ClassVar[str] = "agent"

    text: str | None = None
    data: Any = None


@dataclass(frozen=True, slots=True)
class ActionExecuted(_Base):
    """``action``: an action ran (``action_text`` instead of a name for end-to-end bot turns)."""

    TAG: ClassVar[str] = "action"

    action_name: str | None = None
    policy: str | None = None
    confidence: float | None = None
    action_text: str | None = None
    hide_rule_turn: bool = False

    def __post_init__(self) -> None:
        if self.action_name is None and self.action_text is None:
            raise ValueError("an action event needs an action name or an action text")


@dataclass(frozen=True, slots=True)
class SlotSet(_Base):
    """``slot``: a slot was set to a value (any JSON value)."""

    TAG: ClassVar[str] = "slot"

    key: str
    value: Any = None


@dataclass(frozen=True, slots=True)
class AllSlotsReset(_Base):
    """``reset_slots``: every slot back to its initial value."""

    TAG: ClassVar[str] = "reset_slots"


@dataclass(frozen=True, slots=True)
class Restarted(_Base):
    """``restart``: the conversation starts over; Rasa then runs ``action_session_start``."""

    TAG: ClassVar[str] = "restart"


@dataclass(frozen=True, slots=True)
class UserUtteranceReverted(_Base):
    """``rewind``: undo the last user message and everything after it (and its listen)."""

    TAG: ClassVar[str] = "rewind"


@dataclass(frozen=True, slots=True)
class ActionReverted(_Base):
    """``undo``: undo the last action and everything after it."""

    TAG: ClassVar[str] = "undo"


@dataclass(frozen=True, slots=True)
class ConversationPaused(_Base):
    """``pause``: a human takes over; the bot stops predicting."""

    TAG: ClassVar[str] = "pause"


@dataclass(frozen=True, slots=True)
class ConversationResumed(_Base):
    """``resume``: the bot takes over again."""

    TAG: ClassVar[str] = "resume"


@dataclass(frozen=True, slots=True)
class FollowupAction(_Base):
    """``followup``: the next action to run, without asking the policies."""

    TAG: ClassVar[str] = "followup"

    action_name: str | None = None


@dataclass(frozen=True, slots=True)
class ReminderScheduled(_Base):
    """``reminder``: trigger ``intent`` (or, rasa_core 0.14, run ``action``) at a date-time."""

    TAG: ClassVar[str] = "reminder"

    intent: str | None
    trigger_date_time: datetime
    name: str
    entities: list[JSONDict] | JSONDict | None = None
    kill_on_user_message: bool = True
    action: str | None = None


@dataclass(frozen=True, slots=True)
class ReminderCancelled(_Base):
    """``cancel_reminder``: cancel reminders matching every given selector (none: all of them).

    Rasa's own serialisation drops the selectors; trackerflow keeps them as extra keys.
    """

    TAG: ClassVar[str] = "cancel_reminder"

    name: str | None = None
    intent: str | None = None
    entities: list[JSONDict] | JSONDict | None = None


@dataclass(frozen=True, slots=True)
class StoryExported(_Base):
    """``export``: export the conversation as a story (the path is kept as an extra key)."""

    TAG: ClassVar[str] = "export"

    path: str | None = None


@dataclass(frozen=True, slots=True)
class SessionStarted(_Base):
    """``session_started``: a new session begins (state reset; carried slots follow)."""

    TAG: ClassVar[str] = "session_started"


@dataclass(frozen=True, slots=True)
class ActiveLoop(_Base):
    """``active_loop`` (legacy ``form``): activate the loop ``name``, or deactivate with None."""

    TAG: ClassVar[str] = "active_loop"

    name: str | None = None


@dataclass(frozen=True, slots=True)
class LoopInterrupted(_Base):
    """``loop_interrupted`` (legacy ``form_validation`` with ``validate = not is_interrupted``)."""

    TAG: ClassVar[str] = "loop_interrupted"

    is_interrupted: bool = False


@dataclass(frozen=True, slots=True)
class ActionExecutionRejected(_Base):
    """``action_execution_rejected``: an action refused to run (e.g. a form rejected input)."""

    TAG: ClassVar[str] = "action_execution_rejected"

    action_name: str | None = None
    policy: str | None = None
    confidence: float | None = None


Event: TypeAlias = (
    UserUttered
    | DefinePrevUserUtteredFeaturization
    | EntitiesAdded
    | BotUttered
    | AgentUttered
    | ActionExecuted
    | SlotSet
    | AllSlotsReset
    | Restarted
    | UserUtteranceReverted
    | ActionReverted
    | ConversationPaused
    | ConversationResumed
    | FollowupAction
    | ReminderScheduled
    | ReminderCancelled
    | StoryExported
    | SessionStarted
    | ActiveLoop
    | LoopInterrupted
    | ActionExecutionRejected
)

EVENT_TYPES: tuple[type[Event], ...] = (
    UserUttered,
    DefinePrevUserUtteredFeaturization,
    EntitiesAdded,
    BotUttered,
    AgentUttered,
    ActionExecuted,
    SlotSet,
    AllSlotsReset,
    Restarted,
    UserUtteranceReverted,
    ActionReverted,
    ConversationPaused,
    ConversationResumed,
    FollowupAction,
    ReminderScheduled,
    ReminderCancelled,
    StoryExported,
    SessionStarted,
    ActiveLoop,
    LoopInterrupted,
    ActionExecutionRejected,
)


def stamped(event: Event, now: float) -> Event:
    """The event with ``now`` as its timestamp if it has none yet (Rasa's falsy-timestamp rule)."""
    if event.timestamp:
        return event
    return replace(event, timestamp=now)


# -- fast construction for the decoder ---------------------------------------------------------
#
# A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``, which costs
# more than parsing the JSON. The decoder, which has already checked every value, builds the
# frequent event types through their slot descriptors instead: same objects, same equality.


Setter = Callable[[Any, Any], None]


def _setters(cls: type[Any], *names: str) -> tuple[Setter, ...]:
    """The slot descriptors' ``__set__`` of ``cls`` for ``names`` (they skip the frozen guard)."""
    return tuple(getattr(cls, name).__set__ for name in ("timestamp", "metadata", *names))


_USER = _setters(
    UserUttered, "text", "intent", "entities", "parse_data", "input_channel", "message_id"
)
_ACTION = _setters(
    ActionExecuted, "action_name", "policy", "confidence", "action_text", "hide_rule_turn"
)
_SMALL: dict[type[Any], tuple[Setter, ...]] = {
    SlotSet: _setters(SlotSet, "key", "value"),
    BotUttered: _setters(BotUttered, "text", "data"),
    DefinePrevUserUtteredFeaturization: _setters(
        DefinePrevUserUtteredFeaturization, "use_text_for_featurization"
    ),
}


def build_user(
    timestamp: float,
    metadata: JSONDict,
    text: str | None,
    intent: JSONDict,
    entities: list[JSONDict],
    parse_data: JSONDict,
    input_channel: str | None,
    message_id: str | None,
    *,
    _new: Any = object.__new__,
    _set: tuple[Setter, ...] = _USER,
) -> UserUttered:
    """A ``UserUttered`` from checked values (``parse_data`` already complete)."""
    event: UserUttered = _new(UserUttered)
    _set[0](event, timestamp)
    _set[1](event, metadata)
    _set[2](event, text)
    _set[3](event, intent)
    _set[4](event, entities)
    _set[5](event, parse_data)
    _set[6](event, input_channel)
    _set[7](event, message_id)
    return event


def build_action(
    timestamp: float,
    metadata: JSONDict,
    action_name: str | None,
    policy: str | None,
    confidence: float | None,
    action_text: str | None,
    hide_rule_turn: bool,
    *,
    _new: Any = object.__new__,
    _set: tuple[Setter, ...] = _ACTION,
) -> ActionExecuted:
    """An ``ActionExecuted`` from checked values (a name or a text is present)."""
    event: ActionExecuted = _new(ActionExecuted)
    _set[0](event, timestamp)
    _set[1](event, metadata)
    _set[2](event, action_name)
    _set[3](event, policy)
    _set[4](event, confidence)
    _set[5](event, action_text)
    _set[6](event, hide_rule_turn)
    return event


def build_small(
    cls: type[Any], timestamp: float, metadata: JSONDict, first: Any, second: Any = None
) -> Any:
    """A ``SlotSet``, ``BotUttered`` or ``DefinePrevUserUtteredFeaturization``, values checked."""
    event = object.__new__(cls)
    setters = _SMALL[cls]
    setters[0](event, timestamp)
    setters[1](event, metadata)
    setters[2](event, first)
    if len(setters) > 3:
        setters[3](event, second)
    return event
