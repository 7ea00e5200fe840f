"""Produce requests that copy their record batches once, not eight times.

aiokafka encodes a request field by field, and each level (a partition, its array, a topic, the
topics' array, the request) joins the bytes of the level below into new bytes. Record batches
are the bulk of a produce request (the worker's transactions send megabytes at a time), so each
batch was copied six times before the request was written (with the memory for each copy
faulted in, where the process had none free). :func:`install` gives aiokafka's sender a
``ProduceRequest`` whose request structures for versions 3 to 8 (the ones with a transactional
id, which every producer of this project uses) write the same bytes with one join.

aiokafka's connection then joins the request's header to its body, and its size to both, before
it writes them: two more copies. The connection's ``send`` installed here writes a joined
request's size and header, then its body as it is (a view of the same bytes), and otherwise does
what aiokafka's does (the same correlation ids, the same wait for the response); any other
request goes to aiokafka's own ``send``.

The bytes are exactly aiokafka's, field by field (the tests compare both encodings on generated
requests, and what both connections write); a version this module was not written for, or a
schema that differs from the one it expects (another aiokafka), keeps aiokafka's own encoding,
and a connection ``send`` other than the one this module's was written after (aiokafka 0.14's)
keeps aiokafka's.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import struct
import textwrap
from collections.abc import Sequence
from typing import Any, Final

import aiokafka
from aiokafka import errors
from aiokafka.conn import AIOKafkaConnection, CloseReason
from aiokafka.producer import sender
from aiokafka.protocol import produce
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.protocol.types import Array, Bytes, Int16, Int32, Schema, String
from aiokafka.util import wait_for

log = logging.getLogger("trackerflow.worker")

_INT16: Final = struct.Struct(">h").pack
_INT32: Final = struct.Struct(">i").pack
_NAMES: Final = ("transactional_id", "required_acks", "timeout", "topics")

# per topic: its name and per partition its number and record batch (None: an array that is null)
Topics = Sequence[tuple[str, Sequence[tuple[int, Any]] | None]]


def _string(value: str | None) -> bytes:
    """aiokafka's ``String("utf-8")``: a 16-bit length (-1: None), then the UTF-8."""
    if value is None:
        return _INT16(-1)
    encoded = str(value).encode("utf-8")
    return _INT16(len(encoded)) + encoded


def encode(
    transactional_id: str | None, required_acks: int, timeout: int, topics: Topics | None
) -> bytes:
    """A produce request's body (versions 3 to 8) as aiokafka's schema writes it: the
    transactional id, acks, timeout, then per topic its name and per partition its number and
    record batch (a 32-bit length, -1 for None, then the bytes), in one join."""
    parts: list[Any] = [_string(transactional_id), _INT16(required_acks), _INT32(timeout)]
    if topics is None:
        parts.append(_INT32(-1))
        return b"".join(parts)
    parts.append(_INT32(len(topics)))
    for topic, partitions in topics:
        parts.append(_string(topic))
        if partitions is None:
            parts.append(_INT32(-1))
            continue
        parts.append(_INT32(len(partitions)))
        for partition, records in partitions:
            parts.append(_INT32(partition))
            if records is None:
                parts.append(_INT32(-1))
            else:
                parts.append(_INT32(len(records)))
                parts.append(records)
    return b"".join(parts)


def _one_join(cls: type[Any]) -> type[Any]:
    """``cls`` (a produce request structure) encoding with :func:`encode`."""

    def encode_body(self: Any) -> bytes:
        fields = self.__dict__
        return encode(
            fields["transactional_id"], fields["required_acks"], fields["timeout"], fields["topics"]
        )

    return type(cls.__name__, (cls,), {"encode": encode_body, "__module__": __name__})


# the versions with a transactional id and this body
_VERSIONS: Final = tuple(getattr(produce, f"ProduceRequest_v{n}") for n in range(3, 9))
_JOINED: Final = {cls: _one_join(cls) for cls in _VERSIONS}


class JoinedProduceRequest(ProduceRequest):  # type: ignore[misc]
    """aiokafka's ``ProduceRequest``, its structures for versions 3 to 8 encoding in one join."""

    def build(self, request_struct_class: type[Any]) -> Any:
        return super().build(_JOINED.get(request_struct_class, request_struct_class))


