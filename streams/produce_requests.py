"""Produce requests that copy their record batches once, not six times.

aiokafka encodes a request field by field, and each level (a partition, its array, a topic, the
topics' array, the request) joins the bytes of the level below into new bytes. Record batches
are the bulk of a produce request (the worker's transactions send megabytes at a time), so each
batch was copied six times before the request was written (with the memory for each copy
faulted in, where the process had none free). :func:`install` gives aiokafka's sender a
``ProduceRequest`` whose request structures for versions 3 to 8 (the ones with a transactional
id, which every producer of this project uses) write the same bytes with one join.

The bytes are exactly aiokafka's, field by field (the tests compare both encodings on generated
requests); a version this module was not written for, or a schema that differs from the one it
expects (another aiokafka), keeps aiokafka's own encoding.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence
from typing import Any, Final

import aiokafka
from aiokafka.producer import sender
from aiokafka.protocol import produce
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.protocol.types import Array, Bytes, Int16, Int32, Schema, String

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
    """Have this process's producers write produce requests with one join (once); False if
    aiokafka's structures are not the ones this module was written for (its own stay)."""
    if sender.ProduceRequest is JoinedProduceRequest:
        return True
    if not fits():
        log.warning(
            "aiokafka %s encodes produce requests differently: leaving its encoding",
            aiokafka.__version__,
        )
        return False
    sender.ProduceRequest = JoinedProduceRequest
    return True


def uninstall() -> None:
    """Give aiokafka's sender its own ``ProduceRequest`` back."""
    sender.ProduceRequest = ProduceRequest
