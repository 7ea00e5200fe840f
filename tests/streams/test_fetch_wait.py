"""How long the worker's fetches wait (streams.fetch_wait): busy while records flow, idle (long,
answered at the first record) while none do, never idle while fetched records wait.

The rules are checked on a fake fetcher; what they are for, on a real consumer and broker: an
idle fetch in flight ends when a record arrives (plain or committed in a transaction), and a
consumer with records waiting keeps fetching its other partitions briefly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams import fetch_wait
from streams.fetch_wait import BUSY, FetchWait

LONG_IDLE = (20_000, 1)  # an idle fetch that only a record can end within a test's time


class FakeFetcher:
    """The fetcher's parts that FetchWait uses: it builds one request per node in ``nodes`` and
    each fetch brings what ``brings`` says for its node."""

    def __init__(self, nodes: list[int]) -> None:
        self._records: dict[Any, Any] = {}
        self._fetch_max_wait_ms, self._fetch_min_bytes = BUSY
        self.nodes = nodes
        self.brings: dict[int, bool] = {}
        self.built: list[tuple[int, int]] = []

    def _get_actions_per_node(self, assignment: Any) -> tuple[Any, ...]:
        self.built.append((self._fetch_max_wait_ms, self._fetch_min_bytes))
        return [(node, "request") for node in self.nodes], {}, 0.1, False, []

    async def _proc_fetch_request(self, assignment: Any, node_id: int, request: Any) -> bool:
        return self.brings[node_id]


def test_a_fetch_is_idle_only_when_every_nodes_last_fetch_brought_nothing_and_nothing_waits() -> (
    None
):
    fetcher = FakeFetcher([1, 2])
    wait = FetchWait(fetcher, idle=(500, 1))
    wait.install()

    def fetch(node: int, brings: bool) -> None:
        fetcher.brings[node] = brings
        assert asyncio.run(fetcher._proc_fetch_request("assignment", node, "request")) is brings

    fetcher._get_actions_per_node("assignment")
    assert fetcher.built[-1] == (500, 1)  # nothing fetched yet: the first answers at once
    fetch(1, True)
    fetch(2, False)
    fetcher._get_actions_per_node("assignment")
    assert fetcher.built[-1] == BUSY  # node 1 brought records
    fetch(1, False)
    fetcher._get_actions_per_node("assignment")
    assert fetcher.built[-1] == (500, 1)
    fetcher._records["tp"] = "records not yet consumed"
    fetcher._get_actions_per_node("assignment")
    assert fetcher.built[-1] == BUSY  # their partition sits out the next fetch: keep it brief
    del fetcher._records["tp"]
    fetch(2, True)  # an error buffered counts as records: the next fetch is brief
    fetcher._get_actions_per_node("assignment")
    assert fetcher.built[-1] == BUSY
    assert wait.report() == {"busy": 6, "idle": 4}  # two requests (nodes) each time


def test_a_fetcher_built_otherwise_is_left_as_it_is(caplog: pytest.LogCaptureFixture) -> None:
    class Changed(FakeFetcher):
        async def _proc_fetch_request(  # type: ignore[override]
            self, assignment: Any, node_id: int, request: Any, extra: int = 0
        ) -> bool:
            return False

    class Consumer:
        def __init__(self, fetcher: Any) -> None:
            self._fetcher = fetcher

    changed = Changed([1])
    assert not fetch_wait.fits(changed)
    assert fetch_wait.adapt(Consumer(changed)) is None
    assert "_proc_fetch_request" not in vars(changed)  # nothing wrapped
    assert "every fetch waits at most 5 ms, even when idle" in caplog.text
    assert fetch_wait.adapt(Consumer(None)) is None
    assert not fetch_wait.fits(object())
    fits = FakeFetcher([1])
    assert fetch_wait.fits(fits)
    assert fetch_wait.adapt(Consumer(fits)) is not None
    assert "_proc_fetch_request" in vars(fits)


async def until(check: Callable[[], bool], what: str, deadline_s: float = 15) -> None:
    deadline = time.monotonic() + deadline_s
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.02)


async def with_adapted_consumer(
    bootstrap: str, topic: str, body: Callable[[AIOKafkaConsumer, FetchWait], Awaitable[None]]
) -> None:
    """``body`` with a consumer configured as the worker's, its fetch wait adapted with a long
    idle wait, reading the topic's three partitions."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=BUSY[0],
        fetch_min_bytes=BUSY[1],
    )
    await consumer.start()
    try:
        wait = fetch_wait.adapt(consumer, idle=LONG_IDLE)
        assert wait is not None, "aiokafka's fetcher is not the one streams.fetch_wait expects"
        consumer.assign([TopicPartition(topic, p) for p in range(3)])
        await body(consumer, wait)
    finally:
        await consumer.stop()


