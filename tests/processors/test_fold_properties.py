"""Property tests of the tracker fold, and a naive reference model of Rasa's tracker.

``NaiveTracker`` below re-implements rasa-semantics.md straight from the text, as slowly and
literally as possible: ``applied()`` runs the §2.3 pseudo-code over the whole event window every
time it is asked, a rewind/undo is "reset, then re-apply every applied event" (§1.2), and every
other event is applied per its §1.2 ``apply_to``. Where Rasa mutates objects, the model keeps the
same mutable parts: a user message's live entity list and featurization flag belong to that
logged event *object* and survive replays (Rasa re-applies the very same ``UserUttered``), and
trackers made from a tracker (init_copy, copy, time travel, prior trackers) apply the same
objects, so they see those mutations too; a reset creates a new empty message. The fast tracker
(snapshots, incremental bookkeeping) must agree with it after every single event of every
generated conversation.

Generated conversations mix realistic turns (listen + user + featurization + entities, bot turns,
forms that activate, continue happily, get rejected / interrupted and end, fallbacks with rewinds,
restarts, session starts carrying slots) with arbitrary single events in arbitrary order.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.model import (
    ACTION_LISTEN,
    ACTION_SESSION_START,
    ActionExecuted,
    ActionExecutionRejected,
    ActionReverted,
    ActiveLoop,
    AgentUttered,
    AllSlotsReset,
    BotUttered,
    ConversationPaused,
    ConversationResumed,
    DefinePrevUserUtteredFeaturization,
    EntitiesAdded,
    Event,
    FollowupAction,
    LoopInterrupted,
    ReminderCancelled,
    ReminderScheduled,
    Restarted,
    SessionStarted,
    SlotSet,
    StoryExported,
    UserUtteranceReverted,
    UserUttered,
)
from processors import Dialogue, DialogueStateTracker, Domain, EventVerbosity, apply, fold
from tests.processors.conftest import ids, render, seq, wire_ids

SHOULD_NOT_BE_SET = "should_not_be_set"
JSONDict = dict[str, Any]

# =================================================================================================
# The reference model
# =================================================================================================


def _empty_parse_data() -> JSONDict:
    """``UserUttered.empty().parse_data`` (§2.1)."""
    return {"intent": {}, "entities": [], "text": None, "message_id": None, "metadata": {}}


@dataclass
class _Message:
    """A user message as Rasa's tracker holds it: the logged event plus what Rasa mutates."""

    event: UserUttered | None  # None: the empty message a reset creates
    entities: list[JSONDict]
    use_text: bool | None
    parse_data: JSONDict = field(default_factory=_empty_parse_data)


def _pop_through(acc: list[tuple[int, Event]], kind: type) -> None:
    """§2.3: pop from the end up to and including the last event of ``kind`` (or everything)."""
    while acc:
        _, event = acc.pop()
        if isinstance(event, kind):
            return


def _first_run_or_unhappy(loop: str | None, acc: list[tuple[int, Event]]) -> bool:
    """§2.3 ``first_run_or_unhappy``, rule by rule."""
    next_action: str | None = None
    for _, event in reversed(acc):
        if isinstance(event, ActiveLoop) and event.name is None:
            return True
        if isinstance(event, ActionExecutionRejected) and event.action_name == loop:
            return True
        if isinstance(event, UserUttered) and next_action is not None and next_action != loop:
            return True
        if isinstance(event, ActionExecuted):
            if event.action_name == loop:
                return False
            next_action = event.action_name
    return True


def _prune(acc: list[tuple[int, Event]], loop: str | None) -> None:
    """§2.3: back to (not including) the previous run of ``loop``, drop actions, user messages
    and user_featurization events; keep every other kind."""
    kept: list[tuple[int, Event]] = []
    while acc:
        event = acc[-1][1]
        if isinstance(event, ActionExecuted) and event.action_name == loop:
            break
        item = acc.pop()
        if not isinstance(event, ActionExecuted | UserUttered | DefinePrevUserUtteredFeaturization):
            kept.append(item)
    acc.extend(reversed(kept))


