"""The compiled batch writer (``events._native.BatchWriter``, used by ``streams.worker.Outbox``)
against aiokafka's own batch builder, on the same records: the same bytes, the same cuts, and a
real broker that takes its batches in a transaction."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams import produce_requests
from streams.worker import BATCH_WRITER, MAX_BATCH_BYTES, Outbox
from tests.streams.test_fetching import read_all

NOW_MS = 1_700_000_000_123

headers = st.none() | st.lists(
    st.tuples(st.text(max_size=8), st.none() | st.binary(max_size=8)), max_size=3
)
key_or_value = st.none() | st.binary(max_size=300)
records = st.lists(
    st.tuples(key_or_value, key_or_value) | st.tuples(key_or_value, key_or_value, headers),
    min_size=1,
    max_size=40,
)


def writer() -> Any:
    assert BATCH_WRITER is not None, (
        "events._native is not built: was a Rust toolchain (cargo) on PATH when `make setup` ran?"
    )
    return BATCH_WRITER


def theirs(
    rows: list[tuple[Any, ...]], limit: int, timestamp: int, *, transactional: bool = True
) -> tuple[BatchBuilder, int]:
    """aiokafka's builder of ``limit`` bytes, given ``rows`` until it is full."""
    batch = BatchBuilder(limit, 0, is_transactional=transactional)
    taken = 0
    for key, value, *more in rows:
        listed = (more[0] if more else None) or []
        if batch.append(timestamp=timestamp, key=key, value=value, headers=listed) is None:
            break
        taken += 1
    return batch, taken


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records,
    st.integers(61, 6_000),
    st.integers(0, 2**41),
    st.tuples(st.integers(-1, 2**40), st.integers(-1, 2**15 - 1), st.integers(0, 2**31 - 1)),
    st.booleans(),
)
def test_it_writes_the_batches_aiokafkas_builder_writes(
    rows: list[tuple[Any, ...]],
    limit: int,
    timestamp: int,
    state: tuple[int, int, int],
    transactional: bool,
) -> None:
    batch, taken = theirs(rows, limit, timestamp, transactional=transactional)
    ours = writer()(transactional)
    assert ours.extend(rows, 0, limit, timestamp) == taken >= 1
    assert (ours.record_count(), ours.size()) == (batch.record_count(), batch.size())
    batch._set_producer_state(*state)
    ours._set_producer_state(*state)
    built = ours._build()
    assert built == bytes(batch._build())
    assert ours._build() is built and ours.size() == len(built) and ours.closed()


def test_later_records_of_a_batch_keep_their_own_time() -> None:
    rows = [(b"k", b"v"), (None, b"w", [("h", None)]), (b"x", None)]
    ours = writer()(True)
    assert ours.extend(rows, 0, MAX_BATCH_BYTES, NOW_MS) == 3
    assert ours.extend(rows, 1, MAX_BATCH_BYTES, NOW_MS + 250) == 2  # from index 1 on
    batch = BatchBuilder(MAX_BATCH_BYTES, 0, is_transactional=True)
    for key, value, *more in [*rows, *rows[1:]]:
        later = batch.record_count() >= 3
        listed = (more[0] if more else None) or []
        stamp = NOW_MS + 250 if later else NOW_MS
        assert batch.append(timestamp=stamp, key=key, value=value, headers=listed)
    assert ours._build() == bytes(batch._build())


def test_a_first_record_larger_than_the_limit_goes_alone() -> None:
    rows = [(b"k", b"v" * 10_000), (b"k", b"small")]
    ours = writer()(True)
    assert ours.extend(rows, 0, 1_000, NOW_MS) == 1 and ours.size() > 10_000
    assert ours.extend(rows, 1, 1_000, NOW_MS) == 0  # no room left for the next one
    again = writer()(True)
    assert again.extend(rows, 1, 1_000, NOW_MS) == 1


TUPLE = "a (key, value) or (key, value, headers) tuple"


