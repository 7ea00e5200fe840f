"""The error tree for input that cannot become an event.

::

    TrackerflowError                 base of everything trackerflow raises on purpose
    └── EventError (ValueError)      one record or event could not be read
        ├── InvalidJson              not UTF-8 / not JSON / not a JSON object
        ├── RecordTooLarge           over the configured size limit
        ├── UnknownEvent             the ``event`` name is not a Rasa event
        ├── MissingField             a required key is absent
        └── InvalidField             a key has the wrong type or an impossible value

Every ``EventError`` says what was expected, what arrived and where (line, byte offset,
conversation id, topic/partition/offset — whatever the caller knows). Errors are data: callers
put them in a rejects file or on the dead-letter topic; ``retryable`` tells a shell whether trying
the same input again could help (never, for these).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

_MAX_SHOWN = 80


@dataclass(frozen=True, slots=True)
class Location:
    """Where a bad input came from; every part is optional."""

    line: int | None = None
    index: int | None = None
    offset: int | None = None
    conversation_id: str | None = None
    source: str | None = None
    topic: str | None = None
    partition: int | None = None
    kafka_offset: int | None = None

    def describe(self) -> str:
        parts: list[str] = []
        if self.source is not None:
            parts.append(self.source)
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.index is not None:
            parts.append(f"event #{self.index}")
        if self.topic is not None:
            parts.append(
                f"topic {self.topic!r} partition {self.partition} offset {self.kafka_offset}"
            )
        if self.offset is not None:
            parts.append(f"byte {self.offset}")
        if self.conversation_id is not None:
            parts.append(f"conversation {self.conversation_id!r}")
        return ", ".join(parts)


def show(value: Any) -> str:
    """A short description of an arriving value for error messages: its JSON type and a preview."""
    kind = _json_type(value)
    text = repr(value)
    if len(text) > _MAX_SHOWN:
        text = text[: _MAX_SHOWN - 3] + "..."
    return kind if value is None else f"{kind} {text}"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


class TrackerflowError(Exception):
    """Base class of the errors trackerflow raises on purpose."""

    retryable: bool = False


class EventError(TrackerflowError, ValueError):
    """An input record or event could not be read.

    ``reason`` is the human sentence without location; ``str(error)`` prefixes the location.
    """

    def __init__(
        self,
        reason: str,
        *,
        expected: str | None = None,
        got: str | None = None,
        where: Location | None = None,
    ) -> None:
        self.reason = reason
        self.expected = expected
        self.got = got
        self.where = where or Location()
        super().__init__(self._message())

    def _message(self) -> str:
        place = self.where.describe()
        return f"{place}: {self.reason}" if place else self.reason

    def at(self, **where: Any) -> EventError:
        """This error with more location facts filled in (known ones are kept)."""
        known = {k: v for k, v in where.items() if getattr(self.where, k) is None}
        clone = type(self).__new__(type(self))
        clone.reason, clone.expected, clone.got = self.reason, self.expected, self.got
        clone.where = replace(self.where, **known)
        Exception.__init__(clone, clone._message())
        return clone

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready description (used by rejects files and dead letters)."""
        return {
            "error": type(self).__name__,
            "reason": self.reason,
            "expected": self.expected,
            "got": self.got,
            "where": {
                f.name: getattr(self.where, f.name)
                for f in fields(self.where)
                if getattr(self.where, f.name) is not None
            },
        }


class InvalidJson(EventError):
    """The bytes are not UTF-8, not JSON, or not a JSON object."""


class RecordTooLarge(EventError):
    """The record is larger than the configured limit."""


class UnknownEvent(EventError):
    """The ``event`` name is not one trackerflow (or Rasa) knows."""


class MissingField(EventError):
    """A required key is absent."""


class InvalidField(EventError):
    """A key has the wrong JSON type or an impossible value."""