def naive_applied(events: Sequence[tuple[int, Event]]) -> list[tuple[int, Event]]:
    """§2.3 ``applied_events()``, recomputed from scratch over all the events."""
    loop_names = {e.name for _, e in events if isinstance(e, ActiveLoop) and e.name}
    acc: list[tuple[int, Event]] = []
    for item in events:
        event = item[1]
        if isinstance(event, Restarted | SessionStarted):
            acc = []
        elif isinstance(event, ActionReverted):
            _pop_through(acc, ActionExecuted)
        elif isinstance(event, UserUtteranceReverted):
            _pop_through(acc, UserUttered)
            _pop_through(acc, ActionExecuted)
        elif (
            isinstance(event, ActionExecuted)
            and event.action_name in loop_names
            and not _first_run_or_unhappy(event.action_name, acc)
        ):
            _prune(acc, event.action_name)
        else:
            acc.append(item)
    return acc


class NaiveTracker:
    """Rasa 3.6's ``DialogueStateTracker``, naively (see the module docstring)."""

    def __init__(
        self,
        sender_id: str,
        slot_defaults: dict[str, Any] | None,
        max_event_history: int | None = None,
        messages: dict[int, _Message] | None = None,
    ) -> None:
        self.sender_id = sender_id
        self.any_slots = slot_defaults is None  # Rasa's AnySlotDict (§2.10)
        self.defaults = dict(slot_defaults or {})
        self.slots: dict[str, Any] = dict(self.defaults)
        self.events: deque[tuple[int, Event]] = deque(maxlen=max_event_history)
        # id(user event) -> what Rasa mutated on that object (shared by trackers made from this one)
        self.messages: dict[int, _Message] = {} if messages is None else messages
        self.count = 0
        self._reset()

    def _reset(self) -> None:
        """Rasa's ``_reset()``: slots to initial values (on-demand slots stay, as None)."""
        self.slots = {key: self.defaults.get(key) for key in self.slots}
        self.paused = False
        self.latest_action: dict[str, str] = {}
        self.message = _Message(None, [], None)
        self.bot: tuple[str | None, JSONDict] = (None, {})
        self.followup: str | None = ACTION_LISTEN
        self.loop: JSONDict | None = None

    def update(self, event: Event) -> None:
        self.events.append((self.count, event))
        self._apply(event)
        self.count += 1

    def applied(self) -> list[Event]:
        return [event for _, event in naive_applied(list(self.events))]

    def replay(self) -> None:
        """``_reset()`` + apply every applied event (rewind, undo, recreate_from_dialogue)."""
        self._reset()
        for _, event in naive_applied(list(self.events)):
            self._apply(event)

    # -- §1.2 apply_to ----------------------------------------------------------------------------

    def latest_action_name(self) -> str | None:
        return self.latest_action.get("action_name") or self.latest_action.get("action_text")

    def loop_name(self) -> str | None:
        if self.loop is None or self.loop["name"] == SHOULD_NOT_BE_SET:
            return None
        return str(self.loop["name"])

    def _apply(self, event: Event) -> None:
        if isinstance(event, UserUtteranceReverted | ActionReverted):
            self.replay()
        elif isinstance(event, Restarted):
            self._reset()
            self.followup = ACTION_SESSION_START
        elif isinstance(event, SessionStarted):
            self._reset()
        elif isinstance(event, UserUttered):
            self.message = self.messages.setdefault(
                id(event),
                _Message(event, list(event.entities), event.featurized_by_text, event.parse_data),
            )
            self.followup = None
        elif isinstance(event, ActionExecuted):
            self._apply_action(event)
        else:
            self._apply_other(event)

    def _apply_action(self, event: ActionExecuted) -> None:
        if event.action_name:
            self.latest_action = {"action_name": event.action_name}
        else:
            self.latest_action = {"action_text": str(event.action_text)}
        if self.loop is not None and self.loop_name():
            self.loop["is_interrupted"] = False
        if self.loop is not None and self.latest_action.get("action_name") == self.loop_name():
            self.loop["rejected"] = False
        self.followup = None

    def _apply_other(self, event: Event) -> None:
        listening = self.latest_action_name() == ACTION_LISTEN
        if isinstance(event, EntitiesAdded) and listening:
            for entity in event.entities:
                if entity not in self.message.entities:
                    self.message.entities.append(entity)
        elif isinstance(event, DefinePrevUserUtteredFeaturization) and listening:
            self.message.use_text = event.use_text_for_featurization
        elif isinstance(event, SlotSet) and (self.any_slots or event.key in self.slots):
            self.slots[event.key] = event.value
        elif isinstance(event, AllSlotsReset):
            self.slots = {key: self.defaults.get(key) for key in self.slots}
        elif isinstance(event, ConversationPaused | ConversationResumed):
            self.paused = isinstance(event, ConversationPaused)
        elif isinstance(event, FollowupAction):
            self.followup = event.action_name
        elif isinstance(event, BotUttered):
            self.bot = (event.text, event.data)
        elif isinstance(event, ActiveLoop):
            self.loop = None
            if event.name is not None:
                self.loop = {
                    "name": event.name,
                    "is_interrupted": False,
                    "rejected": False,
                    "trigger_message": self.message.parse_data,
                }
        elif isinstance(event, LoopInterrupted) and self.loop is not None:
            self.loop["is_interrupted"] = event.is_interrupted
        elif (
            isinstance(event, ActionExecutionRejected)
            and self.loop is not None
            and event.action_name == self.loop_name()
        ):
            self.loop["rejected"] = True

    # -- §2.5 current_state -----------------------------------------------------------------------

    def events_for(self, verbosity: EventVerbosity) -> list[tuple[str, float]] | None:
        window = [event for _, event in self.events]
        if verbosity is EventVerbosity.ALL:
            return ids(window)
        if verbosity is EventVerbosity.AFTER_RESTART:
            restarts = [i for i, e in enumerate(window) if isinstance(e, Restarted)]
            return ids(window[restarts[-1] + 1 :] if restarts else window)
        if verbosity is EventVerbosity.APPLIED:
            return ids(self.applied())
        return None

    def state(self, verbosity: EventVerbosity = EventVerbosity.NONE) -> JSONDict:
        window = [event for _, event in self.events]
        users = [e for e in window if isinstance(e, UserUttered)]
        return {
            "sender_id": self.sender_id,
            "slots": dict(self.slots),
            "latest_message": {**self.message.parse_data, "entities": list(self.message.entities)},
            "latest_event_time": window[-1].timestamp if window else None,
            "followup_action": self.followup,
            "paused": self.paused,
            "events": self.events_for(verbosity),
            "latest_input_channel": users[-1].input_channel if users else None,
            "active_loop": dict(self.loop) if self.loop else {},
            "latest_action": dict(self.latest_action),
            "latest_action_name": self.latest_action_name(),
        }

    def user_views(self) -> dict[int, tuple[list[JSONDict], bool | None]]:
        """Window index -> (live entities, featurization flag) of every user event."""
        views = {}
        for index, (_, event) in enumerate(self.events):
            if isinstance(event, UserUttered):
                message = self.messages[id(event)]
                views[index] = (message.entities, message.use_text)
        return views


