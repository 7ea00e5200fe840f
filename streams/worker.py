"""The worker: folds the events topic into trackers with Kafka transactions, exactly once.

How exactly-once works (proven by the kill -9 and rebalance tests in tests/streams/):

* The worker is a member of the consumer group ``app_id`` (``read_committed``) on the events topic
  and the internal re-keyed topic. Both have the same partitions, and the range assignor gives
  partition ``p`` of both to one worker, so every conversation has one owner.
* State partition ``p`` (heads and history, ``processors.stream.StreamFolder`` over dicts) is
  backed by partition ``p`` of two compacted changelog topics.
* Partitions are grouped in shards of ``partitions_per_transaction`` (partition ``p`` is in
  shard ``p // N``); the assignor (``OwnerAssignor``) gives a shard to one worker as a whole.
  Each owned shard has its own transactional producer with a fixed ``transactional.id``
  (``<app_id>-<p>`` with one partition per shard, ``<app_id>-<first>-<last>`` otherwise). The
  records waiting in the shard's partitions are folded, and in ONE transaction of that producer
  go: the changed heads and the new history records (changelogs), the signals, the dead letters,
  the re-keyed copies, and each partition's new read positions (``POSITIONS_KEY`` in its heads
  changelog partition). They commit together or not at all. More partitions per transaction
  means fewer transactions for the same records, which is what a broker pays for under load.
* On assignment the worker starts the shard's producer first. Its ``InitProducerId`` fences
  any earlier owner (a zombie, or the process killed a moment ago) and aborts its open
  transaction. Only then does it read the changelog partitions (``read_committed``, up to the
  last stable offset) into memory, positions included, and seek to those positions. State and
  position are therefore always from the same committed transactions. The positions name the
  transactional id that committed them: one other than the shard's (a worker with another
  ``partitions_per_transaction``, perhaps a paused one) is fenced too, and the changelogs are
  read again, before anything is folded.
* Each head also stores the last applied offset per source partition, so a record delivered
  again (an offset commit that lost a race with a rebalance) is skipped, never applied twice.
* If a transaction fails, the shard is rolled back: its partitions' state is re-read from the
  changelogs and the consumer seeks back to the positions in them.
* The positions are not the consumer group's offsets: committing those in a transaction costs two
  more round trips and a write to ``__consumer_offsets`` (and its markers) per transaction, which
  halved the transactions a broker core sustains. The group's offsets are still committed every
  few seconds, outside transactions, for lag monitoring only; they are read back only when a
  partition's changelog has no positions (state written by an earlier trackerflow).

faust-streaming was the first engine; its exactly-once mode lost and duplicated events under
kill -9 and rebalances (signals outside the transaction, faust-streaming issue 177; table writes
committed apart from their offsets), so the worker drives aiokafka, faust's own Kafka client,
directly. Its consumers read fetched record batches with trackerflow's compiled reader
(``streams.fetching``): aiokafka's records and positions, at a third of the cost. Its producers
send batches written by trackerflow's compiled writer (``Outbox``): aiokafka's bytes, one call
per batch. Its fetches wait briefly for a batch while records flow and long for the first record
while none do (``streams.fetch_wait``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import heapq
import itertools
import logging
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

import aiokafka.producer.sender
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError
from aiokafka.partitioner import murmur2
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from events.fast import compiled
from events.wire import dumps, encode_record, skim
from processors.domain import Domain
from processors.reminders import REMINDER_TRIGGERED, listing
from processors.stream import Head, Outcome, StreamFolder
from streams import fetch_wait, produce_requests
from streams.fetching import install
from streams.liveness import PROBE_S, KafkaCheck
from streams.publisher import RASA_ENVIRONMENT_HEADER
from streams.settings import Settings, kafka_client_config
from streams.stores import (
    MemoryState,
    PartitionState,
    RocksState,
    Store,
    head_encoder,
    lock_state_dir,
)
from streams.topics import (
    RECORD_OVERHEAD,
    TABLES,
    Topics,
    TopicsError,
    changelog_topics,
    known_topics,
)
from streams.topics import message_limits as topic_limits

log = logging.getLogger("trackerflow.worker")

# fetched records of a topic partition read ahead when at least this many come at once (see
# ``Partition.put``; a few at a time gain less than handing them to the reader costs)
READ_AHEAD_MIN = 64
MAX_BATCH_BYTES = 1024 * 1024  # producer batches; changelog topics accept 1 MiB records
# a produce request carries up to this much (the broker takes 100 MiB: socket.request.max.bytes)
MAX_REQUEST_BYTES = 16 * 1024 * 1024
Record = tuple[Any, ...]  # (key, value) or (key, value, headers): what an Outbox sends
RETRY_S = 1.0
RETRY_MAX_S = 30.0  # the longest wait before a shard whose transactions keep failing is retried
TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)  # a batch over a topic's limit
# Garbage collection. The state is millions of small long-lived objects, and Python's cyclic
# collector would scan them again and again (it cost more than the fold itself). So what
# survives each partition's fold is frozen (never scanned: a transaction of six partitions'
# batches made three young collections, 7% of the worker's time), young collections run
# rarely, and every GC_FULL_COLLECTION_S everything is unfrozen and collected once, so cyclic
# garbage that was frozen (rare: the fold makes no cycles) is reclaimed with a single pause.
GC_YOUNG_THRESHOLD = 50_000  # allocations between young collections (Python's default: 700)
GC_FULL_COLLECTION_S = 600.0
HELD_RECHECK_S = 0.2
# The heads changelog key of a partition's read positions ({source topic: next offset}). Not
# UTF-8, so no conversation id (a UTF-8 string) can ever have it.
POSITIONS_KEY = b"\xfftrackerflow.positions"
WRITER = "writer"  # in the positions record: the transactional id that committed it
LAG_COMMIT_S = 5.0  # how often the group's offsets are committed for lag monitoring
LIMITS_S = 60.0  # how often the topics' max.message.bytes are read again
# A partition's next transaction cannot add partitions while the broker still writes the markers
# of its last one (CONCURRENT_TRANSACTIONS, a few ms here). aiokafka then waits a fixed 20 ms
# before it asks again: that wait was the floor of every back-to-back transaction (25 ms, and
# most of the publish -> signal latency). Ask again after 2 ms instead (6 ms back to back).
TXN_CONCURRENT_RETRY_S = 0.002
if hasattr(aiokafka.producer.sender, "BACKOFF_OVERRIDE"):  # tests/streams check it is there
    aiokafka.producer.sender.BACKOFF_OVERRIDE = TXN_CONCURRENT_RETRY_S


BATCH_WRITER = compiled("BatchWriter")  # None: a build without the compiled extension


@functools.lru_cache(maxsize=1 << 16)  # murmur2 is pure Python; a conversation's key repeats
def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2, as the Java client and aiokafka use)."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


# the key of the owner map that tells a member why it gets no partitions
REFUSED_KEY = "refused"


class OwnerAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """Kafka's range assignment over groups of partitions, plus which worker URL owns which
    partition (for routing).

    Partition ``p`` of every subscribed topic is in group ``p // group_size``, and a group goes
    to one member as a whole (the partitions of a group share a transactional producer, see
    ``partitions_per_transaction``). Groups are laid out in order and split like Kafka's range
    assignor splits partitions (members in id order, the first ones get one more), so a group
    size of 1 is exactly the range assignment. Each member sends its HTTP URL in its
    subscription; the group leader sends the complete partition -> URL map back to every
    member with its assignment.

    Each member also sends its group size. Workers that group partitions differently would
    form different shards with different transactional ids, and fence each other or, worse,
    not at all: the leader gives partitions only to members with its own group size, and tells
    the others why (``refused``; a member of an older trackerflow, which sends no size, counts
    as size 1).
    """

    name = "trackerflow-range"
    version = 0

    def __init__(self, url: str, topic: str, group_size: int = 1) -> None:
        self.url = url
        self.topic = topic
        self.group_size = group_size
        self.owners: dict[int, str] = {}
        # why the leader gave this worker no partitions (another partitions_per_transaction)
        self.refused: str | None = None

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        subscription = {"url": self.url, "per_transaction": self.group_size}
        return ConsumerProtocolMemberMetadata(
            self.version, list(topics), orjson.dumps(subscription)
        )

    def assign(
        self, cluster: Any, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        size = self.group_size
        consumers: dict[str, list[str]] = defaultdict(list)  # topic -> its members, in id order
        refused: dict[str, int] = {}  # member -> its other partitions_per_transaction
        for member in sorted(members):
            theirs = _subscription(members[member].user_data).get("per_transaction", 1)
            if theirs != size:
                refused[member] = theirs
                continue
            for topic in members[member].subscription:
                consumers[topic].append(member)
        if refused:
            log.error(
                "group members with partitions_per_transaction other than this leader's %d get "
                "no partitions: %s",
                size,
                ", ".join(f"{member} ({n})" for member, n in refused.items()),
            )
        assigned: dict[str, list[tuple[str, list[int]]]] = {member: [] for member in members}
        for topic, subscribed in sorted(consumers.items()):
            partitions = sorted(cluster.partitions_for_topic(topic) or ())
            groups = sorted({p // size for p in partitions})
            each, extra = divmod(len(groups), len(subscribed))
            start = 0
            for i, member in enumerate(subscribed):
                mine = set(groups[start : start + each + (i < extra)])
                start += each + (i < extra)
                taken = [p for p in partitions if p // size in mine]
                if taken:
                    assigned[member].append((topic, taken))
        owners: dict[str, str] = {}
        for member, assignment in assigned.items():
            url = _url_of(members[member].user_data)
            for topic, partitions in assignment:
                if topic == self.topic:
                    owners.update((str(p), url) for p in partitions)
        shared = orjson.dumps(owners)
        answers = {}
        for member, assignment in assigned.items():
            user_data = shared
            if member in refused:
                reason = (
                    f"this worker runs with partitions_per_transaction {refused[member]}, the "
                    f"group's leader with {size}: every worker of a group needs the same value "
                    "(stop them all to change it); it gets no partitions until then"
                )
                user_data = orjson.dumps({**owners, REFUSED_KEY: reason})
            answers[member] = ConsumerProtocolMemberAssignment(self.version, assignment, user_data)
        return answers

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        self.refused = None
        try:
            owners = orjson.loads(assignment.user_data or b"{}")
            refused = owners.pop(REFUSED_KEY, None)
            self.owners = {int(p): str(url) for p, url in owners.items()}
        except (orjson.JSONDecodeError, ValueError, AttributeError):
            log.warning("the group leader sent no owner map; requests will not be routed")
            self.owners = {}
            return
        if refused is not None:
            self.refused = str(refused)
            log.error("%s", self.refused)


def _subscription(user_data: bytes | None) -> dict[str, Any]:
    """A member's subscription data (``OwnerAssignor.metadata``); empty if unreadable."""
    try:
        data = orjson.loads(user_data or b"{}")
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _url_of(user_data: bytes | None) -> str:
    return str(_subscription(user_data).get("url", ""))