# aiokafka's AIOKafkaConnection.send, and the SHA-256 of its source (dedented) in the versions
# whose steps _send repeats: aiokafka 0.14.0's
_AIOKAFKA_SEND: Final = AIOKafkaConnection.send
_KNOWN_SENDS: Final = frozenset(
    {"360d12e20e646dfba2b4acad94b66136b80ac719ef9cdb24556d5591bdea349e"}
)


def _send(self: AIOKafkaConnection, request: Any, expect_response: bool = True) -> Any:
    """``AIOKafkaConnection.send``: a joined produce request is written as its size and
    header, then its body without copying it; anything else by aiokafka's own ``send``. What
    it returns is awaited as aiokafka's is: the response, or the writer drained."""
    writer = self._writer
    if writer is None or not isinstance(request, JoinedProduceRequest):
        return _AIOKAFKA_SEND(self, request, expect_response)
    prepared = request.prepare(self._versions)
    correlation_id = self._next_correlation_id()
    header = prepared.build_request_header(
        correlation_id=correlation_id, client_id=self._client_id
    ).encode()
    body = prepared.encode()
    try:
        writer.write(_INT32(len(header) + len(body)) + header)
        writer.write(memoryview(body))
    except OSError as error:
        self.close(reason=CloseReason.CONNECTION_BROKEN)
        raise errors.KafkaConnectionError(
            f"Connection at {self._host}:{self._port} broken: {error}"
        ) from error
    if not expect_response:
        return writer.drain()
    answered = self._loop.create_future()
    self._requests.append((correlation_id, prepared, answered))
    return wait_for(answered, self._request_timeout)


def sends_known() -> bool:
    """Whether aiokafka's ``AIOKafkaConnection.send`` is the one :func:`_send` repeats the
    steps of (its source as in aiokafka 0.14.0)."""
    try:
        source = inspect.getsource(_AIOKAFKA_SEND)
    except (OSError, TypeError):  # no source: cannot tell
        return False
    return hashlib.sha256(textwrap.dedent(source).encode()).hexdigest() in _KNOWN_SENDS


def fits() -> bool:
    """Whether aiokafka's produce request structures are the ones :func:`encode` writes."""
    for cls in _VERSIONS:
        schema = cls.SCHEMA
        if not isinstance(schema, Schema) or schema.names != _NAMES:
            return False
        txn, acks, timeout, topics = schema.fields
        if not (isinstance(txn, String) and txn.encoding == "utf-8"):
            return False
        if (acks, timeout) != (Int16, Int32) or not isinstance(topics, Array):
            return False
        topic = topics.array_of
        if not isinstance(topic, Schema) or topic.names != ("topic", "partitions"):
            return False
        name, partitions = topic.fields
        if not (isinstance(name, String) and name.encoding == "utf-8"):
            return False
        if not isinstance(partitions, Array) or not isinstance(partitions.array_of, Schema):
            return False
        if partitions.array_of.fields != (Int32, Bytes):
            return False
    return True


def install() -> bool:
    """Have this process's producers write produce requests with one join, and its
    connections write them without joining them to their headers (once); False if aiokafka's
    structures are not the ones this module was written for (its own stay). A connection
    ``send`` other than the one this module's repeats stays aiokafka's, with a warning."""
    if sender.ProduceRequest is JoinedProduceRequest:
        return True
    if not fits():
        log.warning(
            "aiokafka %s encodes produce requests differently: leaving its encoding",
            aiokafka.__version__,
        )
        return False
    sender.ProduceRequest = JoinedProduceRequest
    if sends_known():
        AIOKafkaConnection.send = _send
    else:
        log.warning(
            "aiokafka %s writes requests differently: produce requests are joined to their "
            "headers as it does",
            aiokafka.__version__,
        )
    return True


def uninstall() -> None:
    """Give aiokafka's sender its own ``ProduceRequest``, and its connections their own
    ``send``, back."""
    sender.ProduceRequest = ProduceRequest
    AIOKafkaConnection.send = _AIOKAFKA_SEND
