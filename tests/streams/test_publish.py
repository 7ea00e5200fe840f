"""Publishing against the real broker of ``kafka_bootstrap``: ``trackerflow publish`` run as a user
runs it (a subprocess), and the async :class:`~streams.publisher.Publisher` used directly.

What arrives is read back with kafka-python, a different client from the one that wrote it, and
compared with the input: count, keys, per-conversation order, value bytes, headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import itertools
import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError

from events import (
    BotUttered,
    InvalidField,
    MissingField,
    RecordTooLarge,
    SlotSet,
    UnknownEvent,
    decode_record,
    dumps,
    encode_record,
)
from streams import broker
from streams.publisher import Delivered, Publisher, PublishError
from streams.settings import Settings, load_settings
from streams.topics import topic_specs

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "deploy" / "samples" / "conversations.jsonl"


@dataclass(frozen=True)
class Consumed:
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def consume(bootstrap: str, topic: str, count: int, *, timeout: float = 60) -> list[Consumed]:
    """Every record of ``topic`` (expecting ``count``), read from the beginning by a new group;
    keeps polling a little after ``count`` to catch records that should not be there."""
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"test-{uuid.uuid4().hex}",
        auto_offset_reset="earliest", enable_auto_commit=False,
    )  # fmt: skip
    received: list[Consumed] = []
    deadline = time.monotonic() + timeout
    settle: float | None = None
    try:
        while time.monotonic() < deadline and (settle is None or time.monotonic() < settle):
            for records in consumer.poll(timeout_ms=300).values():
                received.extend(
                    Consumed(r.partition, r.offset, r.key, r.value, list(r.headers))
                    for r in records
                )
            if len(received) >= count and settle is None:
                settle = time.monotonic() + 1.0
    finally:
        consumer.close()
    return received


def publish_cli(
    *args: str | Path, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m streams.publish_cli ARGS`` with no TRACKERFLOW_* or broker variables but
    ``env``."""
    unset = {"KAFKA_BOOTSTRAP_SERVERS", "RASA_ENVIRONMENT"}
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith("TRACKERFLOW_") and k not in unset
    }
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "streams.publish_cli", *map(str, args)],
        input=None if stdin is None else stdin.decode(),
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True, text=True, env=environ, cwd=ROOT, timeout=300, check=False,
    )  # fmt: skip


@pytest.fixture
def prefix(kafka_bootstrap: str) -> Iterator[str]:
    """A fresh topic prefix; every topic under it is deleted after the test."""
    name = f"test-publish-{uuid.uuid4().hex[:8]}"
    yield name
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="trackerflow-tests")
    try:
        leftovers = [topic for topic in admin.list_topics() if topic.startswith(f"{name}.")]
        if leftovers:
            with contextlib.suppress(KafkaError):
                admin.delete_topics(leftovers)
    finally:
        admin.close()


def header(record: Consumed) -> bytes:
    (value,) = [v for k, v in record.headers if k == "RASA_ENVIRONMENT"]
    return value


# -- the CLI --------------------------------------------------------------------------------------


