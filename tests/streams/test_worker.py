"""The worker on a real broker, run as a user runs it (``trackerflow worker`` processes).

Expected results are computed offline with the same ``StreamFolder`` over the same records, so
the checks say "the worker folded exactly what it was given, exactly once" without hard-coding.
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from processors.stream import Inbound, StreamFolder
from streams import broker
from streams.broker import free_port
from streams.settings import load_settings
from streams.topics import ensure_topics
from streams.worker import POSITIONS_KEY

pytestmark = [pytest.mark.broker, pytest.mark.slow]
SAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "samples" / "conversations.jsonl"


class Run:
    """One isolated deployment: its own topic prefix, consumer group and data dirs."""

    def __init__(
        self,
        bootstrap: str,
        tmp: Path,
        store: str = "memory",
        per_transaction: int = 1,
        max_record_bytes: int | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.tmp = tmp
        self.store = store
        self.per_transaction = per_transaction
        self.max_record_bytes = max_record_bytes
        self.ports: dict[int, int] = {}
        self.per_worker: dict[int, int] = {}  # a worker's own partitions_per_transaction
        self.prefix = f"t{uuid.uuid4().hex[:10]}"
        self.workers: list[subprocess.Popen[bytes]] = []
        settings = load_settings(
            bootstrap_servers=bootstrap,
            topic_prefix=self.prefix,
            app_id=self.prefix,
            max_record_bytes=max_record_bytes,
        )
        ensure_topics(settings)  # as the worker would; producing first would auto-create them

    def env(self, index: int) -> dict[str, str]:
        port = self.ports.setdefault(index, free_port())  # a restarted worker keeps its port
        return {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "TRACKERFLOW_TOPIC_PREFIX": self.prefix,
            "TRACKERFLOW_APP_ID": self.prefix,
            "TRACKERFLOW_WEB_PORT": str(port),
            "TRACKERFLOW_STORE": self.store,
            "TRACKERFLOW_PARTITIONS_PER_TRANSACTION": str(
                self.per_worker.get(index, self.per_transaction)
            ),
            # each worker its own state directory, kept across its restarts
            "TRACKERFLOW_STATE_DIR": str(self.tmp / f"state-{index}"),
            **(
                {}
                if self.max_record_bytes is None
                else {"TRACKERFLOW_MAX_RECORD_BYTES": str(self.max_record_bytes)}
            ),
        }

    def health(self, index: int) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.ports[index]}/health"
        with urllib.request.urlopen(url, timeout=10) as answer:
            return orjson.loads(answer.read())  # type: ignore[no-any-return]

    def start_worker(self, index: int = 0) -> subprocess.Popen[bytes]:
        with (self.tmp / f"worker-{index}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "streams.worker_cli", "--loglevel", "info"],
                env=self.env(index),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.workers.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

    def produce(self, records: list[tuple[bytes | None, bytes]], pace_s: float = 0.0) -> None:
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        for key, value in records:
            producer.send(f"{self.prefix}.events", key=key, value=value)
            if pace_s:
                producer.flush()
                time.sleep(pace_s)
        producer.flush()
        producer.close()

    def read(self, topic: str, *, timeout_ms: int = 10_000) -> list[Any]:
        consumer = KafkaConsumer(
            f"{self.prefix}{topic}",
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            consumer_timeout_ms=timeout_ms,
        )
        messages = list(consumer)
        consumer.close()
        return messages

    def heads(self) -> dict[str, Any]:
        heads: dict[str, Any] = {}
        for message in self.read("-heads-changelog"):
            if message.key != POSITIONS_KEY:
                heads[message.key.decode()] = orjson.loads(message.value)
        return heads

    def positions(self) -> dict[int, dict[str, int]]:
        """The last read positions the worker committed with each state partition."""
        return {
            message.partition: orjson.loads(message.value)
            for message in self.read("-heads-changelog")
            if message.key == POSITIONS_KEY
        }

    def events_ends(self) -> dict[int, int]:
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap)
        topic = f"{self.prefix}.events"
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        ends = consumer.end_offsets(tps)
        consumer.close()
        return {tp.partition: end for tp, end in ends.items()}

    def group_offsets(self) -> dict[int, int | None]:
        """The offsets committed for the worker group on the events topic."""
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=self.prefix, enable_auto_commit=False
        )
        topic = f"{self.prefix}.events"
        offsets = {
            p: consumer.committed(TopicPartition(topic, p))
            for p in consumer.partitions_for_topic(topic)
        }
        consumer.close()
        return offsets

    def wait_for_events(self, total: int, deadline_s: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + deadline_s
        while True:
            heads = self.heads()
            if sum(h["count"] for h in heads.values()) >= total or time.monotonic() > deadline:
                return heads
            time.sleep(1)


@pytest.fixture
def run(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Run]:
    deployment = Run(kafka_bootstrap, tmp_path)
    yield deployment
    deployment.stop_all()


@pytest.fixture(params=["memory", "rocksdb"])
def any_store_run(kafka_bootstrap: str, tmp_path: Path, request: Any) -> Iterator[Run]:
    """A deployment whose workers keep their state in memory, or in RocksDB."""
    deployment = Run(kafka_bootstrap, tmp_path, request.param)
    yield deployment
    deployment.stop_all()


@pytest.fixture(
    params=[("memory", 1), ("rocksdb", 1), ("memory", 3)],
    ids=["memory", "rocksdb", "memory-3-per-transaction"],
)
def eos_run(kafka_bootstrap: str, tmp_path: Path, request: Any) -> Iterator[Run]:
    """A deployment with either store, and one with three partitions per transaction (the 6
    partitions in 2 shards, each committed by one producer and owned whole)."""
    deployment = Run(kafka_bootstrap, tmp_path, *request.param)
    yield deployment
    deployment.stop_all()


def assert_producers(run: Run, index: int) -> None:
    """Worker ``index`` owns every partition, with one transactional producer per shard."""
    size, prefix = run.per_transaction, run.prefix
    expected = {
        (f"{prefix}-{first}" if size == 1 else f"{prefix}-{first}-{first + size - 1}"): list(
            range(first, first + size)
        )
        for first in range(0, 6, size)
    }
    deadline = time.monotonic() + 60  # a dead worker's shards move once its session expires
    producers = None
    while producers != expected:
        assert time.monotonic() < deadline, producers
        time.sleep(0.5)
        with contextlib.suppress(OSError):  # its HTTP API may not be up yet
            producers = run.health(index)["producers"]


def sample() -> list[tuple[bytes | None, bytes]]:
    lines = SAMPLE.read_bytes().splitlines()
    return [(orjson.loads(line)["sender_id"].encode(), line) for line in lines]


def offline(records: list[tuple[bytes | None, bytes]]) -> tuple[dict[str, Any], list[Any]]:
    """Heads and signals (without their source) of folding ``records`` once, in order; the
    reminders still pending at the end were due years ago, so a worker reports each as missed
    (once)."""
    folder = StreamFolder({}, {})
    signals = []
    for offset, (key, value) in enumerate(records):
        outcome = folder.process(Inbound("t", 0, offset, key, value, 0.0))
        signals += [{**s.as_dict(), "source": None} for s in outcome.signals]
    folder.flush()
    for conversation_id, head in folder.heads.items():
        for name in head.get("reminders", {}):
            signals.append(
                {"signal": "reminder_missed", "conversation_id": conversation_id, "name": name}
            )
    return dict(folder.heads), signals


def assert_same_signals(
    signals: list[Any], expected: list[Any], records: list[tuple[bytes | None, bytes]]
) -> None:
    """Every signal of the offline fold exactly once, and each reminder at most once.

    Reminders are fired by the clock, not by records: the sample's were due years ago, so a
    reminder fires (as missed) as soon as the worker has folded it and has nothing else to
    read, and that can come before a later record that would have cancelled it arrives. Every
    reminder still pending at the end of the offline fold must be reported, and none twice."""
    rest = collections.Counter(key_of(x) for x in signals if not x["signal"].startswith("rem"))
    assert rest == collections.Counter(
        key_of(x) for x in expected if not x["signal"].startswith("rem")
    )
    fired = collections.Counter(
        (x["conversation_id"], x["name"]) for x in signals if x["signal"].startswith("rem")
    )
    assert set(fired.values()) <= {1}, fired
    pending = {(x["conversation_id"], x["name"]) for x in expected if x["signal"].startswith("rem")}
    scheduled = {
        (body["sender_id"], body["name"])
        for body in (orjson.loads(value) for _, value in records)
        if body.get("event") == "reminder"
    }
    assert pending <= set(fired) <= scheduled


def assert_folded_exactly_once(
    run: Run, records: list[tuple[bytes | None, bytes]], *, deadline_s: float
) -> None:
    """Every conversation's event count and state, and the signals, equal an offline fold."""
    heads = run.wait_for_events(len(records), deadline_s=deadline_s)
    expected_heads, expected_signals = offline(records)
    assert {c: h["count"] for c, h in heads.items()} == {
        c: h["count"] for c, h in expected_heads.items()
    }
    assert {c: h["state"] for c, h in heads.items()} == {
        c: h["state"] for c, h in expected_heads.items()
    }
    signals = [orjson.loads(m.value) for m in run.read(".signals")]
    assert_same_signals(signals, expected_signals, records)


