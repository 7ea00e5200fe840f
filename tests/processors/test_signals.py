"""Signal decisions driven through a real tracker, event by event."""

from __future__ import annotations

from events.model import (
    ActionExecuted,
    ConversationPaused,
    ConversationResumed,
    Event,
    FollowupAction,
    Restarted,
    SessionStarted,
    UserUtteranceReverted,
    UserUttered,
)
from processors import DialogueStateTracker
from processors.signals import Signal, SignalState, Source, decide


def run(events: list[Event]) -> list[tuple[str, dict[str, object]]]:
    tracker = DialogueStateTracker("c1")
    state = SignalState()
    out: list[Signal] = []
    for offset, event in enumerate(events):
        tracker.update(event)
        source = Source("t.events", 0, offset)
        state, signals = decide("c1", state, event, tracker.paused, tracker.followup_action, source)
        out.extend(signals)
    return [(s.kind, {k: v for k, v in s.as_dict().items() if k not in COMMON}) for s in out]


COMMON = {"signal", "conversation_id", "timestamp", "source"}


def listen(t: float) -> ActionExecuted:
    return ActionExecuted("action_listen", timestamp=t)


def user(t: float) -> UserUttered:
    return UserUttered.create("hi", {"name": "greet"}, timestamp=t)


def test_a_followup_is_signalled_once_when_set() -> None:
    events: list[Event] = [listen(1), user(2), ActionExecuted("a", timestamp=3)]
    events += [FollowupAction("utter_x", timestamp=4), ActionExecuted("utter_x", timestamp=5)]
    assert run(events) == [("followup_action", {"action": "utter_x"})]


def test_pause_and_resume_only_on_changes_and_a_held_followup_comes_on_resume() -> None:
    events: list[Event] = [
        ConversationPaused(timestamp=1),
        ConversationPaused(timestamp=2),
        FollowupAction("utter_x", timestamp=3),
        ConversationResumed(timestamp=4),
        ConversationResumed(timestamp=5),
    ]
    assert run(events) == [
        ("conversation_paused", {"cause": "pause"}),
        ("conversation_resumed", {"cause": "resume"}),
        ("followup_action", {"action": "utter_x"}),
    ]


def test_a_held_followup_cleared_before_the_resume_is_never_emitted() -> None:
    events: list[Event] = [
        ConversationPaused(timestamp=1),
        FollowupAction("utter_x", timestamp=2),
        user(3),
        ConversationResumed(timestamp=4),
    ]
    assert run(events) == [
        ("conversation_paused", {"cause": "pause"}),
        ("conversation_resumed", {"cause": "resume"}),
    ]


def test_restart_signals_itself_the_unpause_and_the_session_start_followup() -> None:
    events: list[Event] = [
        ConversationPaused(timestamp=1),
        Restarted(timestamp=2),
        ActionExecuted("action_session_start", timestamp=3),
        SessionStarted(timestamp=4),
    ]
    assert run(events) == [
        ("conversation_paused", {"cause": "pause"}),
        ("conversation_restarted", {}),
        ("conversation_resumed", {"cause": "restart"}),
        ("followup_action", {"action": "action_session_start"}),
        ("session_started", {}),
    ]


def test_a_rewind_that_removes_a_pause_resumes_and_a_null_followup_says_nothing() -> None:
    events: list[Event] = [
        listen(1),
        user(2),
        ConversationPaused(timestamp=3),
        FollowupAction(None, timestamp=4),
        UserUtteranceReverted(timestamp=5),
    ]
    assert run(events) == [
        ("conversation_paused", {"cause": "pause"}),
        ("conversation_resumed", {"cause": "rewind"}),
    ]


def test_the_published_form_names_the_source_record() -> None:
    signal = Signal("followup_action", "c1", 4.0, Source("t.events", 2, 17), {"action": "x"})
    assert signal.as_dict() == {
        "signal": "followup_action",
        "conversation_id": "c1",
        "timestamp": 4.0,
        "source": {"topic": "t.events", "partition": 2, "offset": 17},
        "action": "x",
    }
    assert Signal("session_started", "c1", 1.0, None, {}).as_dict()["source"] is None