@pytest.mark.broker
def test_the_cli_publishes_the_sample_keyed_and_in_order(kafka_bootstrap: str, prefix: str) -> None:
    lines = SAMPLE.read_bytes().splitlines()
    result = publish_cli(
        SAMPLE,
        "--bootstrap-servers", kafka_bootstrap,
        "--topic-prefix", prefix,
        env={"TRACKERFLOW_EVENTS_PARTITIONS": "4", "RASA_ENVIRONMENT": "staging"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "published 2,000 events of 38 conversations" in result.stderr
    assert "0 lines rejected" in result.stderr and "events/s" in result.stderr

    records = consume(kafka_bootstrap, f"{prefix}.events", len(lines))
    assert len(records) == len(lines) == 2000

    expected: dict[str, list[bytes]] = defaultdict(list)
    for line in lines:
        sent = decode_record(line)
        expected[sent.sender_id].append(dumps(encode_record(sent.event, sent.sender_id)))
    published: dict[str, list[bytes]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        sender = orjson.loads(record.value)["sender_id"]
        assert record.key == sender.encode("utf-8")
        assert header(record) == b"staging"
        published[sender].append(record.value)
        partitions[sender].add(record.partition)
    # every conversation whole, on one partition, in input order, with Rasa's bytes
    assert published == expected
    assert all(len(p) == 1 for p in partitions.values())
    assert len(set().union(*partitions.values())) > 1  # the 4 partitions are really used
    for sender, values in published.items():
        events = [decode_record(v).event for v in values]
        assert events == [decode_record(v).event for v in expected[sender]]
        stamps = [e.timestamp for e in events]
        assert stamps == sorted(stamps), sender


BAD_LOG = b"""\
{"sender_id": "c1", "event": "slot", "timestamp": 1700000000.1, "name": "city", "value": "Berlin"}
{"sender_id": "c2", "event": "teleport", "timestamp": 1}

{"event": "action", "name": "x"}
not json
{"sender_id": "c1", "event": "bot", "timestamp": 1700000000.2, "text": "hi \\xff"}
{"sender_id": "c3", "event": "pause"}
"""


@pytest.mark.broker
def test_the_cli_refuses_bad_lines(kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    log = tmp_path / "bad.jsonl.gz"
    log.write_bytes(gzip.compress(BAD_LOG.replace(b"\\xff", b"\xff")))
    rejects = tmp_path / "rejects.jsonl"
    started = time.time()
    result = publish_cli(
        log, "--bootstrap-servers", kafka_bootstrap, "--topic-prefix", prefix,
        "--rejects", rejects, "--strict",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert (
        f"rejected: {log}, line 2, conversation 'c2': unknown event name 'teleport'"
        in result.stderr
    )
    assert f"rejected: {log}, line 4: record has no 'sender_id'" in result.stderr
    assert f"rejected: {log}, line 5: record is not valid JSON" in result.stderr
    assert f"rejected: {log}, line 6, byte " in result.stderr
    assert "published 2 events of 2 conversations" in result.stderr
    assert "4 lines rejected" in result.stderr

    rows = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    assert [(r["line"], r["error"]) for r in rows] == [
        (2, "UnknownEvent"), (4, "MissingField"), (5, "InvalidJson"), (6, "InvalidJson"),
    ]  # fmt: skip
    assert rows[0]["source"] == str(log) and rows[0]["conversation_id"] == "c2"
    assert rows[2]["raw"] == "not json"
    assert "\ufffd" in rows[3]["raw"]

    records = consume(kafka_bootstrap, f"{prefix}.events", 2)
    by_sender = {orjson.loads(r.value)["sender_id"]: r for r in records}
    assert sorted(by_sender) == ["c1", "c3"]
    assert all(header(r) == b"RASA_ENVIRONMENT_NOT_SET" for r in records)
    slot = decode_record(by_sender["c1"].value)
    assert slot.event == SlotSet(key="city", value="Berlin", timestamp=1700000000.1)
    pause = decode_record(by_sender["c3"].value).event
    assert started <= pause.timestamp <= time.time()  # stamped when published

    # without --strict the same input is a success
    again = publish_cli(log, "--bootstrap-servers", kafka_bootstrap, "--topic-prefix", prefix)
    assert again.returncode == 0, again.stderr


@pytest.mark.broker
def test_the_cli_makes_missing_topics_with_aiokafka_never_loading_kafka_python(
    kafka_bootstrap: str, prefix: str
) -> None:
    lines = SAMPLE.read_bytes().splitlines()[:20]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TRACKERFLOW_")},
        "TRACKERFLOW_EVENTS_PARTITIONS": "4",
        "TRACKERFLOW_SIGNALS_RETENTION_MS": "3600000",
    }
    command = [sys.executable, "-X", "importtime", "-m", "streams.publish_cli", "-", "--quiet"]
    command += ["--bootstrap-servers", kafka_bootstrap, "--topic-prefix", prefix]
    for _ in range(2):  # the topics made, then found
        done = subprocess.run(
            command, input=b"\n".join(lines) + b"\n", capture_output=True, env=env,
            cwd=ROOT, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr.decode()
        imported = [line.rpartition("|")[2].strip() for line in done.stderr.decode().splitlines()]
        assert "aiokafka.admin" in imported  # what asked
        assert not [name for name in imported if name.split(".")[0] == "kafka"]
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="trackerflow-tests")
    try:
        # every topic made as ensure_topics makes it
        settings = load_settings(topic_prefix=prefix, events_partitions=4)
        specs = topic_specs(settings)
        wanted = {spec.name: spec.partitions for spec in specs if spec.name.startswith(prefix)}
        described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(list(wanted))}
        assert described == wanted and described[f"{prefix}.events"] == 4
        resource = ConfigResource(ConfigResourceType.TOPIC, f"{prefix}.signals")
        signals = admin.describe_configs([resource])["topic"][f"{prefix}.signals"]
        assert (signals["cleanup.policy"]["value"], signals["retention.ms"]["value"]) == (
            "delete",
            "3600000",
        )
    finally:
        admin.close()
    assert len(consume(kafka_bootstrap, f"{prefix}.events", 40)) == 40  # both runs published


@pytest.mark.broker
def test_the_cli_reads_stdin_and_honours_topic_and_no_create(
    kafka_bootstrap: str, kafka_topic: str
) -> None:
    lines = SAMPLE.read_bytes().splitlines()[:50]
    result = publish_cli(
        "-", "--topic", kafka_topic, "--no-create-topics", "--quiet",
        stdin=b"\n".join(lines) + b"\n",
        env={"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # --quiet
    records = consume(kafka_bootstrap, kafka_topic, 50)
    assert [r.value for r in records] == [
        dumps(encode_record(decode_record(line).event, decode_record(line).sender_id))
        for line in lines
    ]


@pytest.mark.broker
def test_an_input_that_breaks_midway_stops_with_status_2(
    kafka_bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    truncated = tmp_path / "truncated.jsonl.gz"
    truncated.write_bytes(gzip.compress(SAMPLE.read_bytes())[:-200])
    rejects = tmp_path / "rejects.jsonl"
    result = publish_cli(
        truncated, "--bootstrap-servers", kafka_bootstrap, "--topic-prefix", prefix,
        "--rejects", rejects,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"cannot read {str(truncated)!r}: the gzip data is truncated" in result.stderr
    assert "(the records before it were published)" in result.stderr
    assert rejects.read_bytes() == b""  # written, and empty: no line was bad


def test_the_cli_exit_codes_without_a_broker(tmp_path: Path) -> None:
    port = broker.free_port()  # nothing listens there
    result = publish_cli(SAMPLE, "--bootstrap-servers", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"cannot reach Kafka at 127.0.0.1:{port}" in result.stderr
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(b"\x1f\x8b" + b"not really gzip" * 10)
    result = publish_cli(broken, "--bootstrap-servers", f"127.0.0.1:{port}")
    assert result.returncode == 2  # an unreadable input fails before any connection
    assert f"cannot read {str(broken)!r}" in result.stderr
    result = publish_cli(SAMPLE, env={"TRACKERFLOW_SECURITY_PROTOCOL": "TLS"})
    assert result.returncode == 2
    assert "TRACKERFLOW_SECURITY_PROTOCOL: must be one of PLAINTEXT" in result.stderr
    help_text = publish_cli("--help").stdout
    for variable in (
        "TRACKERFLOW_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS", "TRACKERFLOW_PUBLISH_TOPIC",
        "TRACKERFLOW_TOPIC_PREFIX", "TRACKERFLOW_PUBLISH_CREATE_TOPICS",
        "TRACKERFLOW_PUBLISH_REJECTS", "TRACKERFLOW_PUBLISH_STRICT", "TRACKERFLOW_QUIET",
    ):  # fmt: skip
        assert variable in help_text


# -- the Python publisher -------------------------------------------------------------------------


def settings_for(bootstrap: str, **overrides: Any) -> Settings:
    return load_settings(bootstrap_servers=bootstrap, **overrides)


@pytest.mark.broker
def test_invalid_events_raise_before_anything_is_sent(
    kafka_bootstrap: str, kafka_topic: str
) -> None:
    async def scenario() -> Delivered:
        settings = settings_for(kafka_bootstrap, max_record_bytes=2000)
        async with Publisher(settings, topic=kafka_topic, clock=lambda: 1234.5) as publisher:
            with pytest.raises(UnknownEvent, match="conversation 'c1': unknown event name"):
                await publisher.publish({"event": "teleport"}, "c1")
            with pytest.raises(MissingField):
                await publisher.publish({"event": "slot", "value": 1}, "c1")
            with pytest.raises(InvalidField, match="differs from the record key"):
                await publisher.publish({"sender_id": "c2", "event": "pause"}, "c1")
            with pytest.raises(InvalidField, match="conversation id must be a non-empty"):
                await publisher.publish(SlotSet(key="a", value=1), "")
            with pytest.raises(RecordTooLarge, match="over the limit of 2000 bytes"):
                await publisher.publish(BotUttered(text="x" * 3000, timestamp=5.0), "c1")
            delivery = await publisher.publish({"event": "slot", "name": "a", "value": 1}, "c1")
            return await delivery

    delivered = asyncio.run(scenario())
    assert delivered == Delivered(kafka_topic, 0, 0, "c1")
    (record,) = consume(kafka_bootstrap, kafka_topic, 1)
    assert record.key == b"c1"
    assert orjson.loads(record.value) == {
        "sender_id": "c1", "event": "slot", "timestamp": 1234.5, "name": "a", "value": 1,
    }  # fmt: skip
    assert header(record) == b"RASA_ENVIRONMENT_NOT_SET"


@pytest.mark.broker
def test_publish_many_reports_failures_instead_of_raising(
    kafka_bootstrap: str, kafka_topic: str
) -> None:
    good = SlotSet(key="a", value=1, timestamp=10.0)
    batch: list[Any] = [
        ("c1", good),
        ("c1", {"event": "teleport"}),
        {"sender_id": "c2", "event": "restart", "timestamp": 11.0},
        {"event": "restart"},
        5,
        b'{"sender_id": "c3", "event": "pause", "timestamp": 12.0}',
    ]

    async def scenario() -> Any:
        async with Publisher(settings_for(kafka_bootstrap), topic=kafka_topic) as publisher:
            return await publisher.publish_many(batch)

    report = asyncio.run(scenario())
    assert report.published == 3
    assert not report.ok
    assert (report.rejected, report.failed) == (3, 0)
    assert [(f.index, f.conversation_id, f.as_dict()["error"]) for f in report.failures] == [
        (1, "c1", "UnknownEvent"), (3, None, "MissingField"), (4, None, "InvalidField"),
    ]  # fmt: skip
    assert "unknown event name 'teleport'" in report.failures[0].reason
    records = consume(kafka_bootstrap, kafka_topic, 3)
    assert [r.key for r in records] == [b"c1", b"c2", b"c3"]


@pytest.mark.broker
def test_records_the_broker_refuses_are_reported(kafka_bootstrap: str, prefix: str) -> None:
    topic = f"{prefix}.small"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="trackerflow-tests")
    try:
        admin.create_topics(
            {topic: {"num_partitions": 1, "replication_factor": 1,
                     "configs": {"max.message.bytes": "1000"}}},
            wait_for_metadata=True,
        )  # fmt: skip
    finally:
        admin.close()
    big = BotUttered(text="x" * 5000, timestamp=1.0)
    small = SlotSet(key="a", value=1, timestamp=1.0)

    async def scenario() -> tuple[Any, str]:
        async with Publisher(settings_for(kafka_bootstrap), topic=topic) as publisher:
            await (await publisher.publish(small, "c1"))
            # alone in its batch: the broker refuses a whole batch that is too large
            report = await publisher.publish_many([("c2", {"event": "teleport"}), ("c2", big)])
            await (await publisher.publish(small, "c3"))
            delivery = await publisher.publish(big, "c4")
            with pytest.raises(PublishError) as raised:
                await delivery
            assert not raised.value.retryable
            await publisher.publish(big, "c5")  # nobody awaits this one: flush() reports it
            with pytest.raises(PublishError, match=r"conversation 'c4'.*\(1 more record failed\)"):
                await publisher.flush()
            await publisher.flush()  # reported once
            return report, str(raised.value)

    report, message = asyncio.run(scenario())
    assert message.startswith(f"topic {topic!r}, conversation 'c4': MessageSizeTooLargeError")
    assert report.published == 0
    assert (report.rejected, report.failed) == (1, 1)
    rejected, failed = report.failures
    assert (rejected.index, type(rejected.error)) == (0, UnknownEvent)
    assert (failed.index, failed.conversation_id, type(failed.error)) == (1, "c2", PublishError)
    assert "MessageSizeTooLargeError" in failed.reason
    assert [r.key for r in consume(kafka_bootstrap, topic, 2)] == [b"c1", b"c3"]


@pytest.mark.broker
@pytest.mark.parametrize("kafka_topic", [3], indirect=True)
def test_ten_thousand_records_keep_order_without_blocking_the_loop(
    kafka_bootstrap: str, kafka_topic: str
) -> None:
    count, conversations = 10_000, 25
    batch = [(f"conv-{i % conversations}", SlotSet(key="n", value=i, timestamp=1.0 + i))
             for i in range(count)]  # fmt: skip

    async def scenario() -> tuple[Any, float, list[float]]:
        ticks: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            while not done.is_set():
                ticks.append(time.perf_counter())
                await asyncio.sleep(0.005)

        async with Publisher(settings_for(kafka_bootstrap), topic=kafka_topic) as publisher:
            await (await publisher.publish(SlotSet(key="warm", value=0, timestamp=0.5), "w"))
            task = asyncio.create_task(ticker())
            await asyncio.sleep(0.02)
            started = time.perf_counter()
            report = await publisher.publish_many(batch)
            elapsed = time.perf_counter() - started
            done.set()
            await task
        window = [t for t in ticks if started <= t <= started + elapsed]
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        return report, elapsed, [float(len(window)), max(gaps)]

    report, elapsed, (ticked, longest_gap) = asyncio.run(scenario())
    assert report.ok and report.published == count
    # the ticker kept running while the records went out: no stretch without a tick as long as
    # half the whole publish (a blocking send would freeze the loop for all of it)
    assert ticked >= 5, (ticked, elapsed)
    assert longest_gap < max(elapsed / 2, 0.05), (longest_gap, elapsed)

    records = consume(kafka_bootstrap, kafka_topic, count + 1)
    assert len(records) == count + 1
    values: dict[bytes, list[int]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        values[record.key].append(orjson.loads(record.value)["value"])
    for c in range(conversations):
        assert values[f"conv-{c}".encode()] == list(range(c, count, conversations))
