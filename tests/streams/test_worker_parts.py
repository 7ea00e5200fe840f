"""The worker's in-process parts, without a broker: the owner map, batching, change tracking."""

from __future__ import annotations

import asyncio
import gc
from collections import namedtuple
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from processors.stream import StreamFolder
from streams.settings import load_settings
from streams.stores import MemoryState
from streams.topics import RECORD_OVERHEAD
from streams.worker import (
    HELD_RECHECK_S,
    READ_AHEAD_MIN,
    OwnerAssignor,
    Partition,
    Shard,
    Taken,
    Worker,
    partition_for,
)

Message = namedtuple("Message", "offset")


def handed(tp: TopicPartition, records: list[Any]) -> Taken:
    """Records handed to a transaction, none of them read ahead."""
    return Taken(tp, records, ([], 0))


class Cluster:
    """Just what the range assignor asks of the cluster metadata."""

    def __init__(self, partitions: int = 6) -> None:
        self.partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.partitions))


TOPICS = ["t.events", "t.events.rekeyed"]


def assigned(assignor: OwnerAssignor, cluster: Cluster, count: int) -> dict[str, Any]:
    """Each of ``count`` members' partitions per topic, as ``assignor`` lays them out."""
    members = {f"member-{i}": assignor.metadata(TOPICS) for i in range(count)}
    return {m: dict(a.assignment) for m, a in assignor.assign(cluster, members).items()}


@pytest.mark.parametrize("partitions", [1, 5, 6, 7, 12])
@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_groups_of_one_partition_are_kafkas_range_assignment(partitions: int, count: int) -> None:
    assignor = OwnerAssignor("http://a:1", "t.events")
    members = {f"member-{i}": assignor.metadata(TOPICS) for i in range(count)}
    ranged = RangePartitionAssignor.assign(Cluster(partitions), members)
    expected = {m: {t: ps for t, ps in a.assignment if ps} for m, a in ranged.items()}
    assert assigned(assignor, Cluster(partitions), count) == expected


def test_a_group_of_partitions_goes_to_one_member_whole() -> None:
    """Seven partitions in groups of two: {0, 1}, {2, 3}, {4, 5}, {6}; laid out like range."""
    assignor = OwnerAssignor("http://a:1", "t.events", group_size=2)
    three = assigned(assignor, Cluster(7), 3)
    assert three == {
        "member-0": {"t.events": [0, 1, 2, 3], "t.events.rekeyed": [0, 1, 2, 3]},
        "member-1": {"t.events": [4, 5], "t.events.rekeyed": [4, 5]},
        "member-2": {"t.events": [6], "t.events.rekeyed": [6]},
    }
    five = assigned(assignor, Cluster(7), 5)  # more members than groups: the last get nothing
    assert [len(five[f"member-{i}"].get("t.events", [])) for i in range(5)] == [2, 2, 2, 1, 0]
    everything = OwnerAssignor("http://a:1", "t.events", group_size=6)
    assert assigned(everything, Cluster(6), 2) == {
        "member-0": {"t.events": list(range(6)), "t.events.rekeyed": list(range(6))},
        "member-1": {},
    }


def test_a_shards_producer_has_a_fixed_transactional_id() -> None:
    worker = Worker(load_settings(app_id="app", partitions_per_transaction=4))
    assert [worker.shard_of(p) for p in range(6)] == [0, 0, 0, 0, 1, 1]
    assert [worker.transactional_id(s) for s in (0, 1)] == ["app-0-3", "app-4-7"]
    # a shard short of partitions is still named by its range (partitions may be added later)
    short = Worker(load_settings(app_id="app", partitions_per_transaction=3, events_partitions=7))
    assert [short.transactional_id(s) for s in (0, 1, 2)] == ["app-0-2", "app-3-5", "app-6-8"]
    alone = Worker(load_settings(app_id="app"))  # one partition each: the ids it always had
    assert [alone.transactional_id(p) for p in range(3)] == ["app-0", "app-1", "app-2"]
    assert alone.producers() == {}


def test_a_shard_wakes_for_its_first_due_reminder() -> None:
    shard = Shard(0)
    assert shard.next_wake(100.0) is None and not shard.anything_due(100.0)
    quiet, soon, late = partition(), partition(), partition()
    soon.due, late.due = [(103.0, "c1", "r")], [(110.0, "c2", "r")]
    shard.parts = {0: quiet, 1: late, 2: soon}
    assert shard.next_wake(100.0) == 3.0 and not shard.anything_due(100.0)
    assert shard.next_wake(105.0) == 0.0 and shard.anything_due(105.0)
    soon.held = True  # due but held back: looked at again shortly
    assert shard.next_wake(105.0) == HELD_RECHECK_S