def key_of(signal: dict[str, Any]) -> bytes:
    """What identifies a signal (a reminder's: its kind, conversation and name; its times are
    the worker's)."""
    if signal["signal"].startswith("reminder_"):
        signal = {k: signal[k] for k in ("signal", "conversation_id", "name")}
    return orjson.dumps({**signal, "source": None}, option=orjson.OPT_SORT_KEYS)


def test_a_worker_folds_every_conversation_like_an_offline_fold(run: Run) -> None:
    records = sample()
    run.start_worker()
    run.produce(records)
    heads = run.wait_for_events(len(records))
    expected_heads, expected_signals = offline(records)
    assert {c: h["state"] for c, h in heads.items()} == {
        c: h["state"] for c, h in expected_heads.items()
    }
    signals = [orjson.loads(m.value) for m in run.read(".signals")]
    assert_same_signals(signals, expected_signals, records)
    log = (run.tmp / "worker-0.log").read_text()  # the worker's memory set-up, as it says
    assert "freed memory kept for reuse up to 64 MiB, object arenas kept faulted in: 16 MiB" in log
    assert all(
        s["source"]["topic"] == f"{run.prefix}.events"
        for s in signals
        if not s["signal"].startswith("reminder_")  # fired by the clock, not by a record
    )
    # the read positions went into the changelog with the state; the group's offsets follow
    # within seconds (outside the transactions, for lag monitoring)
    ends = {p: end for p, end in run.events_ends().items() if end}
    events, rekeyed = f"{run.prefix}.events", f"{run.prefix}.events.rekeyed"
    assert run.positions() == {
        p: {events: end, rekeyed: 0, "writer": f"{run.prefix}-{p}"} for p, end in ends.items()
    }
    deadline = time.monotonic() + 30
    committed = {p: offset for p, offset in run.group_offsets().items() if offset is not None}
    while committed != ends and time.monotonic() < deadline:
        time.sleep(1)
        committed = {p: offset for p, offset in run.group_offsets().items() if offset is not None}
    assert committed == ends