# =================================================================================================
# Comparing the fast tracker with the model
# =================================================================================================


def split_state(state: JSONDict) -> tuple[JSONDict, list[tuple[str, float]] | None]:
    rest = dict(state)
    events = rest.pop("events")
    return rest, (None if events is None else wire_ids(events))


def assert_agrees(
    fast: DialogueStateTracker, naive: NaiveTracker, verbosities: Sequence[EventVerbosity]
) -> None:
    for verbosity in verbosities:
        fast_state, fast_events = split_state(fast.current_state(verbosity))
        naive_state = naive.state(verbosity)
        naive_events = naive_state.pop("events")
        assert fast_state == naive_state, verbosity
        assert fast_events == naive_events, verbosity
    bot = fast.latest_bot_utterance
    assert (bot.text, bot.data) == naive.bot


# =================================================================================================
# Generated conversations
# =================================================================================================

LOOPS = ("my_form", "other_form")
TEXTS = st.sampled_from(["hi", "bye", "a", "b", "I live in Berlin"])
INTENTS = st.sampled_from(["greet", "inform", "request", "chitchat", "faq/ask_name"])
ENTITIES: st.SearchStrategy[JSONDict] = st.sampled_from(
    [
        {"entity": "city", "value": "Berlin", "start": 10, "end": 16},
        {"entity": "city", "value": "Paris", "role": "to"},
        {"entity": "name", "value": "Bob", "group": "1"},
        {"entity": "name", "value": "Ann"},
    ]
)
ACTIONS = st.sampled_from(
    [
        "utter_a",
        "utter_b",
        *LOOPS,
        "action_default_fallback",
        ACTION_LISTEN,
        ACTION_SESSION_START,
        "action_restart",
    ]
)
SLOT_KEYS = st.sampled_from(
    ["name", "city", "a", "requested_slot", "unknown", "session_started_metadata"]
)
SLOT_VALUES = st.sampled_from([None, "x", "y", 1, 2.5, True, ["l"], {"k": "v"}])
LISTEN = ActionExecuted(ACTION_LISTEN)


