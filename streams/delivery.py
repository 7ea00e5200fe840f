"""What became of published records: delivered, refused before sending, or failed at the broker.

Rules of this module:

* :class:`Delivered` says where the broker stored a record; :class:`PublishError` why it did not
  (``retryable`` tells whether sending the same record again may help).
* A ``publish_many`` call ends with a :class:`PublishReport`: how many records the broker stored
  and one :class:`Failure` per record that was refused (an ``events.EventError``) or failed (a
  ``PublishError``), by its position in the batch.
* :class:`Deliveries` counts the records still waiting for the broker and collects their outcomes;
  the publisher's delivery callbacks feed it. No IO here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from events import EventError, TrackerflowError


class PublishError(TrackerflowError):
    """A record was not published: Kafka refused it, or did not answer in time.

    ``retryable`` says whether sending the same record again may succeed (broker unavailable,
    timeouts) or not (e.g. the broker rejects the record's size).
    """

    def __init__(
        self,
        reason: str,
        *,
        conversation_id: str | None = None,
        topic: str | None = None,
        retryable: bool = False,
    ) -> None:
        self.reason = reason
        self.conversation_id = conversation_id
        self.topic = topic
        self.retryable = retryable
        where = ", ".join(
            part
            for part in (
                f"topic {topic!r}" if topic else "",
                f"conversation {conversation_id!r}" if conversation_id is not None else "",
            )
            if part
        )
        super().__init__(f"{where}: {reason}" if where else reason)


@dataclass(frozen=True, slots=True)
class Delivered:
    """Where the broker stored a record."""

    topic: str
    partition: int
    offset: int
    conversation_id: str


@dataclass(frozen=True, slots=True)
class Failure:
    """One record of a ``publish_many`` batch that was not published, and why."""

    index: int  # position in the batch, from 0
    conversation_id: str | None
    error: EventError | PublishError

    @property
    def reason(self) -> str:
        return self.error.reason

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "conversation_id": self.conversation_id,
            "error": type(self.error).__name__,
            "reason": self.reason,
            "retryable": self.error.retryable,
        }


@dataclass(frozen=True, slots=True)
class PublishReport:
    """The outcome of ``publish_many``: how many records the broker stored, which failed."""

    published: int
    failures: tuple[Failure, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def rejected(self) -> int:
        """Records refused before sending (invalid events)."""
        return sum(isinstance(f.error, EventError) for f in self.failures)

    @property
    def failed(self) -> int:
        """Records sent (or due to be sent) that the broker did not store."""
        return sum(isinstance(f.error, PublishError) for f in self.failures)


@dataclass(slots=True)
class Deliveries:
    """Records waiting for the broker and the outcomes of those settled, for one
    ``publish_many`` call (failures by batch index) or for the ``publish`` calls since the last
    flush (index ``None``: their errors are kept for ``flush()``)."""

    pending: int = 0
    published: int = 0
    failures: list[Failure] = field(default_factory=list)
    errors: list[PublishError] = field(default_factory=list)
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    def add(self) -> None:
        self.pending += 1
        self.idle.clear()

    def settle(self, index: int | None, conversation_id: str, error: PublishError | None) -> None:
        if error is None:
            self.published += 1
        elif index is None:
            self.errors.append(error)
        else:
            self.failures.append(Failure(index, conversation_id, error))
        self.pending -= 1
        if self.pending == 0:
            self.idle.set()