def test_state_without_read_positions_resumes_from_the_groups_offsets(run: Run) -> None:
    """State written by an earlier trackerflow kept its positions as the group's offsets only."""
    records = [
        (b"c1", b'{"sender_id": "c1", "event": "pause", "timestamp": %d}' % i) for i in (1, 2)
    ]
    run.produce(records[:1])
    consumer = KafkaConsumer(bootstrap_servers=run.bootstrap, group_id=run.prefix)
    tp = next(
        TopicPartition(f"{run.prefix}.events", p) for p, end in run.events_ends().items() if end
    )
    consumer.commit({tp: OffsetAndMetadata(1, "", -1)})
    consumer.close()
    run.produce(records[1:])
    run.start_worker()
    run.wait_for_events(1)
    time.sleep(2)  # the first record, had it been read, would have been folded by now too
    heads = run.heads()
    assert heads["c1"]["count"] == 1 and heads["c1"]["state"]["latest_event_time"] == 2


def test_bad_records_go_to_the_dead_letter_topic_and_keyless_ones_are_rekeyed(run: Run) -> None:
    good = b'{"sender_id": "c1", "event": "pause", "timestamp": 1.0}'
    records: list[tuple[bytes | None, bytes]] = [
        (b"c1", b"{not json"),
        (b"c1", b'{"sender_id": "c1", "event": "teleport"}'),
        (None, b'{"event": "pause"}'),
        (None, good),
    ]
    run.start_worker()
    run.produce(records)
    heads = run.wait_for_events(1)
    assert heads["c1"]["count"] == 1 and heads["c1"]["state"]["paused"] is True
    dead = {m.value: m for m in run.read(".dlq", timeout_ms=5000)}
    assert sorted(dead) == sorted(value for _, value in records[:3])  # keyless: any partition
    reason = {
        v: orjson.loads(dict(m.headers)["trackerflow.error"])["reason"] for v, m in dead.items()
    }
    assert "teleport" in reason[records[1][1]] and "sender_id" in reason[records[2][1]]
    source = {v: orjson.loads(dict(m.headers)["trackerflow.source"]) for v, m in dead.items()}
    assert [source[records[i][1]]["offset"] for i in (0, 1)] == [0, 1]  # c1's partition, in order
    assert all(s["topic"] == f"{run.prefix}.events" for s in source.values())
    rekeyed = run.read(".events.rekeyed")
    assert [(m.key, m.value) for m in rekeyed] == [(b"c1", good)]