@st.composite
def user_messages(draw: st.DrawFn) -> UserUttered:
    intent = draw(st.none() | INTENTS)
    return UserUttered.create(
        draw(st.none() | TEXTS),
        {"name": intent, "confidence": 0.9} if intent else None,
        draw(st.lists(ENTITIES, max_size=2)),
        draw(st.none() | st.just({"intent_ranking": []})),
        input_channel=draw(st.sampled_from([None, "rest", "slack"])),
        message_id=draw(st.none() | st.just("m1")),
    )


def _reminder(intent: str) -> ReminderScheduled:
    return ReminderScheduled(intent, datetime(2030, 1, 1), "r1")  # noqa: DTZ001


SINGLE_EVENTS: st.SearchStrategy[Event] = st.one_of(
    st.just(LISTEN),
    user_messages(),
    st.builds(ActionExecuted, ACTIONS),
    st.builds(lambda text: ActionExecuted(action_text=text), TEXTS),
    st.builds(BotUttered, TEXTS),
    st.builds(SlotSet, SLOT_KEYS, SLOT_VALUES),
    st.sampled_from(
        [
            AllSlotsReset(),
            Restarted(),
            UserUtteranceReverted(),
            ActionReverted(),
            ConversationPaused(),
            ConversationResumed(),
            SessionStarted(),
            AgentUttered("agent", None),
            StoryExported(),
            ReminderCancelled(),
        ]
    ),
    st.sampled_from([UserUtteranceReverted(), ActionReverted()]),
    st.builds(_reminder, INTENTS),
    st.builds(FollowupAction, st.none() | ACTIONS),
    st.builds(ActiveLoop, st.none() | st.sampled_from([*LOOPS, SHOULD_NOT_BE_SET])),
    st.builds(LoopInterrupted, st.booleans()),
    st.builds(ActionExecutionRejected, st.none() | st.sampled_from([*LOOPS, "utter_a"])),
    st.builds(EntitiesAdded, st.lists(ENTITIES, max_size=2)),
    st.builds(DefinePrevUserUtteredFeaturization, st.none() | st.booleans()),
)


@st.composite
def user_turn(draw: st.DrawFn) -> list[Event]:
    """L, a user message, maybe the policy's featurization and entities, maybe slot extraction."""
    turn: list[Event] = [LISTEN, draw(user_messages())]
    if draw(st.booleans()):
        turn.append(EntitiesAdded(draw(st.lists(ENTITIES, min_size=1, max_size=2))))
    turn.extend(draw(st.lists(st.builds(SlotSet, SLOT_KEYS, SLOT_VALUES), max_size=1)))
    if draw(st.booleans()):
        turn.append(DefinePrevUserUtteredFeaturization(draw(st.booleans())))
    return turn


@st.composite
def bot_turn(draw: st.DrawFn) -> list[Event]:
    return [ActionExecuted(draw(st.sampled_from(["utter_a", "utter_b"]))), BotUttered("ok")]


@st.composite
def form_turn(draw: st.DrawFn) -> list[Event]:
    """A form runs: first activation, a happy continuation, an unhappy path, or the end."""
    loop = draw(st.sampled_from(LOOPS))
    kind = draw(st.sampled_from(["start", "continue", "reject", "interrupt", "end"]))
    run = ActionExecuted(loop)
    if kind == "start":
        return [run, ActiveLoop(loop), SlotSet("requested_slot", "a"), BotUttered("ask a")]
    if kind == "continue":
        return [
            *draw(user_turn()),
            run,
            SlotSet("a", draw(SLOT_VALUES)),
            SlotSet("requested_slot", "b"),
        ]
    if kind == "reject":
        return [*draw(user_turn()), ActionExecutionRejected(loop), ActionExecuted("utter_chitchat")]
    if kind == "interrupt":
        return [LoopInterrupted(True), run, LoopInterrupted(False)]
    return [run, SlotSet("requested_slot", None), ActiveLoop(None), ActionExecuted("utter_done")]


@st.composite
def session_turn(draw: st.DrawFn) -> list[Event]:
    """action_session_start's events: the session start, carried-over slots, a listen."""
    carried = draw(st.lists(st.builds(SlotSet, SLOT_KEYS, SLOT_VALUES), max_size=2))
    return [ActionExecuted(ACTION_SESSION_START), SessionStarted(), *carried, LISTEN]


