"""Rasa 3.6 event dicts, written independently of ``events.wire`` (so they cross-check it).

Every builder returns exactly what Rasa's ``Event.as_dict()`` produces for a server-logged event:
``event``, ``timestamp``, ``metadata`` (never empty here: the processor stamps ``model_id`` and
``assistant_id`` into every event it logs), then the event's own keys in Rasa's order. A broker
record is ``{"sender_id": ..., **event}``, serialised with plain ``json.dumps`` like Rasa's
``KafkaEventBroker``. See ``rasa-semantics.md`` §1.2 and §3.
"""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]

BOT_DATA_KEYS = ("elements", "quick_replies", "buttons", "attachment", "image", "custom")


def event(kind: str, ts: float, meta: JSON, /, **keys: Any) -> JSON:
    """Any event: the base keys, then the event's own keys in the given order."""
    return {"event": kind, "timestamp": ts, "metadata": meta, **keys}


def user(
    ts: float,
    meta: JSON,
    parse: JSON,
    *,
    channel: str | None,
    message_id: str | None,
) -> JSON:
    """A ``user`` event around a complete NLU parse (see :func:`parse_data`)."""
    return event(
        "user",
        ts,
        meta,
        text=parse["text"],
        parse_data=parse,
        input_channel=channel,
        message_id=message_id,
    )


def parse_data(
    text: str,
    intent: JSON,
    entities: list[JSON],
    message_id: str | None,
    *,
    metadata: JSON | None = None,
    extra: JSON | None = None,
) -> JSON:
    """Rasa's built ``parse_data``: intent, entities, text, message_id, metadata, then NLU extras
    (``intent_ranking``, ``response_selector``) overlaid in order."""
    parse: JSON = {
        "intent": intent,
        "entities": entities,
        "text": text,
        "message_id": message_id,
        "metadata": metadata if metadata is not None else {},
    }
    if extra:
        parse.update(extra)
    return parse


def action(
    ts: float,
    meta: JSON,
    name: str | None,
    policy: str | None = None,
    confidence: float | None = None,
    *,
    action_text: str | None = None,
    hide_rule_turn: bool = False,
) -> JSON:
    """An ``action`` event (``name`` None plus ``action_text`` for an end-to-end bot turn)."""
    return event(
        "action",
        ts,
        meta,
        name=name,
        policy=policy,
        confidence=confidence,
        action_text=action_text,
        hide_rule_turn=hide_rule_turn,
    )


def bot(ts: float, meta: JSON, text: str | None, **data: Any) -> JSON:
    """A ``bot`` event with the six data keys every Rasa response carries."""
    return event("bot", ts, meta, text=text, data={key: data.get(key) for key in BOT_DATA_KEYS})


def slot(ts: float, meta: JSON, name: str, value: Any) -> JSON:
    return event("slot", ts, meta, name=name, value=value)


def reminder(
    ts: float,
    meta: JSON,
    *,
    intent: str,
    date_time: str,
    entities: list[JSON] | None,
    name: str,
    kill_on_user_msg: bool,
) -> JSON:
    """A ``reminder`` event (``date_time`` is an ISO-8601 string, as ``isoformat()`` writes it)."""
    return event(
        "reminder",
        ts,
        meta,
        intent=intent,
        date_time=date_time,
        entities=entities,
        name=name,
        kill_on_user_msg=kill_on_user_msg,
    )


def diet_entity(text: str, entity: str, value: str, confidence: float) -> JSON:
    """An entity as DIETClassifier (plus the synonym mapper) reports it."""
    start = text.lower().find(value.lower())
    return {
        "entity": entity,
        "start": start,
        "end": start + len(value),
        "confidence_entity": confidence,
        "value": value,
        "extractor": "DIETClassifier",
    }


def duckling_number(text: str, number: int) -> JSON:
    """A number entity as DucklingEntityExtractor reports it."""
    literal = str(number)
    start = text.find(literal)
    return {
        "start": start,
        "end": start + len(literal),
        "text": literal,
        "value": number,
        "confidence": 1.0,
        "additional_info": {"value": number, "type": "value"},
        "entity": "number",
        "extractor": "DucklingEntityExtractor",
    }


def response_selector(retrieval_intent: str, response: str, text: str, confidence: float) -> JSON:
    """The ``response_selector`` part of a parse for a retrieval intent such as ``chitchat``."""
    full = f"{retrieval_intent}/{response}"
    return {
        "all_retrieval_intents": [retrieval_intent],
        retrieval_intent: {
            "response": {
                "responses": [{"text": text}],
                "confidence": confidence,
                "intent_response_key": full,
                "utter_action": f"utter_{full}",
            },
            "ranking": [{"intent_response_key": full, "confidence": confidence}],
        },
    }
