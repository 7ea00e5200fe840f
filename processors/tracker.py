"""``DialogueStateTracker``: Rasa 3.6's tracker as a pure fold with O(1) ordinary updates.

How it stays O(1) per event while following Rasa exactly:

* The live state is a compact ``Head`` updated per event (Rasa's incremental ``apply_to``).
* The applied list (Rasa's ``applied_events()``) is kept incrementally as positions into the
  event log; ``restart``/``session_started`` empty it, reverts pop from its end, loop pruning
  touches only the tail back to the loop's previous execution (``processors.applied``).
* A revert leaves the state Rasa gets by resetting and replaying the applied list. Because reverts
  cut the list back to just before an action, the tracker keeps a snapshot of that replayed state
  before every applied action (recent ones only); a revert restores the nearest snapshot and
  replays the few events after it. Snapshots are copies of the live head while the live state
  equals the replay of the applied list ("synced"), which breaks only after a ``restart`` (its
  pending ``action_session_start``) or a loop pruning; until it re-syncs they are computed by
  replay from the previous snapshot, one turn at a time.
* With ``max_event_history`` Rasa computes everything from the bounded window; so does this
  tracker (no incremental applied list; reverts replay the window, as Rasa does).
"""

from __future__ import annotations

import copy
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Mapping, MutableSequence
from typing import Any

from events.errors import EventError
from events.model import (
    ACTION_LISTEN,
    EVENT_TYPES,
    ActionExecuted,
    ActionReverted,
    ActiveLoop,
    BotUttered,
    DefinePrevUserUtteredFeaturization,
    EntitiesAdded,
    Event,
    Restarted,
    SessionStarted,
    SlotSet,
    UserUtteranceReverted,
    UserUttered,
)
from events.wire import decode_event
from processors.applied import (
    compute_applied,
    first_run_or_unhappy,
    loop_names,
    prune_loop_tail,
    revert,
)
from processors.domain import Domain
from processors.queries import Dialogue, TrackerQueries
from processors.state import AT, HANDLERS, Folder, Frozen, Head

MAX_SNAPSHOTS = 64