@st.composite
def control_turn(draw: st.DrawFn) -> list[Event]:
    """Fallback rewinds, undos, restarts, pauses, followups."""
    return draw(
        st.sampled_from(
            [
                [ActionExecuted("action_default_fallback"), UserUtteranceReverted()],
                [ActionReverted()],
                [ActionExecuted("action_restart"), Restarted()],
                [ActionExecuted("utter_b"), BotUttered("b"), ActionReverted()],
                # a second listen, entities / featurization for the message before it, undone:
                # what they changed on that message outlives the undo (§1.2 entities)
                [LISTEN, EntitiesAdded([{"entity": "x", "value": 1}]), ActionReverted()],
                [LISTEN, DefinePrevUserUtteredFeaturization(True), ActionReverted()],
                [AllSlotsReset()],
                [ConversationPaused()],
                [ConversationResumed()],
                [FollowupAction("utter_b")],
            ]
        )
    )


TURNS: st.SearchStrategy[list[Event]] = st.one_of(
    user_turn(),
    bot_turn(),
    form_turn(),
    form_turn(),
    session_turn(),
    control_turn(),
    control_turn(),
    st.lists(SINGLE_EVENTS, min_size=1, max_size=3),
)


def stamp(events: Sequence[Event], start: float = 1.0) -> list[Event]:
    """Fresh objects with distinct increasing timestamps."""
    return [replace(event, timestamp=start + i) for i, event in enumerate(events)]


@st.composite
def conversations(draw: st.DrawFn, max_turns: int = 18) -> list[Event]:
    count = draw(st.integers(0, max_turns))  # uniform lengths (lists favour short ones)
    turns = [draw(TURNS) for _ in range(count)]
    return stamp([event for turn in turns for event in turn])


FORM_DOMAIN: JSONDict = {
    "slots": {
        "name": {"type": "text", "initial_value": "x"},
        "city": {"type": "text"},
        "a": {"type": "text"},
    },
    "forms": {"my_form": {"required_slots": ["a"]}},
}
PLAIN_DOMAIN: JSONDict = {"slots": {"name": {"type": "text"}, "city": {"type": "text"}}}
DOMAINS: dict[str, JSONDict | None] = {"none": None, "form": FORM_DOMAIN, "plain": PLAIN_DOMAIN}


def slot_defaults(domain: JSONDict | None) -> dict[str, Any] | None:
    """§2.10: the domain's slots at their initial values plus Rasa's default slots."""
    if domain is None:
        return None
    slots = {name: spec.get("initial_value") for name, spec in domain["slots"].items()}
    slots["session_started_metadata"] = None
    if domain.get("forms"):
        slots["requested_slot"] = None
    return slots


def trackers(
    sender_id: str, domain_key: str, history: int | None
) -> tuple[DialogueStateTracker, NaiveTracker]:
    spec = DOMAINS[domain_key]
    domain = None if spec is None else Domain.from_dict(spec)
    fast = DialogueStateTracker(sender_id, domain, max_event_history=history)
    return fast, NaiveTracker(sender_id, slot_defaults(spec), history)


DOMAIN_KEYS = st.sampled_from(sorted(DOMAINS))
HISTORIES = st.sampled_from([None, None, None, 2, 5, 9])
SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SOME = settings(SETTINGS, max_examples=100)


# =================================================================================================
# The properties
# =================================================================================================


@SETTINGS
@given(events=conversations(), domain_key=DOMAIN_KEYS, history=HISTORIES)
def test_fast_tracker_agrees_with_the_reference_model(
    events: list[Event], domain_key: str, history: int | None
) -> None:
    """The fast tracker equals the naive model after every event (state and applied events),
    and at the end in every verbosity."""
    fast, naive = trackers("ref", domain_key, history)
    for event in events:
        fast.update(event)
        naive.update(event)
        assert_agrees(fast, naive, [EventVerbosity.NONE])
        assert ids(fast.applied_events()) == ids(naive.applied())
    assert_agrees(fast, naive, list(EventVerbosity))
    assert fast.applied_events() == naive.applied()


@SOME
@given(events=conversations(), domain_key=DOMAIN_KEYS, history=HISTORIES)
def test_user_views_agree_with_the_reference_model(
    events: list[Event], domain_key: str, history: int | None
) -> None:
    """Live entities and featurization flags of every logged user message (story writing)."""
    fast, naive = trackers("ref", domain_key, history)
    for event in events:
        fast.update(event)
        naive.update(event)
    for index, (entities, use_text) in naive.user_views().items():
        view = fast.user_view(index)
        assert (view.entities, view.use_text_for_featurization) == (entities, use_text), index