def test_kill_9_mid_stream_applies_every_event_and_signal_exactly_once(eos_run: Run) -> None:
    run = eos_run
    records = sample()
    run.start_worker()
    chunks = [records[i : i + 250] for i in range(0, len(records), 250)]
    for number, chunk in enumerate(chunks):
        run.produce(chunk)
        if number % 2 == 1:
            time.sleep(random.uniform(0.5, 2.5))
            victim = run.workers[-1]
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait(timeout=10)
            run.start_worker()
    assert_folded_exactly_once(run, records, deadline_s=240)
    assert_producers(run, 0)


def test_tail_prints_committed_records_as_json_lines(run: Run) -> None:
    producer = KafkaProducer(bootstrap_servers=run.bootstrap)
    topic = f"{run.prefix}.signals"
    producer.send(topic, key=b"c1", value=b'{"signal": "session_started"}')
    producer.send(topic, key=None, value=b"not json", headers=[("why", b"because")])
    producer.flush()
    producer.close()
    command = [sys.executable, "-m", "streams.tail_cli", "signals", "--idle", "5"]
    env = run.env(0)
    shown = subprocess.run(command, env=env, capture_output=True, check=True, timeout=60)
    lines = sorted(
        (orjson.loads(line) for line in shown.stdout.splitlines()), key=lambda x: x["key"] is None
    )
    assert [(x["key"], x["value"]) for x in lines] == [
        ("c1", {"signal": "session_started"}),
        (None, "not json"),
    ]
    assert lines[1]["headers"] == {"why": "because"} and "headers" not in lines[0]
    limited = subprocess.run(
        [*command, "--max", "1"], check=False, env=env, capture_output=True, timeout=60
    )
    assert len(limited.stdout.splitlines()) == 1
    bad = subprocess.run(
        [*command[:3], "nonsense"], check=False, env=env, capture_output=True, timeout=60
    )
    assert bad.returncode == 2 and b"nonsense" in bad.stderr


def test_workers_joining_and_dying_mid_stream_keep_exactly_once(eos_run: Run) -> None:
    """Rebalances while events stream in: a second worker joins, the first is killed and
    comes back, the second is killed; every event and signal still counts once. (With RocksDB,
    partitions come back to a worker whose state lags what the other one committed; with
    shards, whole shards move.)"""
    run = eos_run
    records = sample()
    run.start_worker(0)
    chunks = [records[i : i + 200] for i in range(0, len(records), 200)]
    steps = {
        2: lambda: run.start_worker(1),
        4: lambda: kill(run.workers[0]),
        5: lambda: run.start_worker(0),
        7: lambda: kill(run.workers[1]),
    }
    for number, chunk in enumerate(chunks):
        run.produce(chunk)
        if number in steps:
            time.sleep(random.uniform(0.5, 2.0))
            steps[number]()
    assert_folded_exactly_once(run, records, deadline_s=120)
    assert_producers(run, 0)


@pytest.mark.parametrize("zombie_per_transaction", [3, 1], ids=["same-ids", "other-ids"])
def test_a_paused_worker_that_lost_its_shards_is_fenced(
    kafka_bootstrap: str, tmp_path: Path, zombie_per_transaction: int
) -> None:
    """A "zombie": a worker stopped (SIGSTOP) mid-stream, with batches fetched and perhaps a
    transaction open, loses its shards to a second worker once its session expires, and then
    runs on (SIGCONT) as if nothing happened. The second worker's producers fenced its own (same
    transactional ids), so nothing it still sends counts: every event and signal once. With
    another partitions_per_transaction (other transactional ids), the second worker fences the
    ids that last committed each partition, named in its positions."""
    run = Run(kafka_bootstrap, tmp_path, "memory", 3)
    run.per_worker[0] = zombie_per_transaction
    try:
        records = sample()
        chunks = [records[i : i + 150] for i in range(0, len(records), 150)]
        zombie = run.start_worker(0)
        run.produce(chunks[0])
        run.wait_for_events(len(chunks[0]))
        # records arriving one by one keep it in transactions: stopped in one, most likely
        trickle = threading.Thread(target=run.produce, args=(chunks[1],), kwargs={"pace_s": 0.01})
        trickle.start()
        time.sleep(random.uniform(0.3, 1.0))
        os.killpg(zombie.pid, signal.SIGSTOP)
        trickle.join()
        run.start_worker(1)
        run.produce(chunks[2])
        assert_producers(run, 1)  # the zombie's session expired: worker 1 owns both shards
        os.killpg(zombie.pid, signal.SIGCONT)
        for chunk in chunks[3:]:
            run.produce(chunk)
            time.sleep(0.5)
        assert_folded_exactly_once(run, [r for chunk in chunks for r in chunk], deadline_s=180)
        assert zombie.poll() is None  # it lived on, and rejoined the group
    finally:
        run.stop_all()
    fenced = (tmp_path / "worker-1.log").read_text().count("(another partitions_per_transaction)")
    assert fenced == (6 if zombie_per_transaction == 1 else 0)


