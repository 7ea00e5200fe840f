"""Stories from events, written exactly as Rasa 3.6 writes them.

Two formats:

* **Markdown** (legacy): :func:`story_string` is the one-line form of one event (Rasa's
  ``Event.as_story_string()``), :func:`markdown_story` a whole story as Rasa's
  ``Story.as_story_string(flat=True)`` renders it.
* **YAML**: :func:`yaml_stories` is Rasa's ``YAMLStoryWriter.dumps()`` byte for byte — the steps it
  makes (``intent``/``entities``/``user``, ``action``/``bot``, ``slot_was_set``, ``active_loop``;
  nothing else) and the text ruamel.yaml 0.17 gives them (block style, indent 2, sequences under a
  key not indented, width 4096, YAML 1.2 quoting), which ``events._yaml`` reproduces.

Rasa mutates user events while a tracker runs (``entities`` appends entities, ``user_featurization``
sets the featurization flag); here events are frozen, so the caller passes that live state as a
:class:`UserView` per user event. Where Rasa raises while writing (an end-to-end user message or bot
text in Markdown, a malformed entity or inline annotation), this module raises
:class:`UnsupportedStoryFormat`. Pure: no IO, no clock, no logging.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, assert_never

from events._yaml import DoubleQuoted, Literal, dump
from events.errors import TrackerflowError
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
    JSONDict,
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

__all__ = [
    "Story",
    "UnsupportedStoryFormat",
    "UserView",
    "annotate",
    "markdown_story",
    "story_string",
    "yaml_stories",
]

ACTION_UNLIKELY_INTENT = "action_unlikely_intent"
RULE_SNIPPET_ACTION = "..."
_NOT_IN_STORIES = frozenset({ACTION_LISTEN, ACTION_SESSION_START, ACTION_UNLIKELY_INTENT})
_FORMAT_VERSION = "3.1"


class UnsupportedStoryFormat(TrackerflowError, ValueError):
    """Rasa cannot write this event in the requested story format (Rasa raises here too).

    Raised for a text-featurized user message or an end-to-end bot text in Markdown (Rasa's
    ``UnsupportedFeatureException``), and for entities or inline entity annotations Rasa's writer
    fails on (``KeyError``, ``TypeError``, ``ValueError``, schema errors in Rasa).
    """


class UserView(NamedTuple):
    """A tracker's live view of one user event.

    ``entities``: the event's entities after later ``entities`` events were merged in;
    ``use_text_for_featurization``: the flag after ``user_featurization`` events.
    """

    entities: list[JSONDict]
    use_text_for_featurization: bool | None


@dataclass(frozen=True, slots=True)
class Story:
    """A named list of events, as Rasa's tracker exports it (all events, reverted ones included).

    ``user_views`` maps an index into ``events`` to the live view of that user event; a user event
    without one is written as it is.
    """

    name: str
    events: Sequence[Event]
    user_views: Mapping[int, UserView] = field(default_factory=dict)

    def view(self, index: int) -> UserView | None:
        """The live view of the user event at ``index``, if one was given."""
        return self.user_views.get(index)


# --- Markdown ------------------------------------------------------------------------------------

_SILENT = (
    DefinePrevUserUtteredFeaturization,
    EntitiesAdded,
    BotUttered,
    AgentUttered,
    LoopInterrupted,
    ActionExecutionRejected,
    SessionStarted,
)
_BY_TAG = (
    AllSlotsReset,
    Restarted,
    UserUtteranceReverted,
    ActionReverted,
    ConversationResumed,
    StoryExported,
)


def story_string(event: Event, *, e2e: bool = False, user: UserView | None = None) -> str | None:
    """Rasa's Markdown one-liner for ``event`` (``as_story_string()``); None where Rasa has none.

    ``e2e`` and ``user`` concern user events only: ``e2e`` writes ``intent: text`` with inline
    entity annotations, ``user`` overrides the event's entities and featurization flag. Raises
    :class:`UnsupportedStoryFormat` for a text-featurized user message without ``e2e`` and for any
    action with an end-to-end text (whatever ``e2e`` says). ``pause`` gives the literal
    ``ConversationPaused()``, as Rasa 3.6 does. JSON parts use ``json.dumps`` defaults (ASCII
    escapes) except slot and user-entity JSON, which keep non-ASCII characters.
    """
    match event:
        case UserUttered():
            return _user_line(event, user, e2e)
        case ActionExecuted():
            if event.action_text:
                raise UnsupportedStoryFormat("Markdown stories cannot hold end-to-end bot texts")
            return event.action_name
        case SlotSet():
            return "slot" + json.dumps({event.key: event.value}, ensure_ascii=False)
        case FollowupAction():
            return "followup" + json.dumps({"name": event.action_name})
        case ActiveLoop():
            return "active_loop" + json.dumps({"name": event.name})
        case ConversationPaused():
            return "ConversationPaused()"
        case ReminderScheduled():
            return "reminder" + json.dumps(
                {
                    "intent": event.intent,
                    "date_time": event.trigger_date_time.isoformat(),
                    "entities": event.entities,
                    "name": event.name,
                    "kill_on_user_msg": event.kill_on_user_message,
                }
            )
        case ReminderCancelled():
            props = {"name": event.name, "intent": event.intent, "entities": event.entities}
            return "cancel_reminder" + json.dumps(props)
        case _ if isinstance(event, _BY_TAG):
            return event.TAG
        case _ if isinstance(event, _SILENT):
            return None
    assert_never(event)


def markdown_story(story: Story, *, e2e: bool = False) -> str:
    """The story as flat Markdown: ``## name``, ``* <user line>``, ``    - <event line>``.

    Like Rasa's ``Story.as_story_string(flat=True)``: every line ends with a newline; listen,
    session-start and unlikely-intent actions, ``session_started`` and events without a story
    string are left out; user lines are always written (an empty event gives ``* ``).
    """
    lines = [f"## {story.name}\n"]
    for index, event in enumerate(story.events):
        if _is_hidden_action(event) or isinstance(event, SessionStarted):
            continue
        if isinstance(event, UserUttered):
            lines.append(f"* {_user_line(event, story.view(index), e2e)}\n")
        elif line := story_string(event):
            lines.append(f"    - {line}\n")
    return "".join(lines)


def _is_hidden_action(event: Event) -> bool:
    return isinstance(event, ActionExecuted) and event.action_name in _NOT_IN_STORIES


def _view_of(event: UserUttered, user: UserView | None) -> UserView:
    return user if user is not None else UserView(event.entities, event.featurized_by_text)


def _user_line(event: UserUttered, user: UserView | None, e2e: bool) -> str:
    view = _view_of(event, user)
    intent = event.intent_name
    if view.use_text_for_featurization and not e2e:
        raise UnsupportedStoryFormat("Markdown stories cannot hold text-featurized user messages")
    if e2e:
        prefix = f"{intent}: " if intent else ""
        return prefix + annotate(event.text or "", intent, view.entities)
    values = {_entity_key(e, "entity"): _entity_key(e, "value") for e in view.entities}
    return (intent or "") + (json.dumps(values, ensure_ascii=False) if values else "")


def _entity_key(entity: Any, key: str, *, hashable: bool = True) -> Any:
    if not isinstance(entity, dict) or key not in entity:
        raise UnsupportedStoryFormat(f"entity {entity!r} has no {key!r}")
    value = entity[key]
    if hashable and key == "entity" and isinstance(value, dict | list):
        raise UnsupportedStoryFormat(f"entity name {value!r} is not a scalar")
    return value


# --- Inline entity annotation (Rasa's ``format_message``) -----------------------------------------

_ANNOTATION = re.compile(
    r"\[(?P<text>[^\]]+?)\]"
    r"(\((?P<type>[^:)]+?)(?::[^)]+)?\)|\{(?P<dict>[^}]+?)\}|\[(?P<dicts>.*?)\])"
)
_ONE_DICT = re.compile(r"\{(?P<dict>[^}]+?)\}")


def annotate(text: str, intent: str | None, entities: Iterable[Any]) -> str:
    """The user text with its entities annotated inline, e.g. ``I live in [Berlin](city)``.

    Annotations already in the text are checked (as Rasa does) and replaced by their plain text;
    then every entity with ``start`` and ``end`` is marked up: ``[text](type)``,
    ``[text]{"entity": ..., "role": ..., "group": ..., "value": ...}`` (ASCII-escaped JSON) or, for
    several entities on one span, ``[text][{...}, {...}]``. Texts starting with ``/`` are left as
    they are.
    """
    if intent and intent.count("/") > 1:
        raise UnsupportedStoryFormat(f"intent name {intent!r} has more than one '/'")
    for match in _ANNOTATION.finditer(text):
        found = [match["dict"]] if match["dict"] else []
        if match["dicts"] is not None:
            found = [inner["dict"] for inner in _ONE_DICT.finditer(match["dicts"])]
        for body in found:
            _check_annotation(body)
    plain = _ANNOTATION.sub(lambda m: m["text"], text)
    if plain.startswith("/"):
        return plain
    try:
        return _mark_up(plain, entities)
    except TypeError as error:  # positions that cannot slice or sort, values JSON cannot hold
        raise UnsupportedStoryFormat(f"cannot annotate entities {entities!r}: {error}") from None


def _check_annotation(body: str) -> None:
    try:
        data = json.loads("{" + body + "}")
    except ValueError as error:
        raise UnsupportedStoryFormat(f"invalid entity annotation {{{body}}}: {error}") from None
    strings_ok = all(isinstance(data.get(k, ""), str) for k in ("entity", "role", "group"))
    value = data.get("value", "")
    value_ok = isinstance(value, str | int | float) and not isinstance(value, bool)
    if "entity" not in data or not strings_ok or not value_ok:
        raise UnsupportedStoryFormat(f"invalid entity annotation {{{body}}}")


def _mark_up(text: str, entities: Iterable[Any]) -> str:
    spans: dict[Any, list[JSONDict]] = {}
    for entity in entities:
        if isinstance(entity, dict) and "start" in entity and "end" in entity:
            spans.setdefault(entity["start"], []).append(entity)
    for group in spans.values():
        if any(e["end"] != group[0]["end"] for e in group):
            raise UnsupportedStoryFormat(f"entities {group!r} share a start but not an end")
    out, pos = [], 0
    for start, group in sorted(spans.items()):
        covered = text[start : group[0]["end"]]
        if len(group) == 1:
            mark = _attributes(covered, group[0], short=True)
        else:
            mark = "[" + ", ".join(_attributes(covered, e, short=False) for e in group) + "]"
        out += [text[pos:start], f"[{covered}]", mark]
        pos = group[0]["end"]
    return "".join([*out, text[pos:]])


def _attributes(covered: str, entity: JSONDict, *, short: bool) -> str:
    value = entity.get("value")
    if value and value == covered:
        value = None
    parts = {
        "entity": entity.get("entity"),
        "role": entity.get("role"),
        "group": entity.get("group"),
        "value": value,
    }
    kept = {key: part for key, part in parts.items() if part is not None}
    if short and kept.keys() <= {"entity"}:
        return f"({parts['entity']})"
    return json.dumps(kept)


# --- YAML steps (Rasa's YAMLStoryWriter) ----------------------------------------------------------


def yaml_stories(
    stories: Iterable[Story], *, header: bool = True, test_stories: bool = False
) -> str:
    """Rasa 3.6's ``YAMLStoryWriter.dumps()`` of these stories.

    ``header``: a document ``version: "3.1"`` + ``stories:``; without it only the list items are
    written, for appending to a file (Rasa's ``is_appendable``) — but with no stories at all both
    give ``version: "3.1"``. ``test_stories``: end-to-end test stories (user text always written,
    entities only inline). A user step holds ``intent`` (the full retrieval intent when there is
    one; none for text-featurized messages), ``entities`` (``- entity: value`` maps, or bare names
    for entities without a value; roles and groups dropped) and ``user`` (a literal block with
    inline annotations, for text-featurized messages and test stories); empty steps are dropped.
    """
    items = [{"story": story.name, "steps": _steps(story, test_stories)} for story in stories]
    root: Any = {"version": DoubleQuoted(_FORMAT_VERSION)}
    if items:
        root["stories"] = items
        if not header:
            root = items
    try:
        return dump(root)
    except TypeError as error:  # a value no JSON decoder produces (a tuple, a datetime, ...)
        raise UnsupportedStoryFormat(str(error)) from None


def _steps(story: Story, test_stories: bool) -> list[Any]:
    steps: list[Any] = []
    for index, event in enumerate(story.events):
        step: dict[Any, Any] | None = None
        if isinstance(event, UserUttered):
            step = _user_step(event, _view_of(event, story.view(index)), test_stories)
        elif isinstance(event, ActionExecuted) and not _is_hidden_action(event):
            step = _action_step(event)
        elif isinstance(event, SlotSet):
            step = {"slot_was_set": [{event.key: event.value}]}
        elif isinstance(event, ActiveLoop):
            step = {"active_loop": event.name}
        if step:
            steps.append(step)
    return steps


def _user_step(event: UserUttered, view: UserView, test_stories: bool) -> dict[Any, Any]:
    step: dict[Any, Any] = {}
    intent = event.intent_name
    if intent and not view.use_text_for_featurization:
        step["intent"] = event.full_retrieval_intent_name or intent
    if view.entities and not test_stories:
        step["entities"] = [_yaml_entity(entity) for entity in view.entities]
    if event.text and (view.use_text_for_featurization or test_stories):
        step["user"] = Literal(annotate(event.text, intent, view.entities))
    return step


def _yaml_entity(entity: Any) -> Any:
    if isinstance(entity, dict) and "value" in entity:
        return {_entity_key(entity, "entity"): entity["value"]}
    return _entity_key(entity, "entity", hashable=False)


def _action_step(event: ActionExecuted) -> dict[Any, Any] | None:
    if event.action_name == RULE_SNIPPET_ACTION:
        return None
    if event.action_name:
        return {"action": event.action_name}
    return {"bot": event.action_text} if event.action_text else None
