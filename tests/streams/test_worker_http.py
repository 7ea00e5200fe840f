"""Workers serving the HTTP API, as users run them: scale-out, routing, and takeover after kill -9.

Expected trackers come from an offline fold of the same records.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.streams.test_worker import Run, offline, sample

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def call(port: int, path: str, body: Any = None, method: str | None = None) -> tuple[int, Any]:
    data = None if body is None else orjson.dumps(body)
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, orjson.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())
    except (urllib.error.URLError, ConnectionError):
        return 0, None


def wait_until(check: Any, deadline_s: float = 90) -> None:
    deadline = time.monotonic() + deadline_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def partitions(port: int) -> list[int]:
    status, health = call(port, "/health")
    return health["partitions"] if status == 200 else []


WebRun = Run  # its workers' HTTP ports: ``ports``


@pytest.fixture
def web(kafka_bootstrap: str, tmp_path: Path) -> Any:
    deployment = WebRun(kafka_bootstrap, tmp_path)
    yield deployment
    deployment.stop_all()


def test_two_workers_split_route_and_take_over_after_kill_9(web: WebRun) -> None:
    records = sample()
    expected, _ = offline(records)
    web.start_worker(0)
    web.produce(records)
    a = web.ports[0]
    wait_until(lambda: call(a, "/health")[1] and call(a, "/health")[1]["records"]["folded"] == 2000)
    with urllib.request.urlopen(f"http://127.0.0.1:{a}/metrics", timeout=30) as answer:
        metrics = answer.read().decode()
    assert 'trackerflow_records_total{outcome="folded"} 2000.0' in metrics
    assert "trackerflow_partitions_owned 6.0" in metrics  # the only worker so far

    some = next(iter(expected))
    status, state = call(a, f"/conversations/{some}/tracker?include_events=NONE")
    assert (status, state) == (200, expected[some]["state"])
    status, listed = call(a, "/conversations?limit=1000")
    assert (status, listed["total"]) == (200, len(expected))

    appended = [{"event": "pause"}, {"event": "bot", "text": "hi"}]
    status, state = call(a, "/conversations/brand-new/tracker/events", appended)
    assert status == 200 and state["paused"] is True and state["sender_id"] == "brand-new"
    replacement = [{"event": "slot", "name": "city", "value": "Oslo", "timestamp": 5.0}]
    status, replaced = call(
        a, "/conversations/brand-new/tracker/events?include_events=ALL", replacement, "PUT"
    )
    assert status == 200, replaced
    assert replaced["paused"] is False and replaced["slots"] == {"city": "Oslo"}
    assert [e["event"] for e in replaced["events"]] == ["slot"]
    # the replaced history's second record is deleted from the changelog (a tombstone)
    second = [m for m in web.read("-history-changelog") if m.key == b"brand-new\x1f000000000001"]
    assert [m.value is None for m in second] == [False, True]

    web.start_worker(1)
    b = web.ports[1]
    wait_until(lambda: partitions(a) and partitions(b))
    assert sorted(partitions(a) + partitions(b)) == list(range(6))
    everyone = sorted([*expected, "brand-new"])
    for port in (a, b):  # either worker lists every conversation, merged and paged
        status, listed = call(port, "/conversations?limit=1000")
        assert status == 200 and listed["total"] == len(everyone)
        assert [c["sender_id"] for c in listed["conversations"]] == everyone
    status, page = call(a, "/conversations?offset=5&limit=3")
    assert [c["sender_id"] for c in page["conversations"]] == everyone[5:8]
    for conversation, head in expected.items():  # every conversation, through worker A
        status, state = call(a, f"/conversations/{conversation}/tracker?include_events=NONE")
        assert (status, state) == (200, head["state"]), conversation

    victim = web.workers[-1]
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    wait_until(lambda: partitions(a) == list(range(6)), deadline_s=120)
    for conversation, head in expected.items():
        status, state = call(a, f"/conversations/{conversation}/tracker?include_events=NONE")
        assert (status, state) == (200, head["state"]), conversation
    status, state = call(a, "/conversations/brand-new/tracker?include_events=ALL")
    assert (status, state) == (200, replaced)  # the replacement survived the takeover
