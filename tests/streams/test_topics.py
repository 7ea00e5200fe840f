"""Topic names and ``ensure_topics`` against the real broker of ``kafka_bootstrap``.

Each test uses its own topic prefix, so its topics are new; they are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError

from streams import broker
from streams.settings import Settings, load_settings
from streams.topics import (
    RECORD_OVERHEAD,
    Topics,
    TopicsError,
    TopicSpec,
    changelog_config,
    changelog_topics,
    ensure_topics,
    found_topics,
    starting_topics,
    topic_specs,
)


@pytest.fixture
def admin(kafka_bootstrap: str) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="trackerflow-tests")
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def prefix(admin: KafkaAdminClient) -> Iterator[str]:
    """A fresh topic prefix; every topic under it is deleted after the test."""
    name = f"test-topics-{uuid.uuid4().hex[:8]}"
    yield name
    leftovers = [topic for topic in admin.list_topics() if topic.startswith(f"{name}.")]
    if leftovers:
        with contextlib.suppress(KafkaError):
            admin.delete_topics(leftovers)


def settings_for(bootstrap: str, prefix: str, **overrides: Any) -> Settings:
    return load_settings(
        bootstrap_servers=bootstrap, topic_prefix=prefix, app_id=prefix, **overrides
    )


def partitions(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    return {t["name"]: len(t["partitions"]) for t in admin.describe_topics(names)}


def small_events_topic(admin: KafkaAdminClient, prefix: str) -> Topics:
    """The prefix's topics, of which only the events topic exists, with 2 partitions."""
    topics = Topics.for_prefix(prefix)
    admin.create_topics(
        {topics.events: {"num_partitions": 2, "replication_factor": 1}}, wait_for_metadata=True
    )
    return topics


def configs(admin: KafkaAdminClient, name: str) -> dict[str, str]:
    resource = ConfigResource(ConfigResourceType.TOPIC, name)
    described = admin.describe_configs([resource], config_filter="all")
    return {key: entry["value"] for key, entry in described["topic"][name].items()}


def test_names_come_from_the_prefix() -> None:
    assert Topics.for_prefix("shop") == Topics(
        "shop.events", "shop.signals", "shop.dlq", "shop.events.rekeyed"
    )
    assert Topics.from_settings(load_settings(topic_prefix="a.b")).dlq == "a.b.dlq"
    assert changelog_config() == {"cleanup.policy": "compact", "delete.retention.ms": "86400000"}


def test_specs_follow_the_settings() -> None:
    settings = load_settings(
        topic_prefix="p",
        events_partitions=4,
        signals_partitions=3,
        dlq_partitions=2,
        replication_factor=3,
        max_record_bytes=1000,
    )
    events, rekeyed, heads, history, signals, dlq = topic_specs(settings)
    assert (events.name, events.partitions, events.replication_factor) == ("p.events", 4, 3)
    assert (rekeyed.name, rekeyed.partitions, rekeyed.config) == (
        "p.events.rekeyed",
        4,
        events.config,
    )
    assert (heads.name, history.name) == changelog_topics(settings)
    for changelog in (heads, history):
        assert (changelog.partitions, changelog.config["cleanup.policy"]) == (4, "compact")
    assert (signals.name, signals.partitions) == ("p.signals", 3)
    assert (dlq.name, dlq.partitions) == ("p.dlq", 2)
    assert events.config["max.message.bytes"] == str(1000 + RECORD_OVERHEAD)
    # what the worker writes takes a record of max_record_bytes, or twice that (a dead letter)
    for spec in (heads, history, signals):
        assert spec.config["max.message.bytes"] == str(1000 + RECORD_OVERHEAD)
    assert dlq.config["max.message.bytes"] == str(2000 + RECORD_OVERHEAD)
    assert all(spec.config["min.insync.replicas"] == "2" for spec in (events, signals, dlq))
    renamed, *_ = topic_specs(settings, events_topic="mine")
    assert renamed == TopicSpec("mine", 4, 3, events.config)


def made_by_aiokafka(settings: Settings) -> Any:
    """What ``found_topics`` reports when it makes the missing topics (None: it could not)."""
    return asyncio.run(found_topics(settings, create=True))