@st.composite
def long_conversations(draw: st.DrawFn) -> list[Event]:
    """Long conversations (many more turns than a tracker keeps snapshots for) that end in a
    burst of reverts and new turns, so reverts reach far back."""
    turns: list[list[Event]] = []
    for _ in range(draw(st.integers(60, 160), label="turns")):
        turns.append(draw(st.one_of(user_turn(), bot_turn(), form_turn()), label="turn"))
    reverts: list[list[Event]] = [[UserUtteranceReverted()], [ActionReverted()]]
    tail: st.SearchStrategy[list[Event]] = st.one_of(
        st.sampled_from(reverts),
        user_turn(),
        form_turn(),
    )
    turns.extend(draw(st.lists(tail, min_size=5, max_size=40), label="tail"))
    return stamp([event for turn in turns for event in turn])


REVERTS = UserUtteranceReverted | ActionReverted


@settings(SETTINGS, max_examples=25)
@given(events=long_conversations(), domain_key=DOMAIN_KEYS)
def test_long_conversations_agree_with_the_reference_model(
    events: list[Event], domain_key: str
) -> None:
    """Reverts deep into long conversations (checked after every revert and at the end)."""
    fast, naive = trackers("long", domain_key, None)
    for event in events:
        fast.update(event)
        naive.update(event)
        if isinstance(event, REVERTS):
            assert_agrees(fast, naive, [EventVerbosity.NONE])
    assert_agrees(fast, naive, [EventVerbosity.APPLIED])


@SOME
@given(events=conversations(), domain_key=DOMAIN_KEYS, history=HISTORIES)
def test_recreate_from_dialogue_agrees_with_the_reference_replay(
    events: list[Event], domain_key: str, history: int | None
) -> None:
    """recreate_from_dialogue = reset + replay of the applied events (§2.2) on a new tracker
    (as when a store loads a dialogue: new event objects, so nothing mutated carries over)."""
    fast, _ = trackers("ref", domain_key, None)
    fast.update_with_events(events)
    stored = fast.as_dialogue()
    assert (stored.name, list(stored.events)) == ("ref", events)
    rebuilt, model = trackers("ref", domain_key, history)
    rebuilt.recreate_from_dialogue(Dialogue("ref", [replace(e) for e in events]))
    model.events.extend(enumerate(events))
    model.replay()
    assert_agrees(rebuilt, model, [EventVerbosity.ALL])


def _init_copy_model(naive: NaiveTracker, history: int | None) -> NaiveTracker:
    """§2.2 init_copy: same slots (values reset), and an any-slot dict becomes a plain one."""
    defaults = {key: naive.defaults.get(key) for key in naive.slots}
    return NaiveTracker(naive.sender_id, defaults, history, naive.messages)


def _prior_models(naive: NaiveTracker) -> Iterator[tuple[JSONDict, bool]]:
    """§2.8 generate_all_prior_trackers on the model (an init_copy fed the applied events)."""
    model = _init_copy_model(naive, None)
    for event in naive.applied():
        if isinstance(event, ActionExecuted):
            yield model.state(EventVerbosity.ALL), event.hide_rule_turn
        model.update(event)
    yield model.state(EventVerbosity.ALL), False


@SOME
@given(events=conversations(max_turns=8), domain_key=DOMAIN_KEYS)
def test_prior_trackers_agree_with_the_reference_model(
    events: list[Event], domain_key: str
) -> None:
    """A tracker before every applied action, then the final one (§2.8)."""
    events = [
        replace(e, hide_rule_turn=True) if isinstance(e, ActionExecuted) and i % 3 == 0 else e
        for i, e in enumerate(events)
    ]
    fast, naive = trackers("ref", domain_key, None)
    fast.update_with_events(events)
    for event in events:
        naive.update(event)
    fast_priors = [
        (split_state(t.current_state(EventVerbosity.ALL)), hide)
        for t, hide in fast.generate_all_prior_trackers()
    ]
    naive_priors = []
    for state, hide in _prior_models(naive):
        naive_events = state.pop("events")
        naive_priors.append(((state, naive_events), hide))
    assert fast_priors == naive_priors