def test_a_restarted_worker_reads_only_what_its_state_lacks(any_store_run: Run) -> None:
    """Stopped and started again, a RocksDB worker reads no changelog record (its database is
    up to date); a memory worker reads them all. Both then fold on exactly once."""
    run = any_store_run
    records = sample()
    half = len(records) // 2
    first = run.start_worker()
    run.produce(records[:half])
    run.wait_for_events(half)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 0
    changelogs = len(run.read("-heads-changelog")) + len(run.read("-history-changelog"))
    run.produce(records[half:])
    run.start_worker()
    assert_folded_exactly_once(run, records, deadline_s=120)
    health = run.health(0)
    assert health["store"] == run.store
    assert health["reader"] == health["writer"] == "compiled"
    if run.store == "rocksdb":
        assert health["restored_records"] == 0
        assert (run.tmp / "state-0" / run.prefix / "partition-0" / "CURRENT").exists()
    else:
        assert health["restored_records"] >= changelogs - 6  # compaction may drop a few


def test_an_idle_worker_fetches_a_few_times_a_second_and_records_end_the_wait(run: Run) -> None:
    """With nothing arriving, each fetch waits long at the broker (streams.fetch_wait): a few a
    second, where fetches for a batch would be hundreds; records are fetched briefly again."""
    run.start_worker()
    health = wait_for_health(run, 0, lambda h: h.get("partitions") and h["fetches"]["idle"])
    assert health["fetches"]["idle"], health
    before = run.health(0)["fetches"]
    time.sleep(3)
    after = run.health(0)["fetches"]
    assert after["busy"] == before["busy"]  # nothing was fetched
    assert 2 <= after["idle"] - before["idle"] <= 12  # at most one per 0.5 s wait, and a few
    records = sample()
    run.produce(records)
    assert_folded_exactly_once(run, records, deadline_s=120)
    assert run.health(0)["fetches"]["busy"] > after["busy"]


