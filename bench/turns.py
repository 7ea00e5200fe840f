"""Turn scripts of the simulated assistant: what Rasa 3.6 logs for each kind of user turn.

``play_turn`` picks a turn by weight (form turns while the form is active, paused messages while a
human has taken over) and appends its events to the conversation. Each script is the event
sequence of ``rasa-semantics.md`` §3.5 for that situation; comments name the less obvious rules.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bench import phrases as p
from bench import rasa_json as rj

if TYPE_CHECKING:
    from bench.conversation import Conversation

Turn = Callable[["Conversation"], None]


def say_text(c: Conversation, intent: str, **values: Any) -> str:
    return c.rng.choice(p.TEXTS[intent]).format(**values)


def simple(intent: str, utter: str, *, rule: bool | None = None) -> Turn:
    """A question answered by one response."""

    def turn(c: Conversation) -> None:
        c.user(intent, say_text(c, intent))
        c.featurize()
        c.act(utter, rule=rule)
        c.say(utter)
        c.listen()

    return turn


def weather(c: Conversation) -> None:
    """A custom action that needs the ``city`` slot (asks for it when missing)."""
    if c.rng.random() < 0.2:
        c.user("ask_weather", say_text(c, "ask_weather_no_city"))
        c.featurize()
        c.act("utter_ask_city", rule=False)
        c.say("utter_ask_city")
        c.listen()
        return
    city = c.rng.choice(p.CITIES)
    text = say_text(c, "ask_weather", city=city)
    confidence = round(c.rng.uniform(0.8, 0.999), 6)
    c.user("ask_weather", text, [rj.diet_entity(text, "city", city, confidence)])
    if c.rng.random() < 0.05:  # a policy adds an entity (applies: the latest action is a listen)
        added = [{"entity": "date", "value": "today"}]
        c.emit(rj.event("entities", c.at(), c.meta(), entities=added))
    c.featurize()
    c.act("action_weather", rule=False)
    c.say("utter_weather", degrees=c.rng.randint(-5, 35), city=city)
    c.listen()


def chitchat(c: Conversation) -> None:
    """A retrieval intent: the response selector picks ``utter_chitchat/<response>``."""
    response = c.rng.choice(p.CHITCHAT_RESPONSES)
    confidence = round(c.rng.uniform(0.7, 0.99), 6)
    answer = p.CHITCHAT_ANSWERS[response]
    selector = rj.response_selector("chitchat", response, answer, confidence)
    c.user(
        "chitchat",
        p.CHITCHAT_QUESTIONS[response],
        extra={"response_selector": selector},
        retrieval=f"chitchat/{response}",
    )
    c.featurize()
    c.act("utter_chitchat", rule=True)
    c.say(f"utter_chitchat/{response}", answer)
    c.listen()


def restaurant(c: Conversation) -> None:
    """The form starts: ``active_loop``, then it asks for the first missing slot."""
    entities = []
    if c.rng.random() < 0.4:
        cuisine = c.rng.choice(p.CUISINES)
        text = say_text(c, "request_restaurant_cuisine", cuisine=cuisine)
        entities = [rj.diet_entity(text, "cuisine", cuisine, 0.97)]
    else:
        text = say_text(c, "request_restaurant")
    c.user("request_restaurant", text, entities)
    c.featurize()
    c.act(p.FORM, rule=True)
    c.emit(rj.event("active_loop", c.at(), c.meta(), name=p.FORM))
    c.form = [s for s in p.FORM_SLOTS if not (s == "cuisine" and entities)]
    if entities:
        c.slot("cuisine", entities[0]["value"])  # the form validates what was extracted
    ask_next(c)


def ask_next(c: Conversation) -> None:
    c.slot("requested_slot", c.form[0])
    c.say(f"utter_ask_{c.form[0]}")
    c.listen("RulePolicy", 1.0)


def form_answer(c: Conversation) -> None:
    """The user answers the requested slot; the form validates it and asks on, or submits."""
    wanted = c.form[0]
    if wanted == "cuisine":
        value: Any = c.rng.choice(p.CUISINES)
        text = say_text(c, "inform_cuisine", cuisine=value)
        c.user("inform", text, [rj.diet_entity(text, "cuisine", value, 0.95)])
    elif wanted == "num_people":
        value = c.rng.randint(1, 12)
        text = say_text(c, "inform_number", number=value)
        c.user("inform", text, [rj.duckling_number(text, value)])
    else:
        intent = c.rng.choice(("affirm", "deny"))
        value = intent == "affirm"
        c.user(intent, say_text(c, intent))
    c.featurize()
    c.act(p.FORM, rule=True)
    c.slot(wanted, value)
    c.form.pop(0)
    if c.form:
        ask_next(c)
        return
    c.slot("requested_slot", None)
    c.emit(rj.event("active_loop", c.at(), c.meta(), name=None))
    c.act("utter_submit", rule=True)
    c.say("utter_submit", num_people=c.slot_value("num_people"))
    c.act("utter_slots_values", rule=False)
    c.say("utter_slots_values", **{k: c.slot_value(k) for k in ("cuisine", "num_people")})
    c.listen()


def form_interrupt(c: Conversation) -> None:
    """A question in the middle of the form: answered, then the form asks again."""
    c.user("bot_challenge", say_text(c, "bot_challenge"))
    c.featurize()
    c.emit(rj.event("loop_interrupted", c.at(), c.meta(), is_interrupted=True))
    c.act("utter_iamabot", rule=True)
    c.say("utter_iamabot")
    c.act(p.FORM, rule=True)
    ask_next(c)


def form_reject(c: Conversation) -> None:
    """The form cannot use the answer: ``action_execution_rejected`` and no ``action`` event."""
    c.user("out_of_scope", say_text(c, "out_of_scope"))
    c.featurize()
    policy, confidence = c.policy(True)
    c.emit(
        rj.event(
            "action_execution_rejected",
            c.at(),
            c.meta(),
            name=p.FORM,
            policy=policy,
            confidence=confidence,
        )
    )
    c.act("utter_cannot_help", rule=False)
    c.say("utter_cannot_help")
    c.listen()


def form_stop(c: Conversation) -> None:
    """The user stops the form and confirms: the loop is deactivated."""
    c.user("stop", say_text(c, "stop"))
    c.featurize()
    c.act("utter_ask_continue", rule=True)
    c.say("utter_ask_continue")
    c.listen()
    c.t += c.rng.uniform(2.0, 15.0)
    c.user("affirm", say_text(c, "affirm"))
    c.featurize()
    c.act("action_deactivate_loop", rule=True)
    c.emit(rj.event("active_loop", c.at(), c.meta(), name=None))
    c.slot("requested_slot", None)
    c.form = []
    c.listen()


def fallback(c: Conversation) -> None:
    """Low NLU confidence: ``action_default_fallback`` answers and rewinds the user turn."""
    ranking = [{"name": "nlu_fallback", "confidence": 0.3}, {"name": "greet", "confidence": 0.21}]
    c.user(
        "nlu_fallback",
        say_text(c, "nlu_fallback"),
        confidence=0.3,
        extra={"intent_ranking": ranking},
    )
    c.featurize()
    c.act("action_default_fallback", rule=True, hide=True)
    c.say("utter_default")
    c.emit(rj.event("rewind", c.at(), c.meta()))
    del c.session_slots[c.turn_mark :]  # the rewind reverts the turn's slots
    c.listen("RulePolicy", 1.0)


def undo(c: Conversation) -> None:
    """An interactive correction: the wrong action and its message are undone."""
    c.user("greet", say_text(c, "greet"))
    c.featurize()
    c.act("utter_wrong", rule=False)
    c.say("utter_wrong")
    c.emit(rj.event("undo", c.at(), c.meta()))
    c.act("utter_greet", rule=True)
    c.say("utter_greet")
    c.listen()


def end_to_end(c: Conversation) -> None:
    """An end-to-end prediction: featurized by text, the action has a text and no name."""
    c.user("greet", say_text(c, "greet"))
    c.featurize(by_text=True)
    text = c.rng.choice(p.E2E_BOT_TEXTS)
    confidence = round(c.rng.uniform(0.6, 0.95), 6)
    c.emit(rj.action(c.at(), c.meta(), None, "TEDPolicy", confidence, action_text=text))
    c.emit(rj.bot(c.at(), c.meta(), text))
    c.listen()


def handoff(c: Conversation) -> None:
    """A human takes over: the action returns ``pause``, so no ``action_listen`` follows."""
    c.user("human_handoff", say_text(c, "human_handoff"))
    c.featurize()
    c.act("action_handoff", rule=True, hide=True)
    c.say("utter_handoff")
    c.emit(rj.event("pause", c.at(), c.meta()))
    c.paused_messages = c.rng.randint(1, 3)


def paused_message(c: Conversation) -> None:
    """While paused, user messages are logged but nothing is predicted; then ``resume``."""
    c.user(c.rng.choice(("greet", "affirm", "inform")), say_text(c, "paused_chat"))
    if c.rng.random() < 0.5:
        text = c.rng.choice(p.AGENT_TEXTS)
        c.emit(rj.event("agent", c.at(1.0, 20.0), c.meta(), text=text, data=None))
    c.paused_messages -= 1
    if not c.paused_messages:
        c.emit(rj.event("resume", c.at(5.0, 60.0), c.meta()))


def check_booking(c: Conversation) -> None:
    """A custom action sets a slot and a ``followup``, which runs next (policy followup_action)."""
    c.user("check_booking", say_text(c, "check_booking"))
    c.featurize()
    c.act("action_check_booking", rule=False)
    booking = f"BK-{c.rng.randrange(16**6):06X}"
    c.slot("booking_id", booking)
    c.emit(rj.event("followup", c.at(), c.meta(), name="utter_booking_status"))
    c.emit(rj.action(c.at(), c.meta(), "utter_booking_status", "followup_action", 1.0))
    c.say("utter_booking_status", booking_id=booking)
    c.listen()


def set_reminder(c: Conversation) -> None:
    """A custom action schedules a reminder a few minutes ahead."""
    person = c.rng.choice(p.NAMES)
    text = say_text(c, "set_reminder", name=person)
    entities = [rj.diet_entity(text, "PERSON", person, 0.9)] if person in text else []
    c.user("set_reminder", text, entities)
    c.featurize()
    c.act("action_set_reminder", rule=True)
    minutes = c.rng.randint(1, 10)
    c.say("utter_reminder_set", minutes=minutes)
    due = c.t + 60 * minutes
    when = datetime.fromtimestamp(due, UTC).replace(tzinfo=None).isoformat()
    kill = c.rng.random() < 0.5
    selector = [{"entity": "PERSON", "value": person}]
    c.emit(
        rj.reminder(
            c.at(),
            c.meta(),
            intent="EXTERNAL_reminder",
            date_time=when,
            entities=selector,
            name="my_reminder",
            kill_on_user_msg=kill,
        )
    )
    c.reminder = (due, kill, person)
    c.listen()


def reminder_fires(c: Conversation, person: str) -> None:
    """The reminder's external message (``UserUttered.create_external``), then the reaction."""
    c.turn_mark = len(c.session_slots)
    text = "EXTERNAL: EXTERNAL_reminder"
    entities = [{"entity": "PERSON", "value": person}]
    extra = {"is_external": True}
    parse = rj.parse_data(text, {"name": "EXTERNAL_reminder"}, entities, None, metadata=extra)
    c.emit(rj.user(c.t, {**extra, **c.meta()}, parse, channel=c.channel, message_id=None))
    if c.paused_messages:
        return
    c.featurize()
    c.act("action_react_to_reminder", rule=True)
    c.say("utter_reminder", name=person)
    c.listen()


