"""``make bench-pipeline``: one worker on a real broker, end to end, next to a raw consume baseline.

In one run: start a local broker (``streams.broker``, in a temporary data dir; or use
``KAFKA_BOOTSTRAP_SERVERS``), create a fresh set of topics (unique prefix and app id,
``streams.topics.ensure_topics``), have the broker create its internal topics
(``__consumer_offsets``, ``__transaction_state``: a throwaway group joins and a transactional
producer initialises, as on any broker in service, so a fresh broker's one-time set-up is not
counted as the worker's start-up), generate ``--events`` realistic interleaved broker records
(``bench.generate``) and

1. publish them all with the project's ``Publisher`` (idempotent, ``acks=all``): publish rate;
2. (a) raw consume: read the whole events topic from the beginning with aiokafka (the worker's
   client library), ``isolation_level="read_committed"``, no processing — the baseline;
3. (b) pipeline: start one ``python -m streams.worker_cli`` process and time it from its start
   until its ``/health`` reports every record folded (start-up included, nothing subtracted;
   start-up, i.e. time to the first fold, is shown on its own line too), then count the signals
   it produced on the signals topic (read_committed) against an offline fold of the same records;
4. latency: with the worker caught up, publish ``followup`` events (each makes exactly one
   ``followup_action`` signal, recognised by its action name) at a steady ``--rate`` for
   ``--seconds`` and time, per record, publish -> broker ack and publish -> signal arrival for
   a read_committed reader of the signals topic: the pipeline alone, as deployed. Then the
   same again with the reference readers: publish -> arrival on the events topic (the
   baseline: what any consumer could see) and publish -> signal for a read_uncommitted reader
   too. The reference readers' fetches are work for the broker that shares the machine with
   the worker (on two cores, they added 6-26 ms to the read_committed p99 in the runs that
   led to this), hence the phase without them; p99 per 5 s window too;
5. restart: stop the worker (SIGTERM) and start it again; the time until it owns every
   partition again, and how many changelog records it read to get there (``--store``: the
   memory store reads the whole changelogs, the rocksdb store only what its database lacks).

Each phase also shows who used the CPUs (worker, broker, this process, anything else), so a run
disturbed by other work on the machine shows it.

The worker folds what has arrived, up to ``TRACKERFLOW_MAX_BATCH_RECORDS`` per partition
(``--max-batch-records`` sets it for the worker), and commits it in one transaction, so a
read_committed reader sees a signal once that batch commits; the read_uncommitted reader shows
the latency without the commit. One worker runs as one worker should: one transaction for all
its partitions (``--partitions-per-transaction``, default all the events partitions; 1 measures
the worker's default, one transaction per partition, which lets as many workers as partitions
share the load).

Targets (issue): (b) at least half of (a); p99 publish -> signal under 50 ms at 1,000 events/s.
Printed as met / NOT met, never asserted. The output also goes to ``bench/out/bench-pipeline.txt``.

    python -m bench.pipeline [--events 500000] [--rate 1000] [--seconds 20] [--max-batch-records N]
                             [--partitions-per-transaction N] [--store memory|rocksdb]
                             [--broker-jit quick|full] [--worker-log FILE] [--output FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from bench.generate import Plan, records
from processors.stream import Inbound, StreamFolder
from streams import broker, fetching
from streams.publisher import Encoded, Publisher
from streams.replay import paused_gc
from streams.settings import Settings, kafka_client_config, load_settings
from streams.topics import Topics, ensure_topics

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
TARGET_RATIO = 0.5
TARGET_P99_MS = 50.0
TARGET_RATE = 1000.0
MARK = "utter_bench_"  # action names of the latency phase: MARK + record number
READERS = ("read_committed", "read_uncommitted")  # of the signals topic
ACK_ROW, EVENTS_ROW = "ack", "events"
LATENCY_ROWS = (ACK_ROW, EVENTS_ROW, *READERS)
# the latency phases: the pipeline as deployed (the publisher, the worker, one read_committed
# reader of the signals topic), then again with the reference readers
ALONE, REFERENCES = "the pipeline alone", "with the reference readers"
PHASE_ROWS = {ALONE: (ACK_ROW, "read_committed"), REFERENCES: LATENCY_ROWS}
LATENCY_LABELS = {
    ACK_ROW: "publish -> broker ack (Publisher)",
    EVENTS_ROW: "publish -> on the events topic (baseline)",
    "read_committed": "publish -> signal, read_committed",
    "read_uncommitted": "publish -> signal, read_uncommitted",
}
T = TypeVar("T")


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


# -- output -----------------------------------------------------------------------------------


class Report:
    """Lines printed to stdout and kept for the output file; progress goes to stderr only."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def say(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    @staticmethod
    def progress(line: str) -> None:
        print(f"  .. {line}", file=sys.stderr, flush=True)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(self.lines) + "\n")


