"""Fetched records read by the compiled batch reader, for the worker's consumers.

aiokafka turns each fetched record into a ``ConsumerRecord`` in Python, which costs the worker
about as much per event as the rest of consuming does. With :func:`install`, the consumers of
this process read the record batches of a fetch with ``events._native.BatchReader`` instead.

Rules of this module:

* The records are the same: a :class:`Fetched` has ``ConsumerRecord``'s fields, in its order,
  with the values aiokafka gives (the tests compare the two readers on the same fetched bytes).
* The positions are the same: the consumer's position moves past aborted and control batches,
  and past each record handed out, exactly where aiokafka's ``PartitionRecords`` moves it.
  Aborted transactions are skipped for a ``read_committed`` consumer by the same rule.
* Whatever the compiled reader does not read, aiokafka reads: a compressed batch, a fetch with
  a batch older than format v2, a consumer with a key or value deserializer.
* A batch whose CRC is wrong (when the consumer checks them) or that cannot be parsed raises
  ``CorruptRecordException`` when the consumer reaches it, after the records before it.
* One deliberate difference: a header name that is not UTF-8 (the broker does not check) is
  decoded with U+FFFD for its bad bytes; aiokafka's reader raises, which would stop a worker
  on one bad record.
* :func:`install` replaces two names in ``aiokafka.consumer.fetcher`` for the whole process
  (aiokafka has no hook per consumer), and only if the fetcher builds its records with the
  arguments this module expects (``FETCHER_ARGUMENTS``); otherwise aiokafka's reader stays.
  The worker calls it; the pipeline benchmark too, for one reference measurement, and then
  :func:`uninstall`.
"""

from __future__ import annotations

import inspect
import logging
import struct
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import aiokafka
from aiokafka.consumer import fetcher
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatch
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition

from events.fast import compiled

log = logging.getLogger(__name__)

READ_COMMITTED = 1
_LENGTH = struct.Struct(">i")
_LOG_OVERHEAD = 12  # a batch's offset and length fields


class Fetched(NamedTuple):
    """One fetched record: ``aiokafka.structs.ConsumerRecord``'s fields (a tuple is cheaper to
    make)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    checksum: int | None
    serialized_key_size: int
    serialized_value_size: int
    headers: tuple[tuple[str, bytes | None], ...]


class FetchedBytes:
    """A partition's records in a fetch response, kept as bytes (in place of aiokafka's
    ``MemoryRecords``, which the fetcher asks only these two questions)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def has_next(self) -> bool:
        """Whether a whole batch is there (a fetch can end inside one)."""
        data = self.data
        if len(data) < _LOG_OVERHEAD:
            return False
        length: int = _LENGTH.unpack_from(data, 8)[0]
        return len(data) >= _LOG_OVERHEAD + length

    def size_in_bytes(self) -> int:
        return len(self.data)


class BatchRecords:
    """A partition's fetched records, handed out one by one (``aiokafka``'s
    ``PartitionRecords`` interface: iteration and ``next_fetch_offset``).

    The batch-level decisions (aborted transactions, control batches, compressed batches read
    by aiokafka, a corrupt batch) are made here when the fetch arrives; the records are then
    handed out by the compiled ``Handout``, which moves the position record by record as
    aiokafka's generator does (the fetcher asks for every record)."""

    def __init__(
        self,
        tp: TopicPartition,
        batches: list[tuple[Any, ...]],
        data: bytes,
        aborted_transactions: list[tuple[int, int]] | None,
        fetch_offset: int,
        isolation_level: int,
        handout: Callable[..., Any],
    ) -> None:
        self.tp = tp
        self._data = data
        self._aborted = sorted(aborted_transactions or [], key=lambda pair: pair[1])
        self._aborted_producers: set[int] = set()
        self._read_committed = isolation_level == READ_COMMITTED
        items, error = self._kept(batches)
        self._records: Iterator[Fetched] = handout(items, fetch_offset, error)

    @property
    def next_fetch_offset(self) -> int:
        position: int = self._records.position  # type: ignore[attr-defined]
        return position

    def __iter__(self) -> Iterator[Fetched]:
        # the compiled handout itself: a ``for`` loop (the fetcher's ``getall``) calls it
        # directly, with no Python call per record
        return self._records

    def __next__(self) -> Fetched:
        return next(self._records)

    def _kept(self, batches: list[tuple[Any, ...]]) -> tuple[list[Any], Exception | None]:
        """What the handout gets (see ``events._native.Handout``): each kept batch's records
        and the position past it, the position past each skipped batch; and the error to raise
        at the first batch that cannot be read (nothing after it is handed out)."""
        items: list[Any] = []
        for batch in batches:
            base, next_offset, producer, transactional, control, abort, problem, records = batch[:8]
            if problem is not None:
                return items, CorruptRecordException(f"{problem} - {self.tp}")
            if self._read_committed and producer is not None:
                self._aborted_up_to(base)
                if control and abort:
                    self._aborted_producers.discard(producer)
                if transactional and producer in self._aborted_producers:
                    items.append(next_offset)
                    continue
            if not control:
                if records is None:  # compressed: aiokafka reads it
                    try:
                        records = self._read_with_aiokafka(batch[8], batch[9])
                    except Exception as error:  # raised where aiokafka would: on reaching it
                        return items, error
                items.append(records)
            # the batch's last offset survives compaction of its last records
            items.append(next_offset)
        return items, None

    def _aborted_up_to(self, offset: int) -> None:
        """Producers whose aborted transaction started at or before ``offset``."""
        aborted = self._aborted
        while aborted and aborted[0][1] <= offset:
            self._aborted_producers.add(aborted.pop(0)[0])

    def _read_with_aiokafka(self, start: int, end: int) -> list[Fetched]:
        tp = self.tp
        return [
            Fetched(
                tp.topic,
                tp.partition,
                record.offset,
                record.timestamp,
                record.timestamp_type,
                record.key,
                record.value,
                record.checksum,
                -1 if record.key is None else len(record.key),
                -1 if record.value is None else len(record.value),
                tuple(record.headers),
            )
            for record in DefaultRecordBatch(self._data[start:end])
        ]