@dataclass
class Shard:
    """Owned partitions that commit together: one transactional producer, one transaction per
    batch (``partitions_per_transaction`` of them; a worker owns them as one)."""

    number: int
    producer: AIOKafkaProducer | None = None
    parts: dict[int, Partition] = field(default_factory=dict)
    # set when any of its partitions has records waiting
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    closing: bool = False
    failed: BaseException | None = None
    task: asyncio.Task[None] | None = None

    def next_wake(self, now: float) -> float | None:
        """Seconds until a partition's reminder is due (or a held one is looked at again);
        None if none is pending."""
        waits = [
            HELD_RECHECK_S if part.held else max(0.0, due - now)
            for part in self.parts.values()
            if (due := part.next_due()) is not None
        ]
        return min(waits, default=None)

    def anything_due(self, now: float) -> bool:
        return any((due := p.next_due()) is not None and due <= now for p in self.parts.values())


@dataclass
class Partition:
    """One owned state partition: its stores, folder and committed positions."""

    number: int
    state: PartitionState
    folder: StreamFolder
    shard: Shard  # whose task folds and commits it
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    # the read positions restored from the heads changelog, by source topic
    restored: dict[str, int] = field(default_factory=dict)
    # the transactional id that committed those positions (None: not known)
    writer: str | None = None
    # fetched records waiting for the partition's next transaction, in order per topic partition
    pending: dict[TopicPartition, list[Any]] = field(default_factory=dict)
    waiting: int = 0
    # the waiting records as read ahead (``events.wire.skim``), in order per topic partition:
    # [what skim returned for one put, how many of its records were taken]
    ahead: dict[TopicPartition, deque[list[Any]]] = field(default_factory=dict)
    # the next offset to hand on per topic partition: a fetch started before the worker's seek
    # repeats records (the heads' offsets would skip them; this drops them before decoding)
    next_offset: dict[TopicPartition, int] = field(default_factory=dict)
    # pending reminders by due time: (due, conversation, name), each entry once
    due: list[tuple[float, str, str]] = field(default_factory=list)
    indexed: set[tuple[float, str, str]] = field(default_factory=set)
    # the latest event time folded; a due reminder fires once this has passed its due time or
    # the partition has nothing left to read (a backlog may still hold what cancels it)
    event_time: float = 0.0
    held: bool = False  # a due reminder waits for the partition to catch up
    # this worker's own records on the events partition (fired reminders' external messages)
    # that the consumer has not read back yet: offset -> conversation id; and the last offset
    # of each transaction that wrote some (its commit marker comes after it)
    own_unread: dict[int, str] = field(default_factory=dict)  # in offset order
    own_ends: deque[int] = field(default_factory=deque)
    own_topic: str = ""  # the events topic

    @property
    def heads(self) -> Store:
        return self.state.heads

    def use_room(self, room: int) -> None:
        """Fold and write heads within ``room`` bytes from now on (the topics' limits changed)."""
        self.folder.max_kept_bytes = room
        self.heads.encode = head_encoder(room)

    @property
    def history(self) -> Store:
        return self.state.history

    def index(self, conversation_ids: Iterable[str]) -> None:
        """Put the conversations' pending reminders on the due-time index."""
        self.index_heads((c, self.heads.get(c)) for c in conversation_ids)

    def index_all(self) -> None:
        """Put every pending reminder of the partition on the due-time index (only heads with
        a ``reminders`` key are decoded, where the store can tell)."""
        self.index_heads(self.heads.scan(b'"reminders":'))

    def index_heads(self, heads: Iterable[tuple[str, Head | None]]) -> None:
        for conversation_id, head in heads:
            for reminder in (head or {}).get("reminders", {}).values():
                entry = (reminder["due"], conversation_id, reminder["name"])
                if entry not in self.indexed:
                    self.indexed.add(entry)
                    heapq.heappush(self.due, entry)

    def wrote(self, offsets_keys: list[tuple[int, bytes | None]]) -> None:
        """Remember the records one committed transaction put on the events partition."""
        if offsets_keys:
            for offset, key in offsets_keys:
                self.own_unread[offset] = (key or b"").decode()
            self.own_ends.append(offsets_keys[-1][0])

    def only_own_between(self, position: int, end: int) -> set[str] | None:
        """If the events partition's unread offsets ``[position, end)`` hold nothing but this
        worker's own records and their transactions' commit markers: the conversations of those
        records (the only ones they can change). Otherwise None.

        Exact by counting: each own record counts once, and each own transaction whose last
        record is in the range has its marker after that record and (the transaction being
        complete below the last stable offset ``end``) before ``end``. Anything else in the
        range makes the count larger. (A marker counted here but placed at or after ``end``
        would need another transactional producer writing to this partition: only the
        worker owning it does.)"""
        self._read_up_to(position)
        own = [c for offset, c in self.own_unread.items() if offset < end]
        markers = sum(1 for last in self.own_ends if last < end)
        return set(own) if end - position == len(own) + markers else None

    def _read_up_to(self, position: int) -> None:
        """Forget own records and transactions below ``position`` (read back)."""
        own, ends = self.own_unread, self.own_ends
        while own and (first := next(iter(own))) < position:
            del own[first]
        while ends and ends[0] < position:
            ends.popleft()

    def next_due(self) -> float | None:
        return self.due[0][0] if self.due else None

    def put(self, tp: TopicPartition, messages: list[Any]) -> None:
        first = self.next_offset.get(tp, -1)
        if messages[0].offset < first:
            messages = [m for m in messages if m.offset >= first]
            if not messages:
                return
        self.next_offset[tp] = messages[-1].offset + 1
        if tp.topic == self.own_topic:
            self._read_up_to(messages[-1].offset + 1)
        self.pending.setdefault(tp, []).extend(messages)
        self.waiting += len(messages)
        # read them ahead while they wait, on another core (not a few: see READ_AHEAD_MIN)
        skimmed = skim(messages, read=len(messages) >= READ_AHEAD_MIN)
        if skimmed is not None:
            self.ahead.setdefault(tp, deque()).append([skimmed, 0])
        self.shard.wakeup.set()

    def take(self, limit: int) -> list[Taken]:
        """Up to ``limit`` waiting records (whole topic partitions first, in order)."""
        taken: list[Taken] = []
        for tp in list(self.pending):
            if limit <= 0:
                break
            messages = self.pending[tp]
            head, rest = messages[:limit], messages[limit:]
            taken.append(Taken(tp, head, self._take_ahead(tp, len(head))))
            limit -= len(head)
            self.waiting -= len(head)
            if rest:
                self.pending[tp] = rest
            else:
                del self.pending[tp]
        return taken

    def _take_ahead(self, tp: TopicPartition, count: int) -> tuple[list[Any], int]:
        """What was read ahead of ``tp``'s next ``count`` waiting records, and the index of the
        first of them in the first (``StreamFolder.process_batch``'s ``ahead``)."""
        queue = self.ahead.get(tp)
        if not queue:
            return [], 0
        skims, start = [], queue[0][1]
        while count > 0 and queue:
            entry = queue[0]
            skims.append(entry[0])
            used = min(count, len(entry[0]) - entry[1])
            entry[1] += used
            count -= used
            if entry[1] == len(entry[0]):
                queue.popleft()
        return skims, start