def test_the_leader_sends_every_member_the_partition_owners() -> None:
    a, b = OwnerAssignor("http://a:1", "t.events"), OwnerAssignor("http://b:2", "t.events")
    members = {
        "member-a": a.metadata(["t.events", "t.events.rekeyed"]),
        "member-b": b.metadata(["t.events", "t.events.rekeyed"]),
    }
    assignments = a.assign(Cluster(), members)
    for member, assignor in (("member-a", a), ("member-b", b)):
        assignor.on_assignment(assignments[member])
        mine = dict(assignments[member].assignment)
        assert mine["t.events"] == mine["t.events.rekeyed"]  # co-partitioned
    assert (
        a.owners
        == b.owners
        == {
            0: "http://a:1",
            1: "http://a:1",
            2: "http://a:1",
            3: "http://b:2",
            4: "http://b:2",
            5: "http://b:2",
        }
    )


def test_an_assignment_without_an_owner_map_routes_nothing() -> None:
    assignor = OwnerAssignor("http://a:1", "t.events")
    assignor.owners = {0: "http://old"}
    assignor.on_assignment(ConsumerProtocolMemberAssignment(0, [("t.events", [0])], b"\xff"))
    assert assignor.owners == {}


def test_partition_for_is_kafkas_default_partitioner() -> None:
    from kafka.partitioner.default import murmur2  # kafka-python's own port of Java's

    keys = [f"conversation-{i}".encode() for i in range(200)] + [b"", "ünï".encode()]
    for key in keys:
        assert partition_for(key, 6) == (murmur2(key) & 0x7FFFFFFF) % 6
    assert len({partition_for(key, 6) for key in keys}) == 6


def partition() -> Partition:
    state = MemoryState()
    return Partition(0, state, StreamFolder(state.heads, state.history), Shard(0))


def test_a_partition_hands_on_records_in_order_and_drops_repeats() -> None:
    part = partition()
    tp = TopicPartition("t.events", 0)
    part.next_offset[tp] = 5  # the committed offset the worker seeked to
    part.put(tp, [Message(3), Message(4)])  # fetched before the seek: already applied
    assert part.waiting == 0 and not part.pending
    part.put(tp, [Message(4), Message(5), Message(7)])  # a gap: transaction markers
    part.put(tp, [Message(8)])
    taken = part.take(2)
    assert [(t, [m.offset for m in ms]) for t, ms, _ in taken] == [(tp, [5, 7])]
    assert part.waiting == 1
    assert [[m.offset for m in ms] for _, ms, _ in part.take(10)] == [[8]]
    assert part.take(10) == [] and part.waiting == 0


def test_records_read_ahead_go_to_the_fold_with_their_records() -> None:
    import orjson

    from streams.fetching import Fetched

    part = partition()
    tp = TopicPartition("t.events", 0)
    records = []
    for offset in range(300):
        key = f"c{offset % 7}".encode()
        value = orjson.dumps({"sender_id": key.decode(), "event": "action", "name": "a"})
        records.append(Fetched("t.events", 0, offset, 1_700_000_000_000, 0, key, value, None,
                               len(key), len(value), ()))  # fmt: skip
    few = READ_AHEAD_MIN - 1
    part.put(tp, records[:100])
    part.put(tp, records[100 : 100 + few])  # too few to read ahead: only their place is kept
    part.put(tp, records[100 + few :])
    [(_, first, (skims, start))] = part.take(150)
    assert first == records[:150] and start == 0 and [len(s) for s in skims] == [100, few]
    [(_, rest, (more, start))] = part.take(1000)
    assert rest == records[150:] and more[0] is skims[1] and start == 50
    assert [len(s) for s in more] == [few, 200 - few]
    assert part.take(10) == [] and not part.ahead[tp]
    for messages, ahead in ((first, (skims, 0)), (rest, (more, start))):
        batch = part.folder.process_batch("t.events", 0, messages, ahead)
        assert batch.folded == len(messages) and not batch.notable
    # every record was taken from what was read ahead, but those too few to read
    assert [s.used for s in (*skims, more[1])] == [100, 0, 200 - few]


def test_only_the_workers_own_unread_records_let_reminders_of_other_conversations_fire() -> None:
    part = partition()
    part.own_topic = "t.events"
    # one transaction wrote externals of a and b at 10 and 11 (its marker: 12), another one of
    # a at 14 (marker: 15); a publisher's record sits at 13
    part.wrote([(10, b"a"), (11, b"b")])
    part.wrote([(14, b"a")])
    assert part.only_own_between(10, 13) == {"a", "b"}  # 10, 11 and the marker
    assert part.only_own_between(10, 16) is None  # 13 is someone else's
    assert part.only_own_between(14, 16) == {"a"}  # read past 13
    assert part.only_own_between(16, 16) == set()
    part.wrote([(20, b"c")])
    assert part.only_own_between(19, 22) is None  # 19: not ours (its marker is not counted)
    assert part.only_own_between(20, 21) is None  # a marker must follow 20 below the end
    # handing records on forgets what was read back (another topic's offsets do not count)
    part.wrote([(30, b"d")])
    part.put(TopicPartition("t.events.rekeyed", 0), [Message(40)])
    assert list(part.own_unread) == [20, 30]
    part.put(TopicPartition("t.events", 0), [Message(29), Message(30)])
    assert not part.own_unread and not part.own_ends


