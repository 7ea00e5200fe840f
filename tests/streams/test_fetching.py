"""The compiled batch reader (streams.fetching) against aiokafka's own, on the same bytes.

Record batches are made with aiokafka's batch builder (plain, compressed, transactional, with
gaps left by compaction), control markers and timestamps set by the broker are made by hand, and
a fetch may end inside its last batch. For every such fetch, both readers must hand out the same
records and leave the consumer at the same position after each one.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import gc
import struct
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.consumer import fetcher
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.legacy_records import LegacyRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import ConsumerRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams import fetching

TP = TopicPartition("bench.events", 3)
AIOKAFKA_RECORDS = getattr(fetcher.PartitionRecords, "aiokafka", fetcher.PartitionRecords)
READER = fetching.batch_reader()
LOG_APPEND_TIME, TRANSACTIONAL, CONTROL = 0x08, 0x10, 0x20
GZIP = 1


def test_it_is_built() -> None:
    assert READER is not None, (
        "events._native is not built: was a Rust toolchain (cargo) on PATH when `make setup` ran?"
    )


def with_attributes(batch: bytes, extra: int) -> bytes:
    """``batch`` with attribute bits ``extra`` set, its CRC made right again."""
    data = bytearray(batch)
    (attributes,) = struct.unpack_from(">h", data, 21)
    struct.pack_into(">h", data, 21, attributes | extra)
    struct.pack_into(">I", data, 17, calc_crc32c(bytes(data[21:])))
    return bytes(data)


def at_offset(batch: bytes, base: int) -> bytes:
    data = bytearray(batch)
    struct.pack_into(">q", data, 0, base)  # outside the CRC, as the broker sets it
    return bytes(data)


def build(
    base: int,
    records: list[dict[str, Any]],
    *,
    compression: int = 0,
    producer: int = -1,
    timestamp_type: int = 0,
) -> bytes:
    builder = DefaultRecordBatchBuilder(
        2, compression, int(producer >= 0), producer, 0 if producer >= 0 else -1, -1, 1 << 20
    )
    for r in records:
        builder.append(r["delta"], r["timestamp"], r["key"], r["value"], r["headers"])
    batch = at_offset(bytes(builder.build()), base)
    return with_attributes(batch, LOG_APPEND_TIME) if timestamp_type else batch


def marker(base: int, producer: int, *, abort: bool) -> bytes:
    """A transaction marker: a control batch of one record (key: version 0, type)."""
    builder = DefaultRecordBatchBuilder(2, 0, 1, producer, 0, -1, 1 << 20)
    key = struct.pack(">hh", 0, 0 if abort else 1)
    builder.append(0, 1_700_000_000_000, key, struct.pack(">hi", 0, 7), [])
    return with_attributes(at_offset(bytes(builder.build()), base), CONTROL)


def read(records: Any) -> tuple[list[tuple[Any, ...]], int]:
    """Each record's fields and the position after it, then the final position."""
    seen = []
    for record in records:
        fields = record if isinstance(record, tuple) else dataclasses.astuple(record)
        seen.append((tuple(fields), records.next_fetch_offset))
    return seen, records.next_fetch_offset


def both(
    data: bytes,
    *,
    aborted: list[tuple[int, int]] | None = None,
    fetch_offset: int = 0,
    isolation: int = fetching.READ_COMMITTED,
    check_crcs: bool = True,
) -> tuple[Any, Any]:
    """aiokafka's reading of the fetch and the compiled reader's (a result or the exception)."""
    answers = []
    for make in (AIOKAFKA_RECORDS, fetching.partition_records(READER)):
        holder = MemoryRecords(data) if make is AIOKAFKA_RECORDS else fetching.FetchedBytes(data)
        records = make(TP, holder, aborted, fetch_offset, None, None, check_crcs, isolation)
        try:
            answers.append(read(records))
        except CorruptRecordException as error:
            answers.append(("corrupt", type(error)))
    return answers[0], answers[1]


headers = st.lists(st.tuples(st.text(max_size=8), st.none() | st.binary(max_size=8)), max_size=3)
record = st.fixed_dictionaries(
    {
        "key": st.none() | st.binary(max_size=40),
        "value": st.none() | st.binary(max_size=300),
        "headers": headers,
        "timestamp": st.integers(0, 2**41),
    }
)