@pytest.mark.broker
@pytest.mark.parametrize(
    "make", [ensure_topics, made_by_aiokafka], ids=["kafka-python", "aiokafka"]
)
def test_ensure_topics_creates_every_topic_once(
    kafka_bootstrap: str, admin: KafkaAdminClient, prefix: str, make: Any
) -> None:
    settings = settings_for(
        kafka_bootstrap,
        prefix,
        events_partitions=3,
        signals_partitions=2,
        dlq_partitions=1,
        events_retention_ms=123_456_789,
        signals_retention_ms=3_600_000,
        dlq_retention_ms=-1,
        max_record_bytes=200_000,
    )
    topics = Topics.from_settings(settings)
    names = [topics.events, topics.rekeyed, *changelog_topics(settings), topics.signals, topics.dlq]

    report = make(settings)
    assert report.created == tuple(names)
    assert report.existing == () and report.warnings == ()
    assert partitions(admin, [topics.events, topics.signals, topics.dlq]) == {
        topics.events: 3,
        topics.signals: 2,
        topics.dlq: 1,
    }
    assert set(partitions(admin, [topics.rekeyed, *changelog_topics(settings)]).values()) == {3}

    events = configs(admin, topics.events)
    assert events["cleanup.policy"] == "delete"
    assert events["retention.ms"] == "123456789"
    assert events["max.message.bytes"] == str(200_000 + RECORD_OVERHEAD)
    assert events["min.insync.replicas"] == "1"
    signals = configs(admin, topics.signals)
    assert (signals["cleanup.policy"], signals["retention.ms"]) == ("delete", "3600000")
    assert signals["max.message.bytes"] == str(200_000 + RECORD_OVERHEAD)
    for changelog in changelog_topics(settings):
        assert configs(admin, changelog)["max.message.bytes"] == str(200_000 + RECORD_OVERHEAD)
    dlq = configs(admin, topics.dlq)
    assert (dlq["cleanup.policy"], dlq["retention.ms"]) == ("delete", "-1")
    assert dlq["max.message.bytes"] == str(400_000 + RECORD_OVERHEAD)

    again = make(settings)
    assert again.created == () and again.warnings == ()
    assert again.existing == tuple(names)
    assert again == ensure_topics(settings)  # the same report, whichever client asked
    # what the broker has: the topics' own limits
    for report_ in (report, again):
        assert report_.limits[topics.events] == 200_000 + RECORD_OVERHEAD
        assert report_.limits[topics.dlq] == 400_000 + RECORD_OVERHEAD
        assert report_.limits[topics.signals] == 200_000 + RECORD_OVERHEAD
        assert set(report_.limits) == set(names)


@pytest.mark.broker
def test_existing_topics_are_left_alone_and_reported_when_smaller(
    kafka_bootstrap: str, admin: KafkaAdminClient, prefix: str
) -> None:
    topics = small_events_topic(admin, prefix)
    settings = settings_for(kafka_bootstrap, prefix, events_partitions=5, signals_partitions=1)
    report = ensure_topics(settings)
    assert report.created == (
        topics.rekeyed,
        *changelog_topics(settings),
        topics.signals,
        topics.dlq,
    )
    assert report.existing == (topics.events,)
    (warning,) = report.warnings
    assert f"topic {topics.events!r} has 2 partitions, fewer than the 5 configured" in warning
    assert partitions(admin, [topics.events]) == {topics.events: 2}
    assert configs(admin, topics.events)["retention.ms"] != "-1"  # its config was not touched
    assert report.limits[topics.events] == 1_048_588  # its own, not what the settings make