class Lying:
    """Headers whose length is not what they hold."""

    def __len__(self) -> int:
        return 2

    def __iter__(self) -> Any:
        return iter([("h", b"v")])


@pytest.mark.parametrize(
    ("row", "expected", "got"),
    [
        ([b"k", b"v"], TUPLE, "list"),
        ((b"k",), TUPLE, "a tuple of 1"),
        ((7, b"v"), "key as str, bytes or None", "int"),
        (("\udc80", b"v"), "a key str that UTF-8 can encode", "one with a lone surrogate"),
        ((b"k", 7), "value as bytes or None", "int"),
        ((b"k", b"v", [("h", "text")]), "a header value as bytes or None", "str"),
        ((b"k", b"v", [(b"h", b"v")]), "a header name as str", "bytes"),
        ((b"k", b"v", ["h"]), "each header as a (name, value) tuple", "str"),
        ((b"k", b"v", 5), "headers as a sequence of (name, value)", "no length"),
        ((b"k", b"v", Lying()), "headers of one length", "2 by its length but 1 when read"),
    ],
)
def test_what_is_not_a_record_is_refused_with_its_index(row: Any, expected: str, got: str) -> None:
    ours = writer()(True)
    with pytest.raises(TypeError) as refused:
        ours.extend([(b"k", b"fine"), row], 0, MAX_BATCH_BYTES, NOW_MS)
    assert str(refused.value) == f"record 1: expected {expected}, got {got}"
    assert ours.record_count() == 1  # the record before it went in; nothing of it did


@given(st.lists(st.tuples(st.text(max_size=40), key_or_value), min_size=1, max_size=20))
def test_a_str_key_is_written_as_its_utf8(rows: list[tuple[str, bytes | None]]) -> None:
    as_text, as_bytes = writer()(True), writer()(True)
    encoded = [(key.encode(), value) for key, value in rows]
    assert as_text.extend(rows, 0, MAX_BATCH_BYTES, NOW_MS) == len(rows)
    assert as_bytes.extend(encoded, 0, MAX_BATCH_BYTES, NOW_MS) == len(rows)
    assert as_text._build() == as_bytes._build()


def test_a_closed_batch_takes_no_more_records() -> None:
    ours = writer()(True)
    ours.close()
    with pytest.raises(ValueError, match="the batch is closed"):
        ours.extend([(b"k", b"v")], 0, MAX_BATCH_BYTES, NOW_MS)
    empty = writer()(False)._build()
    batch = BatchBuilder(MAX_BATCH_BYTES, 0, is_transactional=False)
    assert empty == bytes(batch._build())  # an empty batch is aiokafka's empty batch


class Recorder:
    """A producer that keeps what each batch it is given builds to, with one producer state."""

    def __init__(self) -> None:
        self.built: list[tuple[str, int, bytes]] = []

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(MAX_BATCH_BYTES, 0, is_transactional=True)

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> Any:
        batch._set_producer_state(5, 1, 100)
        self.built.append((topic, partition, bytes(batch._build())))
        return asyncio.get_running_loop().create_future()


def test_an_outbox_sends_the_same_batches_with_either_writer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import streams.worker as worker_module

    monkeypatch.setattr(worker_module.time, "time", lambda: NOW_MS / 1000)
    answers = []
    for chosen in (writer(), None):
        outbox = Outbox({"t.small": 30_000}, writer=chosen)
        for i in range(500):
            key = f"c{i}".encode()
            outbox.add("t.small", i % 2, key, b"x" * 300, [("trackerflow.source", b"{}")])
            outbox.add("t.other", 0, key, b"y" * 2_000)
        outbox.extend("t.changelog", 1, [(f"h{i}", b"z" * 50) for i in range(3_000)])  # drained
        outbox.extend("t.changelog", 1, [(b"gone", None)])
        recorder = Recorder()
        sent = asyncio.run(outbox.send(recorder))  # type: ignore[arg-type]
        answers.append((recorder.built, [(s.topic, s.partition, s.records) for s in sent]))
    (ours, our_sent), (aiokafkas, their_sent) = answers
    assert our_sent == their_sent
    assert [(t, p) for t, p, _ in ours] == [(t, p) for t, p, _ in aiokafkas]
    assert [len(b) for *_, b in ours] == [len(b) for *_, b in aiokafkas]
    assert ours == aiokafkas
    for partition in (0, 1):  # 250 records of 300 bytes: cut to 30,000 bytes, filled up
        small = [len(b) for t, p, b in ours if (t, p) == ("t.small", partition)]
        assert len(small) == 3 and max(small) <= 30_000 and min(small[:-1]) > 29_000
    assert sum(len(r) for t, _, r in our_sent if t == "t.changelog") == 3_001


