"""A tiny DSL for event sequences, in the notation of rasa-semantics.md.

``seq("L U:hi A:utter_a S:name=x rewind")`` builds the events; the parts of a ``seq`` call are DSL
strings or event objects, in order. Every event without a timestamp gets the next one of 1.0, 2.0,
3.0, ... (the n-th event of the sequence gets ``start + n - 1``), so timestamps are distinct and
increasing and tell events apart; an event that already has a timestamp keeps it (the counter
still advances).

Tokens (split like a shell line, so ``U:"hello there"(greet)`` is one token):

=============================  ==============================================================
``L``                          ``ActionExecuted("action_listen")``
``U:text`` / ``U:text(intent)`` a user message (``UserUttered.create``); ``U:`` alone = no text
``A:name``                     ``ActionExecuted(name)``
``S:key=value``                ``SlotSet(key, value)``; ``null`` is None, otherwise a string
``B:text``                     ``BotUttered(text)``
``rewind`` ``undo`` ...        ``restart``, ``session_started``, ``pause``, ``resume``,
                               ``reset_slots``, ``agent``, ``export``: the argument-less events
``followup(x)``                ``FollowupAction(x)``
``active_loop(x)``             ``ActiveLoop(x)``; ``active_loop(null)`` deactivates
``loop_interrupted(true)``     ``LoopInterrupted(True)`` (``false`` too)
``rejected(x)``                ``ActionExecutionRejected(x)``
``featurization(true)``        ``DefinePrevUserUtteredFeaturization(True)`` (``false``/``null``)
=============================  ==============================================================

``render(events)`` turns events back into tokens, so tests can state expected event lists in the
same notation.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from events.model import (
    ACTION_LISTEN,
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
    Event,
    FollowupAction,
    LoopInterrupted,
    Restarted,
    SessionStarted,
    SlotSet,
    StoryExported,
    UserUtteranceReverted,
    UserUttered,
)
from processors import DialogueStateTracker, Domain

#: The domain of the rasa-semantics.md §2.4 experiments: slots ``name`` and ``city``.
NAME_CITY: dict[str, Any] = {"slots": {"name": {"type": "text"}, "city": {"type": "text"}}}

_BARE: dict[str, Callable[[], Event]] = {
    "rewind": UserUtteranceReverted,
    "undo": ActionReverted,
    "restart": Restarted,
    "session_started": SessionStarted,
    "pause": ConversationPaused,
    "resume": ConversationResumed,
    "reset_slots": AllSlotsReset,
    "agent": AgentUttered,
    "export": StoryExported,
}
_BARE_NAMES: dict[type, str] = {type(make()): name for name, make in _BARE.items()}

_FLAGS: dict[str, bool | None] = {"true": True, "false": False, "null": None}
_CALL = re.compile(r"^(\w+)\((.*)\)$")
_USER = re.compile(r"^U:(.*?)(?:\((\w+)\))?$", re.DOTALL)


def _name(text: str) -> str | None:
    return None if text == "null" else text


def _call(kind: str, arg: str) -> Event:
    if kind == "followup":
        return FollowupAction(_name(arg))
    if kind == "active_loop":
        return ActiveLoop(_name(arg))
    if kind == "loop_interrupted":
        return LoopInterrupted(bool(_FLAGS[arg]))
    if kind == "rejected":
        return ActionExecutionRejected(_name(arg))
    if kind == "featurization":
        return DefinePrevUserUtteredFeaturization(_FLAGS[arg])
    raise ValueError(f"unknown DSL call {kind}({arg})")


def token(text: str) -> Event:
    """One DSL token as an (unstamped) event."""
    if text == "L":
        return ActionExecuted(ACTION_LISTEN)
    if text in _BARE:
        return _BARE[text]()
    if text.startswith("U:"):
        match = _USER.match(text)
        assert match is not None
        words, intent = match.groups()
        return UserUttered.create(words or None, {"name": intent} if intent else None)
    if text.startswith("A:"):
        return ActionExecuted(text[2:])
    if text.startswith("B:"):
        return BotUttered(text[2:])
    if text.startswith("S:"):
        key, _, value = text[2:].partition("=")
        return SlotSet(key, _name(value))
    call = _CALL.match(text)
    if call is None:
        raise ValueError(f"unknown DSL token {text!r}")
    return _call(*call.groups())


def seq(*parts: str | Event, start: float = 1.0) -> list[Event]:
    """DSL strings and event objects -> events stamped with distinct increasing timestamps."""
    raw: list[Event] = []
    for part in parts:
        if isinstance(part, str):
            raw.extend(token(t) for t in shlex.split(part))
        else:
            raw.append(part)
    return [
        event if event.timestamp else replace(event, timestamp=start + i)
        for i, event in enumerate(raw)
    ]


def _render_one(event: Event) -> str:
    match event:
        case ActionExecuted(action_name=name, action_text=text):
            return "L" if name == ACTION_LISTEN else f"A:{name if name is not None else text}"
        case UserUttered(text=text):
            intent = event.intent_name
            return f"U:{text or ''}" + (f"({intent})" if intent else "")
        case SlotSet(key=key, value=value):
            return f"S:{key}={'null' if value is None else value}"
        case BotUttered(text=text):
            return f"B:{text}"
        case FollowupAction(action_name=name):
            return f"followup({name or 'null'})"
        case ActiveLoop(name=name):
            return f"active_loop({name or 'null'})"
        case LoopInterrupted(is_interrupted=flag):
            return f"loop_interrupted({str(flag).lower()})"
        case ActionExecutionRejected(action_name=name):
            return f"rejected({name})"
        case DefinePrevUserUtteredFeaturization(use_text_for_featurization=flag):
            return f"featurization({'null' if flag is None else str(flag).lower()})"
        case _:
            return _BARE_NAMES.get(type(event), type(event).__name__)


def render(events: Iterable[Event]) -> str:
    """Events back into DSL tokens (``"L U:hi A:utter_a"``)."""
    return " ".join(_render_one(e) for e in events)


def stamps(events: Iterable[Event]) -> list[float]:
    """The timestamps of events (with ``seq`` they identify the events)."""
    return [e.timestamp for e in events]


def wire_ids(event_dicts: Iterable[dict[str, Any]]) -> list[tuple[str, float]]:
    """``(event tag, timestamp)`` of serialized events, e.g. ``current_state()["events"]``."""
    return [(d["event"], d["timestamp"]) for d in event_dicts]


def ids(events: Iterable[Event]) -> list[tuple[str, float]]:
    """``(event tag, timestamp)`` of events, comparable with :func:`wire_ids`."""
    return [(e.TAG, e.timestamp) for e in events]


def build(
    *parts: str | Event,
    domain: Domain | None = None,
    sender_id: str = "conv",
    max_event_history: int | None = None,
) -> DialogueStateTracker:
    """A tracker that applied ``seq(*parts)`` one event at a time."""
    return DialogueStateTracker.from_events(
        sender_id, seq(*parts), domain, max_event_history=max_event_history
    )
