"""The worker's in-process parts, without a broker: the owner map, batching, change tracking."""

from __future__ import annotations

import gc
from collections import namedtuple
from typing import Any

from aiokafka import TopicPartition
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from processors.stream import StreamFolder
from streams.settings import load_settings
from streams.stores import MemoryState
from streams.worker import OwnerAssignor, Partition, Worker, partition_for

Message = namedtuple("Message", "offset")


class Cluster:
    """Just what the range assignor asks of the cluster metadata."""

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(6))


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
    return Partition(0, state, StreamFolder(state.heads, state.history))


def test_a_partition_hands_on_records_in_order_and_drops_repeats() -> None:
    part = partition()
    tp = TopicPartition("t.events", 0)
    part.next_offset[tp] = 5  # the committed offset the worker seeked to
    part.put(tp, [Message(3), Message(4)])  # fetched before the seek: already applied
    assert part.waiting == 0 and not part.pending
    part.put(tp, [Message(4), Message(5), Message(7)])  # a gap: transaction markers
    part.put(tp, [Message(8)])
    taken = part.take(2)
    assert [(t, [m.offset for m in ms]) for t, ms in taken] == [(tp, [5, 7])]
    assert part.waiting == 1
    assert [[m.offset for m in ms] for _, ms in part.take(10)] == [[8]]
    assert part.take(10) == [] and part.waiting == 0


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


def test_the_workers_folds_follow_the_settings() -> None:
    settings = load_settings(history_max_events=7, max_record_bytes=4096)
    folder = Worker(settings).folder(MemoryState())
    assert (folder.max_event_history, folder.max_record_bytes) == (7, 4096)
    assert Worker(load_settings()).folder(MemoryState()).max_event_history is None
