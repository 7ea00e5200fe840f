"""The worker: a faust app that folds the events topic into trackers, exactly once.

How exactly-once works here (measured with kill -9 on a real broker before it was built):

* faust runs the consumer group, one transactional producer per source partition
  (``processing_guarantee="exactly_once"``) and restores tables from their changelogs.
* Every record goes through ``processors.stream.StreamFolder``. Its state lives in two faust
  tables, ``heads`` (conversation -> compact head) and ``history`` (conversation + seq -> event),
  but the worker writes their changelog records itself, awaited, through the transactional producer
  of the source partition — together with the record's signals, dead letter or re-keyed copy — so
  all of them commit or abort with the source offset. (faust's own table changelog writes are not
  flushed inside the transaction; relying on them double-counted under kill -9.)
* Each head stores the last applied offset per source partition, so a record redelivered after a
  crash is skipped: state and signals stay exactly once for ``read_committed`` readers.
* Known defects (README, "Exactly once"): events are lost when a kill lands during start-up or
  recovery, or when partitions move between live workers while events stream in.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import faust
import orjson

from events.wire import dumps
from processors.domain import Domain
from processors.stream import Head, Inbound, Outcome, StreamFolder
from streams.settings import Settings, ssl_context
from streams.topics import Topics

log = logging.getLogger("trackerflow.worker")


class TableStore(MutableMapping[str, Any]):
    """A ``StreamFolder`` store over a faust table's local data that queues changelog writes.

    Values are encoded with ``encode``; decoded values are cached until ``clear_cache``.
    """

    def __init__(
        self, table: Any, encode: Callable[[Any], bytes], decode: Callable[[bytes], Any]
    ) -> None:
        self.table = table
        self.encode = encode
        self.decode = decode
        self.pending: list[tuple[bytes, bytes]] = []
        self._decoded: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        found = self._decoded.get(key)
        if found is None:
            found = self.decode(self.table.data[key.encode()])
            self._decoded[key] = found
        return found

    def __setitem__(self, key: str, value: Any) -> None:
        raw_key, raw = key.encode(), self.encode(value)
        self.table.data[raw_key] = raw
        self._decoded[key] = value
        self.pending.append((raw_key, raw))

    def __delitem__(self, key: str) -> None:
        raise NotImplementedError("trackerflow never deletes from a table store")

    def __iter__(self) -> Iterator[str]:
        return (key.decode() for key in self.table.data)

    def __len__(self) -> int:
        return len(self.table.data)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def drain(self) -> list[tuple[bytes, bytes]]:
        pending, self.pending = self.pending, []
        return pending

    def clear_cache(self) -> None:
        self._decoded.clear()


class Worker:
    """The faust app, its topics and tables, and the fold agent."""

    def __init__(self, settings: Settings, *, domain: Domain | None = None) -> None:
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        url = f"http://{settings.web_host}:{settings.web_port}"
        self.app = faust.App(
            settings.app_id,
            broker=[f"kafka://{server}" for server in settings.bootstrap_list],
            processing_guarantee="exactly_once",
            store=settings.store,
            datadir=str(settings.data_dir),
            topic_partitions=settings.events_partitions,
            topic_replication_factor=settings.replication_factor,
            table_standby_replicas=0,
            web_enabled=False,
            canonical_url=url,
            stream_wait_empty=False,
            broker_commit_interval=settings.commit_interval_s,
            broker_credentials=broker_credentials(settings),
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=10.0,
            broker_heartbeat_interval=1.0,
            producer_linger_ms=5,
        )
        raw = {"key_serializer": "raw", "value_serializer": "raw"}
        self.events = self.app.topic(self.topics.events, self.topics.rekeyed, **raw)
        self.rekeyed = self.app.topic(self.topics.rekeyed, **raw)
        self.signals = self.app.topic(self.topics.signals, **raw)
        self.dlq = self.app.topic(self.topics.dlq, **raw)
        partitions = settings.events_partitions
        self.heads_table = self.app.Table(
            "heads", partitions=partitions, key_type=bytes, value_type=bytes
        )
        self.history_table = self.app.Table(
            "history", partitions=partitions, key_type=bytes, value_type=bytes
        )
        self.heads = TableStore(self.heads_table, dumps, orjson.loads)
        self.history = TableStore(self.history_table, bytes, bytes)
        self.folder = StreamFolder(
            self.heads, self.history, domain=domain, max_record_bytes=settings.max_record_bytes
        )
        self.counts = {"folded": 0, "skipped": 0, "rekeyed": 0, "dead": 0}
        self.app.agent(self.events, name="fold")(self._fold)
        self.app.on_partitions_revoked.connect(self._on_rebalance)
        self.app.on_partitions_assigned.connect(self._on_rebalance)

    async def _on_rebalance(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        """Partitions moved: cached trackers and decoded heads may be stale now."""
        self.folder.forget()
        self.heads.clear_cache()
        self.history.clear_cache()

    async def _fold(self, stream: Any) -> None:
        gc.freeze()  # what was loaded so far is long-lived; keep full collections cheap
        async for event in stream.events():
            message = event.message
            record = Inbound(
                message.topic,
                message.partition,
                message.offset,
                message.key,
                message.value,
                message.timestamp,
            )
            outcome = self.folder.process(record)
            self.counts[outcome.kind] += 1
            await self._carry_out(outcome, record)

    async def _carry_out(self, outcome: Outcome, record: Inbound) -> None:
        """Send the record's state changes, signals and dead letter or re-keyed copy through the
        transactional producer of its source partition (see the module docstring)."""
        app, partition = self.app, record.partition
        tid = f"{app.conf.id}-{app.assignor.group_for_topic(record.topic)}-{partition}"

        async def send(
            topic: str, key: bytes | None, value: bytes | None, *, to: int | None = None, **kw: Any
        ) -> None:
            await app.producer.send(
                topic, key, value, to, None, kw.get("headers"), transactional_id=tid
            )

        for table, store in ((self.heads_table, self.heads), (self.history_table, self.history)):
            changelog = table.changelog_topic.get_topic_name()
            for key, value in store.drain():
                await send(changelog, key, value, to=partition)
        for signal in outcome.signals:
            await send(
                self.topics.signals, signal.conversation_id.encode(), dumps(signal.as_dict())
            )
        if outcome.kind == "dead":
            assert outcome.error is not None
            headers = [
                ("trackerflow.error", dumps(outcome.error.as_dict())),
                ("trackerflow.source", dumps(outcome.source._asdict())),
            ]
            await send(self.topics.dlq, record.key, record.value or b"", headers=headers)
            log.warning("dead letter: %s", outcome.error)
        elif outcome.kind == "rekeyed":
            assert outcome.conversation_id is not None
            await send(self.topics.rekeyed, outcome.conversation_id.encode(), record.value)


def broker_credentials(settings: Settings) -> Any:
    """faust's credentials for the configured Kafka security protocol (None for PLAINTEXT)."""
    protocol = settings.security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = ssl_context(settings) if protocol.endswith("SSL") else None
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    password = settings.sasl_password.get_secret_value() if settings.sasl_password else None
    return faust.SASLCredentials(
        username=settings.sasl_username,
        password=password,
        mechanism=settings.sasl_mechanism,
        ssl_context=context,
    )


def head_summary(head: Head) -> dict[str, Any]:
    """The listing form of a head (for ``GET /conversations``)."""
    state = head["state"]
    return {
        "sender_id": state["sender_id"],
        "events": head["count"],
        "latest_event_time": state["latest_event_time"],
        "paused": state["paused"],
        "latest_action_name": state["latest_action_name"],
        "active_loop": state["active_loop"].get("name"),
    }
