"""Rasa's applied-events algorithm over lists of event positions.

The applied list ("acc") holds the positions of the events that still count: a ``restart`` or
``session_started`` empties it; ``undo`` removes everything back to and including the last
action; ``rewind`` removes back to and including the last user message, then back to and including
the last action before it; a repeated execution of an active loop on its happy path removes the
intermediate listens, user messages and featurization events back to the loop's previous
execution, and is not itself kept. Everything else is appended.

These functions work on a list of positions and a lookup ``at(position) -> Event``, so the
tracker can run them incrementally on its live list and from scratch over a window alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Set

from events.model import (
    ActionExecuted,
    ActionExecutionRejected,
    ActionReverted,
    ActiveLoop,
    DefinePrevUserUtteredFeaturization,
    Event,
    Restarted,
    SessionStarted,
    UserUtteranceReverted,
    UserUttered,
)

Lookup = Callable[[int], Event]


def undo_till_previous(kind: type[Event], acc: list[int], at: Lookup) -> None:
    """Pop from the end of ``acc`` up to and including the last ``kind`` event (or all)."""
    while acc:
        if type(at(acc.pop())) is kind:
            return


def revert(event: Event, acc: list[int], at: Lookup) -> None:
    """Apply an ``undo`` or ``rewind`` to the applied list."""
    if type(event) is UserUtteranceReverted:
        undo_till_previous(UserUttered, acc, at)
    undo_till_previous(ActionExecuted, acc, at)


def first_run_or_unhappy(loop: str, acc: list[int], at: Lookup) -> bool:
    """True unless ``loop`` ran before in ``acc`` on its happy path (Rasa's pruning guard)."""
    next_action: str | None = None
    for position in reversed(acc):
        event = at(position)
        kind = type(event)
        if kind is ActiveLoop and event.name is None:  # type: ignore[union-attr]
            return True
        if kind is ActionExecutionRejected and event.action_name == loop:  # type: ignore[union-attr]
            return True
        if kind is UserUttered and next_action is not None and next_action != loop:
            return True
        if kind is ActionExecuted:
            name = event.action_name  # type: ignore[union-attr]
            if name == loop:
                return False
            next_action = name
    return True


_PRUNED = (ActionExecuted, UserUttered, DefinePrevUserUtteredFeaturization)


def prune_loop_tail(loop: str, acc: list[int], at: Lookup) -> int:
    """Remove listens/user turns after the loop's previous execution; return that execution's index.

    Only called when ``first_run_or_unhappy`` is False, so the previous execution exists.
    """
    index = len(acc) - 1
    while True:
        event = at(acc[index])
        if type(event) is ActionExecuted and event.action_name == loop:
            break
        index -= 1
    kept = [p for p in acc[index + 1 :] if type(at(p)) not in _PRUNED]
    del acc[index + 1 :]
    acc.extend(kept)
    return index


def is_pruned_loop_run(event: Event, loops: Set[str], acc: list[int], at: Lookup) -> bool:
    """Whether this action is a repeated happy-path execution of an active loop."""
    if type(event) is not ActionExecuted:
        return False
    name = event.action_name
    return name in loops and not first_run_or_unhappy(name, acc, at)  # type: ignore[arg-type]


def loop_names(events: Iterable[Event]) -> set[str]:
    """Names of every loop activated anywhere in ``events``."""
    return {e.name for e in events if type(e) is ActiveLoop and e.name}


def compute_applied(positions: Iterable[int], at: Lookup, loops: Set[str]) -> list[int]:
    """The applied list from scratch, as Rasa's ``applied_events()`` computes it."""
    acc: list[int] = []
    for position in positions:
        event = at(position)
        kind = type(event)
        if kind is Restarted or kind is SessionStarted:
            acc = []
        elif kind is ActionReverted or kind is UserUtteranceReverted:
            revert(event, acc, at)
        elif is_pruned_loop_run(event, loops, acc, at):
            prune_loop_tail(event.action_name, acc, at)  # type: ignore[union-attr, arg-type]
        else:
            acc.append(position)
    return acc