def test_a_full_collection_unfreezes_collects_and_freezes_again() -> None:
    worker = Worker(load_settings())
    worker._full_collection = 0.0
    cycle: list[Any] = []
    cycle.append(cycle)
    gc.freeze()
    del cycle  # frozen cyclic garbage: only a full collection with unfreeze reclaims it
    frozen = gc.get_freeze_count()
    worker._collect()
    assert gc.get_freeze_count() < frozen
    assert worker._full_collection > 0.0
    gc.unfreeze()


def test_a_transaction_begun_while_the_last_ones_markers_are_written_asks_again_soon() -> None:
    """aiokafka's own fixed 20 ms wait after CONCURRENT_TRANSACTIONS was the floor of every
    back-to-back transaction; the worker shortens it (an aiokafka upgrade must not undo that)."""
    from types import SimpleNamespace

    from aiokafka.errors import ConcurrentTransactions
    from aiokafka.producer.sender import AddPartitionsToTxnHandler

    from streams.worker import TXN_CONCURRENT_RETRY_S

    sender = SimpleNamespace(_retry_backoff=0.1, _txn_manager=SimpleNamespace(txn_partitions=set()))
    handler = AddPartitionsToTxnHandler(sender, [TopicPartition("events", 0)])
    response = SimpleNamespace(errors=[("events", [(0, ConcurrentTransactions.errno)])])
    assert handler.handle_response(response) == TXN_CONCURRENT_RETRY_S == 0.002


class Producer:
    """A transactional producer whose commits number ``failing`` fail (counted from 1), and
    whose batches to ``refusing`` fail as aiokafka's do: the batch's future, not the commit."""

    def __init__(self, failing: set[int], refusing: str | None = None) -> None:
        self.failing = failing
        self.refusing = refusing
        self.commits = 0
        self.aborts = 0

    def create_batch(self) -> Any:
        from aiokafka.producer.message_accumulator import BatchBuilder

        return BatchBuilder(1 << 20, 0, is_transactional=True)

    async def send_batch(self, batch: Any, topic: str, partition: int) -> Any:
        from aiokafka.errors import MessageSizeTooLargeError

        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if topic == self.refusing:
            done.set_exception(MessageSizeTooLargeError())
        else:
            done.set_result(namedtuple("Metadata", "offset")(0))
        return done

    async def begin_transaction(self) -> None:
        pass

    async def commit_transaction(self) -> None:
        self.commits += 1
        if self.commits in self.failing:
            raise RuntimeError("commit failed")

    async def abort_transaction(self) -> None:
        self.aborts += 1


def test_records_and_reminders_are_counted_once_their_transaction_commits() -> None:
    import orjson

    from streams.fetching import Fetched

    worker = Worker(load_settings(app_id="app"))
    worker._sizes = {worker.topics.dlq: 1, worker.topics.signals: 1}  # as the consumer learns
    shard = Shard(0, producer=Producer(failing={1, 3}))  # type: ignore[arg-type]
    tp = TopicPartition("t.events", 0)
    bodies = [
        {"event": "slot", "name": "a", "value": 1},
        {"event": "reminder", "name": "r", "date_time": "2020-01-01T00:00:00+00:00"},
        b"{not json",
    ]
    messages = [
        Fetched("t.events", 0, n, 1_700_000_000_000, 0, b"c1", body if isinstance(body, bytes)
                else orjson.dumps({"sender_id": "c1", **body}), None, 2, 10, ())
        for n, body in enumerate(bodies)
    ]  # fmt: skip

    def transact(records: list[Any], fresh: bool = False) -> None:
        if fresh:  # a rolled-back shard is taken again: its state as committed
            state = MemoryState()
            shard.parts[0] = Partition(0, state, worker.folder(state), shard)
        work = [(shard.parts[0], [handed(tp, records)] if records else [])]
        asyncio.run(worker._transact(shard, work))

    nothing = dict.fromkeys(worker.counts, 0)
    with pytest.raises(RuntimeError, match="commit failed"):
        transact(messages, fresh=True)  # 1: fails
    assert worker.counts == nothing and worker.transactions == 0
    transact(messages, fresh=True)  # 2: commits
    folded = {**nothing, "folded": 2, "dead": 1}
    assert worker.counts == folded and worker.reminder_counts == {"fired": 0, "missed": 0}
    with pytest.raises(RuntimeError, match="commit failed"):
        transact([])  # 3: the reminder (due in 2020) is missed, but the transaction fails
    assert worker.reminder_counts == {"fired": 0, "missed": 0}
    transact(messages, fresh=True)  # 4: the shard taken again folds the records again
    transact([])  # 5: missed again, and committed
    assert worker.reminder_counts == {"fired": 0, "missed": 1}
    assert worker.counts == {**nothing, "folded": 4, "dead": 2} and worker.transactions == 3