@st.composite
def fetches(draw: Any) -> tuple[bytes, list[tuple[int, int]], int]:
    """Batches at increasing offsets, some transactional (some of them aborted, with their
    markers), some compressed, with gaps; the fetch may end inside the last batch."""
    data, aborted, offset = b"", [], draw(st.integers(0, 2**40))
    first = offset
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["plain", "gzip", "txn", "marker", "empty"]))
        producer = draw(st.integers(0, 3)) if kind in ("txn", "marker") else -1
        if kind == "marker":
            abort = draw(st.booleans())
            data += marker(offset, producer, abort=abort)
            offset += 1
            continue
        rows = draw(st.lists(record, min_size=0 if kind == "empty" else 1, max_size=6))
        delta = 0
        for row in rows:
            row["delta"] = delta
            delta += draw(st.integers(1, 3))  # compaction leaves gaps
        if not rows:  # compaction can leave a batch with no records at all
            rows = []
        batch = build(
            offset,
            rows,
            compression=GZIP if kind == "gzip" else 0,
            producer=producer,
            timestamp_type=draw(st.integers(0, 1)),
        )
        if kind == "txn" and draw(st.booleans()):
            aborted.append((producer, offset))
        data += batch
        offset += max(delta, 1)
    if draw(st.booleans()):
        data = data[: draw(st.integers(len(data) - 40, len(data)))]
    return data, aborted, draw(st.integers(first, offset))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fetches(), st.sampled_from([0, 1]), st.booleans())
def test_the_compiled_reader_hands_out_what_aiokafka_does(
    fetch: tuple[bytes, list[tuple[int, int]], int], isolation: int, check_crcs: bool
) -> None:
    data, aborted, fetch_offset = fetch
    theirs, ours = both(
        data,
        aborted=aborted,
        fetch_offset=fetch_offset,
        isolation=isolation,
        check_crcs=check_crcs,
    )
    assert ours == theirs


@settings(max_examples=200, deadline=None)
@given(st.lists(record, min_size=1, max_size=5), st.data())
def test_a_corrupt_batch_raises_after_the_records_before_it(rows: Any, data: Any) -> None:
    for i, row in enumerate(rows):
        row["delta"] = i
    good = build(0, rows)
    bad = bytearray(build(len(rows), rows))
    at = data.draw(st.integers(21, len(bad) - 1))  # anywhere the CRC covers
    bad[at] ^= data.draw(st.integers(1, 255))
    # aiokafka raises before it hands out the first batch's records; so must the compiled one
    theirs, ours = both(good + bytes(bad))
    assert theirs == ours == ("corrupt", CorruptRecordException)
    # the good batch alone reads the same
    assert both(good)[0] == both(good)[1]
    assert len(both(good)[1][0]) == len(rows)


def test_a_corrupt_batch_is_reached_only_after_the_records_before_it() -> None:
    rows = [{"delta": 0, "timestamp": 1, "key": b"k", "value": b"v", "headers": []}]
    bad = bytearray(build(1, rows))
    bad[-1] ^= 0xFF
    records = fetching.partition_records(READER)(
        TP, fetching.FetchedBytes(build(0, rows) + bytes(bad)), None, 0, None, None, True, 1
    )
    first = next(records)
    assert (first.offset, first.key, records.next_fetch_offset) == (0, b"k", 1)
    with pytest.raises(CorruptRecordException, match="Invalid CRC"):
        next(records)


def test_an_unchecked_record_cut_short_is_corrupt_too() -> None:
    rows = [{"delta": 0, "timestamp": 1, "key": b"key", "value": b"value", "headers": []}]
    batch = bytearray(build(0, rows))
    batch[61] = 0x7F  # the record's length now runs past the batch
    with pytest.raises(CorruptRecordException, match="cut short or malformed"):
        list(
            fetching.partition_records(READER)(
                TP, fetching.FetchedBytes(bytes(batch)), None, 0, None, None, False, 1
            )
        )


def test_records_are_consumer_records_with_aiokafkas_field_names() -> None:
    assert fetching.Fetched._fields == tuple(f.name for f in dataclasses.fields(ConsumerRecord))
    rows = [{"delta": 0, "timestamp": 5, "key": None, "value": b"x", "headers": [("h", None)]}]
    (only,) = fetching.partition_records(READER)(
        TP, fetching.FetchedBytes(build(9, rows)), None, 0, None, None, True, 1
    )
    assert only == fetching.Fetched(
        TP.topic, TP.partition, 9, 5, 0, None, b"x", None, -1, 1, (("h", None),)
    )