def test_a_second_worker_on_a_used_state_directory_stops_with_a_clear_error(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    run = Run(kafka_bootstrap, tmp_path, "rocksdb")
    try:
        run.start_worker(0)
        deadline = time.monotonic() + 60
        while not (tmp_path / "state-0" / run.prefix / "LOCK").exists():
            assert time.monotonic() < deadline, "the first worker never locked its state"
            time.sleep(0.2)
        env = {**run.env(1), "TRACKERFLOW_STATE_DIR": str(tmp_path / "state-0")}
        second = subprocess.run(
            [sys.executable, "-m", "streams.worker_cli"],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert second.returncode == 1
        assert "is in use by another worker" in second.stderr and "--state-dir" in second.stderr
        assert "Traceback" not in second.stderr and "Unclosed" not in second.stderr
        assert run.workers[0].poll() is None  # the first one runs on
    finally:
        run.stop_all()


def kill(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def wait_for_health(run: Run, index: int, check: Any, deadline_s: float = 60) -> dict[str, Any]:
    """The worker's /health once ``check`` holds for it (the last one seen if never)."""
    deadline = time.monotonic() + deadline_s
    health: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            health = run.health(index)
            if check(health):
                break
        time.sleep(0.5)
    return health


def test_a_worker_with_other_partitions_per_transaction_waits_until_it_leads(run: Run) -> None:
    """A rolling change of --partitions-per-transaction: the new worker gets nothing while the
    old one leads the group (they would not fence each other), then everything once it is the
    only one; every event still counts once."""
    records = sample()
    half = len(records) // 2
    old = run.start_worker(0)
    wait_for_health(run, 0, lambda h: len(h["partitions"]) == 6)
    run.per_transaction = 3
    run.start_worker(1)
    refused = wait_for_health(run, 1, lambda h: h["refused"] is not None)
    assert refused["partitions"] == [] and refused["producers"] == {}
    assert "runs with partitions_per_transaction 3, the group's leader with 1" in refused["refused"]
    leader = wait_for_health(run, 0, lambda h: len(h["partitions"]) == 6)  # after the rebalance
    assert leader["partitions"] == list(range(6)) and leader["refused"] is None
    run.produce(records[:half])
    run.wait_for_events(half)
    old.send_signal(signal.SIGTERM)
    assert old.wait(timeout=60) == 0
    taken = wait_for_health(run, 1, lambda h: len(h["partitions"]) == 6)
    assert taken["refused"] is None
    assert taken["producers"] == {f"{run.prefix}-0-2": [0, 1, 2], f"{run.prefix}-3-5": [3, 4, 5]}
    run.produce(records[half:])
    assert_folded_exactly_once(run, records, deadline_s=120)


@pytest.mark.parametrize("worker_setting", [True, False], ids=["worker-set", "topics-only"])
def test_a_low_record_limit_cuts_the_batches_to_what_the_topics_accept(
    kafka_bootstrap: str, tmp_path: Path, worker_setting: bool
) -> None:
    """With TRACKERFLOW_MAX_RECORD_BYTES=20000 the events and re-keyed topics accept record
    batches of about 84 KiB. A backlog of keyless 15 KB records makes a transaction re-key
    several of them into each re-keyed partition: those batches must be cut to fit, or the
    transaction fails again and again. The worker finds the limit in its settings, or (topics
    created earlier with it, the worker without it) in the topics' configuration."""
    run = Run(kafka_bootstrap, tmp_path, max_record_bytes=20_000)
    if not worker_setting:
        run.max_record_bytes = None  # the topics keep theirs; the worker runs with the default
    try:
        text = "x" * 15_000
        records = [
            (None, orjson.dumps({"sender_id": f"c{i % 60}", "event": "bot", "text": text}))
            for i in range(1200)
        ]
        run.produce(records)
        run.start_worker(0)
        health = wait_for_health(run, 0, lambda h: h["records"]["folded"] == 1200, 120)
        assert health["records"] == {
            "folded": 1200,
            "skipped": 0,
            "rekeyed": 1200,
            "replaced": 0,
            "dead": 0,
        }
    finally:
        run.stop_all()


def get_json(run: Run, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{run.ports[0]}{path}", timeout=30) as answer:
        return orjson.loads(answer.read())


def test_what_the_changelogs_cannot_take_never_stops_a_partition(any_store_run: Run) -> None:
    """A head too large for its changelog is kept without its state; an event whose history
    record, or a reminder whose pending entry, the changelogs cannot take is a dead letter. The
    partitions fold on (before, the transaction failed and was retried for ever)."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    from streams.topics import RECORD_OVERHEAD, changelog_config

    run = any_store_run
    # the history changelog as an older deployment may have it: smaller than its spec says
    admin = KafkaAdminClient(bootstrap_servers=run.bootstrap)
    config = {**changelog_config(), "min.insync.replicas": "1", "max.message.bytes": "400000"}
    history = f"{run.prefix}-history-changelog"
    admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, history, configs=config)])
    admin.close()
    room = 400_000 - RECORD_OVERHEAD  # what a changelog record's value may take

    def event(conversation: str, offset: int, **body: Any) -> tuple[bytes, bytes]:
        record = {"sender_id": conversation, "timestamp": 1_700_000_000.0 + offset, **body}
        return conversation.encode(), orjson.dumps(record)

    half = room // 2 + 10_000  # two of these make a head larger than the room
    too_big = event("huge", 0, event="slot", name="c", value="z" * (room + 1))
    reminder = event(
        "rem", 0, event="reminder", name="r", date_time="2030-01-01T00:00:00+00:00",
        entities=[{"entity": "e", "value": "v" * half}],
    )  # fmt: skip
    big = [
        event("big", 0, event="slot", name="a", value="a" * half),
        event("big", 1, event="slot", name="b", value="b" * half),
        event("big", 2, event="user", text="hi", parse_data={"intent": {"name": "greet"}}),
    ]
    still = event("huge", 1, event="user", text="still here", parse_data={})
    after = [still, event("rem", 1, event="pause")]
    records = sample()
    mixed = records[:100] + big + [too_big, reminder] + after + records[100:]
    run.start_worker()
    run.produce(mixed)
    health = wait_for_health(
        run, 0, lambda h: sum(h.get("records", {}).values()) >= len(mixed), deadline_s=120
    )
    assert health["records"]["dead"] == 2 and health["records"]["folded"] == len(mixed) - 2

    dead = {m.key: m for m in run.read(".dlq", timeout_ms=5000)}
    assert sorted(dead) == [b"huge", b"rem"]
    assert dead[b"huge"].value == too_big[1] and dead[b"rem"].value == reminder[1]
    reasons = {k: orjson.loads(dict(m.headers)["trackerflow.error"]) for k, m in dead.items()}
    assert (
        "over the" in reasons[b"huge"]["reason"]
        and "history changelog" in (reasons[b"huge"]["reason"])
    )
    assert "pending reminders would take" in reasons[b"rem"]["reason"]

    heads = run.wait_for_events(len(mixed) - 2)
    assert heads["big"]["state"] is None and heads["big"]["count"] == 3
    assert heads["huge"]["count"] == 1 and heads["huge"]["state"]["latest_message"]["text"] == (
        "still here"
    )
    assert heads["rem"]["count"] == 1 and "reminders" not in heads["rem"]
    expected, _ = offline(records)  # the sample's conversations fold as if alone
    assert {c: heads[c]["state"] for c in expected} == {c: h["state"] for c, h in expected.items()}

    def check_big() -> None:
        tracker = get_json(run, "/conversations/big/tracker")
        assert tracker["slots"]["a"] == "a" * half and tracker["slots"]["b"] == "b" * half
        assert tracker["latest_message"]["text"] == "hi"
        listed = get_json(run, "/conversations?limit=1000")["conversations"]
        [summary] = [s for s in listed if s["sender_id"] == "big"]
        assert summary["events"] == 3 and summary["latest_event_time"] == 1_700_000_002.0

    check_big()
    # restored from the changelogs (memory) or from its database (rocksdb): the same answers
    kill(run.workers[0])
    run.start_worker()
    wait_for_health(run, 0, lambda h: len(h.get("partitions", [])) == 6)
    check_big()


def test_a_record_larger_than_the_dead_letter_topic_takes_is_cut_and_the_partition_goes_on(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The events topic may accept more than trackerflow reads (an existing topic, say): such a
    record is a dead letter kept to ``max_record_bytes``, and the partition folds on."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    run = Run(kafka_bootstrap, tmp_path, max_record_bytes=100_000)
    try:
        admin = KafkaAdminClient(bootstrap_servers=run.bootstrap)
        config = {"cleanup.policy": "delete", "max.message.bytes": "1000000"}
        events = f"{run.prefix}.events"
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, events, configs=config)])
        admin.close()
        big = orjson.dumps(
            {"sender_id": "c1", "event": "slot", "name": "s", "value": "x" * 400_000}
        )
        after = b'{"sender_id": "c1", "event": "pause", "timestamp": 2.0}'
        run.start_worker()
        run.produce([(b"c1", big), (b"c1", after)])
        heads = run.wait_for_events(1, deadline_s=60)
        assert heads["c1"]["count"] == 1 and heads["c1"]["state"]["paused"] is True
        [dead] = run.read(".dlq", timeout_ms=5000)
        assert dead.key == b"c1" and dead.value == big[: 100_000 - 2]
        headers = dict(dead.headers)
        assert orjson.loads(headers["trackerflow.truncated"]) == {
            "key": 2, "value": len(big), "headers": 0
        }  # fmt: skip
        assert (
            "over the limit of 100000 bytes" in orjson.loads(headers["trackerflow.error"])["reason"]
        )
        assert orjson.loads(headers["trackerflow.source"])["offset"] == 0
        assert run.health(0)["records"] == {
            "folded": 1, "skipped": 0, "rekeyed": 0, "replaced": 0, "dead": 1
        }  # fmt: skip
    finally:
        run.stop_all()


def test_a_limit_lowered_while_the_worker_runs_is_read_again_and_kept(run: Run) -> None:
    """A changelog's max.message.bytes lowered after the worker started: the transaction the
    broker refuses is rolled back, the limits are read again, and the fold fits them."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    from streams.topics import changelog_config

    run.start_worker()
    run.produce([(b"c0", b'{"sender_id": "c0", "event": "pause", "timestamp": 1.0}')])
    run.wait_for_events(1, deadline_s=60)
    admin = KafkaAdminClient(bootstrap_servers=run.bootstrap)
    config = {**changelog_config(), "min.insync.replicas": "1", "max.message.bytes": "300000"}
    heads = f"{run.prefix}-heads-changelog"
    admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, heads, configs=config)])
    admin.close()

    def slot(name: str, offset: int) -> tuple[bytes, bytes]:
        body = {"sender_id": "big", "event": "slot", "name": name, "value": name * 150_000}
        return b"big", orjson.dumps({**body, "timestamp": 2.0 + offset})

    run.produce([slot("a", 0), slot("b", 1)])  # a head of 300 KB: over the new limit
    changelog = run.wait_for_events(3, deadline_s=90)
    assert changelog["big"]["count"] == 2 and changelog["big"]["state"] is None
    log = (run.tmp / "worker-0.log").read_text()
    assert "MessageSizeTooLarge" in log
    assert "the topics' limits read again (a changelog record may now hold 234464 bytes)" in log
    tracker = get_json(run, "/conversations/big/tracker")
    assert tracker["slots"] == {"a": "a" * 150_000, "b": "b" * 150_000}

    # raised again: read within a minute (nothing is refused), and used by the partition the
    # worker still owns, so the head is written with its state again
    admin = KafkaAdminClient(bootstrap_servers=run.bootstrap)
    config["max.message.bytes"] = "1000000"
    admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, heads, configs=config)])
    admin.close()
    deadline = time.monotonic() + 90
    while "the topics' limits changed" not in log and time.monotonic() < deadline:
        time.sleep(1)
        log = (run.tmp / "worker-0.log").read_text()
    assert "changelog record may now hold 934464 bytes (before: 234464)" in log
    run.produce([slot("c", 2)])
    changelog = run.wait_for_events(4, deadline_s=60)
    assert changelog["big"]["count"] == 3
    assert changelog["big"]["state"]["slots"] == {k: k * 150_000 for k in "abc"}
    assert log.count("MessageSizeTooLarge") == 1  # refused once, when it was lowered