def machine() -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    return f"{model}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds a process has used so far (NaN if unknown)."""
    if pid is None:
        return math.nan
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return math.nan


def rss_mib(pid: int | None) -> float:
    """A process's resident memory in MiB (NaN if unknown)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return math.nan


def system_busy() -> float:
    """CPU seconds all CPUs have been busy since boot (``/proc/stat``; NaN if unknown)."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return math.nan
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_line(phase: str, wall: float, worker: float, broker: float, own: float, busy: float) -> str:
    """Who used the CPUs during a phase (``broker`` NaN: an external broker, not measured)."""
    local = not math.isnan(broker)
    rest = max(0.0, busy - worker - own - (broker if local else 0.0))  # ticks: not exact
    return (
        f"CPU during {phase}, {wall:.1f} s wall x {os.cpu_count()} CPUs: worker {worker:.1f} s "
        f"({worker / wall:.0%} of one CPU), broker "
        + (f"{broker:.1f} s" if local else "external (not measured)")
        + f", this process {own:.1f} s, anything else {rest:.1f} s"
    )


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (``p`` in 0..100)."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


# -- the broker and the worker ----------------------------------------------------------------


@dataclass
class Deployment:
    """The broker (ours or the configured one), the topics and the worker process."""

    tmp: Path
    bootstrap: str = ""
    broker_dir: Path | None = None  # set when this run started the broker
    broker_version: str = ""
    prefix: str = field(default_factory=lambda: f"bench{uuid.uuid4().hex[:10]}")
    worker: subprocess.Popen[bytes] | None = None
    broker_pid: int | None = None  # of the local broker
    web_port: int = 0
    max_batch_records: int | None = None
    partitions_per_transaction: int | None = None
    store: str = "memory"
    broker_jit: str = broker.DEFAULT_JIT

    @property
    def log_path(self) -> Path:
        return self.tmp / "worker.log"

    def start_broker(self, report: Report) -> None:
        configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
        if configured:
            if not broker.reachable(configured):
                raise BenchError(f"KAFKA_BOOTSTRAP_SERVERS={configured} does not answer")
            self.bootstrap, self.broker_version = configured, "external"
            return
        version = os.environ.get("TRACKERFLOW_KAFKA_VERSION", broker.DEFAULT_VERSION)
        self.broker_dir = self.tmp / "broker"
        started = time.perf_counter()
        info = broker.start(self.broker_dir, version=version, jit=self.broker_jit)
        self.bootstrap = info.bootstrap
        self.broker_version = f"{version} (local, pid {info.pid}, JIT {self.broker_jit})"
        self.broker_pid = info.pid
        report.progress(f"broker {info.bootstrap} up in {time.perf_counter() - started:.1f} s")

    def settings(self) -> Settings:
        return load_settings(
            bootstrap_servers=self.bootstrap,
            topic_prefix=self.prefix,
            app_id=self.prefix,
            max_batch_records=self.max_batch_records,
            partitions_per_transaction=self.partitions_per_transaction,
        )

    def start_worker(self) -> None:
        self.web_port = broker.free_port()
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "TRACKERFLOW_BOOTSTRAP_SERVERS": self.bootstrap,
            "TRACKERFLOW_TOPIC_PREFIX": self.prefix,
            "TRACKERFLOW_APP_ID": self.prefix,
            "TRACKERFLOW_WEB_HOST": "127.0.0.1",
            "TRACKERFLOW_WEB_PORT": str(self.web_port),
        }
        if self.max_batch_records is not None:
            env["TRACKERFLOW_MAX_BATCH_RECORDS"] = str(self.max_batch_records)
        if self.partitions_per_transaction is not None:
            env["TRACKERFLOW_PARTITIONS_PER_TRANSACTION"] = str(self.partitions_per_transaction)
        env["TRACKERFLOW_STORE"] = self.store
        env["TRACKERFLOW_STATE_DIR"] = str(self.tmp / "state")
        with self.log_path.open("ab") as log:
            self.worker = subprocess.Popen(
                [sys.executable, "-m", "streams.worker_cli", "--loglevel", "warning"],
                env=env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def health(self) -> dict[str, Any] | None:
        """The worker's ``/health``, or None while it does not answer."""
        url = f"http://127.0.0.1:{self.web_port}/health"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                found: dict[str, Any] = orjson.loads(response.read())
                return found
        except (OSError, ValueError):
            return None

    def check_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is not None:
            raise BenchError(
                f"the worker exited with status {self.worker.returncode}; its log ends with:\n"
                + broker.log_tail(self.log_path)
            )

    def stop_worker(self) -> None:
        """SIGTERM to the worker's process group (its own session), SIGKILL after 20 s."""
        process, self.worker = self.worker, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def stop_broker(self) -> None:
        if self.broker_dir is not None:
            broker.stop(self.broker_dir)
            self.broker_dir = None


# -- phases -----------------------------------------------------------------------------------


def generate(events: int, seed: int) -> list[Encoded]:
    """The records of ``bench.generate`` as Rasa writes them (``json.dumps``), keyed by sender."""
    return [
        Encoded(r["sender_id"], r["sender_id"].encode(), json.dumps(r).encode())
        for r in records(Plan(events, seed=seed))
    ]


def _record_signal(value: bytes) -> bool:
    """A signal caused by a record (reminder signals are caused by the clock: the generated
    reminders were due in 2023, so each fires as missed as soon as the worker has folded it and
    has nothing else to read, which depends on how the records arrive)."""
    return b'"signal":"reminder_' not in value


def offline_signals(items: list[Encoded]) -> int:
    """How many signals folding ``items`` once, in order, produces: what the worker must emit,
    reminder signals aside."""
    folder = StreamFolder({}, {})
    count = 0
    for offset, item in enumerate(items):
        outcome = folder.process(Inbound("events", 0, offset, item.key, item.value, 0.0))
        if outcome.kind != "folded":
            raise BenchError(f"generated record {offset} was {outcome.kind}: {outcome.error}")
        count += len(outcome.signals)
    return count


async def publish_all(settings: Settings, items: list[Encoded]) -> float:
    """Publish ``items`` with the project's publisher; seconds from first send to all acked."""
    async with Publisher(settings) as publisher:
        started = time.perf_counter()
        report = await publisher.publish_many(items)
        took = time.perf_counter() - started
    if not report.ok:
        first = report.failures[0]
        raise BenchError(f"{len(report.failures)} records not published, first: {first.reason}")
    return took


def consumer(settings: Settings, isolation: str, *topics: str) -> Any:
    """An aiokafka consumer without a group (nothing committed) at the given isolation level.

    Its broker-side fetch wait is 20 ms, like the worker's: aiokafka leaves partitions with
    unread buffered records out of the next fetch, and the default 500 ms wait of that fetch
    would show up in the measured latencies as the reader's own delay."""
    return AIOKafkaConsumer(
        *topics,
        **kafka_client_config(settings),
        group_id=None,
        enable_auto_commit=False,
        isolation_level=isolation,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
    )


async def warm_broker(settings: Settings, topic: str) -> float:
    """Make the broker create its internal topics before anything is timed: a throwaway group
    joins (``__consumer_offsets``) and a transactional producer initialises
    (``__transaction_state``). A broker in service has both; a fresh one creates them on first
    use, which would otherwise be counted as the worker's start-up. Returns the seconds taken."""
    started = time.perf_counter()
    config = kafka_client_config(settings)
    producer = AIOKafkaProducer(**config, transactional_id=f"{settings.app_id}-bench-warm-up")
    await producer.start()
    try:  # an empty transaction: its producer id is asked for (and kept) by then
        await producer.begin_transaction()
        await producer.commit_transaction()
    finally:
        await producer.stop()
    group = AIOKafkaConsumer(topic, **config, group_id=f"{settings.app_id}-bench-warm-up")
    await group.start()
    try:
        deadline = time.perf_counter() + 30
        while not group.assignment():  # joined once partitions are assigned
            if time.perf_counter() > deadline:
                raise BenchError("the warm-up consumer got no partitions in 30 s")
            await group.getmany(timeout_ms=50)
    finally:
        await group.stop()
    return time.perf_counter() - started


async def count_topic(
    settings: Settings,
    topic: str,
    done: Callable[[int], bool],
    idle_s: float,
    keep: Callable[[bytes], bool] | None = None,
) -> tuple[int, float]:
    """Read ``topic`` (read_committed) from the beginning until ``done(count)`` or nothing came
    for ``idle_s`` seconds; returns the count (of the records ``keep`` accepts, if given) and the
    seconds from creating the consumer."""
    started = time.perf_counter()
    reader = consumer(settings, "read_committed", topic)
    await reader.start()
    try:
        count, last = 0, time.perf_counter()
        while not done(count):
            batches = await reader.getmany(timeout_ms=500)
            now = time.perf_counter()
            if batches:
                for batch in batches.values():
                    count += len(batch) if keep is None else sum(keep(m.value) for m in batch)
                last = now
            elif now - last > idle_s:
                break
        return count, time.perf_counter() - started
    finally:
        await reader.stop()


@dataclass
class PipelineRun:
    seconds: float = 0.0  # worker start -> all folded
    http_up: float = math.nan  # worker start -> /health answers
    first_fold: float = math.nan  # worker start -> folded > 0
    worker_cpu: float = math.nan  # CPU seconds the worker used until all folded
    broker_cpu: float = math.nan  # CPU seconds the local broker used meanwhile
    own_cpu: float = math.nan  # CPU seconds this process used meanwhile (polling)
    all_cpu: float = math.nan  # CPU seconds the whole machine was busy meanwhile
    counts: dict[str, int] = field(default_factory=dict)
    rss_mib: float = math.nan  # the worker's resident memory once all is folded


def raw_consume_compiled(settings: Settings, topic: str, total: int) -> float | None:
    """Seconds to consume ``topic`` raw with the batch reader the worker uses
    (``streams.fetching``; None if it is off or not built)."""
    if not settings.compiled_reader or not fetching.install():
        return None
    try:
        count, seconds = run_async(count_topic(settings, topic, lambda n: n >= total, 30))
    finally:
        fetching.uninstall()  # the rest of the benchmark reads as aiokafka does
    return seconds if count >= total else None


def run_pipeline(deployment: Deployment, total: int, report: Report, stall_s: float) -> PipelineRun:
    """Start the worker and poll ``/health`` until it has folded ``total`` records."""
    result = PipelineRun()
    broker_cpu, own_cpu, all_cpu = (
        cpu_seconds(deployment.broker_pid),
        time.process_time(),
        system_busy(),
    )
    started = time.perf_counter()
    deployment.start_worker()
    assert deployment.worker is not None
    worker_pid = deployment.worker.pid
    progress_at, last_folded, last_change = started, -1, started
    while True:
        deployment.check_worker()
        health = deployment.health()
        now = time.perf_counter()
        if health is not None:
            counts = {k: int(v) for k, v in health.get("records", {}).items()}
            folded = counts.get("folded", 0)
            if math.isnan(result.http_up):
                result.http_up = now - started
            if folded > 0 and math.isnan(result.first_fold):
                result.first_fold = now - started
            if sum(counts.values()) >= total:
                result.seconds, result.counts = now - started, counts
                result.worker_cpu = cpu_seconds(worker_pid)
                result.broker_cpu = cpu_seconds(deployment.broker_pid) - broker_cpu
                result.own_cpu = time.process_time() - own_cpu
                result.all_cpu = system_busy() - all_cpu
                result.rss_mib = rss_mib(worker_pid)
                return result
            if folded != last_folded:
                last_folded, last_change = folded, now
            if now - progress_at >= 10:
                progress_at = now
                report.progress(
                    f"worker: {folded:,} of {total:,} folded after {now - started:.0f} s"
                )
        if now - last_change > stall_s:
            raise BenchError(
                f"the worker folded nothing new for {stall_s:.0f} s (at {max(last_folded, 0):,} "
                f"of {total:,}); its log ends with:\n{broker.log_tail(deployment.log_path)}"
            )
        time.sleep(0.05)


def restart(
    deployment: Deployment, partitions: int, stall_s: float
) -> tuple[float, float, int, float]:
    """Stop the worker, start it again; (seconds to stop, seconds from the start until it owns
    all ``partitions`` again, changelog records it read, its resident MiB then)."""
    started = time.perf_counter()
    deployment.stop_worker()
    stopped = time.perf_counter()
    deployment.start_worker()
    while True:
        deployment.check_worker()
        health = deployment.health()
        now = time.perf_counter()
        if health is not None and len(health.get("partitions", ())) == partitions:
            restored = int(health.get("restored_records", 0))
            assert deployment.worker is not None
            return stopped - started, now - stopped, restored, rss_mib(deployment.worker.pid)
        if now - stopped > stall_s:
            raise BenchError(f"the restarted worker did not take its partitions in {stall_s:.0f} s")
        time.sleep(0.05)


@dataclass
class LatencyRun:
    rows: tuple[str, ...] = LATENCY_ROWS  # what was measured (ACK_ROW and readers)
    sent: int = 0
    measured: int = 0  # records after the warm-up
    achieved_rate: float = 0.0
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)  # ascending
    windows_ms: dict[str, list[float]] = field(default_factory=dict)  # p99 per window, in order
    window_s: float = 5.0
    worker_cpu: float = math.nan  # CPU seconds of the worker during the phase
    broker_cpu: float = math.nan  # of the local broker
    own_cpu: float = math.nan  # of this process
    all_cpu: float = math.nan  # CPU seconds the machine was busy during the phase
    wall: float = math.nan
    transactions: int = 0  # the worker committed during the phase
    fetches: dict[str, int] = field(default_factory=dict)  # the worker sent, by wait, in it