def test_the_workers_folds_follow_the_settings() -> None:
    settings = load_settings(history_max_events=7, max_record_bytes=4096)
    folder = Worker(settings).folder(MemoryState())
    assert (folder.max_event_history, folder.max_record_bytes) == (7, 4096)
    # what a changelog record's value may take: what the settings (or the broker, if less)
    # say the changelogs accept, less 64 KiB for the rest of the record (a quarter, if small)
    settings = load_settings(app_id="app", max_record_bytes=1_000_000)
    assert Worker(settings).folder(MemoryState()).max_kept_bytes == 1_000_000
    broker = {"app-history-changelog": 500_000}
    smaller = Worker(settings, message_limits=broker).folder(MemoryState())
    assert smaller.max_kept_bytes == 500_000 - RECORD_OVERHEAD
    tiny = Worker(settings, message_limits={"app-heads-changelog": 100_000})
    assert tiny.kept_room == 75_000
    assert Worker(load_settings()).folder(MemoryState()).max_event_history is None


def test_the_worker_reads_fetched_batches_with_the_compiled_reader_unless_told_not_to() -> None:
    from aiokafka.consumer import fetcher

    before = fetcher.PartitionRecords, fetcher.MemoryRecords
    try:
        assert Worker(load_settings(compiled_reader=False)).choose_reader() == "aiokafka"
        assert fetcher.PartitionRecords is before[0]  # left alone
        assert Worker(load_settings()).choose_reader() == "compiled"
        assert fetcher.PartitionRecords is not before[0]
    finally:
        fetcher.PartitionRecords, fetcher.MemoryRecords = before


def test_members_with_another_group_size_get_no_partitions_and_are_told_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import orjson
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

    leader = OwnerAssignor("http://a:1", "t.events", group_size=3)
    other = OwnerAssignor("http://b:2", "t.events", group_size=1)
    older = ConsumerProtocolMemberMetadata(0, TOPICS, orjson.dumps({"url": "http://c:3"}))
    members = {"member-a": leader.metadata(TOPICS), "member-b": other.metadata(TOPICS)}
    members["member-c"] = older  # a trackerflow that sent no group size: size 1
    answers = leader.assign(Cluster(6), members)
    assert {m: dict(a.assignment) for m, a in answers.items()} == {
        "member-a": {topic: list(range(6)) for topic in TOPICS},
        "member-b": {},
        "member-c": {},
    }
    assert "member-b (1), member-c (1)" in caplog.text
    leader.on_assignment(answers["member-a"])
    assert leader.refused is None
    other.on_assignment(answers["member-b"])
    assert other.refused is not None
    assert "partitions_per_transaction 1, the group's leader with 3" in other.refused
    assert other.owners == dict.fromkeys(range(6), "http://a:1")  # requests are still routed
    # a leader of size 1 and a member that sent no size agree
    alone = OwnerAssignor("http://b:2", "t.events")
    agreed = alone.assign(Cluster(6), {"member-b": alone.metadata(TOPICS), "member-c": older})
    assert dict(agreed["member-c"].assignment) == {topic: [3, 4, 5] for topic in TOPICS}
    other.on_assignment(agreed["member-b"])
    assert other.refused is None