@pytest.fixture
def own_broker(local_kafka_version: str, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A broker of the test's own (the test stops and starts it): its data dir and version."""
    data_dir = tmp_path / "own-broker"
    broker.start(data_dir, version=local_kafka_version)
    try:
        yield data_dir, local_kafka_version
    finally:
        broker.stop(data_dir)


def test_a_broker_restart_under_a_running_worker_loses_nothing_and_health_says_so(
    own_broker: tuple[Path, str], tmp_path: Path
) -> None:
    data_dir, version = own_broker
    bootstrap = broker.start(data_dir, version=version).bootstrap  # already running: its address
    run = Run(bootstrap, tmp_path, per_transaction=3)
    try:
        records = sample()
        half = len(records) // 2
        run.start_worker()
        assert_producers(run, 0)
        run.produce(records[:half])
        broker.stop(data_dir)  # while the worker folds and commits what just came
        # (a transaction failing as the broker went away may say "degraded" first)
        down = wait_for_health(run, 0, lambda h: h["kafka"]["answering"] is False, deadline_s=30)
        assert down["status"] == "degraded", down
        assert down["kafka"]["answering"] is False and down["kafka"]["error"], down
        assert down["kafka"]["unanswered_s"] > 0
        time.sleep(8)  # long enough for aiokafka to retry every connection many times over

        again = broker.start(data_dir, version=version)
        assert again.bootstrap == bootstrap  # back on its port
        up = wait_for_health(run, 0, lambda h: h["status"] == "ok", deadline_s=60)
        assert up["kafka"] == {"answering": True, "unanswered_s": 0.0, "error": None}
        run.produce(records[half:])
        assert_folded_exactly_once(run, records, deadline_s=120)
        done = wait_for_health(
            run, 0, lambda h: h["records"]["folded"] == len(records) and not any(h["lag"].values())
        )
        assert done["records"]["folded"] == len(records) and done["records"]["dead"] == 0
        assert done["lag"] == {str(p): 0 for p in range(6)}
        assert_producers(run, 0)
    finally:
        run.stop_all()
    log = (tmp_path / "worker-0.log").read_text()
    assert log.count("Kafka does not answer") == 1, log[-3000:]
    assert log.count("Kafka answers again, after") == 1, log[-3000:]
    # aiokafka retried every connection tens of times a second: one line of each kind per 30 s
    retries = [line for line in log.splitlines() if " aiokafka" in line]
    assert len(retries) < 40, "\n".join(retries[-40:])


def test_a_topic_refusing_a_transactions_signals_holds_their_partitions_and_loses_nothing(
    run: Run,
) -> None:
    """The signals topic refuses records (its max.message.bytes lowered below one signal): the
    transactions with signals are aborted, not committed without them (aiokafka would commit
    them), their partitions wait longer after each failure and /health says so; once the topic
    takes them again, every event and signal is there once."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    def signals_take(limit: int) -> None:
        admin = KafkaAdminClient(bootstrap_servers=run.bootstrap)
        config = {"max.message.bytes": str(limit)}
        topic = ConfigResource(ConfigResourceType.TOPIC, f"{run.prefix}.signals", configs=config)
        admin.alter_configs([topic])
        admin.close()

    run.start_worker()
    assert_producers(run, 0)
    signals_take(150)
    records = sample()
    run.produce(records)
    held = wait_for_health(
        run,
        0,
        lambda h: any(f["failed_transactions"] >= 3 for f in h["failing"]),
        deadline_s=90,
    )
    assert held["status"] == "degraded", held
    assert all("MessageSizeTooLarge" in f["error"] for f in held["failing"])
    assert run.read(".signals", timeout_ms=3000) == []  # none committed without its signals
    signals_take(2 * 1024 * 1024)
    assert_folded_exactly_once(run, records, deadline_s=120)
    done = wait_for_health(run, 0, lambda h: h["records"]["folded"] == len(records))
    assert done["status"] == "ok" and done["failing"] == [], done
    log = (run.tmp / "worker-0.log").read_text()
    assert "3 in a row); rolling back in 1 s" in log