async def _positioned(reader: Any, topic: str, partitions: int) -> None:
    """Assign the ``partitions`` of ``topic`` and resolve the positions at its end."""
    await reader.start()
    assigned = [TopicPartition(topic, p) for p in range(partitions)]
    reader.assign(assigned)
    await reader.seek_to_end(*assigned)
    for tp in assigned:
        await reader.position(tp)


def _signal_mark(value: dict[str, Any]) -> str | None:
    return value.get("action") if value.get("signal") == "followup_action" else None


def _event_mark(value: dict[str, Any]) -> str | None:
    return value.get("name") if value.get("event") == "followup" else None


async def _read(
    reader: Any,
    mark_of: Callable[[dict[str, Any]], str | None],
    arrivals: dict[int, float],
    stop: asyncio.Event,
) -> None:
    """Note when each marked record first comes out of ``reader``'s ``getmany``."""
    while not stop.is_set():
        batches = await reader.getmany(timeout_ms=50)
        now = time.perf_counter()
        for batch in batches.values():
            for message in batch:
                mark = mark_of(orjson.loads(message.value))
                if isinstance(mark, str) and mark.startswith(MARK):
                    arrivals.setdefault(int(mark.removeprefix(MARK)), now)


async def measure_latency(
    settings: Settings,
    *,
    rows: tuple[str, ...] = LATENCY_ROWS,
    rate: float,
    seconds: float,
    warmup: float,
    conversations: int,
    grace: float,
) -> LatencyRun:
    """Publish followups at ``rate``; time each one's broker ack, its arrival on the events topic
    (what any consumer could see: the baseline) and its signal at both isolation levels: those
    of ``rows`` (of ``LATENCY_ROWS``, ``ACK_ROW`` always); a reader is only started for a row it
    measures, as every reader adds fetches for the broker to answer."""
    topics = Topics.from_settings(settings)
    warm = round(rate * warmup)
    total = warm + round(rate * seconds)
    arrivals: dict[str, dict[int, float]] = {name: {} for name in rows}
    readers = {
        name: (consumer(settings, "read_committed"), topics.events, _event_mark)
        if name == EVENTS_ROW
        else (consumer(settings, name), topics.signals, _signal_mark)
        for name in rows
        if name != ACK_ROW
    }
    partitions = {
        topics.events: settings.events_partitions,
        topics.signals: settings.signals_partitions,
    }
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    sent = [math.nan] * total
    acks = arrivals[ACK_ROW]
    result = LatencyRun(rows=rows, sent=total, measured=total - warm)

    def acked(i: int) -> Callable[[asyncio.Future[Any]], None]:
        def note(done: asyncio.Future[Any]) -> None:
            if not done.cancelled() and done.exception() is None:
                acks.setdefault(i, time.perf_counter())

        return note

    try:
        for reader, topic, _ in readers.values():
            await _positioned(reader, topic, partitions[topic])
        tasks = [
            asyncio.create_task(_read(reader, mark_of, arrivals[name], stop))
            for name, (reader, _, mark_of) in readers.items()
        ]
        async with Publisher(settings) as publisher:
            await asyncio.sleep(0.5)  # the readers' first fetches are under way
            origin = time.perf_counter()
            for i in range(total):
                delay = origin + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                event = {"event": "followup", "name": f"{MARK}{i}", "timestamp": time.time()}
                sent[i] = time.perf_counter()
                delivery = await publisher.publish(event, f"bench-latency-{i % conversations:05d}")
                delivery.add_done_callback(acked(i))
            if total > warm + 1:
                result.achieved_rate = (total - warm - 1) / (sent[-1] - sent[warm])
        deadline = time.perf_counter() + grace
        while time.perf_counter() < deadline and any(len(a) < total for a in arrivals.values()):
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        for task in tasks:
            with contextlib.suppress(Exception):
                await task
        for reader, _, _ in readers.values():
            await reader.stop()
    per_window = max(1, round(rate * result.window_s))
    for name in rows:
        got = arrivals[name]
        result.latencies_ms[name] = sorted(
            (got[i] - sent[i]) * 1000 for i in range(warm, total) if i in got
        )
        result.windows_ms[name] = [
            percentile(sorted((got[i] - sent[i]) * 1000 for i in window if i in got), 99)
            for window in (
                range(start, min(start + per_window, total))
                for start in range(warm, total, per_window)
            )
        ]
    return result


