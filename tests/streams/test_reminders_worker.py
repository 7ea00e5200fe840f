"""Durable reminders with real worker processes on the real broker: on time, cancelled, across
kill -9 and rebalances, and after downtime (late within the grace period, else missed)."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.streams.test_worker import Run, kill
from tests.streams.test_worker_http import WebRun, call, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.fixture
def run(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Run]:
    deployment = Run(kafka_bootstrap, tmp_path)
    yield deployment
    deployment.stop_all()


@pytest.fixture
def web(kafka_bootstrap: str, tmp_path: Path) -> Iterator[WebRun]:
    deployment = WebRun(kafka_bootstrap, tmp_path)
    yield deployment
    deployment.stop_all()


def at(seconds_from_now: float) -> str:
    return datetime.fromtimestamp(time.time() + seconds_from_now, UTC).isoformat()


def record(conversation: str, **event: Any) -> tuple[bytes, bytes]:
    body = {"sender_id": conversation, "timestamp": time.time(), **event}
    return conversation.encode(), orjson.dumps(body)


def reminder(conversation: str, name: str, due_in: float, **more: Any) -> tuple[bytes, bytes]:
    return record(
        conversation, event="reminder", name=name, intent="nudge", date_time=at(due_in), **more
    )


def reminder_signals(run: Run) -> list[dict[str, Any]]:
    signals = [orjson.loads(m.value) for m in run.read(".signals", timeout_ms=3000)]
    return [s for s in signals if s["signal"].startswith("reminder_")]


def test_a_reminder_fires_on_time_once_and_cancelled_ones_never(web: WebRun) -> None:
    twins_due = at(4)
    web.start_worker(0)
    port = web.ports[0]
    wait_until(lambda: call(port, "/health")[0] == 200)
    web.produce(
        [
            record("due", event="user", text="hi", parse_data={}, input_channel="web"),
            reminder("due", "r", 4, entities=[{"entity": "who", "value": "Ann"}]),
            reminder("cancelled", "r", 4),
            record("cancelled", event="cancel_reminder", name="r"),
            reminder("killed", "r", 4),
            record("killed", event="user", text="I am back", parse_data={}),
            reminder("kept", "r", 4, kill_on_user_msg=False),
            record("kept", event="user", text="still here", parse_data={}),
            # due at the same instant: the first one's external message kills the second
            *(
                record("twins", event="reminder", name=n, intent="nudge", date_time=twins_due)
                for n in ("a", "b")
            ),
        ]
    )
    wait_until(lambda: call(port, "/health")[1]["records"]["folded"] == 10, deadline_s=30)
    status, listed = call(port, "/conversations/due/reminders")
    assert status == 200 and [r["name"] for r in listed["reminders"]] == ["r"]
    assert listed["reminders"][0]["entities"] == [{"entity": "who", "value": "Ann"}]
    assert call(port, "/conversations/cancelled/reminders")[1]["reminders"] == []
    cli = [sys.executable, "-m", "streams.cli", "reminders", "--url", f"http://127.0.0.1:{port}"]
    shown = subprocess.run([*cli, "due"], capture_output=True, text=True, timeout=30, check=True)
    assert "due: 1 pending reminder(s)" in shown.stdout and "r: intent nudge" in shown.stdout
    assert '"value": "Ann"' in shown.stdout
    as_json = subprocess.run([*cli, "kept", "--json"], capture_output=True, timeout=30, check=True)
    assert [r["name"] for r in orjson.loads(as_json.stdout)["reminders"]] == ["r"]
    unknown = subprocess.run(
        [*cli, "nobody"], check=False, capture_output=True, text=True, timeout=30
    )
    assert unknown.returncode == 1 and "answered 404" in unknown.stderr
    wait_until(lambda: call(port, "/health")[1]["reminders"]["fired"] == 3, deadline_s=30)
    fired = reminder_signals(web)
    assert sorted((s["conversation_id"], s["name"]) for s in fired) == [
        ("due", "r"),
        ("kept", "r"),
        ("twins", "a"),
    ]
    wait_until(lambda: call(port, "/conversations/twins/reminders")[1]["reminders"] == [])
    assert all(s["signal"] == "reminder_triggered" and s["late_s"] < 2.0 for s in fired)
    # the external message Rasa would log is on the events topic and folded into the tracker
    wait_until(lambda: call(port, "/health")[1]["records"]["folded"] == 13, deadline_s=30)
    status, tracker = call(port, "/conversations/due/tracker")
    assert tracker["latest_message"]["text"] == "EXTERNAL: nudge"
    assert tracker["latest_message"]["metadata"] == {"is_external": True}
    assert tracker["latest_input_channel"] == "web"
    assert call(port, "/conversations/due/reminders")[1]["reminders"] == []
    time.sleep(2)
    assert len(reminder_signals(web)) == 3  # and nothing more


def test_reminders_fire_exactly_once_across_kill_9_and_rebalances(run: Run) -> None:
    conversations = [f"conv-{i}" for i in range(40)]
    run.start_worker(0)
    time.sleep(4)  # joined the group
    run.produce([reminder(c, "r", 3 + 0.2 * i) for i, c in enumerate(conversations)])
    time.sleep(4)
    kill(run.workers[0])  # some have fired, some are due, some are pending
    run.start_worker(1)
    time.sleep(3)
    run.start_worker(0)  # a rebalance while the rest falls due
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if len(reminder_signals(run)) >= len(conversations):
            break
        time.sleep(2)
    time.sleep(3)
    counts = collections.Counter(s["conversation_id"] for s in reminder_signals(run))
    assert counts == dict.fromkeys(conversations, 1)
    events = [orjson.loads(m.value) for m in run.read(".events", timeout_ms=3000)]
    external = collections.Counter(e["sender_id"] for e in events if e["event"] == "user")
    assert external == dict.fromkeys(conversations, 1)  # one external message each


def test_after_downtime_late_reminders_fire_and_older_ones_are_missed(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACKERFLOW_REMINDER_GRACE_S", "10")
    run.produce([reminder("late", "r", 1), reminder("old", "r", -30)])
    time.sleep(2)  # both fell due while no worker ran
    process = run.start_worker(0)
    deadline = time.monotonic() + 60
    while len(reminder_signals(run)) < 2 and time.monotonic() < deadline:
        time.sleep(1)
    by_conversation = {s["conversation_id"]: s for s in reminder_signals(run)}
    assert by_conversation["late"]["signal"] == "reminder_triggered"
    assert by_conversation["late"]["late_s"] >= 1.0
    assert by_conversation["old"]["signal"] == "reminder_missed"
    assert by_conversation["old"]["late_s"] >= 30.0
    os.killpg(process.pid, signal.SIGKILL)


def test_a_backlog_record_that_cancels_an_overdue_reminder_in_time_wins(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a worker catches up, a reminder that is already overdue waits until the records
    before its due time are folded: here the user's message (before the due time) kills it,
    even though every record is folded in its own transaction."""
    monkeypatch.setenv("TRACKERFLOW_MAX_BATCH_RECORDS", "1")
    now = time.time()
    run.produce(
        [
            reminder("killed", "r", 1),
            record("killed", event="slot", name="s", value=0, timestamp=now + 0.2),
            record("killed", event="user", text="never mind", parse_data={}, timestamp=now + 0.5),
            reminder("kept", "r", 1),
            record("kept", event="slot", name="s", value=1, timestamp=now + 0.5),
        ]
    )
    time.sleep(2)  # both overdue before any worker runs
    run.start_worker(0)
    deadline = time.monotonic() + 60
    while not reminder_signals(run) and time.monotonic() < deadline:
        time.sleep(1)
    time.sleep(2)
    fired = reminder_signals(run)
    assert [(s["conversation_id"], s["signal"]) for s in fired] == [("kept", "reminder_triggered")]