class DialogueStateTracker(TrackerQueries):
    """One conversation's state, folded from its events exactly as Rasa 3.6 folds them."""

    def __init__(
        self,
        sender_id: str,
        domain: Domain | None = None,
        *,
        max_event_history: int | None = None,
        sender_source: str | None = None,
    ) -> None:
        self.sender_id = sender_id
        self.domain = domain
        self.sender_source = sender_source
        self.max_event_history = max_event_history
        self._folder = Folder(domain.initial_values() if domain is not None else None)
        self._head = Head()
        self._events: MutableSequence[Event] = (
            [] if max_event_history is None else deque(maxlen=max_event_history)
        )
        self._count = 0
        self._acc: list[int] = []
        self._snaps: list[Frozen] = []
        # (applied position, message it set the flag of or None, value) of each applied
        # user_featurization, for the re-application a revert's replay does; None = unknown
        self._feats: list[tuple[int, UserUttered | None, bool | None]] | None = []
        self._synced = True
        self._loops: set[str] = set()
        self._segment_start = 0
        self._last_restart = -1
        self._last_user = -1
        # with a window: the applied positions, computed once per number of events logged
        self._window_applied: tuple[int, frozenset[int]] = (-1, frozenset())

    # -- folding -------------------------------------------------------------------------------

    def update(self, event: Event) -> None:
        """Log one event and apply it (Rasa's ``tracker.update``)."""
        seq = self._count
        self._count = seq + 1
        self._events.append(event)
        if self.max_event_history is None:
            _OPERATIONS[type(event)](self, event, seq)
        else:
            self._update_windowed(event, seq)

    def update_with_events(self, events: Iterable[Event]) -> None:
        """Update with each event in order (timestamps are kept: stamping is the caller's job)."""
        for event in events:
            self.update(event)

    def _update_action(self, event: ActionExecuted, seq: int) -> None:
        acc = self._acc
        if event.action_name in self._loops and self._pruned_loop_run(event):
            return
        position = len(acc)
        head = self._head if self._synced else self._replay(position, False)
        snap = head.freeze(position)
        snaps = self._snaps
        snaps.append(snap)
        if len(snaps) > MAX_SNAPSHOTS:
            del snaps[: MAX_SNAPSHOTS // 4]
        acc.append(seq)
        _apply_action(self._folder, self._head, event)
        if not self._synced:
            probe = Head.thaw(snap)
            _apply_action(self._folder, probe, event)
            self._synced = probe.same_as(self._head)

    def _pruned_loop_run(self, event: ActionExecuted) -> bool:
        """Rasa's loop pruning: a repeated happy-path run of an active loop drops the turns
        since its previous run and is not itself applied. False if this run is not one."""
        name, acc, at = event.action_name, self._acc, self._events.__getitem__
        if first_run_or_unhappy(name, acc, at):  # type: ignore[arg-type]
            return False
        kept = prune_loop_tail(name, acc, at)  # type: ignore[arg-type]
        self._drop_snapshots_after(kept + 1)
        self._drop_featurizations_from(kept + 1)
        self._synced = False
        _apply_action(self._folder, self._head, event)
        return True

    def _update_revert(self, event: Event, seq: int) -> None:
        revert(event, self._acc, self._events.__getitem__)
        self._restore(len(self._acc))

    def _update_reset(self, event: Event, seq: int) -> None:
        self._acc.clear()
        self._snaps.clear()
        self._feats = []
        self._segment_start = seq + 1
        self._folder.apply(self._head, event)
        if type(event) is Restarted:
            self._last_restart = seq
            self._synced = False  # the restart's pending action_session_start is not replayed
        else:
            self._synced = True

    def _update_loop(self, event: ActiveLoop, seq: int) -> None:
        self._acc.append(seq)
        self._folder.apply(self._head, event)
        name = event.name
        if name and name not in self._loops:
            self._new_loop(name)

    def _new_loop(self, name: str) -> None:
        """A loop name seen for the first time can make earlier executions prunable (Rasa looks
        at the loop names of all events); recompute the segment's applied list if it can."""
        self._loops.add(name)
        at = self._events.__getitem__
        runs = 0
        for seq in range(self._segment_start, self._count):
            event = at(seq)
            if isinstance(event, ActionExecuted) and event.action_name == name:
                runs += 1
        if runs >= 2:
            self._acc = compute_applied(range(self._segment_start, self._count), at, self._loops)
            self._snaps.clear()
            self._feats = None
            self._synced = False

    def _replay(self, position: int, revert: bool) -> Head:
        """The state Rasa gets by resetting and replaying ``acc[:position]``.

        A revert's replay also re-applies the applied ``user_featurization`` events to their
        messages, as Rasa's does (the mutations they make outlive the replay); computing a
        snapshot must not touch them, except on a reset's empty message: Rasa's replay mutates
        an empty message of its own, so this one does too (on a copy nobody else holds).
        """
        start, head = 0, None
        if not revert or self._feats is not None:
            for snap in reversed(self._snaps):
                if snap[AT] <= position and not self._tainted(snap):
                    start, head = snap[AT], Head.thaw(snap)
                    break
        own: UserUttered | None = None  # the empty message only this replay holds
        if head is None:
            head = Head()
            self._folder.reset(head)
            own = head.message
        elif revert:
            self._reapply_featurizations(start)
        at, folder = self._events.__getitem__, self._folder
        for seq in self._acc[start:position]:
            event = at(seq)
            if revert or type(event) not in _MUTATIONS:
                folder.apply(head, event)
            elif _empty(head.message):
                if head.message is not own:
                    own = _own_copy(folder, head)
                folder.apply(head, event)
        return head

    def _reapply_featurizations(self, before: int) -> None:
        flags = self._folder.flags
        for position, message, value in self._feats or ():
            if position >= before:
                return
            if message is not None:
                flags[id(message)] = (message, value)

    def _drop_featurizations_from(self, position: int) -> None:
        feats = self._feats
        while feats and feats[-1][0] >= position:
            feats.pop()

    def _tainted(self, snap: Frozen) -> bool:
        """A snapshot whose latest message is a reset's empty message that events mutated:
        Rasa's replay would start from a new empty message, so replay from further back."""
        message = snap[4]
        return self._folder.mutated(message) and _empty(message)

    def _restore(self, position: int) -> None:
        self._drop_snapshots_after(position)
        self._drop_featurizations_from(position)
        self._head = self._replay(position, True)
        self._synced = True

    def _drop_snapshots_after(self, position: int) -> None:
        snaps = self._snaps
        while snaps and snaps[-1][AT] > position:
            snaps.pop()

    def _update_windowed(self, event: Event, seq: int) -> None:
        kind = type(event)
        if kind is UserUttered:
            self._last_user = seq
        elif kind is Restarted:
            self._last_restart = seq
        if kind is ActionReverted or kind is UserUtteranceReverted:
            self._head = self._replayed_window()
        else:
            self._folder.apply(self._head, event)

    def _replayed_window(self) -> Head:
        head = Head()
        self._folder.reset(head)
        for event in self.applied_events():
            self._folder.apply(head, event)
        return head

    # -- the applied list ----------------------------------------------------------------------

    def applied_events(self) -> list[Event]:
        """The events that count: reverted and pruned ones removed, cut at restarts/sessions."""
        at = self._at
        if self.max_event_history is None:
            return [at(seq) for seq in self._acc]
        base = self._count - len(self._events)
        positions = compute_applied(range(base, self._count), at, loop_names(self._events))
        return [at(seq) for seq in positions]

    def applied_positions(self) -> list[int]:
        """The 0-based numbers (in the order logged) of the applied events."""
        if self.max_event_history is None:
            return list(self._acc)
        base = self._count - len(self._events)
        return list(compute_applied(range(base, self._count), self._at, loop_names(self._events)))

    def is_applied(self, seq: int) -> bool:
        """Whether the ``seq``-th event logged (0-based) is among the applied events; without
        an event-history window, a binary search of the applied positions (kept ascending);
        with one, the window's applied positions, computed once until the next event."""
        if self.max_event_history is not None:
            count, applied = self._window_applied
            if count != self._count:
                applied = frozenset(self.applied_positions())
                self._window_applied = (self._count, applied)
            return seq in applied
        acc = self._acc
        at = bisect_left(acc, seq)
        return at < len(acc) and acc[at] == seq

    def _at(self, seq: int) -> Event:
        return self._events[seq - (self._count - len(self._events))]

    # -- copies and rebuilding -----------------------------------------------------------------

    def init_copy(self) -> DialogueStateTracker:
        """An empty tracker with this one's id, slots (values reset) and history bound.

        Like Rasa, a domain-less tracker's copy keeps the slot names it knows but accepts no
        new ones; event mutations (merged entities, featurization flags) are shared.
        """
        copy = DialogueStateTracker(
            self.sender_id, self.domain, max_event_history=self.max_event_history
        )
        copy._folder = Folder(dict(self._folder.slot_keys))
        copy._folder.accepts_any_slot = False
        self._folder.share_mutations(copy._folder)
        return copy

    def travel_back_in_time(self, target_time: float) -> DialogueStateTracker:
        """The tracker as of ``target_time``: events applied in order until the first later one."""
        copy = self.init_copy()
        for event in self._events:
            if event.timestamp > target_time:
                break
            copy.update(event)
        return copy

    def copy(self) -> DialogueStateTracker:
        """An independent tracker with the same state (built by re-applying every event)."""
        return self.travel_back_in_time(float("inf"))

    def recreate_from_dialogue(self, dialogue: Dialogue) -> None:
        """Append the dialogue's events and rebuild the state by replaying the applied events
        (Rasa's store-loading path: unlike updates, a trailing ``restart`` is not re-applied)."""
        for event in dialogue.events:
            seq = self._count
            self._count += 1
            self._events.append(event)
            if type(event) is UserUttered:
                self._last_user = seq
            elif type(event) is Restarted:
                self._last_restart = seq
            if type(event) in (Restarted, SessionStarted):
                self._segment_start = seq + 1
        self._loops = loop_names(self._events)
        if self.max_event_history is None:
            self._acc = compute_applied(range(self._count), self._at, self._loops)
        self._snaps.clear()
        self._feats = None  # unknown: a revert replays the whole segment
        self._head = self._replayed_window()
        self._synced = True

    def generate_all_prior_trackers(self) -> Any:
        """Yield ``(tracker, hide_rule_turn)`` before every applied action, then the final state.

        The same tracker object is yielded each time and then updated further, as in Rasa.
        """
        tracker = self.init_copy()
        for event in self.applied_events():
            if type(event) is ActionExecuted:
                yield tracker, event.hide_rule_turn
            tracker.update(event)
        yield tracker, False

    @classmethod
    def from_events(
        cls,
        sender_id: str,
        events: Iterable[Event],
        domain: Domain | None = None,
        *,
        max_event_history: int | None = None,
    ) -> DialogueStateTracker:
        """A tracker updated with ``events`` one by one."""
        tracker = cls(sender_id, domain, max_event_history=max_event_history)
        tracker.update_with_events(events)
        return tracker

    @classmethod
    def from_dict(
        cls,
        sender_id: str,
        events_as_dict: Iterable[Mapping[str, Any]],
        domain: Domain | None = None,
        *,
        max_event_history: int | None = None,
        now: float | None = None,
    ) -> DialogueStateTracker:
        """A tracker from serialised events; a bad one raises ``EventError`` naming its index."""
        events: list[Event] = []
        for index, data in enumerate(events_as_dict):
            try:
                events.append(decode_event(data, now=now))
            except EventError as error:
                raise error.at(conversation_id=sender_id, index=index) from None
        return cls.from_events(sender_id, events, domain, max_event_history=max_event_history)


def apply(tracker: DialogueStateTracker, event: Event) -> DialogueStateTracker:
    """Fold one event into ``tracker`` (updated in place) and return it."""
    tracker.update(event)
    return tracker


def fold(
    events: Iterable[Event],
    tracker: DialogueStateTracker | None = None,
    *,
    sender_id: str = "default",
    domain: Domain | None = None,
) -> DialogueStateTracker:
    """Fold ``events`` into ``tracker`` (a new one for ``sender_id`` when None) and return it."""
    if tracker is None:
        tracker = DialogueStateTracker(sender_id, domain)
    for event in events:
        tracker.update(event)
    return tracker


def _empty(message: UserUttered) -> bool:
    """Whether the message is (as good as) a reset's empty message."""
    return not message.text and not message.intent


def _own_copy(folder: Folder, head: Head) -> UserUttered:
    """Give ``head`` a copy of its message that nothing else holds (with the mutations the
    message has, and as the trigger of its loop if the message is), and return it."""
    message = head.message
    copied = copy.copy(message)
    found = folder.added_entities.get(id(message))
    if found is not None:
        folder.added_entities[id(copied)] = (copied, list(found[1]))
    flag = folder.flags.get(id(message))
    if flag is not None:
        folder.flags[id(copied)] = (copied, flag[1])
    head.message = copied
    if head.loop is not None and head.loop.trigger is message:
        head.loop = head.loop._replace(trigger=copied)
    return copied


_Operation = Callable[[DialogueStateTracker, Any, int], None]
_MUTATIONS = (DefinePrevUserUtteredFeaturization, EntitiesAdded)
_apply_action = HANDLERS[ActionExecuted]


def _plain(handler: Callable[[Folder, Head, Any], None] | None) -> _Operation:
    """The operation for events that are simply appended to the applied list and applied."""
    if handler is None:

        def append(tracker: DialogueStateTracker, event: Event, seq: int) -> None:
            tracker._acc.append(seq)

        return append

    def append_and_apply(tracker: DialogueStateTracker, event: Event, seq: int) -> None:
        tracker._acc.append(seq)
        handler(tracker._folder, tracker._head, event)

    return append_and_apply


def _featurization(
    tracker: DialogueStateTracker, event: DefinePrevUserUtteredFeaturization, seq: int
) -> None:
    head, feats = tracker._head, tracker._feats
    target = head.message if head.action_name == ACTION_LISTEN else None
    if feats is not None:
        feats.append((len(tracker._acc), target, event.use_text_for_featurization))
    tracker._acc.append(seq)
    if target is not None:
        tracker._folder.flags[id(target)] = (target, event.use_text_for_featurization)


def _user(tracker: DialogueStateTracker, event: UserUttered, seq: int) -> None:
    tracker._acc.append(seq)
    tracker._last_user = seq
    head = tracker._head
    head.message = event
    head.followup = None


def _bot(tracker: DialogueStateTracker, event: BotUttered, seq: int) -> None:
    tracker._acc.append(seq)
    tracker._head.bot = event


def _slot(tracker: DialogueStateTracker, event: SlotSet, seq: int) -> None:
    tracker._acc.append(seq)
    tracker._folder.set_slot(tracker._head, event.key, event.value)


# the frequent events get operations of their own, one call instead of two
_OPERATIONS: dict[type[Any], _Operation] = {cls: _plain(HANDLERS.get(cls)) for cls in EVENT_TYPES}
_OPERATIONS.update(
    {
        UserUttered: _user,
        BotUttered: _bot,
        SlotSet: _slot,
        ActionExecuted: DialogueStateTracker._update_action,
        ActionReverted: DialogueStateTracker._update_revert,
        UserUtteranceReverted: DialogueStateTracker._update_revert,
        Restarted: DialogueStateTracker._update_reset,
        SessionStarted: DialogueStateTracker._update_reset,
        ActiveLoop: DialogueStateTracker._update_loop,
        DefinePrevUserUtteredFeaturization: _featurization,
    }
)