class Taken(NamedTuple):
    """Records a partition hands to its next transaction: one topic partition's, in order, and
    what was read ahead of them (see ``Partition.put``)."""

    tp: TopicPartition
    messages: list[Any]
    ahead: tuple[list[Any], int]


class Outbox:
    """Records to write in one transaction, grouped by topic partition (order kept).

    ``limits``: the largest record batch a topic accepts, where that is less than the
    producer's batch size (``MAX_BATCH_BYTES``); batches to it are cut before they grow past it.
    A record is ``(key, value)`` or ``(key, value, headers)``, its key bytes, None or a str
    (a store's drained change, written as its UTF-8); every record of one ``send`` is stamped
    with one time.

    Batches are written by trackerflow's compiled writer (``events._native.BatchWriter``: the
    bytes aiokafka's own builder writes, with one call per batch instead of one per record) and
    handed to aiokafka's producer as they are. ``writer=None`` (a build without the compiled
    extension) writes them with the producer's own builder, record by record.
    """

    def __init__(
        self, limits: Mapping[str, int] | None = None, *, writer: Any = BATCH_WRITER
    ) -> None:
        self.records: dict[tuple[str, int], list[Record]] = defaultdict(list)
        self.limits = limits or {}
        self.writer = writer

    def add(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Any = None,
    ) -> None:
        self.records[(topic, partition)].append((key, value, headers))

    def extend(self, topic: str, partition: int, records: Iterable[Record]) -> None:
        """Add many records (a store's drained changes) at once."""
        self.records[(topic, partition)].extend(records)

    async def send(self, producer: AIOKafkaProducer) -> list[Sent]:
        """Send every record; one ``Sent`` per produced batch, a topic partition's in order.

        aiokafka queues one unsent batch per topic partition (its next waits until that one is
        in a request) and has one request in flight per broker. So the batches are handed over
        round by round: every topic partition's first, then every second, ...; each request
        then carries a batch of every topic partition (up to ``MAX_REQUEST_BYTES``), where
        handing over one partition's batches after another made about one request per batch.
        """
        now_ms = int(time.time() * 1000)
        rounds: list[list[tuple[str, int, Any, list[Record]]]] = []
        for (topic, partition), records in self.records.items():
            limit = min(self.limits.get(topic, MAX_BATCH_BYTES), MAX_BATCH_BYTES)
            start, number = 0, 0
            while start < len(records):
                batch, taken = self._batch(producer, records, start, limit, now_ms)
                if number == len(rounds):
                    rounds.append([])
                rounds[number].append((topic, partition, batch, records[start : start + taken]))
                start, number = start + taken, number + 1
        sent: list[Sent] = []
        for batches in rounds:
            for topic, partition, batch, records in batches:
                future = await producer.send_batch(batch, topic, partition=partition)
                sent.append(Sent(topic, partition, future, records))
        return sent

    def _batch(
        self, producer: AIOKafkaProducer, records: list[Record], start: int, limit: int, now: int
    ) -> tuple[Any, int]:
        """A batch of ``records[start:]``, up to ``limit`` bytes (at least one record), and
        how many records it took."""
        if self.writer is not None:
            batch = self.writer(True)
            return batch, batch.extend(records, start, limit, now)
        batch = producer.create_batch()
        taken = 0
        for given, value, *more in itertools.islice(records, start, None):
            headers = (more[0] if more else None) or []
            key = given.encode() if type(given) is str else given  # str: a store's drained change
            if taken and batch.size() + _estimate(key, value, headers) > limit:
                break
            if batch.append(key=key, value=value, timestamp=now, headers=headers) is None:
                break  # full for the producer
            taken += 1
        return batch, taken