def test_records_share_what_is_equal_and_stay_out_of_the_collector() -> None:
    """A record costs its objects to make and to free: equal sizes are one int, consecutive
    equal timestamps of a batch are one int, and no record is tracked by the collector."""
    size = 5_000  # larger than Python's own shared ints
    rows = [
        {"delta": i, "timestamp": stamp, "key": b"k", "value": bytes([i]) * size, "headers": []}
        for i, stamp in enumerate([1_700_000_000_001] * 3 + [1_700_000_000_002])
    ]
    first, second, third, fourth = fetching.partition_records(READER)(
        TP,
        fetching.FetchedBytes(build(0, rows[:2]) + build(2, rows[2:])),
        None,
        0,
        None,
        None,
        True,
        1,
    )
    assert [r.serialized_value_size for r in (first, second, third, fourth)] == [size] * 4
    assert first.serialized_value_size is fourth.serialized_value_size
    assert first.timestamp is second.timestamp  # one batch, one time
    assert third.timestamp == first.timestamp and third.timestamp is not first.timestamp
    assert fourth.timestamp == 1_700_000_000_002
    assert not any(gc.is_tracked(r) for r in (first, second, third, fourth))
    large = [{"delta": 0, "timestamp": 1, "key": None, "value": b"v" * 20_000, "headers": []}]
    (only,) = fetching.partition_records(READER)(
        TP, fetching.FetchedBytes(build(0, large)), None, 0, None, None, True, 1
    )
    assert (only.serialized_key_size, only.serialized_value_size) == (-1, 20_000)


def test_the_reader_takes_only_a_named_tuple_of_the_fields_without_an_instance_dict() -> None:
    reader_class = type(READER)

    class WithDict(fetching.Fetched):  # a subclass without ``__slots__``: its records get a dict
        pass

    for wrong in (tuple, collections.namedtuple("Three", "a b c"), WithDict):
        with pytest.raises(ValueError, match="11-field named tuple"):
            reader_class(wrong)
    assert reader_class(fetching.Fetched) is not None


def test_older_formats_and_deserializers_are_left_to_aiokafka() -> None:
    legacy = LegacyRecordBatchBuilder(1, 0, 1 << 20)
    legacy.append(0, 1_000, b"k", b"v")
    data = bytes(legacy.build())
    make = fetching.partition_records(READER)
    records = make(TP, fetching.FetchedBytes(data), None, 0, None, None, True, 1)
    assert isinstance(records, AIOKAFKA_RECORDS)
    assert [(r.key, r.value) for r in records] == [(b"k", b"v")]
    rows = [{"delta": 0, "timestamp": 1, "key": b"k", "value": b"v", "headers": []}]
    records = make(TP, fetching.FetchedBytes(build(0, rows)), None, 0, None, bytes.upper, True, 1)
    assert isinstance(records, AIOKAFKA_RECORDS)
    assert [r.value for r in records] == [b"V"]


def test_has_next_needs_a_whole_batch() -> None:
    rows = [{"delta": 0, "timestamp": 1, "key": b"k", "value": b"v" * 50, "headers": []}]
    batch = build(0, rows)
    for cut in (0, 11, 12, len(batch) - 1):
        assert not fetching.FetchedBytes(batch[:cut]).has_next()
        assert fetching.FetchedBytes(batch[:cut]).size_in_bytes() == cut
    assert fetching.FetchedBytes(batch).has_next()


def test_install_replaces_the_fetchers_reader_once_and_uninstall_restores_it() -> None:
    before = fetcher.PartitionRecords, fetcher.MemoryRecords
    try:
        assert fetching.install()
        installed = fetcher.PartitionRecords
        assert installed.aiokafka is AIOKAFKA_RECORDS
        assert fetcher.MemoryRecords is fetching.FetchedBytes
        assert fetching.install()
        assert fetcher.PartitionRecords is installed  # not wrapped twice
        # a factory made meanwhile still falls back on aiokafka's own records
        rows = [{"delta": 0, "timestamp": 1, "key": b"k", "value": b"v", "headers": []}]
        data = fetching.FetchedBytes(build(0, rows))
        again = fetching.partition_records(READER)(TP, data, None, 0, None, bytes.upper, True, 1)
        assert isinstance(again, AIOKAFKA_RECORDS)
        fetching.uninstall()
        assert (fetcher.PartitionRecords, fetcher.MemoryRecords) == before
        fetching.uninstall()  # nothing to give back
        assert (fetcher.PartitionRecords, fetcher.MemoryRecords) == before
    finally:
        fetcher.PartitionRecords, fetcher.MemoryRecords = before


def test_an_aborted_transaction_is_skipped_until_its_abort_marker() -> None:
    row = [{"delta": 0, "timestamp": 1, "key": b"k", "value": b"v", "headers": []}]
    data = (
        build(0, row, producer=1)  # aborted (the fetch says so)
        + build(1, row, producer=2)  # committed
        + marker(2, 2, abort=False)
        + build(3, row, producer=1)  # the same aborted transaction
        + marker(4, 1, abort=True)
        + build(5, row, producer=1)  # its next transaction
    )
    for isolation, offsets in ((1, [1, 5]), (0, [0, 1, 3, 5])):
        theirs, ours = both(data, aborted=[(1, 0)], isolation=isolation)
        assert ours == theirs
        assert [fields[2] for fields, _ in ours[0]] == offsets
        assert ours[1] == 6


