"""Which signals an event causes: followups, pause/resume, restarts, session starts.

Rules of this module (the shell publishes what ``decide`` returns, keyed by conversation id):

* ``followup_action`` — a ``followup`` event names an action, or a ``restart`` makes Rasa's next
  action ``action_session_start``. While the conversation is paused the followup is held back
  (Rasa runs no actions while paused); when it resumes and the tracker still has that followup
  pending, the signal is emitted then. A followup cleared before (by an action or a user
  message) is never emitted.
* ``conversation_paused`` / ``conversation_resumed`` — only on an actual change of the tracker's
  ``paused`` flag (a second ``pause`` emits nothing); a restart, session start or revert that
  un-pauses the conversation emits ``conversation_resumed`` with that event as the cause.
* ``conversation_restarted`` — on every ``restart``; ``session_started`` — on every
  ``session_started``.
* Every signal names its source record (topic, partition, offset), so a consumer can drop the
  duplicates an at-least-once reader might see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from events.model import ACTION_SESSION_START, Event, FollowupAction, Restarted, SessionStarted

FOLLOWUP_ACTION = "followup_action"
CONVERSATION_PAUSED = "conversation_paused"
CONVERSATION_RESUMED = "conversation_resumed"
CONVERSATION_RESTARTED = "conversation_restarted"
SESSION_STARTED = "session_started"
SIGNAL_KINDS = (
    FOLLOWUP_ACTION,
    CONVERSATION_PAUSED,
    CONVERSATION_RESUMED,
    CONVERSATION_RESTARTED,
    SESSION_STARTED,
)


class Source(NamedTuple):
    """Where the event came from: the record a signal is derived from."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Signal:
    """One signal: its kind, conversation, the event's time and source, and kind-specific data."""

    kind: str
    conversation_id: str
    timestamp: float
    source: Source | None
    data: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """The JSON form published on the signals topic (documented in the README)."""
        source = None if self.source is None else self.source._asdict()
        return {
            "signal": self.kind,
            "conversation_id": self.conversation_id,
            "timestamp": self.timestamp,
            "source": source,
            **self.data,
        }


class SignalState(NamedTuple):
    """What the decisions remember between events: the last known flags and the held followup."""

    paused: bool = False
    pending_followup: str | None = None


def decide(
    conversation_id: str,
    state: SignalState,
    event: Event,
    paused: bool,
    followup_action: str | None,
    source: Source | None = None,
) -> tuple[SignalState, list[Signal]]:
    """The signals ``event`` causes, given the tracker's ``paused`` and ``followup_action``
    *after* applying it, and the new state to remember."""
    if quiet(state.paused, state.pending_followup, event, paused):
        return state, []
    kind = type(event)
    signals: list[Signal] = []

    def emit(kind: str, **data: Any) -> None:
        signals.append(Signal(kind, conversation_id, event.timestamp, source, data))

    if kind is Restarted:
        emit(CONVERSATION_RESTARTED)
    elif kind is SessionStarted:
        emit(SESSION_STARTED)
    if paused != state.paused:
        if paused:
            emit(CONVERSATION_PAUSED, cause=event.TAG)
        else:
            emit(CONVERSATION_RESUMED, cause=event.TAG)
    pending = state.pending_followup if followup_action == state.pending_followup else None
    named = _followup_set_by(event)
    if named is not None and followup_action == named:
        pending = named
    if pending is not None and not paused:
        emit(FOLLOWUP_ACTION, action=pending)
        pending = None
    return SignalState(paused, pending), signals


def quiet(was_paused: bool, pending_followup: str | None, event: Event, paused: bool) -> bool:
    """True if ``decide`` would answer no signals and the same state (the common case): the
    flag did not change, no followup is held, and the event is none that may cause a signal."""
    kind = type(event)
    return (
        paused == was_paused
        and pending_followup is None
        and kind is not Restarted
        and kind is not SessionStarted
        and kind is not FollowupAction
    )


def _followup_set_by(event: Event) -> str | None:
    if isinstance(event, FollowupAction):
        return event.action_name
    if type(event) is Restarted:
        return ACTION_SESSION_START
    return None