def test_an_outbox_hands_over_its_batches_round_by_round() -> None:
    """aiokafka holds one unsent batch per topic partition and sends one request at a time:
    each topic partition's first batch goes before any second one, so one request carries a
    batch of each (one partition's batches after another made a request of each batch)."""
    outbox = Outbox({"t.a": 2_000, "t.c": 2_000}, writer=writer())
    outbox.extend("t.a", 0, [(b"a", b"x" * 700)] * 6)  # 3 batches of 2 records
    outbox.extend("t.b", 5, [(b"b", b"y")])  # 1 batch
    outbox.extend("t.c", 1, [(b"c", b"z" * 700)] * 3)  # 2 batches
    recorder = Recorder()
    sent = asyncio.run(outbox.send(recorder))  # type: ignore[arg-type]
    order = [("t.a", 0), ("t.b", 5), ("t.c", 1), ("t.a", 0), ("t.c", 1), ("t.a", 0)]
    assert [(t, p) for t, p, _ in recorder.built] == order
    assert [(s.topic, s.partition, len(s.records)) for s in sent] == [
        (t, p, n) for (t, p), n in zip(order, [2, 1, 2, 2, 1, 2], strict=True)
    ]


async def send_in_a_transaction(bootstrap: str, topic: str) -> None:
    """Rows sent through an Outbox in one transaction (see the test below)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=f"test-batches-{uuid.uuid4().hex[:8]}",
        enable_idempotence=True,
        max_batch_size=MAX_BATCH_BYTES,
    )
    await producer.start()
    try:
        outbox = Outbox({topic: 20_000})
        for i in range(300):
            outbox.add(topic, i % 2, f"c{i}".encode(), b"v" * i, [("h", f"{i}".encode())])
        outbox.extend(topic, 1, [(b"tombstone", None), (None, b"no key")])
        await producer.begin_transaction()
        sent = await outbox.send(producer)
        assert len(sent) > 2  # cut to the topic's limit
        await producer.commit_transaction()
    finally:
        await producer.stop()


@pytest.mark.parametrize("kafka_topic", [2], indirect=True)
@pytest.mark.parametrize("joined", [True, False], ids=["joined-requests", "aiokafka-requests"])
def test_a_broker_takes_the_written_batches_in_a_transaction(
    kafka_bootstrap: str, kafka_topic: str, joined: bool
) -> None:
    writer()
    if joined:  # the produce requests the worker writes (streams.produce_requests)
        assert produce_requests.install()
    else:
        produce_requests.uninstall()
    try:
        asyncio.run(send_in_a_transaction(kafka_bootstrap, kafka_topic))
    finally:
        produce_requests.uninstall()
    read, _ = asyncio.run(read_all(kafka_bootstrap, kafka_topic, "read_committed", partitions=2))
    got = {(r.partition, r.key, r.value, tuple(r.headers)) for r in read}
    rows = {(i % 2, f"c{i}".encode(), b"v" * i, (("h", f"{i}".encode()),)) for i in range(300)}
    assert got == rows | {(1, b"tombstone", None, ()), (1, None, b"no key", ())}
    for partition in (0, 1):
        offsets = [r.offset for r in read if r.partition == partition]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert len({r.timestamp for r in read}) == 1  # one time for the whole send