@SOME
@given(events=conversations(max_turns=8), domain_key=DOMAIN_KEYS, data=st.data())
def test_travel_back_in_time_agrees_with_the_reference_model(
    events: list[Event], domain_key: str, data: st.DataObject
) -> None:
    """travel_back_in_time(t) = init_copy + the events up to t (§2.8)."""
    fast, naive = trackers("ref", domain_key, None)
    fast.update_with_events(events)
    for event in events:
        naive.update(event)
    target = data.draw(st.integers(0, len(events) + 1), label="target") + 0.5
    past = fast.travel_back_in_time(target)
    model = _init_copy_model(naive, None)
    for event in events:
        if event.timestamp <= target:
            model.update(event)
    assert_agrees(past, model, [EventVerbosity.ALL])


@SOME
@given(events=conversations(), domain_key=DOMAIN_KEYS, history=HISTORIES)
def test_the_fold_never_raises(events: list[Event], domain_key: str, history: int | None) -> None:
    """Every query on every generated conversation answers, and current_state is JSON."""
    fast, _ = trackers("safe", domain_key, history)
    fold(events, fast)
    for verbosity in EventVerbosity:
        json.dumps(fast.current_state(verbosity))
    fast.applied_events()
    fast.events_after_latest_restart()
    fast.get_last_event_for((UserUttered, BotUttered), ["action_listen"], skip=1)
    fast.last_executed_action_has("utter_a")
    list(fast.get_latest_entity_values("city"))
    list(fast.get_latest_entity_values("name", entity_group="1"))
    fast.travel_back_in_time(len(events) / 2)
    for prior, _hidden in fast.generate_all_prior_trackers():
        prior.current_state(EventVerbosity.APPLIED)
    fast.copy().current_state(EventVerbosity.APPLIED)
    fast.init_copy().update_with_events(events)
    fast.export_stories()
    for index, event in enumerate(fast.events):
        if isinstance(event, UserUttered):
            fast.user_view(index)


@SOME
@given(events=conversations(), domain_key=DOMAIN_KEYS, data=st.data())
def test_fold_of_a_concatenation_continues_the_fold(
    events: list[Event], domain_key: str, data: st.DataObject
) -> None:
    """fold(a + b) == fold(b, fold(a)) for every split point (restart / rebalance)."""
    cut = data.draw(st.integers(0, len(events)), label="cut")
    whole, _ = trackers("c", domain_key, None)
    fold(events, whole)
    first, _ = trackers("c", domain_key, None)
    resumed = fold(events[cut:], fold(events[:cut], first))
    assert resumed.current_state(EventVerbosity.ALL) == whole.current_state(EventVerbosity.ALL)
    assert resumed.applied_events() == whole.applied_events()


@SOME
@given(events=conversations(), domain_key=DOMAIN_KEYS)
def test_copy_equals_the_original(events: list[Event], domain_key: str) -> None:
    """copy() replays every event into an init_copy (§2.2): the same state."""
    fast, _ = trackers("c", domain_key, None)
    fast.update_with_events(events)
    copied = fast.copy()
    assert copied.current_state(EventVerbosity.ALL) == fast.current_state(EventVerbosity.ALL)
    assert copied.applied_events() == fast.applied_events()