@pytest.mark.parametrize("kafka_topic", [3], indirect=True)
@pytest.mark.parametrize("transactional", [False, True], ids=["plain", "transaction"])
def test_an_idle_fetch_in_flight_ends_when_a_record_arrives(
    kafka_bootstrap: str, kafka_topic: str, transactional: bool
) -> None:
    async def body(consumer: AIOKafkaConsumer, wait: FetchWait) -> None:
        await until(lambda: wait.counts["idle"] >= 1, "an idle fetch")
        await asyncio.sleep(0.5)
        assert wait.report() == {"busy": 0, "idle": 1}  # it waits at the broker: nothing more
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap,
            transactional_id=f"{kafka_topic}-txn" if transactional else None,
        )
        await producer.start()
        try:
            started = time.monotonic()
            if transactional:  # visible to read_committed at the commit marker
                async with producer.transaction():
                    await producer.send(kafka_topic, b"event", key=b"c1", partition=2)
            else:
                await producer.send_and_wait(kafka_topic, b"event", key=b"c1", partition=2)
            batches = await consumer.getmany(timeout_ms=LONG_IDLE[0])
            took = time.monotonic() - started
        finally:
            await producer.stop()
        assert [r.value for records in batches.values() for r in records] == [b"event"]
        # the broker answered at the record, not at the end of the 20 s wait
        assert took < LONG_IDLE[0] / 1000 / 2
        # the fetch after one that brought records is busy; then, nothing coming, idle again
        await until(lambda: wait.counts["busy"] >= 1 and wait.counts["idle"] >= 2, "busy, idle")

    asyncio.run(with_adapted_consumer(kafka_bootstrap, kafka_topic, body))


@pytest.mark.parametrize("kafka_topic", [3], indirect=True)
def test_no_fetch_is_idle_while_fetched_records_wait(
    kafka_bootstrap: str, kafka_topic: str
) -> None:
    async def body(consumer: AIOKafkaConsumer, wait: FetchWait) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=50)
        await producer.start()
        try:
            sent = [await producer.send(kafka_topic, b"%d" % i, partition=0) for i in range(20)]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()
        first = TopicPartition(kafka_topic, 0)
        taken = await consumer.getmany(first, timeout_ms=10_000, max_records=1)
        assert [r.value for r in taken[first]] == [b"0"]  # 19 wait in the consumer
        before = wait.report()
        await asyncio.sleep(1.0)
        during = wait.report()
        # partitions 1 and 2 are fetched briefly all along (an idle fetch would hold partition
        # 0's next records back while it waits: 0 sits out fetches while its records wait)
        assert during["idle"] == before["idle"]
        assert during["busy"] >= before["busy"] + 5
        rest = await consumer.getmany(first, timeout_ms=10_000)
        assert len(rest[first]) == 19
        await until(lambda: wait.counts["idle"] > during["idle"], "idle once all is consumed")

    asyncio.run(with_adapted_consumer(kafka_bootstrap, kafka_topic, body))