def partition_records(reader: Any) -> Callable[..., Any]:
    """The fetcher's ``PartitionRecords`` factory, reading batches with ``reader`` (one of
    :func:`batch_reader`: its build has the ``Handout`` too)."""
    handout = compiled("Handout")
    if handout is None:
        raise RuntimeError("events._native has no Handout: build it again with `make setup`")
    aiokafka_records = getattr(fetcher.PartitionRecords, "aiokafka", fetcher.PartitionRecords)

    def make(
        tp: TopicPartition,
        records: FetchedBytes,
        aborted_transactions: list[tuple[int, int]] | None,
        fetch_offset: int,
        key_deserializer: Callable[[bytes], Any] | None,
        value_deserializer: Callable[[bytes], Any] | None,
        check_crcs: bool,
        isolation_level: int,
    ) -> Any:
        data = records.data
        batches = None
        if key_deserializer is None and value_deserializer is None:
            batches = reader.read(data, tp.topic, tp.partition, check_crcs)
        if batches is None:
            return aiokafka_records(
                tp,
                MemoryRecords(data),
                aborted_transactions,
                fetch_offset,
                key_deserializer,
                value_deserializer,
                check_crcs,
                isolation_level,
            )
        return BatchRecords(
            tp, batches, data, aborted_transactions, fetch_offset, isolation_level, handout
        )

    make.aiokafka = aiokafka_records  # type: ignore[attr-defined]
    return make


def batch_reader() -> Any | None:
    """The compiled batch reader, or None if the package was built without it (or without
    its ``Handout``)."""
    reader = compiled("BatchReader")
    if reader is None or compiled("Handout") is None:
        return None
    return reader(Fetched)


# what the fetcher passes to ``PartitionRecords`` (aiokafka 0.14, which this was written for)
FETCHER_ARGUMENTS = (
    "tp",
    "records",
    "aborted_transactions",
    "fetch_offset",
    "key_deserializer",
    "value_deserializer",
    "check_crcs",
    "isolation_level",
)


def fits(records_class: Any) -> bool:
    """Whether aiokafka's fetcher builds ``PartitionRecords`` as this module expects."""
    try:
        parameters = list(inspect.signature(records_class).parameters)
    except (TypeError, ValueError):
        return False
    return tuple(parameters) == FETCHER_ARGUMENTS and hasattr(fetcher, "MemoryRecords")


def install() -> bool:
    """Make this process's consumers read fetched batches with the compiled reader (once);
    False if the package was built without it, or aiokafka's fetcher is not the one this
    module was written for (aiokafka's reader stays)."""
    if getattr(fetcher.PartitionRecords, "aiokafka", None) is not None:
        return True
    reader = batch_reader()
    if reader is None:
        return False
    if not fits(fetcher.PartitionRecords):
        log.warning(
            "aiokafka %s builds fetched records differently: reading them with aiokafka",
            aiokafka.__version__,
        )
        return False
    fetcher.PartitionRecords = partition_records(reader)
    fetcher.MemoryRecords = FetchedBytes
    return True


def uninstall() -> None:
    """Give this process's consumers aiokafka's reader back (what :func:`install` replaced)."""
    original = getattr(fetcher.PartitionRecords, "aiokafka", None)
    if original is not None:
        fetcher.PartitionRecords = original
        fetcher.MemoryRecords = MemoryRecords
