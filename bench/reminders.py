"""``make bench-reminders``: how promptly one worker fires reminders, and what pending ones cost.

In one run: start a local broker (or use ``KAFKA_BOOTSTRAP_SERVERS``), fresh topics and one
``python -m streams.worker_cli`` process, then

1. firing delay: publish ``--reminders`` (100,000) ``reminder`` events over many conversations,
   due evenly over ``--spread`` (60) seconds starting ``--lead`` (30) seconds after publishing
   begins, and read the signals topic (``read_committed``). Per reminder: the worker's own delay
   (``fired_at - due`` in the signal) and the delay until a reader sees the committed signal
   (arrival - due, same machine clock). p50/p95/p99/max. Target (issue): p99 under 100 ms.
2. memory: publish ``--pending`` (1,000,000) reminders due in a day and compare the worker's
   resident memory (``/proc/<pid>/status`` VmRSS) before and after they are folded: bytes per
   pending reminder (the whole conversation state included: head, history record, tracker).

Printed, never asserted. The output also goes to ``bench/out/bench-reminders.txt``.

    python -m bench.reminders [--reminders 100000] [--spread 60] [--lead 30] [--pending 1000000]
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.pipeline import (
    OUT,
    BenchError,
    Deployment,
    Report,
    consumer,
    execute,
    machine,
    percentile,
    publish_all,
    run_async,
)
from streams.publisher import Encoded
from streams.replay import paused_gc
from streams.settings import Settings
from streams.topics import Topics, ensure_topics

TARGET_P99_MS = 100.0
WINDOW_S = 5.0
CONVERSATIONS = 10_000


def reminder_records(count: int, first_due: float, spread: float, tag: str) -> list[Encoded]:
    """``count`` reminder records over ``CONVERSATIONS`` conversations, due evenly from
    ``first_due`` over ``spread`` seconds (in publishing order)."""
    items = []
    for i in range(count):
        conversation = f"{tag}-{i % CONVERSATIONS:05d}"
        due = first_due + spread * i / max(1, count - 1)
        record = {
            "sender_id": conversation,
            "event": "reminder",
            "timestamp": time.time(),
            "name": f"r{i}",
            "intent": "nudge",
            "date_time": datetime.fromtimestamp(due, UTC).isoformat(),
            # the external message of each fired reminder would cancel the conversation's other
            # reminders (as in Rasa): keep them all for the timing
            "kill_on_user_msg": False,
        }
        items.append(Encoded(conversation, conversation.encode(), json.dumps(record).encode()))
    return items


async def read_signals(
    settings: Settings, wanted: int, deadline_s: float
) -> list[tuple[dict[str, object], float]]:
    """The reminder signals and their arrival times, until ``wanted`` or the deadline."""
    reader = consumer(settings, "read_committed", Topics.from_settings(settings).signals)
    await reader.start()
    found: list[tuple[dict[str, object], float]] = []
    deadline = time.monotonic() + deadline_s
    try:
        while len(found) < wanted and time.monotonic() < deadline:
            batches = await reader.getmany(timeout_ms=200)
            now = time.time()
            for messages in batches.values():
                for message in messages:
                    value = json.loads(message.value)
                    if str(value.get("signal", "")).startswith("reminder_"):
                        found.append((value, now))
        return found
    finally:
        await reader.stop()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def wait_pending(deployment: Deployment, wanted: int, stall_s: float = 180.0) -> None:
    """Until the worker's /health counts ``wanted`` pending reminders."""
    last, last_change = -1, time.monotonic()
    while True:
        deployment.check_worker()
        health = deployment.health()
        pending = health["reminders"]["pending"] if health else 0
        if pending >= wanted:
            return
        if pending != last:
            last, last_change = pending, time.monotonic()
        elif time.monotonic() - last_change > stall_s:
            raise BenchError(f"the worker stalled at {pending:,} of {wanted:,} pending reminders")
        time.sleep(0.5)


