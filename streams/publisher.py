"""The async publisher: Rasa events onto the events topic, keyed by conversation, in order.

Rules of this module:

* Validate first, send second. A dict is decoded with ``events.wire`` (Rasa 3.6 semantics) and an
  invalid one raises its :class:`~events.EventError` before anything is handed to Kafka; so does
  a record larger than ``max_record_bytes`` once encoded.
* A record is what Rasa's ``KafkaEventBroker`` publishes: value = the event as Rasa writes it plus
  ``sender_id`` (orjson), key = the conversation id in UTF-8, header ``RASA_ENVIRONMENT``
  (``settings.rasa_environment``). Events without a timestamp are stamped with the publish time.
* Order per conversation: the key puts a conversation on one partition, and the idempotent
  producer (``enable_idempotence=True``, ``acks="all"``) never reorders or duplicates a
  partition's records on retries. aiokafka keeps at most one produce request in flight per broker
  (Kafka allows up to five with idempotence), so order holds even across retries.
* Never blocks the event loop: ``publish`` awaits only to enqueue (``send``, not
  ``send_and_wait``) and returns a future of the delivery. At most ``max_in_flight`` records wait
  for the broker; beyond that ``publish`` waits (backpressure). Long runs of sends yield to the
  loop every ``YIELD_EVERY`` records.
* Failures are never silent: awaiting the delivery raises :class:`PublishError`; ``flush()`` (and
  leaving the ``async with`` block) raises if any record handed to ``publish`` since the last
  flush failed. ``publish_many`` never raises for one record: it returns a
  :class:`PublishReport` listing every record that was refused or failed. Records after a failed
  one are still sent; after a failed delivery the producer is replaced before the next send
  (aiokafka would otherwise refuse every later batch of that partition as out of sequence).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Final, NamedTuple, TypeAlias

from events import (
    Event,
    EventError,
    InvalidField,
    RecordTooLarge,
    decode_record,
    dumps,
    encode_record,
    stamped,
)
from events.errors import show
from processors.stream import CONTROL_HEADER
from streams.delivery import Delivered, Deliveries, Failure, PublishError, PublishReport
from streams.settings import Settings, kafka_client_config
from streams.topics import RECORD_OVERHEAD, Topics

__all__ = [
    "DEFAULT_MAX_IN_FLIGHT",
    "RASA_ENVIRONMENT_HEADER",
    "Delivered",
    "Encoded",
    "Failure",
    "PublishError",
    "PublishItem",
    "PublishReport",
    "Publisher",
]

RASA_ENVIRONMENT_HEADER: Final = "RASA_ENVIRONMENT"
DEFAULT_MAX_IN_FLIGHT: Final = 10_000
YIELD_EVERY: Final = 256


class Encoded(NamedTuple):
    """A validated record ready to send (what :meth:`Publisher.encode` returns)."""

    conversation_id: str
    key: bytes
    value: bytes


PublishItem: TypeAlias = (
    Encoded | tuple[str, Event | Mapping[str, Any]] | Mapping[str, Any] | bytes | str
)
"""What ``publish_many`` takes: ``(conversation_id, event or event dict)`` (such as an
``events.Record``), a broker record (a dict, or JSON bytes/text) carrying ``sender_id``, or an
:class:`Encoded` record."""


class Publisher:
    """Publishes events to the events topic; use as ``async with Publisher(settings) as p``."""

    def __init__(
        self,
        settings: Settings,
        *,
        topic: str | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        clock: Callable[[], float] = time.time,
        request_timeout_ms: int = 40_000,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self.settings = settings
        self.topic = topic or Topics.from_settings(settings).events
        self._clock = clock
        self._max_in_flight = max_in_flight
        self._request_timeout_ms = request_timeout_ms
        self._headers = [(RASA_ENVIRONMENT_HEADER, settings.rasa_environment.encode("utf-8"))]
        self._producer: Any = None
        self._broken: Any = None  # the producer that failed a delivery, until it is renewed
        self._renewing = asyncio.Lock()
        self._window: asyncio.Semaphore | None = None
        self._unflushed = Deliveries()  # deliveries of ``publish`` since the last flush
        self._sent = 0

    async def start(self) -> None:
        """Connect to Kafka (raises :class:`PublishError` if no broker answers)."""
        if self._producer is not None:
            return
        self._producer = await self._connect()
        self._window = asyncio.Semaphore(self._max_in_flight)

    async def stop(self) -> None:
        """Deliver what is pending and disconnect (delivery failures are not raised here)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def _connect(self) -> Any:
        """A started idempotent producer."""
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaError

        producer = AIOKafkaProducer(
            **kafka_client_config(self.settings),
            acks="all",
            enable_idempotence=True,
            max_request_size=self.settings.max_record_bytes + RECORD_OVERHEAD,
            request_timeout_ms=self._request_timeout_ms,
        )
        try:
            await producer.start()
        except (KafkaError, OSError) as error:
            await producer.stop()
            where = self.settings.bootstrap_servers
            raise PublishError(
                f"cannot connect to Kafka at {where}: {_describe(error)}", retryable=True
            ) from None
        return producer

    async def _renew(self) -> None:
        """Replace the producer after a failed delivery. aiokafka does not rewind an idempotent
        producer's sequence numbers when the broker refuses a batch, so every later batch to
        that partition would fail (OutOfOrderSequenceNumber); a new producer starts afresh."""
        async with self._renewing:
            broken, self._broken = self._broken, None
            if broken is None or broken is not self._producer:
                return
            with contextlib.suppress(Exception):  # its pending batches fail; they are reported
                await broken.stop()
            self._producer = None
            self._producer = await self._connect()

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is None:
                await self.flush()
        finally:
            await self.stop()

    async def publish(
        self, event: Event | Mapping[str, Any], conversation_id: str
    ) -> asyncio.Future[Delivered]:
        """Validate, encode and enqueue one event; returns the future of its delivery.

        Raises the :class:`~events.EventError` of an invalid event before sending, and
        :class:`PublishError` if the record cannot even be enqueued (no metadata for the topic).
        """
        record = self.encode(event, conversation_id)
        return await self._send(record, self._unflushed, None)

    async def publish_control(
        self, conversation_id: str, control: str, body: Mapping[str, Any]
    ) -> asyncio.Future[Delivered]:
        """Enqueue a control record for a conversation (header ``trackerflow.control``; see
        ``processors.stream``), ordered with its events like any of them."""
        value = dumps({"sender_id": conversation_id, **body})
        record = Encoded(conversation_id, _key(conversation_id), value)
        headers = [*self._headers, (CONTROL_HEADER, control.encode("utf-8"))]
        return await self._send(record, self._unflushed, None, headers=headers)

    async def publish_many(self, records: Iterable[PublishItem]) -> PublishReport:
        """Publish every record and wait for all deliveries; never raises for a single record.

        Invalid records are refused (an ``EventError`` in the report) and the others still go
        out. After a failure to enqueue (the broker is gone, the topic has no metadata) the
        remaining records are still validated but not sent, each reported as failed.
        """
        batch = Deliveries()
        gave_up: PublishError | None = None
        try:
            for index, item in enumerate(records):
                try:
                    record = self._encode_item(item)
                except EventError as error:
                    batch.failures.append(Failure(index, error.where.conversation_id, error))
                    continue
                conversation_id = record.conversation_id
                if gave_up is not None:
                    reason = f"not sent after an earlier failure: {gave_up.reason}"
                    skipped = PublishError(
                        reason, conversation_id=conversation_id, topic=self.topic
                    )
                    batch.failures.append(Failure(index, conversation_id, skipped))
                    continue
                try:
                    future = await self._send(record, batch, index)
                except PublishError as failed:
                    gave_up = failed
                    batch.failures.append(Failure(index, conversation_id, failed))
                    continue
                future.add_done_callback(_observed)  # outcomes are in the report
        finally:
            await batch.idle.wait()
        return PublishReport(batch.published, tuple(sorted(batch.failures, key=_index)))

    async def flush(self) -> None:
        """Wait until every record handed to :meth:`publish` is delivered or failed; raise a
        :class:`PublishError` (the first, with a count) if any of them failed."""
        if self._producer is not None:
            await self._producer.flush()
        await self._unflushed.idle.wait()
        errors, self._unflushed.errors = self._unflushed.errors, []
        if errors:
            first = errors[0]
            others = len(errors) - 1
            more = f" ({others} more record{'s' if others > 1 else ''} failed)" if others else ""
            raise PublishError(
                first.reason + more,
                conversation_id=first.conversation_id,
                topic=first.topic,
                retryable=first.retryable,
            )

    def encode(self, event: Event | Mapping[str, Any], conversation_id: str) -> Encoded:
        """The record for ``event``: validated, stamped if unstamped, encoded, size-checked.

        Raises an :class:`~events.EventError`; nothing is sent.
        """
        key = _key(conversation_id)
        event = stamped(_event(event, conversation_id), self._clock())
        value = dumps(encode_record(event, conversation_id))
        limit = self.settings.max_record_bytes
        if len(value) > limit:
            raise RecordTooLarge(
                f"record is {len(value)} bytes, over the limit of {limit} bytes",
                expected=f"at most {limit} bytes",
                got=f"{len(value)} bytes",
            ).at(conversation_id=conversation_id)
        return Encoded(conversation_id, key, value)

    def _encode_item(self, item: object) -> Encoded:
        if isinstance(item, Encoded):
            return item
        if isinstance(item, tuple) and len(item) == 2:
            conversation_id, event = item
            return self.encode(event, conversation_id)
        if isinstance(item, Mapping | bytes | str):
            record = decode_record(item, max_bytes=self.settings.max_record_bytes)
            return self.encode(record.event, record.sender_id)
        got = show(item)
        raise InvalidField(
            f"a record must be (conversation_id, event), a dict or JSON, got {got}",
            expected="(conversation_id, event) or a broker record",
            got=got,
        )

    async def _send(
        self,
        record: Encoded,
        batch: Deliveries,
        index: int | None,
        *,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Delivered]:
        """Hand one encoded record to the producer within the in-flight window; its outcome
        goes to ``batch`` (under ``index``) and to the returned future."""
        if self._broken is not None:
            await self._renew()
        producer, window = self._producer, self._window
        if producer is None or window is None:
            raise RuntimeError("the publisher is not started: use 'async with Publisher(...)'")
        from aiokafka.errors import KafkaError

        conversation_id = record.conversation_id
        await window.acquire()
        try:
            sent = await producer.send(
                self.topic, record.value, record.key, headers=headers or self._headers
            )
        except (KafkaError, OSError) as error:
            window.release()
            raise self._error(error, conversation_id) from None
        result: asyncio.Future[Delivered] = asyncio.get_running_loop().create_future()
        batch.add()

        def delivered(done: asyncio.Future[Any]) -> None:
            window.release()
            if done.cancelled():
                error: PublishError | None = PublishError(
                    "the send was cancelled", conversation_id=conversation_id, topic=self.topic
                )
            else:
                cause = done.exception()
                error = None if cause is None else self._error(cause, conversation_id)
            if error is not None and producer is self._producer:
                self._broken = producer
            batch.settle(index, conversation_id, error)
            if result.cancelled():
                return
            if error is None:
                meta = done.result()
                result.set_result(
                    Delivered(meta.topic, meta.partition, meta.offset, conversation_id)
                )
            else:
                result.set_exception(error)
                if index is None:  # flush() reports it: no "exception never retrieved" log
                    result.add_done_callback(_observed)

        sent.add_done_callback(delivered)
        self._sent += 1
        if self._sent % YIELD_EVERY == 0:
            await asyncio.sleep(0)  # let other tasks run during long bursts of sends
        return result

    def _error(self, cause: BaseException, conversation_id: str) -> PublishError:
        return PublishError(
            _describe(cause),
            conversation_id=conversation_id,
            topic=self.topic,
            retryable=bool(getattr(cause, "retriable", False)),
        )