# -- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pipeline", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--events", type=int, default=500_000, help="records (500,000)")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (7)")
    parser.add_argument("--rate", type=float, default=TARGET_RATE, help="latency: events/s (1000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="latency: measured s (20)")
    parser.add_argument("--warmup", type=float, default=2.0, help="latency: unmeasured s (2)")
    parser.add_argument(
        "--conversations", type=int, default=500, help="latency: conversations (500)"
    )
    parser.add_argument(
        "--max-batch-records",
        type=int,
        help="the worker's TRACKERFLOW_MAX_BATCH_RECORDS (default: the environment's or 5000)",
    )
    parser.add_argument(
        "--partitions-per-transaction",
        type=int,
        help="the worker's TRACKERFLOW_PARTITIONS_PER_TRANSACTION (default: all the events "
        "partitions, as one worker should run; 1 is the worker's own default, for many workers)",
    )
    parser.add_argument(
        "--stall", type=float, default=180.0, help="give up after this long without progress (180)"
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the offline fold that counts the signals"
    )
    parser.add_argument(
        "--output", type=Path, default=OUT / "bench-pipeline.txt", help="also write output here"
    )
    parser.add_argument(
        "--store",
        choices=("memory", "rocksdb"),
        default="memory",
        help="the worker's TRACKERFLOW_STORE (memory)",
    )
    parser.add_argument(
        "--broker-jit",
        choices=tuple(broker.JIT_FLAGS),
        default=broker.DEFAULT_JIT,
        help="how the local broker's JVM compiles (see `trackerflow broker start --help`; "
        f"default {broker.DEFAULT_JIT})",
    )
    parser.add_argument("--worker-log", type=Path, help="keep a copy of the worker's log here")
    args = parser.parse_args(argv)
    if args.events < 1 or args.rate <= 0 or args.seconds <= 0 or args.conversations < 1:
        parser.error("--events, --rate, --seconds and --conversations must be positive")
    if args.partitions_per_transaction is None:
        args.partitions_per_transaction = load_settings().events_partitions
    elif args.partitions_per_transaction < 1:
        parser.error("--partitions-per-transaction must be positive")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    deployment = Deployment(
        Path(tempfile.mkdtemp(prefix="trackerflow-bench-")),
        max_batch_records=args.max_batch_records,
        partitions_per_transaction=args.partitions_per_transaction,
        store=args.store,
        broker_jit=args.broker_jit,
    )
    return execute(
        lambda report: run(args, deployment, report), deployment, args.output, args.worker_log
    )


def execute(
    body: Callable[[Report], None],
    deployment: Deployment,
    output: Path,
    worker_log: Path | None = None,
) -> int:
    """Run a benchmark ``body`` on ``deployment`` and always clean up (worker, broker, temporary
    files, even on Ctrl-C or SIGTERM); save what it reported to ``output``. The exit status."""
    report = Report()
    previous_int = signal.getsignal(signal.SIGINT)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        body(report)
        status = 0
    except (BenchError, broker.BrokerError) as error:
        report.say(f"\nbenchmark failed: {error}")
        status = 1
    except KeyboardInterrupt:
        report.say("\ninterrupted")
        status = 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # cleaning up is bounded: let it finish
            signal.signal(sig, signal.SIG_IGN)
        with _cleanup_step(report, "stopping the worker"):
            deployment.stop_worker()
        with _cleanup_step(report, "stopping the broker"):
            deployment.stop_broker()
        if worker_log is not None and deployment.log_path.is_file():
            with _cleanup_step(report, "copying the worker log"):
                shutil.copyfile(deployment.log_path, worker_log)
        shutil.rmtree(deployment.tmp, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        if report.lines:
            output.parent.mkdir(parents=True, exist_ok=True)
            report.save(output)
            print(f"(saved to {output})", file=sys.stderr)
    return status


def run_async(phase: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(phase)``, where SIGTERM cancels the phase like Ctrl-C does (so its
    clients close) and then raises KeyboardInterrupt."""

    async def guarded() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        previous = signal.getsignal(signal.SIGTERM)
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await phase
        finally:
            loop.remove_signal_handler(signal.SIGTERM)  # which sets SIG_DFL
            signal.signal(signal.SIGTERM, previous)

    try:
        return asyncio.run(guarded())
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # cleaned up like Ctrl-C


@contextlib.contextmanager
def _cleanup_step(report: Report, what: str) -> Iterator[None]:
    try:
        yield
    except Exception as error:  # keep cleaning up; say what was left behind
        report.say(f"warning: {what} failed: {error}")


def latency_phase(
    args: argparse.Namespace,
    deployment: Deployment,
    settings: Settings,
    report: Report,
    phase: str,
) -> LatencyRun:
    """One latency phase (``PHASE_ROWS``), with the CPU each took and the worker's
    transactions."""
    seconds = args.warmup + args.seconds
    report.progress(f"latency, {phase}: {args.rate:,.0f} events/s for {seconds:.0f} s")
    assert deployment.worker is not None
    health = deployment.health() or {}
    transactions, fetches = health.get("transactions", 0), health.get("fetches") or {}
    worker_cpu, broker_cpu, own_cpu, all_cpu, started = (
        cpu_seconds(deployment.worker.pid),
        cpu_seconds(deployment.broker_pid),
        time.process_time(),
        system_busy(),
        time.perf_counter(),
    )
    # this process's own garbage-collection pauses would show up as latency: collect now and
    # pause the collector while measuring (the worker manages its own collector)
    gc.collect()
    with paused_gc():
        latency = run_async(
            measure_latency(
                settings,
                rows=PHASE_ROWS[phase],
                rate=args.rate,
                seconds=args.seconds,
                warmup=args.warmup,
                conversations=args.conversations,
                grace=10.0,
            )
        )
    latency.wall = time.perf_counter() - started
    latency.worker_cpu = cpu_seconds(deployment.worker.pid) - worker_cpu
    latency.broker_cpu = cpu_seconds(deployment.broker_pid) - broker_cpu
    latency.own_cpu = time.process_time() - own_cpu
    latency.all_cpu = system_busy() - all_cpu
    health = deployment.health() or {}
    latency.transactions = health.get("transactions", 0) - transactions
    latency.fetches = {
        wait: count - fetches.get(wait, 0) for wait, count in (health.get("fetches") or {}).items()
    }
    deployment.check_worker()
    return latency


def run(args: argparse.Namespace, deployment: Deployment, report: Report) -> None:
    total = args.events
    started = time.perf_counter()
    items = generate(total, args.seed)
    conversations = len({item.conversation_id for item in items})
    report.progress(f"generated {total:,} records in {time.perf_counter() - started:.1f} s")
    expected: int | None = None
    if not args.no_verify:
        started = time.perf_counter()
        expected = offline_signals(items)
        report.progress(
            f"offline fold: {expected:,} signals in {time.perf_counter() - started:.1f} s"
        )
    deployment.start_broker(report)
    settings = deployment.settings()
    topics = Topics.from_settings(settings)
    ensure_topics(settings)
    warm_s = run_async(warm_broker(settings, topics.events))
    report.progress(f"broker internal topics ready in {warm_s:.1f} s")

    publish_s = run_async(publish_all(settings, items))
    report.progress(f"published {total:,} records in {publish_s:.1f} s")
    del items
    raw_count, raw_s = run_async(count_topic(settings, topics.events, lambda n: n >= total, 30))
    if raw_count < total:
        raise BenchError(f"the raw consumer read only {raw_count:,} of {total:,} records")
    report.progress(f"raw consume: {total:,} records in {raw_s:.1f} s")
    compiled_s = raw_consume_compiled(settings, topics.events, total)

    pipe = run_pipeline(deployment, total, report, args.stall)
    report.progress(f"worker folded {total:,} records in {pipe.seconds:.1f} s")
    wanted = math.inf if expected is None else expected  # unknown: read until idle
    signals, _ = run_async(
        count_topic(settings, topics.signals, lambda n: n >= wanted, 10.0, _record_signal)
    )
    report.progress(f"{signals:,} signals on {topics.signals}")

    latencies = {
        phase: latency_phase(args, deployment, settings, report, phase) for phase in PHASE_ROWS
    }
    report.progress("restart")
    stop_s, restart_s, restored, restart_rss = restart(
        deployment, settings.events_partitions, args.stall
    )

    # -- the report --
    say = report.say
    say(f"trackerflow pipeline benchmark, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    say(f"machine: {machine()}")
    say(f"Python {sys.version.split()[0]}; Kafka {deployment.broker_version}; one worker")
    say(
        f"N = {total:,} events in {conversations:,} interleaved conversations (bench.generate, "
        f"seed {args.seed}); {settings.events_partitions} events partitions; "
        f"worker batches of at most {settings.max_batch_records:,} records per partition, "
        f"{settings.partitions_per_transaction} partition(s) per transaction; "
        f"{deployment.store} store; the worker reads fetched batches with "
        f"{'the compiled reader' if settings.compiled_reader else 'aiokafka'}"
    )
    say()
    say(f"{'measurement':56} {'events':>9} {'seconds':>8} {'events/s':>10}")
    rows = [
        ("publish (Publisher: idempotent, acks=all)", publish_s),
        ("(a) raw consume (aiokafka, read_committed, no processing)", raw_s),
        ("(b) pipeline: worker start -> all folded (end to end)", pipe.seconds),
    ]
    if compiled_s is not None:  # for reference: the baseline is (a), aiokafka as it comes
        rows.insert(2, ("    raw consume with the worker's compiled batch reader", compiled_s))
    for name, seconds in rows:
        say(f"{name:56} {total:>9,} {seconds:>8.2f} {total / seconds:>10,.0f}")
    # every record folded in the worker's first transaction (few events): nothing after it
    after = pipe.seconds - pipe.first_fold
    after_rate = f"{total / after:>10,.0f}" if after > 0 else f"{'-':>10}"
    say(f"{'    worker start-up: start -> HTTP API up':56} {'':>9} {pipe.http_up:>8.2f}")
    say(f"{'    worker start-up: start -> first fold':56} {'':>9} {pipe.first_fold:>8.2f}")
    say(f"{'    from the first fold on (for reference)':56} {total:>9,} {after:>8.2f} "
        f"{after_rate}")  # fmt: skip
    others = {k: v for k, v in pipe.counts.items() if k != "folded" and v}
    say(f"worker /health records: {pipe.counts}" + (f" (not folded: {others})" if others else ""))
    say(cpu_line("(b)", pipe.seconds, pipe.worker_cpu, pipe.broker_cpu, pipe.own_cpu, pipe.all_cpu))
    say(f"worker RSS once all was folded: {pipe.rss_mib:,.0f} MiB ({deployment.store} store)")
    check = "" if expected is None else f"; the offline fold of the same records gives {expected:,}"
    verdict = "" if expected is None else (" (match)" if signals == expected else " (MISMATCH)")
    say(
        f"signals on {topics.signals} (read_committed, reminder signals aside): "
        f"{signals:,}{check}{verdict}"
    )
    ratio = (total / pipe.seconds) / (total / raw_s)
    say()
    since_first = f"{raw_s / after:.3f}" if after > 0 else "-, all folded in the first"
    say(f"pipeline / raw consume: {ratio:.3f} (from the first fold on: {since_first})")
    say()
    say(
        f"latency: followup events at {args.rate:,.0f}/s over {args.conversations:,} "
        f"conversations, in two phases of {args.seconds:g} s after {args.warmup:g} s of "
        "warm-up each:"
    )
    say(
        f"  1. {ALONE}: the publisher, the worker and one read_committed reader of the signals "
        "topic, as deployed"
    )
    say(
        f"  2. {REFERENCES}: also a read_committed reader of the events topic (the baseline) "
        "and a read_uncommitted reader of the signals topic (each reader adds its fetches to "
        "the broker's work)"
    )
    say(
        "from the publish call to the ack callback / the reader's getmany returning the record "
        "(same process and clock)"
    )
    say(f"{'latency':45} {'arrived':>15} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8}")  # fmt: skip
    p99s: dict[tuple[str, str], float] = {}
    for number, (phase, latency) in enumerate(latencies.items(), 1):
        for name in latency.rows:
            values = latency.latencies_ms[name]
            p99s[(phase, name)] = percentile(values, 99)
            arrived = f"{len(values):,}/{latency.measured:,}"
            cells = " ".join(f"{percentile(values, p):>8.1f}" for p in (50, 95, 99, 100))
            say(f"{number}. {LATENCY_LABELS[name]:42} {arrived:>15} {cells}")
    for number, (phase, latency) in enumerate(latencies.items(), 1):
        say(f"{number}. {phase} (achieved {latency.achieved_rate:,.1f}/s):")
        say(f"  p99 ms per {latency.window_s:g} s window:")
        for name in latency.rows:
            shown = ", ".join(f"{v:,.0f}" for v in latency.windows_ms[name])
            say(f"    {LATENCY_LABELS[name]:42} {shown}")
        say(
            f"  worker transactions: {latency.transactions:,} "
            f"({latency.transactions / latency.wall:,.0f}/s, "
            f"{latency.achieved_rate * latency.wall / max(latency.transactions, 1):.1f} "
            "events each)"
        )
        if latency.fetches:  # how long they waited: see streams.fetch_wait
            say(
                "  worker fetches: "
                + ", ".join(
                    f"{wait} {count:,} ({count / latency.wall:,.0f}/s)"
                    for wait, count in sorted(latency.fetches.items())
                )
            )
        say(
            "  "
            + cpu_line(
                "the phase",
                latency.wall,
                latency.worker_cpu,
                latency.broker_cpu,
                latency.own_cpu,
                latency.all_cpu,
            )
        )
    say(
        f"restart ({deployment.store} store): stopped in {stop_s:.2f} s; started again, it owned "
        f"all {settings.events_partitions} partitions after {restart_s:.2f} s, having read "
        f"{restored:,} changelog records; worker RSS then {restart_rss:,.0f} MiB"
    )
    say()
    say("targets:")
    met = "met" if ratio >= TARGET_RATIO else "NOT met"
    say(f"  pipeline >= {TARGET_RATIO} x raw consume rate: {met} ({ratio:.3f})")
    for number, (phase, latency) in enumerate(latencies.items(), 1):
        for name in (row for row in READERS if row in latency.rows):
            complete = len(latency.latencies_ms[name]) == latency.measured
            p99 = p99s[(phase, name)]
            ok = complete and p99 < TARGET_P99_MS and args.rate >= TARGET_RATE
            missing = "" if complete else ", signals missing"
            say(
                f"  p99 publish -> signal < {TARGET_P99_MS:g} ms at {TARGET_RATE:,.0f} events/s "
                f"({name}, {number}. {phase}): {'met' if ok else 'NOT met'} ({p99:,.1f} ms at "
                f"{args.rate:,.0f}/s{missing})"
            )
    say(
        "  note: read_committed readers see a signal only once the worker commits the batch "
        "that made it"
    )


if __name__ == "__main__":
    sys.exit(main())
