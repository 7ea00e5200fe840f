"""One simulated Rasa 3.6 conversation: the events the server logs for it, turn by turn.

The turn scripts follow ``rasa-semantics.md``: a session start is ``A:action_session_start``,
``session_started``, carried-over slots, ``L`` (§3.5, §5.3); a user turn is the ``user`` event,
slot events from ``action_extract_slots`` (no ``action`` event), ``user_featurization`` before the
first predicted action, then actions with their policy/confidence and the events they return, and a
final ``action_listen``. Forms activate a loop, ask with ``requested_slot``, get interrupted and
rejected; fallbacks rewind; handoffs pause; reminders fire as ``EXTERNAL:`` messages or are
cancelled; restarts are followed by a session start. All randomness comes from the ``rng`` given,
so a seed fixes the conversation.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from bench import phrases as p
from bench import rasa_json as rj
from bench import turns

JSON = dict[str, Any]
SESSION_EXPIRY = 3600.0


class Conversation:
    """A user and the assistant; :meth:`events` yields event dicts in the order Rasa logs them."""

    def __init__(self, rng: random.Random, sender_id: str, start: float) -> None:
        self.rng = rng
        self.sender_id = sender_id
        self.t = start
        self.channel = rng.choices(p.CHANNELS, p.CHANNEL_WEIGHTS)[0]
        self.model_id = rng.choice(p.MODEL_IDS)
        self.out: list[JSON] = []
        self.session_slots: list[JSON] = []  # slot events applied in this session (carried over)
        self.turn_mark = 0  # len(session_slots) when the current user turn began (for rewinds)
        self.form: list[str] = []  # slots the active form still asks for ([] = no active form)
        self.paused_messages = 0  # user messages still to come while a human has taken over
        self.reminder: tuple[float, bool, str] | None = None  # due time, kill flag, person

    def events(self, count: int | None) -> Iterator[JSON]:
        """The whole conversation: a session start, then ``count`` turns (None: never ends)."""
        self.session_start(first=True)
        done = 0
        while count is None or done < count:
            yield from self._flush()
            self._between_turns()
            yield from self._flush()
            turns.play_turn(self)
            done += 1
        yield from self._flush()

    def _flush(self) -> Iterator[JSON]:
        out, self.out = self.out, []
        yield from out

    # -- time ---------------------------------------------------------------------------------

    def at(self, low: float = 0.002, high: float = 0.06) -> float:
        """Advance the clock a little (the assistant working) and return the new time."""
        self.t += self.rng.uniform(low, high)
        return self.t

    def meta(self) -> JSON:
        """What the processor stamps into every event it logs."""
        return {"model_id": self.model_id, "assistant_id": p.ASSISTANT_ID}

    def _between_turns(self) -> None:
        """The user thinking; reminders coming due; sessions expiring after a long pause."""
        long_pause = self.rng.random() < 0.03
        gap = self.rng.uniform(5400, 30 * 3600) if long_pause else self.rng.expovariate(1 / 15)
        next_message = self.t + 1.0 + gap
        if self.reminder is not None:
            due, kill, name = self.reminder
            if due <= next_message:
                self.t = max(self.t + 0.001, due)  # a turn may have run past it
                self.reminder = None
                turns.reminder_fires(self, name)
            elif kill:
                self.reminder = None  # the next user message cancels it at trigger time
        if next_message - self.t > SESSION_EXPIRY:
            self.t = next_message
            self.session_start(first=False)
        self.t = max(self.t, next_message)

    # -- building blocks ----------------------------------------------------------------------

    def emit(self, event: JSON) -> None:
        self.out.append(event)

    def session_start(self, *, first: bool, policy: str | None = None) -> None:
        """``action_session_start`` and what it returns (carried-over slots unless first)."""
        self.emit(rj.action(self.at(), self.meta(), "action_session_start", policy, 1.0))
        self.emit(rj.event("session_started", self.at(), self.meta()))
        carried, self.session_slots = ([] if first else self.session_slots), []
        for old in carried:
            self.slot(old["name"], old["value"], meta=old["metadata"])
        self.listen(None, None)
        self.form, self.paused_messages, self.reminder = [], 0, None

    def slot_value(self, name: str) -> Any:
        """The value of a slot as set in this session (None if not set)."""
        for event in reversed(self.session_slots):
            if event["name"] == name:
                return event["value"]
        return None

    def slot(self, name: str, value: Any, *, meta: JSON | None = None) -> None:
        event = rj.slot(self.at(), meta if meta is not None else self.meta(), name, value)
        self.session_slots.append(event)
        self.emit(event)

    def act(self, name: str, *, rule: bool | None = None, hide: bool = False) -> None:
        """A predicted action with a plausible policy and confidence."""
        policy, confidence = self.policy(rule)
        self.emit(rj.action(self.at(), self.meta(), name, policy, confidence, hide_rule_turn=hide))

    def policy(self, rule: bool | None = None) -> tuple[str, float]:
        if rule is None:
            rule = self.rng.random() < 0.5
        if rule:
            return "RulePolicy", 1.0
        if self.rng.random() < 0.3:
            return "MemoizationPolicy", 1.0
        return "TEDPolicy", round(self.rng.uniform(0.55, 0.999), 6)

    def listen(self, policy: str | None = "", confidence: float | None = 1.0) -> None:
        """``action_listen``; by default predicted like any action."""
        if policy == "":
            policy, confidence = self.policy()
        self.emit(rj.action(self.at(), self.meta(), "action_listen", policy, confidence))

    def say(self, utter: str, text: str | None = None, **values: Any) -> None:
        """A bot response from the domain (``utter_action`` in its metadata)."""
        if text is None:
            text = self.rng.choice(p.RESPONSES[utter]).format(**values)
        meta = {"utter_action": utter, **self.meta()}
        buttons = p.YES_NO_BUTTONS if utter == "utter_ask_outdoor_seating" else None
        self.emit(rj.bot(self.at(0.01, 0.2), meta, text, buttons=buttons))

    def featurize(self, by_text: bool = False) -> None:
        self.emit(
            rj.event(
                "user_featurization", self.at(), self.meta(), use_text_for_featurization=by_text
            )
        )

    def hex_id(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def user(
        self,
        intent: str,
        text: str,
        entities: list[JSON] | None = None,
        *,
        confidence: float | None = None,
        extra: JSON | None = None,
        retrieval: str | None = None,
    ) -> None:
        """A user message with a full NLU parse; then the slots ``action_extract_slots`` sets."""
        self.turn_mark = len(self.session_slots)
        if confidence is None:
            confidence = round(self.rng.uniform(0.62, 0.9995), 7)
        message_id = self.hex_id()
        nlu = {"intent_ranking": self._ranking(intent, confidence), **(extra or {})}
        named: JSON = {"name": intent, "confidence": confidence}
        if retrieval is not None:
            named["full_retrieval_intent_name"] = retrieval
        parse = rj.parse_data(text, named, entities or [], message_id, extra=nlu)
        meta = self.meta()
        self.emit(
            rj.user(self.at(0.001, 0.01), meta, parse, channel=self.channel, message_id=message_id)
        )
        self._extract_slots(intent, entities or [])

    def _ranking(self, intent: str, confidence: float) -> list[JSON]:
        others = [name for name in p.RANKING_INTENTS if name != intent]
        rest, ranking = 1.0 - confidence, [{"name": intent, "confidence": confidence}]
        for name in self.rng.sample(others, 4):
            share = round(rest * self.rng.uniform(0.2, 0.7), 7)
            rest -= share
            ranking.append({"name": name, "confidence": share})
        return ranking

    def _extract_slots(self, intent: str, entities: list[JSON]) -> None:
        mapping = {"city": "city", "cuisine": "cuisine", "number": "num_people"}
        for entity in entities:
            if entity["entity"] in mapping:
                self.slot(mapping[entity["entity"]], entity["value"])
        if self.form and self.form[0] == "outdoor_seating" and intent in ("affirm", "deny"):
            self.slot("outdoor_seating", intent == "affirm")