def dead_letter(record: Any, limit: int) -> tuple[bytes | None, bytes, list[Any]]:
    """The key, value and headers a dead letter keeps of ``record``: all of it, if its key,
    value and headers take at most ``limit`` bytes (the dead-letter topic takes twice that and
    the reason). A larger record (the events topic may accept more than trackerflow reads) is
    cut to ``limit`` bytes: its value first, then its headers and key; a header
    ``trackerflow.truncated`` then gives the sizes it had (JSON: ``key``, ``value``,
    ``headers``). The whole record stays where ``trackerflow.source`` says."""
    key, value = record.key, record.value or b""
    headers = list(record.headers or ())
    header_bytes = sum(len(name) + len(v or b"") for name, v in headers)
    key_bytes = len(key or b"")
    if key_bytes + len(value) + header_bytes <= limit:
        return key, value, headers
    sizes = {"key": key_bytes, "value": len(value), "headers": header_bytes}
    if key_bytes + header_bytes > limit // 2:  # absurd, but it must not stop the partition
        headers, header_bytes = [], 0
        key = None if key is None else key[: limit // 2]
        key_bytes = len(key or b"")
    value = value[: max(0, limit - key_bytes - header_bytes)]
    return key, value, [*headers, ("trackerflow.truncated", dumps(sizes))]


def _estimate(key: bytes | None, value: bytes | None, headers: Any) -> int:
    """An upper bound of what one more record adds to a record batch."""
    size: int = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
    return size


@dataclass
class Failing:
    """A shard whose transaction failed, until it is taken again (``/health``'s ``failing``)."""

    partitions: list[int]
    error: str
    in_a_row: int  # failed transactions since its last commit
    retry_at: float  # monotonic time of the next take

    def report(self, now: float) -> dict[str, Any]:
        return {
            "partitions": self.partitions,
            "error": self.error,
            "failed_transactions": self.in_a_row,
            "retry_in_s": round(max(0.0, self.retry_at - now), 1),
        }


def retry_delay(in_a_row: int) -> float:
    """Seconds before a failed shard is taken again: at once after one failed transaction, then
    half a second, doubling with each failure in a row, at most RETRY_MAX_S."""
    return 0.0 if in_a_row <= 1 else min(RETRY_MAX_S, 0.5 * 2 ** (in_a_row - 2))


class Positions(NamedTuple):
    """A partition's read positions after a transaction: what it read to (by topic partition)
    and all its positions by topic (as its heads changelog and its store keep them)."""

    offsets: dict[TopicPartition, int]
    by_topic: dict[str, int]


class Sent(NamedTuple):
    """A produced batch: its records are at consecutive offsets from its future's ``offset``."""

    topic: str
    partition: int
    future: asyncio.Future[Any]
    records: list[Record]


class Worker:
    """One member of the worker group: consumer, per-partition producers, state and counters."""

    def __init__(
        self,
        settings: Settings,
        *,
        domain: Domain | None = None,
        message_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.settings = settings
        self.domain = domain
        self.topics = Topics.from_settings(settings)
        changelogs = changelog_topics(settings)
        self.heads_changelog, self.history_changelog = changelogs
        self.tables = dict(zip(changelogs, TABLES, strict=True))  # changelog topic -> its table
        self.url = f"http://{settings.web_host}:{settings.web_port}"
        self.group_size = settings.partitions_per_transaction
        self.assignor = OwnerAssignor(self.url, self.topics.events, self.group_size)
        self.partitions: dict[int, Partition] = {}
        self.shards: dict[int, Shard] = {}
        self.counts = {"folded": 0, "skipped": 0, "rekeyed": 0, "replaced": 0, "dead": 0}
        self.reminder_counts = {"fired": 0, "missed": 0}
        self.transactions = 0  # committed
        self.reader = "aiokafka"  # what reads fetched record batches (see ``choose_reader``)
        self.fetch_wait: fetch_wait.FetchWait | None = None  # how long its fetches wait
        self._batch_limits: dict[str, int] = {}
        self.kept_room = 0
        self.dead_letter_room = 0
        self.limit_to(message_limits or {})
        self.restored_records = 0  # changelog records read to take partitions
        self._state_lock: IO[bytes] | None = None
        self._record_headers = [(RASA_ENVIRONMENT_HEADER, settings.rasa_environment.encode())]
        self.ready = asyncio.Event()
        self._lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._sizes: dict[str, int] = {}
        self._full_collection = time.monotonic() + GC_FULL_COLLECTION_S
        self._lag_commit = time.monotonic() + LAG_COMMIT_S
        self._lag_task: asyncio.Task[None] | None = None
        self.kafka = KafkaCheck()  # does Kafka answer, and the owned partitions' lag
        self.failing: dict[int, Failing] = {}  # shard number -> its failure, until taken again
        self._in_a_row: Counter[int] = Counter()  # shard number -> failed transactions in a row

    # -- what the HTTP API reads --------------------------------------------------------------

    @property
    def state_root(self) -> Path:
        """Where the rocksdb store keeps this group's partitions."""
        return self.settings.state_dir / self.settings.app_id

    def partition_of(self, conversation_id: str) -> int:
        return partition_for(conversation_id.encode(), self.settings.events_partitions)

    def owned(self, conversation_id: str) -> Partition | None:
        return self.partitions.get(self.partition_of(conversation_id))

    def head(self, conversation_id: str) -> Head | None:
        owned = self.owned(conversation_id)
        return None if owned is None else owned.heads.get(conversation_id)

    def reminders(self, conversation_id: str) -> list[dict[str, Any]] | None:
        """The conversation's pending reminders, soonest first (None: not a conversation here)."""
        head = self.head(conversation_id)
        return None if head is None else listing(head.get("reminders", {}))

    def pending_reminders(self) -> int:
        return sum(len(part.indexed) for part in self.partitions.values())

    def producers(self) -> dict[str, list[int]]:
        """The transactional id of each shard this worker owns, with its partitions."""
        return {
            self.transactional_id(number): sorted(shard.parts)
            for number, shard in sorted(self.shards.items())
        }

    def local_conversations(self) -> list[str]:
        """The ids of the conversations in this worker's partitions, sorted."""
        return sorted(c for part in self.partitions.values() for c in part.heads)

    # -- running --------------------------------------------------------------------------------

    def choose_reader(self) -> str:
        """Which reader this process's consumers read fetched record batches with: "compiled"
        (``streams.fetching``, installed here) unless the settings or the build say otherwise,
        then "aiokafka"."""
        return "compiled" if self.settings.compiled_reader and install() else "aiokafka"

    async def run(self, stop: asyncio.Event) -> None:
        """Consume, fold and commit until ``stop`` is set; then leave the group cleanly."""
        if self.settings.store == "rocksdb":
            self._state_lock = lock_state_dir(self.state_root)  # before any client exists
        self.reader = self.choose_reader()
        log.info("fetched record batches are read by %s", self.reader)
        produce_requests.install()  # the transactions' batches copied once, not eight times
        config = kafka_client_config(self.settings)
        consumer = AIOKafkaConsumer(
            group_id=self.settings.app_id,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            partition_assignment_strategy=(self.assignor,),
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            max_poll_interval_ms=300_000,
            # how long a fetch may wait at the broker: see streams.fetch_wait (``adapt``)
            fetch_max_wait_ms=fetch_wait.FETCH_WAIT_MS,
            fetch_min_bytes=fetch_wait.FETCH_MIN_BYTES,
            **config,
        )
        self._consumer = consumer
        await consumer.start()
        self.fetch_wait = fetch_wait.adapt(consumer)
        watch: asyncio.Future[None] | None = None
        try:
            topics = self.topics
            for topic in (topics.events, topics.signals, topics.dlq, topics.rekeyed):
                self._sizes[topic] = len(await self._partitions_of(consumer, topic))
            consumer.subscribe([self.topics.events, self.topics.rekeyed], listener=_Listener(self))
            watch = asyncio.ensure_future(self._watch_kafka(consumer, stop))
            # the state is many small long-lived objects: collect the young generation rarely
            # and keep what was restored out of full collections (frozen after each restore)
            gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
            gc.freeze()
            limit = self.settings.max_batch_records
            while not stop.is_set():
                # awaited in this task, not in one of its own: records fetched for an assignment
                # are dispatched before a rebalance listener can run (they never cross one)
                batches = await consumer.getmany(timeout_ms=200, max_records=limit)
                if time.monotonic() >= self._full_collection:
                    self._collect()
                if time.monotonic() >= self._lag_commit and (
                    self._lag_task is None or self._lag_task.done()
                ):
                    self._lag_task = asyncio.ensure_future(self._commit_lag(consumer))
                async with self._lock:
                    await self._dispatch(batches)
                if not batches and consumer.assignment() and not self.ready.is_set():
                    self.ready.set()
                while self._backlog() > 2 * limit and not stop.is_set():
                    await asyncio.sleep(0.005)  # let the partitions catch up before fetching more
        finally:
            if watch is not None:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
            if self._lag_task is not None:
                await self._lag_task
            async with self._lock:
                closed = list(self.partitions.values())
                await self._close_shards(list(self.shards))
                await self._commit_lag(consumer, closed)  # their final positions
            await consumer.stop()
            if self._state_lock is not None:
                self._state_lock.close()

    async def _watch_kafka(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        """Every PROBE_S, ask Kafka for the end offsets of the partitions the worker reads
        (``self.kafka``: whether it answers, and the owned partitions' lag)."""
        read = [
            TopicPartition(topic, number)
            for topic in (self.topics.events, self.topics.rekeyed)
            for number in range(self._sizes[topic])
        ]

        def positions() -> dict[TopicPartition, int]:
            return {tp: n for part in self.partitions.values() for tp, n in part.committed.items()}

        limits_due = time.monotonic() + LIMITS_S
        while not stop.is_set():
            try:
                await self.kafka.probe(consumer.end_offsets, read, positions)
                if self.kafka.answering and time.monotonic() >= limits_due:
                    limits_due = time.monotonic() + LIMITS_S
                    await self._read_limits()
            except Exception:  # a bug: the watch must go on, and say so
                log.exception("checking Kafka failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), PROBE_S)

    async def _commit_lag(
        self, consumer: AIOKafkaConsumer, parts: Iterable[Partition] | None = None
    ) -> None:
        """Commit the transactionally committed positions as the group's offsets, so lag
        monitoring sees them (never read back while the changelog has positions)."""
        self._lag_commit = time.monotonic() + LAG_COMMIT_S
        assigned = consumer.assignment()
        offsets = {
            tp: offset
            for part in (self.partitions.values() if parts is None else parts)
            for tp, offset in part.committed.items()
            if tp in assigned
        }
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as error:  # a rebalance in progress: the next round commits
            log.info("committing offsets for lag monitoring failed (%s)", error)

    def limit_to(self, broker: Mapping[str, int]) -> None:
        """Take each topic's ``max.message.bytes`` as the settings make it or as the ``broker``
        has it (from ``known_topics``), whichever is smaller: the outbox cuts its batches to the
        topics that accept less than the producer makes, and the folds keep what a changelog
        record can hold (``kept_room``, see processors.stream's max_kept_bytes), and the dead
        letters what the dead-letter topic can (half its limit: the rest for the reason and the
        record's overhead; by default, as the worker creates it, max_record_bytes)."""
        limits = topic_limits(self.settings)
        for topic, limit in broker.items():
            limits[topic] = min(limit, limits.get(topic, limit))
        self._batch_limits = {t: n for t, n in limits.items() if n < MAX_BATCH_BYTES}
        smallest = min(limits[t] for t in (self.heads_changelog, self.history_changelog))
        self.kept_room = smallest - min(RECORD_OVERHEAD, smallest // 4)
        dlq = limits.get(self.topics.dlq)
        room = self.settings.max_record_bytes
        self.dead_letter_room = room if dlq is None else min(room, dlq // 2)

    async def _read_limits(self, refused: bool = False) -> None:
        """Read the topics' limits from the broker again: every LIMITS_S, and when a
        transaction was ``refused`` as too large (someone lowered one since they were read).
        Every partition folds within them from its next batch on."""
        before = self.kept_room
        try:
            # aiokafka's admin client in this loop (its log as it is), else kafka-python's
            report = await known_topics(self.settings, quiet=False)
        except TopicsError as error:
            log.warning("cannot read the topics' limits again (%s)", error)
            return
        self.limit_to(report.limits)
        if refused:
            log.warning(
                "a transaction was refused as too large: the topics' limits read again (a "
                "changelog record may now hold %d bytes)",
                self.kept_room,
            )
        elif self.kept_room != before:
            log.warning(
                "the topics' limits changed: a changelog record may now hold %d bytes (before: %d)",
                self.kept_room,
                before,
            )

    def _collect(self) -> None:
        started = time.monotonic()
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        self._full_collection = time.monotonic() + GC_FULL_COLLECTION_S
        log.info("full garbage collection: %d objects in %.2f s", found, time.monotonic() - started)

    async def _partitions_of(self, consumer: AIOKafkaConsumer, topic: str) -> set[int]:
        updates = 0  # every answer is read; after the first, 0.1 s between them (5 s in all)
        while not (found := consumer.partitions_for_topic(topic)):
            if updates > 50:
                raise KafkaError(
                    f"topic {topic!r} does not exist (create it with the worker's settings)"
                )
            if updates:  # not in the metadata just asked for: the broker may be creating it
                await asyncio.sleep(0.1)
            await consumer._client.force_metadata_update()
            updates += 1
        return set(found)

    # -- batches: the main loop fetches, each shard's task folds and commits ------------------

    async def _dispatch(self, batches: Mapping[TopicPartition, list[Any]]) -> None:
        for tp, messages in batches.items():
            owned = self.partitions.get(tp.partition)
            if owned is None or owned.shard.closing or owned.shard.failed is not None:
                self._rewind(tp, messages)  # not (or no longer) ours: never skip past them
            else:
                owned.put(tp, messages)
        now = time.monotonic()
        for shard in [s for s in self.shards.values() if s.failed is not None]:
            failing = self.failing.get(shard.number)
            if failing is None:  # just failed: say so, and when it is taken again
                self._in_a_row[shard.number] += 1
                in_a_row = self._in_a_row[shard.number]
                delay = retry_delay(in_a_row)
                failing = self.failing[shard.number] = Failing(
                    sorted(shard.parts), str(shard.failed), in_a_row, now + delay
                )
                log.error(
                    "transaction of partitions %s failed (%s; %d in a row); rolling back%s",
                    failing.partitions,
                    shard.failed,
                    in_a_row,
                    f" in {delay:g} s" if delay else "",
                )
                if isinstance(shard.failed, TOO_LARGE):
                    await self._read_limits(refused=True)
            if now >= failing.retry_at:
                await self._roll_back(shard.number)

    def _rewind(self, tp: TopicPartition, messages: list[Any]) -> None:
        assert self._consumer is not None
        if tp in self._consumer.assignment():
            self._consumer.seek(tp, messages[0].offset)

    def _backlog(self) -> int:
        """The most records waiting in a working partition (a failed one is rolled back by the
        next dispatch, so it must not hold the fetching up)."""
        return max(
            (part.waiting for part in self.partitions.values() if part.shard.failed is None),
            default=0,
        )

    async def _pipeline(self, shard: Shard) -> None:
        """Fold and commit the shard's waiting records and fire its due reminders, one
        transaction at a time."""
        limit = self.settings.max_batch_records
        while True:
            wait = shard.next_wake(time.time())
            if wait is None:
                await shard.wakeup.wait()
            else:
                # a held reminder: look again when records come, or shortly (catching up)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(shard.wakeup.wait(), wait)
            shard.wakeup.clear()
            if shard.closing:
                return
            work = [(part, part.take(limit)) for part in shard.parts.values()]
            if any(part.waiting for part in shard.parts.values()):
                shard.wakeup.set()
            if not any(parts for _, parts in work) and not shard.anything_due(time.time()):
                continue
            try:
                await self._transact(shard, work)
            except Exception as error:
                shard.failed = error
                return

    async def _unread(self, owned: Partition) -> set[str] | None:
        """What the partition has left to read: None if anything but this worker's own
        records (see ``Partition.only_own_between``); else the conversations those belong to
        (empty: every record up to the last stable offset was handed on and folded)."""
        consumer = self._consumer
        if owned.waiting or consumer is None:
            return None
        conversations: set[str] = set()
        for tp in consumer.assignment():
            if tp.partition != owned.number:
                continue
            end = consumer.last_stable_offset(tp)
            if end is None:
                return None
            position = await consumer.position(tp)
            if position >= end:
                continue
            own = owned.only_own_between(position, end) if tp.topic == self.topics.events else None
            if own is None:
                return None
            conversations |= own
        return conversations

    async def _fire_due(self, owned: Partition, outbox: Outbox, counts: Counter[str]) -> None:
        """Fire every reminder of the partition that is due now (see processors.reminders) and
        may fire: its due time is behind the partition's event time, or nothing is left to read
        that could cancel it (nothing at all, or only this worker's own external messages of
        other conversations).
        """
        now = time.time()
        settings, topics = self.settings, self.topics
        unread: set[str] | None = None
        checked = False
        later: list[tuple[float, str, str]] = []
        messaged: set[str] = set()  # conversations given an external message in this pass
        while owned.due and owned.due[0][0] <= now:
            if owned.due[0][1] in messaged:
                # Rasa logs that message before it looks at the next due reminder, which a
                # user message kills (kill_on_user_msg): wait until it is folded
                later.append(heapq.heappop(owned.due))
                continue
            if owned.due[0][0] > owned.event_time:
                if not checked:
                    unread, checked = await self._unread(owned), True
                if unread is None:
                    break  # a backlog may hold what cancels it
                if owned.due[0][1] in unread:
                    later.append(heapq.heappop(owned.due))
                    continue
            entry = heapq.heappop(owned.due)
            owned.indexed.discard(entry)
            due, conversation_id, name = entry
            fired = owned.folder.fire(conversation_id, name, due, now, settings.reminder_grace_s)
            if fired is None:
                continue  # cancelled, or re-armed for another time
            signal, external = fired
            fired_or_missed = "fired" if signal.kind == REMINDER_TRIGGERED else "missed"
            counts[fired_or_missed] += 1
            key = conversation_id.encode()
            partition = partition_for(key, self._sizes[topics.signals])
            outbox.add(topics.signals, partition, key, dumps(signal.as_dict()))
            if external is not None and settings.reminder_events:
                value = dumps(encode_record(external, conversation_id))
                partition = partition_for(key, self._sizes[topics.events])
                outbox.add(topics.events, partition, key, value, self._record_headers)
                messaged.add(conversation_id)
        for entry in later:
            heapq.heappush(owned.due, entry)
        owned.held = bool(owned.due) and owned.due[0][0] <= now

    async def _transact(self, shard: Shard, work: list[tuple[Partition, list[Taken]]]) -> None:
        """Fold each partition's taken records, fire its due reminders, and commit all of it in
        one transaction of the shard's producer (with each partition's changed state and new
        read positions)."""
        outbox = Outbox(self._batch_limits)
        counts: Counter[str] = Counter()  # what this transaction did, counted once it commits
        written: list[tuple[Partition, Positions]] = []
        for owned, parts in work:
            positions = await self._fold_partition(owned, parts, outbox, counts)
            if positions is not None:
                written.append((owned, positions))
            gc.freeze()  # see GC_FULL_COLLECTION_S
        if not written and not outbox.records:
            return  # held reminders, still held: nothing to commit
        producer = shard.producer
        assert producer is not None
        await producer.begin_transaction()
        try:
            sent = await outbox.send(producer)
            # aiokafka commits a transaction even when one of its batches failed (a topic
            # refused it: too large, not authorized), which would commit the state without, say,
            # its signals. So every batch must be written before the commit (which waits for
            # them anyway); a failed one raises here, and the transaction is aborted.
            for batch in sent:
                await batch.future
            await producer.commit_transaction()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.abort_transaction()
            raise
        own: dict[int, list[tuple[int, bytes | None]]] = defaultdict(list)
        changelogs = self.tables
        ends: dict[int, dict[str, int]] = defaultdict(dict)  # partition -> table -> end
        for batch in sent:
            # raises if a record was not written (the commit would have too)
            first = batch.future.result().offset
            if batch.topic == self.topics.events and batch.partition in shard.parts:
                own[batch.partition] += [(first + i, r[0]) for i, r in enumerate(batch.records)]
            elif batch.topic in changelogs:  # the transaction's marker follows its records
                table, tables = changelogs[batch.topic], ends[batch.partition]
                tables[table] = max(tables.get(table, 0), first + len(batch.records))
        for owned, (offsets, by_topic) in written:
            owned.wrote(own.get(owned.number, []))
            owned.committed.update(offsets)
            owned.state.persist(ends.get(owned.number, {}), by_topic)
        self.transactions += 1
        self._in_a_row.pop(shard.number, None)
        for kind, number in counts.items():
            if kind in self.reminder_counts:
                self.reminder_counts[kind] += number
            else:
                self.counts[kind] += number

    async def _fold_partition(
        self,
        owned: Partition,
        parts: list[Taken],
        outbox: Outbox,
        counts: Counter[str],
    ) -> Positions | None:
        """Fold the partition's records and fire its due reminders into ``outbox``, with its
        changed state and new read positions; those positions (None: nothing changed). The
        records' outcomes and the reminders fired or missed are counted in ``counts``."""
        offsets: dict[TopicPartition, int] = {}
        if owned.folder.max_kept_bytes != self.kept_room:  # the limits were read again
            owned.use_room(self.kept_room)
        folder = owned.folder
        for tp, messages, ahead in parts:
            batch = folder.process_batch(tp.topic, tp.partition, messages, ahead)
            counts["folded"] += batch.folded
            owned.event_time = max(owned.event_time, batch.event_time)
            for index, error in batch.failures:
                log.error(
                    "folding %s:%d@%d failed",
                    tp.topic,
                    tp.partition,
                    messages[index].offset,
                    exc_info=error,
                )
            for index, outcome in batch.notable:
                counts[outcome.kind] += 1
                self._effects(outbox, outcome, messages[index])
            offsets[tp] = messages[-1].offset + 1
        await self._fire_due(owned, outbox, counts)
        changed = folder.flush()
        if not parts and not changed:
            return None
        owned.index(changed)
        number = owned.number
        outbox.extend(self.heads_changelog, number, owned.heads.drain())
        outbox.extend(self.history_changelog, number, owned.history.drain())
        by_topic = {tp.topic: offset for tp, offset in (owned.committed | offsets).items()}
        if offsets:
            writer = self.transactional_id(owned.shard.number)
            outbox.add(
                self.heads_changelog, number, POSITIONS_KEY, dumps({**by_topic, WRITER: writer})
            )
        return Positions(offsets, by_topic)

    def _effects(self, outbox: Outbox, outcome: Outcome, record: Any) -> None:
        """Add what the record's outcome calls for (its signals, its dead letter, its re-keyed
        copy) to ``outbox``; ``record`` is the consumed record."""
        headers = record.headers
        sizes = self._sizes
        for signal in outcome.signals:
            key = signal.conversation_id.encode()
            partition = partition_for(key, sizes[self.topics.signals])
            outbox.add(self.topics.signals, partition, key, dumps(signal.as_dict()))
        if outcome.kind == "dead":
            assert outcome.error is not None
            dead_key, value, kept = dead_letter(record, self.dead_letter_room)
            dead_headers = [
                ("trackerflow.error", dumps(outcome.error.as_dict())),
                ("trackerflow.source", dumps(outcome.source._asdict())),
                *kept,
            ]
            size = sizes[self.topics.dlq]
            partition = partition_for(record.key, size) if record.key else record.partition % size
            outbox.add(self.topics.dlq, partition, dead_key, value, dead_headers)
            log.warning("dead letter: %s", outcome.error)
        elif outcome.kind == "rekeyed":
            assert outcome.conversation_id is not None and record.value is not None
            key = outcome.conversation_id.encode()
            partition = partition_for(key, sizes[self.topics.rekeyed])
            outbox.add(self.topics.rekeyed, partition, key, record.value, headers)

    # -- partitions coming and going ----------------------------------------------------------

    async def assign(self, tps: Iterable[TopicPartition]) -> None:
        """Take over state partitions: fence the old owner, restore state, seek to committed.

        Holds the batch lock, so no batch is folded against a half-restored partition."""
        async with self._lock:
            await self._take(tps)

    async def _take(self, tps: Iterable[TopicPartition]) -> None:
        numbers = sorted({tp.partition for tp in tps} - set(self.partitions))
        # a shard is taken whole: one already open that gains a partition is taken again
        again = sorted({self.shard_of(n) for n in numbers} & set(self.shards))
        if again:
            numbers = sorted({*numbers, *(n for s in again for n in self.shards[s].parts)})
            await self._close_shards(again)
        started, restored = time.monotonic(), self.restored_records
        opened: dict[int, Shard] = {}
        try:
            for number in numbers:
                which = self.shard_of(number)
                if which not in opened:
                    opened[which] = await self._open(which)
                opened[which].parts[number] = self._partition(number, opened[which])
            parts = [part for shard in opened.values() for part in shard.parts.values()]
            await self._restore(parts)
            if await self._fence_other_writers(parts):
                await self._restore(parts)  # with what they committed before they were fenced
            for part in parts:
                await self._seek_position(part)
        except BaseException:
            for shard in opened.values():
                if shard.producer is not None:
                    with contextlib.suppress(Exception):
                        await shard.producer.stop()
                for part in shard.parts.values():
                    part.state.close()
            raise
        for shard in opened.values():
            for part in shard.parts.values():
                part.index_all()
                self.partitions[part.number] = part
        self.shards.update(opened)
        gc.freeze()
        for shard in opened.values():
            shard.task = asyncio.ensure_future(self._pipeline(shard))
        if numbers:
            log.info(
                "took partitions %s in %.2f s (%d conversations, %s store, %d changelog "
                "records read)",
                numbers,
                time.monotonic() - started,
                sum(len(self.partitions[n].heads) for n in numbers),
                self.settings.store,
                self.restored_records - restored,
            )

    async def revoke(self, tps: Iterable[TopicPartition]) -> None:
        """Give partitions up (waiting for a batch in flight to commit first). A shard goes
        whole: its other partitions, if still assigned, are taken again on the next
        assignment."""
        async with self._lock:
            numbers = {tp.partition for tp in tps}
            shards = sorted({self.shard_of(n) for n in numbers})
            await self._close_shards(shards)
            for number in shards:  # a failed one is no longer this worker's to retry
                self.failing.pop(number, None)
                self._in_a_row.pop(number, None)

    def shard_of(self, number: int) -> int:
        """The shard of partition ``number`` (``partitions_per_transaction`` in a row)."""
        return number // self.group_size

    def transactional_id(self, shard: int) -> str:
        """``<app_id>-<partition>`` for shards of one partition, ``<app_id>-<first>-<last>``
        for more (the shard's range, whether or not the topic has all of its partitions): the
        same across restarts and partitions added, so a new owner's producer fences the old
        one's."""
        size, app_id = self.group_size, self.settings.app_id
        first = shard * size
        return f"{app_id}-{first}" if size == 1 else f"{app_id}-{first}-{first + size - 1}"

    def _state(self, number: int) -> PartitionState:
        if self.settings.store == "rocksdb":
            return RocksState(self.state_root / f"partition-{number}", head_room=self.kept_room)
        return MemoryState(head_room=self.kept_room)

    def folder(self, state: PartitionState) -> StreamFolder:
        """The fold of one state partition, as the settings say."""
        return StreamFolder(
            state.heads,
            state.history,
            domain=self.domain,
            max_record_bytes=self.settings.max_record_bytes,
            max_event_history=self.settings.history_max_events,
            max_kept_bytes=self.kept_room,
        )

    def _partition(self, number: int, shard: Shard) -> Partition:
        state = self._state(number)
        return Partition(
            number,
            state,
            self.folder(state),
            shard,
            own_topic=self.topics.events,
        )

    async def _fence_other_writers(self, parts: list[Partition]) -> bool:
        """Fence the producers that last committed these partitions under another
        transactional id than their shard's now (workers with another
        ``partitions_per_transaction``: a paused one could still commit what it folded). Its
        open transaction is aborted. True if there were any."""
        others: dict[str, list[int]] = defaultdict(list)
        for part in parts:
            if part.writer not in (None, self.transactional_id(self.shard_of(part.number))):
                others[str(part.writer)].append(part.number)
        for writer, numbers in sorted(others.items()):
            await (await self._fencing(writer)).stop()
            log.warning(
                "partitions %s were last committed by producer %s (another "
                "partitions_per_transaction): fenced it, so a paused worker with it cannot "
                "commit any more",
                sorted(numbers),
                writer,
            )
        return bool(others)

    async def _fencing(self, transactional_id: str, **options: Any) -> AIOKafkaProducer:
        """A started producer with ``transactional_id``: every earlier producer with that id is
        fenced and its open transaction aborted (stopped again if that fails)."""
        producer = AIOKafkaProducer(
            transactional_id=transactional_id,
            enable_idempotence=True,
            acks="all",
            **options,
            **kafka_client_config(self.settings),
        )
        try:
            await producer.start()
            # an empty transaction makes sure InitProducerId is done: earlier owners are fenced
            # and their open transaction is aborted before this worker reads the changelog
            await producer.begin_transaction()
            await producer.commit_transaction()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        return producer

    async def _open(self, number: int) -> Shard:
        """Start shard ``number``'s transactional producer: this fences every earlier owner."""
        producer = await self._fencing(
            self.transactional_id(number),
            linger_ms=0,
            # a transaction begun right after a commit meets CONCURRENT_TRANSACTIONS while the
            # broker writes the markers; the default 100 ms back-off would be the latency floor
            retry_backoff_ms=10,
            max_batch_size=MAX_BATCH_BYTES,
            max_request_size=max(
                MAX_REQUEST_BYTES, 2 * MAX_BATCH_BYTES + self.settings.max_record_bytes
            ),
        )
        try:
            # the metadata of every topic it may write: otherwise the first transaction that
            # writes one (a partition's first signal, its first fired reminder) waits for it
            topics = self.topics
            written = (topics.signals, topics.events, topics.dlq, topics.rekeyed)
            for topic in (*written, self.heads_changelog, self.history_changelog):
                await producer.partitions_for(topic)
        except BaseException:  # the shard is not taken: release what it holds
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        return Shard(number, producer)

    async def _restore(self, owned: list[Partition]) -> None:
        """Read the partitions' changelogs into their state, from where their state says it
        is (the beginning for the memory store) up to the last stable offsets."""
        if not owned:
            return
        by_tp: dict[TopicPartition, tuple[Partition, str]] = {}
        for part in owned:
            for topic, table in self.tables.items():
                by_tp[TopicPartition(topic, part.number)] = (part, table)
        reader = AIOKafkaConsumer(
            isolation_level="read_committed",
            enable_auto_commit=False,
            group_id=None,
            **kafka_client_config(self.settings),
        )
        await reader.start()
        try:
            reader.assign(list(by_tp))
            firsts = await reader.beginning_offsets(list(by_tp))
            ends = await reader.end_offsets(list(by_tp))  # the last stable offsets
            pending: set[TopicPartition] = set()
            for part in owned:
                tps = {table: TopicPartition(t, part.number) for t, table in self.tables.items()}
                starts, part.restored = part.state.resume_from(
                    {table: firsts[tp] for table, tp in tps.items()},
                    {table: ends[tp] for table, tp in tps.items()},
                )
                for table, tp in tps.items():
                    reader.seek(tp, starts[table])
                    if starts[table] < ends[tp]:
                        pending.add(tp)
            report = time.monotonic() + 10
            while pending:
                for tp in list(pending):
                    if await reader.position(tp) >= ends[tp]:
                        pending.discard(tp)
                if not pending:
                    break
                if time.monotonic() > report:
                    report = time.monotonic() + 10
                    where = {f"{tp.topic}:{tp.partition}": ends[tp] for tp in pending}
                    log.warning("still restoring changelog partitions up to offsets %s", where)
                batches = await reader.getmany(*pending, timeout_ms=1000, max_records=10_000)
                for tp, messages in batches.items():
                    part, table = by_tp[tp]
                    self.restored_records += len(messages)
                    load = part.state.load
                    for message in messages:
                        if message.key == POSITIONS_KEY:
                            positions = orjson.loads(message.value)
                            part.writer = positions.pop(WRITER, None)
                            part.restored = positions
                        else:
                            load(table, message.key, message.value)
            for part in owned:
                tables = self.tables.items()
                read = {table: ends[TopicPartition(t, part.number)] for t, table in tables}
                part.state.restored(read, part.restored)
        finally:
            await reader.stop()

    async def _seek_position(self, owned: Partition) -> None:
        """Move the consumer to the partition's restored read positions."""
        assert self._consumer is not None
        consumer = self._consumer
        for topic in (self.topics.events, self.topics.rekeyed):
            tp = TopicPartition(topic, owned.number)
            if tp not in consumer.assignment():
                continue
            offset = owned.restored.get(topic)
            if offset is None:  # state from before positions were changelogged
                offset = await consumer.committed(tp)
            if offset is None:  # nothing committed yet: from the first record still kept
                offset = (await consumer.beginning_offsets([tp]))[tp]
            consumer.seek(tp, offset)
            owned.committed[tp] = owned.next_offset[tp] = offset

    async def _close_shards(self, numbers: list[int]) -> None:
        """Let each shard finish its transaction in flight, then drop it, its partitions and
        its producer."""
        for number in numbers:
            shard = self.shards.pop(number, None)
            if shard is None:
                continue
            shard.closing = True
            shard.wakeup.set()
            if shard.task is not None:
                with contextlib.suppress(Exception):
                    await shard.task
            if shard.producer is not None:
                with contextlib.suppress(Exception):
                    await shard.producer.stop()
            for part in shard.parts.values():
                self.partitions.pop(part.number, None)
                part.state.close()

    async def _roll_back(self, number: int) -> None:
        """After a failed transaction: drop the shard's state and take it over again."""
        await self._close_shards([number])
        assert self._consumer is not None
        tps = [tp for tp in self._consumer.assignment() if self.shard_of(tp.partition) == number]
        while tps:
            try:
                await self._take(tps)
                break
            except KafkaError as error:
                log.error("re-taking partitions of shard %d failed (%s); retrying", number, error)
                await self._close_shards([number])
                await asyncio.sleep(RETRY_S)
        self.failing.pop(number, None)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.worker.revoke(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.worker.assign(assigned)


def head_summary(head: Head, state: dict[str, Any] | None = None) -> dict[str, Any]:
    """The listing form of a head (for ``GET /conversations``); ``state`` stands in for the
    head's own, which a head too large for its changelog is kept without (``encode_head``)."""
    state = state or head["state"]
    return {
        "sender_id": state["sender_id"],
        "events": head["count"],
        "latest_event_time": state["latest_event_time"],
        "paused": state["paused"],
        "latest_action_name": state["latest_action_name"],
        "active_loop": state["active_loop"].get("name"),
    }