def _key(conversation_id: object) -> bytes:
    """The record key: the conversation id in UTF-8 (a non-empty string, else InvalidField)."""
    if isinstance(conversation_id, str) and conversation_id:
        try:
            return conversation_id.encode("utf-8")
        except UnicodeEncodeError:
            pass
    got = show(conversation_id)
    raise InvalidField(
        f"the conversation id must be a non-empty UTF-8 string, got {got}",
        expected="a non-empty string (the record key)",
        got=got,
    )


def _event(event: object, conversation_id: str) -> Event:
    """``event`` itself, or decoded from a Rasa event dict (raises its EventError)."""
    if isinstance(event, Event):
        return event
    if isinstance(event, Mapping):
        return decode_record(event, conversation_id=conversation_id).event
    got = show(event)
    raise InvalidField(
        f"an event must be an events.Event or a Rasa event dict, got {got}",
        expected="an events.Event or a Rasa event dict",
        got=got,
    ).at(conversation_id=conversation_id)


def _observed(future: asyncio.Future[Any]) -> None:
    future.exception()


def _index(failure: Failure) -> int:
    return failure.index


def _describe(error: BaseException) -> str:
    """``Name: message`` for an exception (Kafka errors already start with their name)."""
    text, name = str(error), type(error).__name__
    if not text:
        return name
    return text if text.startswith(name) else f"{name}: {text}"