class BatchRecorder:
    """A producer that keeps the sizes of the batches it is given (the compiled writer's, or
    aiokafka's own builder's for an Outbox without it)."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, int, int, int]] = []  # topic, partition, records, bytes

    def create_batch(self) -> Any:
        from aiokafka.producer.message_accumulator import BatchBuilder

        from streams.worker import MAX_BATCH_BYTES

        return BatchBuilder(MAX_BATCH_BYTES, 0, is_transactional=True)

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> Any:
        self.batches.append((topic, partition, batch.record_count(), batch.size()))
        return asyncio.get_running_loop().create_future()


def test_batches_to_a_topic_with_a_smaller_limit_are_cut_to_it() -> None:
    from streams.topics import changelog_topics, message_limits
    from streams.worker import MAX_BATCH_BYTES, Outbox

    settings = load_settings(topic_prefix="t", max_record_bytes=20_000)
    limits = {t: n for t, n in message_limits(settings).items() if n < MAX_BATCH_BYTES}
    written = ["t.events", "t.events.rekeyed", *changelog_topics(settings), "t.signals"]
    assert limits == {**dict.fromkeys(written, 85_536), "t.dlq": 105_536}
    outbox = Outbox(limits)
    keys = [f"c{i}".encode() for i in range(600)]
    for key in keys:
        outbox.add("t.events.rekeyed", 1, key, b"x" * 1_000, [("h", b"v")])
        outbox.add("t.other", 1, key, b"y" * 500)
    producer = BatchRecorder()
    sent = asyncio.run(outbox.send(producer))  # type: ignore[arg-type]
    rekeyed = [b for b in producer.batches if b[0] == "t.events.rekeyed"]
    assert len(rekeyed) == 8 and all(size <= 85_536 for *_, size in rekeyed)
    assert max(size for *_, size in rekeyed) > 80_000  # filled up to the limit, not below
    other = [b for b in producer.batches if b[0] == "t.other"]
    assert [records for _, _, records, _ in other] == [600]  # no limit: one batch
    assert [r[0] for s in sent if s.topic == "t.events.rekeyed" for r in s.records] == keys
    assert sum(b[2] for b in rekeyed) == 600


def test_a_worker_cuts_batches_to_the_smaller_of_the_settings_and_the_brokers_limits() -> None:
    settings = load_settings(topic_prefix="t", max_record_bytes=100_000)
    broker = {"t.signals": 100_000, "t.events": 5_000_000, "t.dlq": 150_000}
    worker = Worker(settings, message_limits=broker)
    assert worker._batch_limits == {
        "t.signals": 100_000,  # the broker's (the settings' is 165,536)
        "t.events": 165_536,  # the settings' (the broker's is larger)
        "t.events.rekeyed": 165_536,
        **dict.fromkeys(worker.tables, 165_536),  # the changelogs: the settings'
        "t.dlq": 150_000,  # the broker's (the settings' is 265,536)
    }
    assert Worker(load_settings())._batch_limits == {}  # 1 MiB records: nothing to cut


def test_a_dead_letter_keeps_the_record_or_what_the_dead_letter_topic_takes_of_it() -> None:
    import orjson

    from streams.fetching import Fetched
    from streams.worker import dead_letter

    def record(key: bytes | None, value: bytes, headers: Any = ()) -> Fetched:
        return Fetched("t", 0, 7, 0, 0, key, value, None, 0, 0, headers)

    small = record(b"c1", b"v" * 900, (("RASA_ENVIRONMENT", b"prod"),))
    assert dead_letter(small, 1000) == (b"c1", b"v" * 900, [("RASA_ENVIRONMENT", b"prod")])
    key, value, headers = dead_letter(record(b"c1", b"v" * 5000, (("h", b"x" * 10),)), 1000)
    assert key == b"c1" and value == b"v" * (1000 - 2 - 11)
    assert headers[0] == ("h", b"x" * 10) and headers[1][0] == "trackerflow.truncated"
    assert orjson.loads(headers[1][1]) == {"key": 2, "value": 5000, "headers": 11}
    # a key or headers of absurd size: the headers go, the key is cut to half the limit
    key, value, headers = dead_letter(record(b"k" * 3000, b"v" * 3000, (("h", b"x"),)), 1000)
    assert (key, value) == (b"k" * 500, b"v" * 500)
    assert [name for name, _ in headers] == ["trackerflow.truncated"]
    assert dead_letter(record(None, b"v" * 1001), 1000)[:2] == (None, b"v" * 1000)


def test_limits_read_again_apply_to_the_folds_made_from_then_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from types import SimpleNamespace

    import streams.topics as topics_module
    from streams.topics import TopicsError

    worker = Worker(load_settings(app_id="app", max_record_bytes=1_000_000))
    assert worker.kept_room == 1_000_000

    def refused(settings: Any, *specs: Any) -> Any:
        raise TopicsError("cannot reach Kafka")

    async def unanswered(settings: Any, *specs: Any, **options: Any) -> None:
        return None  # aiokafka's admin client could not tell: ensure_topics is asked

    monkeypatch.setattr(topics_module, "found_topics", unanswered)
    monkeypatch.setattr(topics_module, "ensure_topics", refused)
    asyncio.run(worker._read_limits())
    assert worker.kept_room == 1_000_000
    assert "cannot read the topics' limits again (cannot reach Kafka)" in caplog.text
    lowered = {"app-heads-changelog": 300_000, "trackerflow.signals": 100_000}
    monkeypatch.setattr(
        topics_module, "ensure_topics", lambda s, *specs: SimpleNamespace(limits=lowered)
    )
    asyncio.run(worker._read_limits())
    assert worker.kept_room == 300_000 - RECORD_OVERHEAD
    assert worker.folder(MemoryState()).max_kept_bytes == 300_000 - RECORD_OVERHEAD
    assert worker._batch_limits == {"app-heads-changelog": 300_000, "trackerflow.signals": 100_000}
    assert "a changelog record may now hold 234464 bytes" in caplog.text

    asked: list[dict[str, Any]] = []

    async def answered(settings: Any, *specs: Any, **options: Any) -> Any:
        asked.append(options)
        return SimpleNamespace(limits={"app-heads-changelog": 500_000})

    # aiokafka's answer is taken as it is (kafka-python not asked), its log left as it is
    monkeypatch.setattr(topics_module, "found_topics", answered)
    monkeypatch.setattr(topics_module, "ensure_topics", refused)
    asyncio.run(worker._read_limits())
    assert asked == [{"quiet": False, "create": True}]
    assert worker.kept_room == 500_000 - RECORD_OVERHEAD


def test_a_limit_raised_while_the_worker_runs_reaches_the_partitions_it_owns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from types import SimpleNamespace

    import orjson

    import streams.topics as topics_module
    from streams.fetching import Fetched

    settings = load_settings(app_id="app", max_record_bytes=1_000_000)
    worker = Worker(settings, message_limits={"app-heads-changelog": 100_000})
    assert worker.kept_room == 75_000
    worker._sizes = {worker.topics.dlq: 1, worker.topics.signals: 1}
    shard = Shard(0, producer=Producer(failing=set()))  # type: ignore[arg-type]
    state = MemoryState(head_room=worker.kept_room)
    owned = shard.parts[0] = Partition(0, state, worker.folder(state), shard)
    tp = TopicPartition("t.events", 0)

    def fold(offset: int, size: int) -> None:
        body = {"sender_id": "c1", "event": "slot", "name": f"s{offset}", "value": "x" * size}
        message = Fetched("t.events", 0, offset, 1_700_000_000_000, 0, b"c1",
                          orjson.dumps(body), None, 2, 10, ())  # fmt: skip
        asyncio.run(worker._transact(shard, [(owned, [handed(tp, [message])])]))

    fold(0, 80_000)  # more than the room: dead
    fold(1, 40_000)  # folded; its head (40 KB of slots) fits with its state
    assert worker.counts["dead"] == 1 and worker.counts["folded"] == 1
    fold(2, 40_000)  # folded; with 80 KB of slots, the head is written without its state
    assert orjson.loads(state.heads.encode(state.heads["c1"]))["state"] is None

    raised = {"app-heads-changelog": 1_000_000, "app-history-changelog": 1_000_000}

    async def found(settings: Any, *specs: Any, **options: Any) -> Any:
        return SimpleNamespace(limits=raised)

    monkeypatch.setattr(topics_module, "found_topics", found)
    asyncio.run(worker._read_limits())  # as every LIMITS_S
    assert worker.kept_room == 1_000_000 - RECORD_OVERHEAD
    assert f"the topics' limits changed: a changelog record may now hold {worker.kept_room} " \
        "bytes (before: 75000)" in caplog.text  # fmt: skip
    fold(3, 80_000)  # the partition, never taken again, folds within the new room
    assert worker.counts["dead"] == 1 and worker.counts["folded"] == 3
    assert owned.folder.max_kept_bytes == worker.kept_room
    assert orjson.loads(state.heads.encode(state.heads["c1"]))["state"] is not None
    caplog.clear()
    asyncio.run(worker._read_limits())  # unchanged: nothing to say
    assert "limits" not in caplog.text


def test_a_shard_whose_transactions_keep_failing_is_retried_later_each_time_and_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import time

    from streams.worker import RETRY_MAX_S, retry_delay
    from streams.worker_service import WorkerService

    assert [retry_delay(n) for n in range(1, 10)] == [0, 0.5, 1, 2, 4, 8, 16, RETRY_MAX_S, 30]
    worker = Worker(load_settings(app_id="app"))
    service = WorkerService(worker, None, "http://here")  # type: ignore[arg-type]
    taken: list[int] = []

    async def roll_back(number: int) -> None:  # as Worker._roll_back, once it took the shard
        taken.append(number)
        worker.failing.pop(number, None)
        worker.shards[number] = Shard(number)

    worker._roll_back = roll_back  # type: ignore[method-assign]

    def fail(error: str) -> None:
        shard = worker.shards[0]
        shard.parts = {0: Partition(0, MemoryState(), StreamFolder({}, {}), shard)}
        shard.failed = RuntimeError(error)

    worker.shards[0] = Shard(0)
    assert service.health()["status"] == "ok" and service.health()["failing"] == []
    fail("first")
    asyncio.run(worker._dispatch({}))
    assert taken == [0]  # the first failure: taken again at once
    assert "transaction of partitions [0] failed (first; 1 in a row); rolling back" in caplog.text
    fail("second")
    asyncio.run(worker._dispatch({}))
    assert taken == [0]  # the second in a row: half a second later
    health = service.health()
    assert health["status"] == "degraded"
    assert health["failing"] == [
        {"partitions": [0], "error": "second", "failed_transactions": 2, "retry_in_s": 0.5}
    ]
    assert "(second; 2 in a row); rolling back in 0.5 s" in caplog.text
    asyncio.run(worker._dispatch({}))
    assert taken == [0] and caplog.text.count("2 in a row") == 1  # said once
    time.sleep(0.55)
    asyncio.run(worker._dispatch({}))
    assert taken == [0, 0] and service.health()["status"] == "ok"
    fail("third")
    asyncio.run(worker._dispatch({}))
    assert service.health()["failing"][0]["failed_transactions"] == 3
    assert service.health()["failing"][0]["retry_in_s"] == 1.0
    time.sleep(1.05)
    asyncio.run(worker._dispatch({}))
    assert taken == [0, 0, 0] and service.health()["failing"] == []

    # a committed transaction ends the run of failures
    worker._sizes = {worker.topics.dlq: 1, worker.topics.signals: 1}
    shard = Shard(0, producer=Producer(failing=set()))  # type: ignore[arg-type]
    state = MemoryState()
    shard.parts[0] = Partition(0, state, worker.folder(state), shard)
    asyncio.run(worker._transact(shard, [(shard.parts[0], [])]))
    assert worker.transactions == 0  # nothing to commit: the run goes on
    assert worker._in_a_row[0] == 3
    from streams.fetching import Fetched

    record = Fetched("t.events", 0, 0, 1_700_000_000_000, 0, b"c1",
                     b'{"sender_id": "c1", "event": "pause"}', None, 2, 10, ())  # fmt: skip
    batch = [handed(TopicPartition("t.events", 0), [record])]
    asyncio.run(worker._transact(shard, [(shard.parts[0], batch)]))
    assert worker.transactions == 1 and worker._in_a_row[0] == 0
    worker.shards[0] = Shard(0)
    fail("again")
    asyncio.run(worker._dispatch({}))
    assert taken == [0, 0, 0, 0]  # counted from one again: at once
    fail("and again")
    asyncio.run(worker._dispatch({}))
    assert worker._in_a_row[0] == 2 and service.health()["failing"] != []

    # a revoked shard is not this worker's to retry any more, and its run is forgotten
    asyncio.run(worker.revoke([TopicPartition("t.events", 0)]))
    assert service.health()["failing"] == [] and worker._in_a_row[0] == 0


def test_dead_letters_are_cut_to_half_of_what_a_lowered_dead_letter_topic_takes() -> None:
    from streams.fetching import Fetched
    from streams.worker import Outbox

    settings = load_settings(app_id="app", max_record_bytes=200_000)
    assert Worker(settings).dead_letter_room == 200_000  # the topic as the worker creates it
    worker = Worker(settings, message_limits={settings.topic_prefix + ".dlq": 100_000})
    assert worker.dead_letter_room == 50_000
    worker._sizes = {worker.topics.dlq: 1, worker.topics.signals: 1}
    state = MemoryState()
    folder = worker.folder(state)
    record = Fetched("t.events", 0, 7, 1_700_000_000_000, 0, b"c1",
                     b'{"sender_id": "c1", "event": "nope", "x": "' + b"x" * 80_000 + b'"}',
                     None, 2, 80_000, ())  # fmt: skip
    batch = folder.process_batch("t.events", 0, [record])
    [(_, outcome)] = batch.notable
    assert outcome.kind == "dead"
    outbox = Outbox()
    worker._effects(outbox, outcome, record)
    [(key, value, headers)] = outbox.records[(worker.topics.dlq, 0)]
    assert len(value) == 50_000 - len(key) and dict(headers)["trackerflow.truncated"]


def test_a_transaction_one_of_whose_batches_failed_is_aborted_not_committed() -> None:
    """aiokafka would commit it, state without its signals (a signals topic that refuses them):
    the worker waits for every batch and aborts instead, and counts nothing."""
    from aiokafka.errors import MessageSizeTooLargeError

    from streams.fetching import Fetched

    worker = Worker(load_settings(app_id="app"))
    worker._sizes = {worker.topics.dlq: 1, worker.topics.signals: 1}
    producer = Producer(failing=set(), refusing=worker.topics.signals)
    shard = Shard(0, producer=producer)  # type: ignore[arg-type]
    state = MemoryState()
    shard.parts[0] = Partition(0, state, worker.folder(state), shard)
    paused = Fetched("t.events", 0, 0, 1_700_000_000_000, 0, b"c1",
                     b'{"sender_id": "c1", "event": "pause"}', None, 2, 10, ())  # fmt: skip
    batch = [handed(TopicPartition("t.events", 0), [paused])]  # its signal: conversation_paused
    with pytest.raises(MessageSizeTooLargeError):
        asyncio.run(worker._transact(shard, [(shard.parts[0], batch)]))
    assert (producer.commits, producer.aborts) == (0, 1)
    assert worker.transactions == 0 and worker.counts["folded"] == 0
    producer.refusing = None  # the topic takes it again: the shard taken again commits it all
    state = MemoryState()
    shard.parts[0] = Partition(0, state, worker.folder(state), shard)
    asyncio.run(worker._transact(shard, [(shard.parts[0], batch)]))
    assert (producer.commits, producer.aborts) == (1, 1) and worker.counts["folded"] == 1


def test_the_kafka_watch_outlives_an_unexpected_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import streams.worker as worker_module

    monkeypatch.setattr(worker_module, "PROBE_S", 0.01)
    worker = Worker(load_settings(app_id="app"))
    worker._sizes = {worker.topics.events: 2, worker.topics.rekeyed: 2}
    asked: list[list[TopicPartition]] = []

    class Consumer:
        async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
            asked.append(tps)
            if len(asked) == 1:
                raise ValueError("a bug")
            stop.set()
            return dict.fromkeys(tps, 0)

    async def watch() -> None:
        await worker._watch_kafka(Consumer(), stop)  # type: ignore[arg-type]

    stop = asyncio.Event()
    asyncio.run(watch())
    assert len(asked) == 2 and len(asked[0]) == 4  # both topics' partitions
    assert "checking Kafka failed" in caplog.text and "ValueError: a bug" in caplog.text
    assert worker.kafka.answering is True


def test_no_young_collection_runs_while_a_transaction_of_many_partitions_folds() -> None:
    """What a fold makes survives it (it is the state), so scanning it for garbage is waste:
    what survives each partition's fold is frozen, and with the worker's threshold no
    collection runs in the middle of a transaction, however many partitions it folds."""
    import orjson

    from streams.fetching import Fetched
    from streams.worker import GC_YOUNG_THRESHOLD

    worker = Worker(load_settings(app_id="app", partitions_per_transaction=6))
    worker._sizes = {worker.topics.dlq: 1, worker.topics.signals: 1}
    shard = Shard(0, producer=Producer(failing=set()))  # type: ignore[arg-type]
    work = []
    for number in range(6):
        state = MemoryState()
        part = shard.parts[number] = Partition(number, state, worker.folder(state), shard)
        tp = TopicPartition("t.events", number)
        records = []
        for offset in range(2000):
            key = f"c{number}-{offset % 500}".encode()
            body = {"sender_id": key.decode(), "event": "user", "text": "hi", "parse_data": {
                "intent": {"name": "greet", "confidence": 0.9}, "entities": []}}  # fmt: skip
            records.append(Fetched("t.events", number, offset, 1_700_000_000_000, 0, key,
                                   orjson.dumps(body), None, 2, 10, ()))  # fmt: skip
        part.put(tp, records)  # read ahead, as fetched records are
        work.append((part, part.take(len(records))))
    started: list[int] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.append(info["generation"])

    threshold = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
    gc.callbacks.append(record)
    try:
        gc.freeze()  # as the worker runs: what was there before is frozen
        asyncio.run(worker._transact(shard, work))
    finally:
        gc.callbacks.remove(record)
        gc.set_threshold(*threshold)
        gc.unfreeze()
    assert worker.counts["folded"] == 12_000
    assert started == []


class Metadata:
    """A consumer whose metadata knows a topic after ``updates_needed`` updates (never: None)."""

    def __init__(self, updates_needed: int | None) -> None:
        self.updates_needed, self.updates = updates_needed, 0
        self.looked_up_after = -1  # how many updates the last lookup came after
        self._client = self

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        self.looked_up_after = self.updates
        known = self.updates_needed is not None and self.updates >= self.updates_needed
        return {0, 1, 2} if known else None

    async def force_metadata_update(self) -> bool:
        self.updates += 1
        return True


def test_a_topic_is_looked_up_again_at_once_and_then_every_tenth_of_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aiokafka.errors import KafkaError

    import streams.worker as worker_module

    worker = Worker(load_settings(app_id="app"))
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(worker_module.asyncio, "sleep", sleep)
    first = Metadata(updates_needed=1)  # not in the consumer's metadata until it asks
    assert asyncio.run(worker._partitions_of(first, "t.events")) == {0, 1, 2}  # type: ignore[arg-type]
    assert (first.updates, slept) == (1, [])  # no wait: the first answer had it
    later = Metadata(updates_needed=3)  # the broker is still creating it
    assert asyncio.run(worker._partitions_of(later, "t.events")) == {0, 1, 2}  # type: ignore[arg-type]
    assert (later.updates, slept) == (3, [0.1, 0.1])
    slept.clear()
    missing = Metadata(None)
    with pytest.raises(KafkaError, match=r"'t\.missing' does not exist"):
        asyncio.run(worker._partitions_of(missing, "t.missing"))  # type: ignore[arg-type]
    assert len(slept) == 50 and sum(slept) == pytest.approx(5.0)
    assert missing.updates == missing.looked_up_after == 51  # the last answer was read too


def test_the_collector_waits_only_while_the_worker_command_imports_the_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gc.unfreeze()
    try:
        _collector_while_the_worker_command_imports(monkeypatch)
    finally:
        gc.unfreeze()  # what the command froze: this test process's objects


def _collector_while_the_worker_command_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from click.testing import CliRunner

    import streams.liveness
    import streams.worker_cli as command
    import streams.worker_service as service
    from streams.topics import TopicsError, TopicsReport

    seen: list[tuple[str, bool, bool]] = []  # (when, collecting, anything frozen)

    def found(settings: Any) -> TopicsReport:
        seen.append(("topics", gc.isenabled(), gc.get_freeze_count() > 0))
        return TopicsReport(existing=("t.events",))

    async def run(settings: Any, **options: Any) -> None:
        seen.append(("run", gc.isenabled(), gc.get_freeze_count() > 0))

    # the command's set-up of this process's memory and logs is left out
    monkeypatch.setattr(command, "prepare", lambda *sizes: (0, 0))
    monkeypatch.setattr(streams.liveness, "quiet_repeats", lambda: None)
    aiokafka_log = logging.getLogger("aiokafka")
    monkeypatch.setattr(aiokafka_log, "level", aiokafka_log.level)
    monkeypatch.setattr(service, "run_worker", run)
    monkeypatch.setattr(command, "starting_topics", found)
    assert gc.isenabled()
    done = CliRunner().invoke(command.worker, [])
    assert done.exit_code == 0, done.output
    # what was there once the modules were imported is left out of the worker's collections
    assert seen == [("topics", False, False), ("run", True, True)]

    def refused(settings: Any) -> TopicsReport:
        raise TopicsError("cannot reach Kafka at 127.0.0.1:9")

    monkeypatch.setattr(command, "starting_topics", refused)
    done = CliRunner().invoke(command.worker, [])
    assert done.exit_code == 1 and "cannot reach Kafka at 127.0.0.1:9" in done.output
    assert gc.isenabled()  # collecting again after a start that failed