@st.composite
def streams(draw: st.DrawFn) -> tuple[dict[str, list[Event]], list[tuple[str, Event]]]:
    """2-3 conversations (one re-using another's event objects) interleaved into one stream."""
    base = draw(conversations(max_turns=8))
    convs = {"a": base, "b": [*base[: len(base) // 2], *draw(conversations(max_turns=6))]}
    if draw(st.booleans()):
        convs["c"] = draw(conversations(max_turns=6))
    labels = draw(st.permutations([key for key, evs in convs.items() for _ in evs]))
    cursors = dict.fromkeys(convs, 0)
    stream = []
    for key in labels:
        stream.append((key, convs[key][cursors[key]]))
        cursors[key] += 1
    return convs, stream


@SOME
@given(data=streams(), domain_key=DOMAIN_KEYS)
def test_interleaved_conversations_fold_independently(
    data: tuple[dict[str, list[Event]], list[tuple[str, Event]]], domain_key: str
) -> None:
    """Folding an interleaved multi-conversation stream equals folding each conversation."""
    convs, stream = data
    live: dict[str, DialogueStateTracker] = {}
    for sender_id, event in stream:
        if sender_id not in live:
            live[sender_id] = trackers(sender_id, domain_key, None)[0]
        apply(live[sender_id], event)
    for sender_id, events in convs.items():
        alone, _ = trackers(sender_id, domain_key, None)
        fold(events, alone)
        tracker = live.get(sender_id, trackers(sender_id, domain_key, None)[0])
        assert tracker.current_state(EventVerbosity.ALL) == alone.current_state(EventVerbosity.ALL)
        assert tracker.applied_events() == alone.applied_events()


def test_reference_model_reproduces_the_documented_examples() -> None:
    """The model itself against rasa-semantics.md §2.3/§2.4 (so it can be trusted)."""

    def model(text: str) -> NaiveTracker:
        naive = NaiveTracker("m", {"name": None, "city": None})
        for event in seq(text):
            naive.update(event)
        return naive

    happy = model(
        "L U:hi A:my_form active_loop(my_form) S:requested_slot=a B:ask_a L U:a A:my_form S:a=1 "
        "S:requested_slot=b L U:b A:my_form S:b=2 active_loop(null) A:utter_done L"
    )
    assert render(happy.applied()) == (
        "L U:hi A:my_form active_loop(my_form) S:requested_slot=a B:ask_a S:a=1 "
        "S:requested_slot=b S:b=2 active_loop(null) A:utter_done L"
    )
    fallback = model("L U:hi A:utter_a L U:bye A:action_default_fallback rewind")
    assert render(fallback.applied()) == "L U:hi A:utter_a"
    assert fallback.state()["latest_action"] == {"action_name": "utter_a"}
    assert fallback.state()["followup_action"] is None
    restarted = model("L U:hi A:utter_a restart rewind")
    assert restarted.state()["followup_action"] == "action_listen"
    carried = model(
        "A:action_session_start session_started S:name=bob L U:hi S:city=berlin "
        "A:action_session_start session_started S:name=bob S:city=berlin L"
    )
    assert render(carried.applied()) == "S:name=bob S:city=berlin L"
    assert carried.state()["slots"] == {"name": "bob", "city": "berlin"}
    replayed = model("L U:hi A:act followup(utter_x) B:b L U:bye rewind")
    assert replayed.state()["followup_action"] == "utter_x"
    assert model("L U:hi pause rewind").state()["paused"] is False


def test_a_snapshot_after_a_restart_shows_entities_added_to_its_empty_message() -> None:
    """Found by the test above: after a restart, entities added to the reset's empty message
    were lost when an undo replayed from a snapshot (Rasa's replay adds them to a new one)."""

    def action(name: str, at: float) -> ActionExecuted:
        return ActionExecuted(timestamp=at, action_name=name)

    berlin = {"entity": "city", "value": "Berlin", "start": 10, "end": 16}
    events = [
        action("action_restart", 1.0),
        Restarted(timestamp=2.0),
        action("action_listen", 3.0),
        EntitiesAdded(timestamp=4.0, entities=[berlin]),
        action("utter_b", 5.0),
        BotUttered(timestamp=6.0, text="b"),
        ActionReverted(timestamp=7.0),
    ]
    fast = agree_after_each(events)
    assert fast.current_state()["latest_message"]["entities"] == [berlin]


@pytest.mark.parametrize("between", ["an empty user message", "a loop"])
def test_a_snapshot_replay_mutates_a_copy_of_an_empty_message_it_does_not_own(
    between: str,
) -> None:
    """An empty user message (or a reset's, as the trigger of a loop) taken from a snapshot is
    copied, with its mutations, before a replay mutates it."""
    berlin = {"entity": "city", "value": "Berlin", "start": 10, "end": 16}
    middle: list[Event] = (
        [
            UserUttered(text=None),
            DefinePrevUserUtteredFeaturization(use_text_for_featurization=True),
        ]
        if between == "an empty user message"
        else [ActiveLoop(name="my_form")]
    )
    agree_after_each(
        [
            ActionExecuted(action_name="action_restart"),
            Restarted(),
            ActionExecuted(action_name="action_listen"),
            *middle,
            EntitiesAdded(entities=[berlin]),
            ActionExecuted(action_name="utter_b"),
            ActionReverted(),
            ActionExecuted(action_name="utter_a"),
        ]
    )


def agree_after_each(events: list[Event]) -> DialogueStateTracker:
    """Fold ``events`` into the fast tracker and the model, checking they agree after each;
    return the fast tracker."""
    fast, naive = trackers("ref", "form", None)
    for event in events:
        fast.update(event)
        naive.update(event)
        assert_agrees(fast, naive, list(EventVerbosity))
        assert fast.applied_events() == naive.applied()
    return fast