def test_an_aiokafka_with_another_fetcher_keeps_its_own_reader(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Changed:
        def __init__(self, tp: Any, records: Any, fetch_offset: int) -> None: ...

    assert fetching.fits(AIOKAFKA_RECORDS)
    assert not fetching.fits(Changed)
    assert not fetching.fits(42)
    monkeypatch.setattr(fetcher, "PartitionRecords", Changed)
    assert not fetching.install()
    assert fetcher.PartitionRecords is Changed
    assert "builds fetched records differently" in caplog.text


async def produce_mixed(bootstrap: str, topic: str) -> None:
    """Committed and aborted transactions, gzip batches, headers, null keys and values."""
    txn = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{topic}-txn")
    gzip = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type="gzip", linger_ms=20)
    await txn.start()
    await gzip.start()
    try:
        for round_ in range(3):
            for commit in (True, False, True):
                await txn.begin_transaction()
                for i in range(40):
                    key = None if i % 7 == 3 else f"c{i % 5}".encode()
                    value = None if i % 11 == 0 else f"{round_}-{commit}-{i}".encode() * (i % 4)
                    headers = [("RASA_ENVIRONMENT", b"prod")] if i % 3 else []
                    await txn.send(topic, value, key=key, partition=i % 3, headers=headers)
                if commit:
                    await txn.commit_transaction()
                else:
                    await txn.abort_transaction()
            sent = [
                await gzip.send(topic, b"zip" * i, key=b"z", partition=i % 3, headers=[("h", None)])
                for i in range(30)
            ]
            await asyncio.gather(*sent)
    finally:
        await txn.stop()
        await gzip.stop()


async def read_all(
    bootstrap: str, topic: str, isolation: str, partitions: int = 3
) -> tuple[list[Any], dict[int, int]]:
    """Every record of the topic's ``partitions`` as a consumer reads it, and where it stops."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level=isolation, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[Any] = []
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                records += batch
        return records, {tp.partition: await consumer.position(tp) for tp in tps}
    finally:
        await consumer.stop()


@pytest.mark.parametrize("kafka_topic", [3], indirect=True)
def test_a_consumer_reads_a_real_topic_alike_with_either_reader(
    kafka_bootstrap: str, kafka_topic: str
) -> None:
    asyncio.run(produce_mixed(kafka_bootstrap, kafka_topic))
    for isolation in ("read_committed", "read_uncommitted"):
        theirs, their_ends = asyncio.run(read_all(kafka_bootstrap, kafka_topic, isolation))
        try:
            assert fetching.install()
            ours, our_ends = asyncio.run(read_all(kafka_bootstrap, kafka_topic, isolation))
        finally:
            fetching.uninstall()
        assert all(type(r) is ConsumerRecord for r in theirs)
        assert all(type(r) is fetching.Fetched for r in ours)
        # each partition's records in order (partitions arrive in any order)
        ours.sort(key=lambda r: (r.partition, r.offset))
        theirs.sort(key=lambda r: (r.partition, r.offset))
        assert [tuple(r) for r in ours] == [dataclasses.astuple(r) for r in theirs]
        assert our_ends == their_ends
        values = [r.value for r in ours]
        aborted = sum(1 for v in values if v is not None and b"-False-" in v)
        with_text = sum(1 for i in range(40) if i % 11 and i % 4)  # as produce_mixed makes them
        assert aborted == (0 if isolation == "read_committed" else 3 * with_text)
        assert sum(1 for v in values if v is not None and v.startswith(b"zip")) == 3 * 29


def test_a_header_name_that_is_not_utf8_does_not_stop_the_consumer() -> None:
    rows = [{"delta": 0, "timestamp": 1, "key": b"k", "value": b"v", "headers": [("h", b"x")]}]
    batch = bytearray(build(0, rows))
    at = bytes(batch).rindex(b"h\x02x")  # the header: name "h", value length 1, "x"
    batch[at] = 0xFF
    struct.pack_into(">I", batch, 17, calc_crc32c(bytes(batch[21:])))
    data = bytes(batch)
    with pytest.raises(UnicodeDecodeError):  # aiokafka's reader
        list(AIOKAFKA_RECORDS(TP, MemoryRecords(data), None, 0, None, None, True, 1))
    make = fetching.partition_records(READER)
    (record,) = make(TP, fetching.FetchedBytes(data), None, 0, None, None, True, 1)
    assert (record.value, record.headers) == (b"v", (("\ufffd", b"x"),))