def run(args: argparse.Namespace, deployment: Deployment, report: Report) -> None:
    deployment.start_broker(report)
    settings = deployment.settings()
    ensure_topics(settings)
    deployment.start_worker()
    while deployment.health() is None:
        deployment.check_worker()
        time.sleep(0.2)
    assert deployment.worker is not None
    pid = deployment.worker.pid

    # 1. firing delay
    first_due = time.time() + args.lead
    items = reminder_records(args.reminders, first_due, args.spread, "due")
    publish_s = run_async(publish_all(settings, items))
    report.progress(f"published {args.reminders:,} reminders in {publish_s:.1f} s")
    if time.time() > first_due:
        raise BenchError("publishing took longer than --lead: raise it")
    # this process's own garbage-collection pauses would show up as firing delays: collect now
    # and pause the collector while reading (the worker manages its own collector)
    del items
    gc.collect()
    with paused_gc():
        found = run_async(read_signals(settings, args.reminders, args.lead + args.spread + 60))
    kinds = {str(v["signal"]) for v, _ in found}
    worker_ms = sorted(1000 * (float(v["fired_at"]) - float(v["due"])) for v, _ in found)  # type: ignore[arg-type]
    seen_ms = sorted(1000 * (seen - float(v["due"])) for v, seen in found)  # type: ignore[arg-type]
    health = deployment.health() or {}

    # 2. memory of pending reminders
    before = rss_bytes(pid)
    pending = reminder_records(args.pending, time.time() + 86_400, 3600, "pending")
    run_async(publish_all(settings, pending))
    del pending
    wait_pending(deployment, args.pending)
    time.sleep(2)
    after = rss_bytes(pid)
    pending_now = (deployment.health() or {}).get("reminders", {}).get("pending")

    say = report.say
    say(f"trackerflow reminders benchmark, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    say(f"machine: {machine()}")
    say(f"Python {sys.version.split()[0]}; Kafka {deployment.broker_version}; one worker")
    say()
    say(
        f"1. {args.reminders:,} reminders over {CONVERSATIONS:,} conversations, due evenly over "
        f"{args.spread:g} s; {len(found):,} signals read ({', '.join(sorted(kinds)) or 'none'}); "
        f"worker /health reminders: {health.get('reminders')}"
    )
    header = " ".join(f"{h:>8}" for h in ("p50 ms", "p95 ms", "p99 ms", "max ms"))
    say(f"{'firing delay after the due time':44} {header}")
    for name, values in (
        ("worker: fired_at - due", worker_ms),
        ("reader sees the committed signal - due", seen_ms),
    ):
        if values:
            row = [percentile(values, p) for p in (50, 95, 99)] + [values[-1]]
            say(f"{name:44} " + " ".join(f"{v:8.1f}" for v in row))
    for label, at in (("worker", "fired_at"), ("reader", None)):
        windows: dict[int, list[float]] = {}
        for value, seen in found:
            due = float(value["due"])  # type: ignore[arg-type]
            when = seen if at is None else float(value[at])  # type: ignore[arg-type]
            windows.setdefault(int((due - first_due) // WINDOW_S), []).append(1000 * (when - due))
        shown = ", ".join(f"{percentile(sorted(windows[w]), 99):,.0f}" for w in sorted(windows))
        say(f"  {label} p99 ms per {WINDOW_S:g} s of due times: {shown}")
    ok = found and len(found) == args.reminders and percentile(seen_ms, 99) < TARGET_P99_MS
    say(
        f"target p99 < {TARGET_P99_MS:g} ms (reader): {'met' if ok else 'NOT met'}"
        + ("" if len(found) == args.reminders else f" ({len(found):,} of {args.reminders:,} seen)")
    )
    say()
    grown = after - before
    say(
        f"2. {args.pending:,} pending reminders (due in a day, {CONVERSATIONS:,} conversations): "
        f"worker RSS {before / 2**20:,.0f} MiB -> {after / 2**20:,.0f} MiB; "
        f"{grown / max(1, args.pending):,.0f} bytes per pending reminder "
        f"(/health pending: {pending_now})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.reminders", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--reminders", type=int, default=100_000, help="timed reminders (100,000)")
    parser.add_argument("--spread", type=float, default=60.0, help="seconds they are due over (60)")
    parser.add_argument("--lead", type=float, default=30.0, help="seconds to the first due (30)")
    parser.add_argument("--pending", type=int, default=1_000_000, help="pending reminders (1M)")
    parser.add_argument(
        "--output", type=Path, default=OUT / "bench-reminders.txt", help="also write output here"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    deployment = Deployment(Path(tempfile.mkdtemp(prefix="trackerflow-bench-")))
    return execute(lambda report: run(args, deployment, report), deployment, args.output)


if __name__ == "__main__":
    sys.exit(main())