def forget_reminders(c: Conversation) -> None:
    """Rasa serialises ``cancel_reminder`` without its selectors: it reads back as "cancel all"."""
    c.user("forget_reminders", say_text(c, "forget_reminders"))
    c.featurize()
    c.act("action_forget_reminders", rule=True)
    c.say("utter_reminders_cancelled")
    c.emit(rj.event("cancel_reminder", c.at(), c.meta()))
    c.reminder = None
    c.listen()


def restart(c: Conversation) -> None:
    """``/restart``: ``action_restart`` returns ``restart``, whose followup starts a session."""
    ranking = [{"name": "restart", "confidence": 1.0}]
    c.user("restart", "/restart", confidence=1.0, extra={"intent_ranking": ranking})
    c.featurize()
    c.act("action_restart", rule=True, hide=True)
    c.say("utter_restart")
    c.emit(rj.event("restart", c.at(), c.meta()))
    c.session_slots = []
    c.session_start(first=True, policy="followup_action")


FREE_TURNS: dict[Turn, int] = {
    simple("greet", "utter_greet", rule=True): 8,
    simple("goodbye", "utter_goodbye"): 4,
    simple("thank", "utter_you_are_welcome"): 5,
    simple("bot_challenge", "utter_iamabot", rule=True): 3,
    simple("out_of_scope", "utter_out_of_scope"): 2,
    weather: 14,
    restaurant: 10,
    chitchat: 9,
    check_booking: 5,
    set_reminder: 4,
    forget_reminders: 2,
    fallback: 6,
    undo: 2,
    end_to_end: 3,
    handoff: 2,
    restart: 2,
}

FORM_TURNS: dict[Turn, int] = {
    form_answer: 70,
    form_interrupt: 10,
    form_reject: 8,
    form_stop: 4,
    fallback: 6,
    restart: 1,
}


def play_turn(c: Conversation) -> None:
    """One turn of the kind the conversation's state allows, chosen by weight."""
    if c.paused_messages:
        paused_message(c)
        return
    table = FORM_TURNS if c.form else FREE_TURNS
    turn = c.rng.choices(list(table), list(table.values()))[0]
    turn(c)
