"""Durable reminders: which are pending, what cancels them, and what firing one produces.

Rules of this module (rasa-semantics.md §4.1-4.3, with trackerflow's deliberate fixes):

* A conversation's pending reminders are JSON-ready dicts keyed by reminder name, kept in its
  head (so they are changelogged with it). A reminder belongs to (conversation, name): a
  ``reminder`` event replaces a pending one of the same name in the same conversation only.
* ``trigger_date_time`` becomes epoch seconds; a date-time without a time zone is UTC.
* What cancels a pending reminder, checked as each event is folded (Rasa checks when it fires;
  the outcome is the same, and the pending list stays exact):
  - ``cancel_reminder`` whose given selectors (``name``, ``intent``, ``entities``; falsy ones are
    not given) all equal the reminder's — exact equality, and only in its own conversation; no
    selector at all cancels every reminder of the conversation;
  - a ``user`` event with non-empty text (including ``EXTERNAL: ...`` messages of fired reminders)
    after it, if the reminder has ``kill_on_user_message``;
  - ``restart`` and ``session_started`` (they empty the applied events);
  - a ``rewind``, ``undo`` or loop pruning that removes its ``reminder`` event from the applied
    events (Rasa's "still valid" check).
* Firing is the shell's business (it owns the clock): :func:`fire` says what a due reminder
  produces — a ``reminder_triggered`` signal and, for intent reminders, the external ``user``
  event Rasa would log — or a ``reminder_missed`` signal when it is later than the grace period.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from events.model import (
    ActionExecuted,
    ActionReverted,
    Event,
    ReminderCancelled,
    ReminderScheduled,
    Restarted,
    SessionStarted,
    UserUtteranceReverted,
    UserUttered,
)
from processors.signals import Signal
from processors.tracker import DialogueStateTracker

REMINDER_TRIGGERED: Final = "reminder_triggered"
REMINDER_MISSED: Final = "reminder_missed"

Pending = dict[str, dict[str, Any]]  # reminder name -> reminder (JSON-ready)


def epoch(when: datetime) -> float:
    """Unix seconds of a date-time; a naive one is taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def observe(
    pending: Pending, event: Event, seq: int, tracker: DialogueStateTracker
) -> Pending | None:
    """The pending reminders after ``event`` (the ``seq``-th of the conversation, already applied
    to ``tracker``), or None when they did not change. ``pending`` itself is never modified."""
    kind = type(event)
    if kind is ReminderScheduled:
        assert isinstance(event, ReminderScheduled)
        changed = dict(pending)
        changed[event.name] = _armed(event, seq)
        return changed
    if not pending:
        return None
    if kind is ReminderCancelled:
        assert isinstance(event, ReminderCancelled)
        kept = {n: r for n, r in pending.items() if not _selected(event, r)}
    elif kind is UserUttered:
        assert isinstance(event, UserUttered)
        if not event.text:
            return None
        kept = {n: r for n, r in pending.items() if not r["kill_on_user_message"]}
    elif kind is Restarted or kind is SessionStarted:
        kept = {}
    elif kind is UserUtteranceReverted or kind is ActionReverted or kind is ActionExecuted:
        kept = {n: r for n, r in pending.items() if tracker.is_applied(r["seq"])}
    else:
        return None
    return kept if len(kept) != len(pending) else None


def _armed(event: ReminderScheduled, seq: int) -> dict[str, Any]:
    return {
        "name": event.name,
        "due": epoch(event.trigger_date_time),
        "date_time": event.trigger_date_time.isoformat(),
        "intent": event.intent,
        "entities": event.entities,
        "action": event.action,
        "kill_on_user_message": event.kill_on_user_message,
        "scheduled_at": event.timestamp,
        "seq": seq,
    }


def _selected(cancel: ReminderCancelled, reminder: dict[str, Any]) -> bool:
    """Whether every selector the cancellation gives matches (none given: all match)."""
    if cancel.name and cancel.name != reminder["name"]:
        return False
    if cancel.intent and cancel.intent != reminder["intent"]:
        return False
    return not cancel.entities or cancel.entities == reminder["entities"]


def fire(
    conversation_id: str,
    reminder: dict[str, Any],
    now: float,
    grace_s: float,
    input_channel: str | None,
) -> tuple[Signal, UserUttered | None]:
    """What a due reminder produces at ``now``: its signal, and the external user event to log
    (None for a missed reminder and for a rasa_core 0.14 action reminder, which names no intent).
    """
    late = max(0.0, now - reminder["due"])
    data = {
        "name": reminder["name"],
        "intent": reminder["intent"],
        "entities": reminder["entities"],
        "action": reminder["action"],
        "due": reminder["due"],
        "fired_at": now,
        "late_s": round(late, 3),
    }
    if late > grace_s:
        return Signal(REMINDER_MISSED, conversation_id, now, None, data), None
    signal = Signal(REMINDER_TRIGGERED, conversation_id, now, None, data)
    intent = reminder["intent"]
    if not intent:
        return signal, None
    external = UserUttered.create_external(
        intent, _entity_list(reminder["entities"]), input_channel=input_channel, timestamp=now
    )
    return signal, external


def _entity_list(entities: Any) -> list[dict[str, Any]]:
    """Rasa's reminder entities: a list of entity dicts, or a ``{"entity": "value"}`` shorthand."""
    if isinstance(entities, dict):
        return [{"entity": key, "value": value} for key, value in entities.items()]
    return list(entities or [])


def listing(pending: Pending) -> list[dict[str, Any]]:
    """The pending reminders as the HTTP API shows them, soonest first."""
    shown = [{k: v for k, v in r.items() if k != "seq"} for r in pending.values()]
    return sorted(shown, key=lambda r: (r["due"], r["name"]))