@pytest.mark.broker
def test_a_starting_worker_makes_and_reads_topics_without_kafka_python(
    kafka_bootstrap: str, admin: KafkaAdminClient, prefix: str
) -> None:
    topics = small_events_topic(admin, prefix)
    overrides = {"events_partitions": 5, "max_record_bytes": 200_000}
    settings = settings_for(kafka_bootstrap, prefix, **overrides)
    names = [topics.events, topics.rekeyed, *changelog_topics(settings), topics.signals, topics.dlq]
    assert asyncio.run(found_topics(settings)) is None  # all but the events topic are missing
    assert set(admin.list_topics()) & set(names) == {topics.events}  # and asking made none

    code = f"""
import sys
from streams.settings import load_settings
from streams.topics import starting_topics
settings = load_settings(
    bootstrap_servers={kafka_bootstrap!r}, topic_prefix={prefix!r}, app_id={prefix!r},
    **{overrides!r},
)
for _ in range(2):  # made, then found
    print(starting_topics(settings).summary())
print("kafka" in sys.modules)
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    made_names = ", ".join(names[1:])
    assert done.stdout.splitlines() == [
        f"1 existing, 5 created ({made_names}); asked with aiokafka",
        "6 existing, 0 created; asked with aiokafka",
        "False",  # kafka-python never loaded
    ]
    found = asyncio.run(found_topics(settings))
    assert found is not None
    again = ensure_topics(settings)
    assert found == again  # the same report: all existing, the warning, limits
    assert (found.client, again.client) == ("aiokafka", "kafka-python")
    (warning,) = found.warnings
    assert f"topic {topics.events!r} has 2 partitions, fewer than the 5 configured" in warning
    assert found.limits[topics.signals] == 200_000 + RECORD_OVERHEAD
    assert found.limits[topics.events] == 1_048_588  # its own, not what the settings make
    assert configs(admin, changelog_topics(settings)[0])["cleanup.policy"] == "compact"
    assert done.stderr == ""


@pytest.mark.broker
def test_a_worker_says_what_it_found_and_warns_of_too_few_partitions(
    kafka_bootstrap: str, admin: KafkaAdminClient, prefix: str, tmp_path: Path
) -> None:
    topics = small_events_topic(admin, prefix)
    env = {
        **os.environ,
        "TRACKERFLOW_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "TRACKERFLOW_TOPIC_PREFIX": prefix,
        "TRACKERFLOW_APP_ID": prefix,
        "TRACKERFLOW_EVENTS_PARTITIONS": "5",
        "TRACKERFLOW_WEB_HOST": "127.0.0.1",
        "TRACKERFLOW_WEB_PORT": str(broker.free_port()),
        "TRACKERFLOW_STORE": "memory",
    }
    logs = []
    for run in ("first", "again"):  # the first start makes the topics, the second finds them
        log = tmp_path / f"worker-{run}.log"
        with log.open("wb") as out:
            worker = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker", "--loglevel", "info"],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while "memory: " not in log.read_text() and time.monotonic() < deadline:
                assert worker.poll() is None, log.read_text()
                time.sleep(0.1)
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=60)
        logs.append(log.read_text())
    first, again = logs
    assert "topics: 1 existing, 5 created (" in first and "asked with aiokafka" in first
    assert "topics: 6 existing, 0 created; asked with aiokafka" in again
    for text in logs:
        assert f"WARNING trackerflow.worker: topic {topics.events!r} has 2 partitions" in text


def test_a_broker_that_cannot_be_asked_is_left_to_ensure_topics(
    capfd: pytest.CaptureFixture[str],
) -> None:
    port = broker.free_port()  # nothing listens there
    settings = load_settings(bootstrap_servers=f"127.0.0.1:{port}")
    started = time.monotonic()
    assert asyncio.run(found_topics(settings, timeout_s=5)) is None
    assert time.monotonic() - started < 6
    assert capfd.readouterr() == ("", "")  # aiokafka's complaints are not shown


def test_limits_are_empty_when_the_broker_will_not_describe_configs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from kafka.errors import TopicAuthorizationFailedError

    from streams.topics import _message_limits

    class Refusing:
        def describe_configs(self, *args: Any, **kwargs: Any) -> Any:
            raise TopicAuthorizationFailedError("no")

    assert _message_limits(Refusing(), ["t.events"]) == {}
    assert "cannot read the topics' max.message.bytes" in caplog.text


@pytest.mark.broker
def test_a_topic_kafka_cannot_create_is_an_error(kafka_bootstrap: str, prefix: str) -> None:
    settings = settings_for(kafka_bootstrap, prefix)
    impossible = TopicSpec(f"{prefix}.events", 1, replication_factor=1000)
    with pytest.raises(TopicsError, match=rf"cannot create topics: '{prefix}\.events': "):
        ensure_topics(settings, [impossible])
    # aiokafka's try gives up, and a starting worker says what ensure_topics says
    assert asyncio.run(found_topics(settings, [impossible], create=True)) is None
    wanted = settings_for(kafka_bootstrap, prefix, replication_factor=1000)
    assert asyncio.run(found_topics(wanted, create=True)) is None
    with pytest.raises(TopicsError, match=rf"cannot create topics: '{prefix}\.events': "):
        starting_topics(wanted)


def test_an_unreachable_broker_fails_fast() -> None:
    port = broker.free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(TopicsError, match=f"cannot reach Kafka at 127.0.0.1:{port}") as caught:
        ensure_topics(load_settings(bootstrap_servers=f"127.0.0.1:{port}"))
    assert caught.value.retryable
    assert time.monotonic() - started < 10


def test_a_closed_sasl_connection_is_explained() -> None:
    """kafka-python sometimes logs only the closed connection when a broker refuses a SASL
    login over TLS; the explanation then says what that usually means."""
    import logging

    from streams.topics import ConnectionFailures

    def failures(sasl: bool, *reasons: str) -> ConnectionFailures:
        handler = ConnectionFailures(sasl)
        for reason in reasons:
            handler.emit(logging.makeLogRecord({"name": "kafka.net.manager", "msg": reason}))
        return handler

    closed = "Bootstrap connection to bootstrap-0 failed: KafkaConnectionError: socket disconnected"
    refused = "Bootstrap connection to bootstrap-0 failed: Authentication failed: bad password"
    assert "the broker closed the connection" in failures(True, closed).explain()
    assert "check the SASL" not in failures(False, closed).explain()
    both = failures(True, closed, refused)
    assert both.authentication and "bad password; check the SASL" in both.explain()
    assert failures(True).explain() == ""


def test_the_worker_command_stops_with_the_reason_when_kafka_is_unreachable() -> None:
    """The worker creates its topics in a thread while it imports the rest; the thread's
    error still ends the command with the reason, and no traceback."""
    port = broker.free_port()  # nothing listens there
    env = {**os.environ, "TRACKERFLOW_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"}
    worker = [sys.executable, "-m", "streams.cli", "worker"]
    done = subprocess.run(worker, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stderr
    assert f"Error: cannot reach Kafka at 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
    env["TRACKERFLOW_HEAP_PREFAULT_MIB"] = "4096"
    done = subprocess.run(worker, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stderr
    assert "TRACKERFLOW_HEAP_PREFAULT_MIB" in done.stderr and "4096" in done.stderr
