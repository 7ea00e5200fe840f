"""Hypothesis strategies for trackerflow events, conversations and broker records.

* :func:`events` draws any of the 21 event types with realistic field values (intent, action and
  slot names from small vocabularies so they collide, Rasa-shaped parses, entities and metadata)
  and a nonzero timestamp (float or int, like Rasa's). Every drawn event survives
  ``decode_event(encode_event(e)) == e``: user events are built the way Rasa builds them
  (``UserUttered.create``) with parse overlays that never contradict the intent and entities.
* :func:`conversation_events` draws one plausible conversation: session starts, user turns with
  featurization, actions, bots and slots, plus occasional reverts, loops, pauses, followups and
  reminders; timestamps strictly increase.
* :func:`broker_records` interleaves several conversations the way a topic does (each one keeps its
  own order) as :class:`events.wire.Record` values; :func:`sender_ids` draws conversation ids.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from typing import Any

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
from events.wire import Record

INTENTS = ("greet", "goodbye", "affirm", "deny", "inform", "faq/ask_name", "restart", "mood_great")
ACTIONS = ("utter_greet", "utter_goodbye", "action_ask_city", "booking_form", "action_restart")
SLOTS = ("name", "city", "count", "requested_slot", "session_started_metadata")
ENTITY_TYPES = ("city", "name", "number")
LOOPS = ("booking_form", "survey_form")
POLICIES = ("RulePolicy", "TEDPolicy", "MemoizationPolicy", "policy_2_RulePolicy")

_TS = st.one_of(
    st.floats(1.5e9, 1.9e9, allow_nan=False, allow_infinity=False),
    st.integers(1_500_000_000, 1_900_000_000),
)
_ANY_TEXT = st.text(max_size=12)
_WORDS = st.sampled_from(("hi", "I live in Berlin", "bye", "yes", "Zoë 🙂", "", "München"))
texts = st.one_of(_WORDS, _ANY_TEXT)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_ANY_TEXT, inner, max_size=3),
    max_leaves=8,
)
json_objects = st.dictionaries(_ANY_TEXT, json_values, max_size=3)
confidences = st.none() | st.floats(0.0, 1.0) | st.just(1)
metadata = st.one_of(
    st.just({}),
    st.fixed_dictionaries(
        {
            "model_id": st.text("0123456789abcdef", min_size=4, max_size=8),
            "assistant_id": st.just("my_bot"),
        }
    ),
    json_objects,
)
names = st.one_of(st.sampled_from(ACTIONS), st.text(min_size=1, max_size=10))
optional_names = st.none() | names
entities = st.fixed_dictionaries(
    {"entity": st.sampled_from(ENTITY_TYPES), "value": json_scalars},
    optional={
        "start": st.integers(0, 40),
        "end": st.integers(0, 60),
        "role": st.none() | st.sampled_from(("from", "to")),
        "group": st.none() | st.just("1"),
        "confidence_entity": st.floats(0.0, 1.0),
        "extractor": st.sampled_from(("DIETClassifier", "RegexEntityExtractor")),
    },
)
entity_lists = st.lists(entities, max_size=3)
selectors = st.none() | entity_lists | st.dictionaries(st.sampled_from(ENTITY_TYPES), json_scalars)
date_times = st.datetimes(
    datetime.fromisoformat("2000-01-01"), datetime.fromisoformat("2100-01-01")
).flatmap(
    lambda dt: st.sampled_from(
        (
            dt,
            dt.replace(tzinfo=UTC),
            dt.replace(tzinfo=timezone(timedelta(hours=5, minutes=30))),
        )
    )
)


def sender_ids() -> st.SearchStrategy[str]:
    """Conversation ids: Rasa-like (uuid hex, ``conv-3``) and arbitrary non-empty text."""
    return st.one_of(
        st.uuids().map(lambda u: u.hex),
        st.integers(0, 99).map(lambda n: f"conv-{n}"),
        st.text(min_size=1, max_size=10),
    )


@st.composite
def user_events(draw: st.DrawFn, text: str | None = None) -> UserUttered:
    """A user message as Rasa logs it: the parse carries the intent, entities and NLU extras."""
    intent_name = draw(st.none() | st.sampled_from(INTENTS))
    intent: dict[str, Any] = {}
    if intent_name is not None:
        intent = {"name": intent_name, "confidence": draw(st.floats(0.0, 1.0))}
    ents = draw(entity_lists)
    overlay: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "intent_ranking": st.lists(
                    st.builds(dict, name=st.sampled_from(INTENTS)), max_size=2
                ),
                "response_selector": st.just({"all_retrieval_intents": []}),
                "text": texts,
                "metadata": json_objects,
            },
        )
    )
    if draw(st.booleans()):
        overlay |= {"intent": intent, "entities": ents}
    return UserUttered.create(
        draw(st.none() | texts) if text is None else text,
        intent,
        ents,
        overlay,
        timestamp=draw(_TS),
        input_channel=draw(st.none() | st.sampled_from(("rest", "socketio", "cmdline"))),
        message_id=draw(st.none() | st.uuids().map(lambda u: u.hex)),
        metadata=draw(metadata),
    )


def _bot_data() -> st.SearchStrategy[dict[str, Any]]:
    six = dict.fromkeys(("elements", "quick_replies", "buttons", "attachment", "image", "custom"))
    return st.one_of(st.just({}), st.just(six), json_objects)


@cache
def events() -> st.SearchStrategy[Event]:
    """Any of the 21 event types with realistic values and nonzero timestamps (module docstring)."""
    ts, md = _TS, metadata
    actions = st.one_of(
        st.builds(
            ActionExecuted,
            names,
            st.none() | st.sampled_from(POLICIES),
            confidences,
            st.none(),
            st.booleans(),
            timestamp=ts,
            metadata=md,
        ),
        st.builds(
            ActionExecuted,
            st.none(),
            st.none() | st.sampled_from(POLICIES),
            confidences,
            texts,
            st.booleans(),
            timestamp=ts,
            metadata=md,
        ),
    )
    bare = (
        AllSlotsReset,
        Restarted,
        UserUtteranceReverted,
        ActionReverted,
        ConversationPaused,
        ConversationResumed,
        SessionStarted,
    )
    return st.one_of(
        user_events(),
        st.builds(
            DefinePrevUserUtteredFeaturization, st.none() | st.booleans(), timestamp=ts, metadata=md
        ),
        st.builds(EntitiesAdded, entity_lists, timestamp=ts, metadata=md),
        st.builds(BotUttered, st.none() | texts, _bot_data(), timestamp=ts, metadata=md),
        st.builds(AgentUttered, st.none() | texts, json_values, timestamp=ts, metadata=md),
        actions,
        st.builds(
            SlotSet,
            st.sampled_from(SLOTS) | st.text(min_size=1, max_size=8),
            json_values,
            timestamp=ts,
            metadata=md,
        ),
        *(st.builds(cls, timestamp=ts, metadata=md) for cls in bare),
        st.builds(FollowupAction, optional_names, timestamp=ts, metadata=md),
        st.builds(
            ReminderScheduled,
            st.none() | st.sampled_from(INTENTS),
            date_times,
            st.text(min_size=0, max_size=12),
            selectors,
            st.booleans(),
            optional_names,
            timestamp=ts,
            metadata=md,
        ),
        st.builds(
            ReminderCancelled,
            st.none() | st.text(max_size=8),
            st.none() | st.sampled_from(INTENTS),
            selectors,
            timestamp=ts,
            metadata=md,
        ),
        st.builds(StoryExported, st.none() | st.just("stories.yml"), timestamp=ts, metadata=md),
        st.builds(ActiveLoop, st.none() | st.sampled_from(LOOPS), timestamp=ts, metadata=md),
        st.builds(LoopInterrupted, st.booleans(), timestamp=ts, metadata=md),
        st.builds(
            ActionExecutionRejected,
            optional_names,
            st.none() | st.sampled_from(POLICIES),
            confidences,
            timestamp=ts,
            metadata=md,
        ),
    )


@cache
def _action_results() -> st.SearchStrategy[Event]:
    """What an action returns: mostly slots and bot messages, sometimes anything."""
    slots = st.builds(SlotSet, st.sampled_from(SLOTS), json_scalars)
    return st.one_of(slots, st.builds(BotUttered, texts, _bot_data()), events())


def _listen() -> ActionExecuted:
    return ActionExecuted(ACTION_LISTEN)


@st.composite
def _turn(draw: st.DrawFn) -> list[Event]:
    """One user turn: message, featurization, a few actions with bots/slots/loops, then listen."""
    out: list[Event] = [draw(user_events())]
    if draw(st.booleans()):
        out.append(DefinePrevUserUtteredFeaturization(draw(st.booleans())))
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(ACTIONS))
        out.append(ActionExecuted(name, draw(st.sampled_from(POLICIES)), draw(st.floats(0.0, 1.0))))
        if name in LOOPS:
            out.append(ActiveLoop(draw(st.none() | st.just(name))))
        for _ in range(draw(st.integers(0, 2))):
            out.append(draw(_action_results()))
    out.append(_listen())
    return out


_INTERRUPTIONS: tuple[Event, ...] = (
    UserUtteranceReverted(),
    ActionReverted(),
    Restarted(),
    ConversationPaused(),
    ConversationResumed(),
    AllSlotsReset(),
    FollowupAction("utter_greet"),
    LoopInterrupted(True),
    ActionExecutionRejected("booking_form"),
)


@st.composite
def conversation_events(
    draw: st.DrawFn, *, max_turns: int = 4, start: float = 1.7e9
) -> list[Event]:
    """One plausible conversation (see the module docstring); timestamps strictly increase."""
    out: list[Event] = []
    if draw(st.booleans()):
        out += [ActionExecuted(ACTION_SESSION_START), SessionStarted(), _listen()]
    for _ in range(draw(st.integers(0, max_turns))):
        if draw(st.integers(0, 5)) == 0:
            out.append(draw(st.sampled_from(_INTERRUPTIONS)))
        out += draw(_turn())
    step = draw(st.sampled_from((0.5, 1.0, 7.25)))
    return [replace(e, timestamp=start + i * step) for i, e in enumerate(out)]


@st.composite
def broker_records(
    draw: st.DrawFn, *, min_conversations: int = 1, max_conversations: int = 3
) -> list[Record]:
    """Several conversations interleaved like one topic; each keeps its own order."""
    ids = draw(
        st.lists(sender_ids(), min_size=min_conversations, max_size=max_conversations, unique=True)
    )
    pending = {sid: draw(conversation_events()) for sid in ids}
    order = draw(st.permutations([sid for sid in ids for _ in pending[sid]]))
    cursor = dict.fromkeys(ids, 0)
    records = []
    for sid in order:
        records.append(Record(sid, pending[sid][cursor[sid]]))
        cursor[sid] += 1
    return records
