"""bench/generate.py: deterministic, Rasa-shaped, every record decodes, conversations interleave."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from bench.generate import Plan, records
from events import decode_record
from processors import fold

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "deploy" / "samples" / "conversations.jsonl"

EVERY_KIND = {
    "action", "user", "user_featurization", "bot", "slot", "session_started", "active_loop",
    "loop_interrupted", "action_execution_rejected", "rewind", "undo", "restart", "pause",
    "resume", "followup", "reminder", "cancel_reminder", "entities", "agent",
}  # fmt: skip


def by_conversation(lines: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    conversations: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in lines:
        conversations[record["sender_id"]].append(record)
    return conversations


@pytest.fixture(scope="module")
def generated() -> list[dict[str, Any]]:
    return list(records(Plan(20_000, seed=11)))


def test_command_line_is_deterministic() -> None:
    def run(seed: str) -> bytes:
        command = [sys.executable, "-m", "bench.generate", "--events", "600", "--seed", seed]
        done = subprocess.run(command, capture_output=True, cwd=ROOT, check=True, timeout=120)
        return done.stdout

    first = run("3")
    assert first == run("3")
    assert first != run("4")
    assert len(first.splitlines()) == 600


def test_committed_sample_is_the_documented_command() -> None:
    """deploy/samples/conversations.jsonl = python -m bench.generate --events 2000 --seed 7."""
    lines = [json.dumps(record) + "\n" for record in records(Plan(2000, seed=7))]
    assert SAMPLE.read_text(encoding="utf-8") == "".join(lines)


def test_every_record_decodes_and_folds(generated: list[dict[str, Any]]) -> None:
    decoded = defaultdict(list)
    for record in generated:
        got = decode_record(json.dumps(record).encode())
        decoded[got.sender_id].append(got.event)
    assert sum(map(len, decoded.values())) == 20_000
    for sender, events in by_conversation(generated).items():
        tracker = fold(decoded[sender], sender_id=sender)
        assert len(tracker.events) == len(events)


def test_realistic_mix(generated: list[dict[str, Any]]) -> None:
    kinds = Counter(record["event"] for record in generated)
    assert set(kinds) == EVERY_KIND
    assert kinds["user"] > kinds["rewind"] > kinds["restart"]
    conversations = by_conversation(generated)
    assert len(conversations) > 100
    for events in conversations.values():
        names = [e["event"] if e["event"] != "action" else e["name"] for e in events[:3]]
        assert names == ["action_session_start", "session_started", "action_listen"]
    users = [r for r in generated if r["event"] == "user" and r["message_id"]]
    assert all(
        list(u["parse_data"])[:5] == ["intent", "entities", "text", "message_id", "metadata"]
        for u in users
    )
    assert all(
        u["parse_data"]["intent_ranking"][0]["name"] == u["parse_data"]["intent"]["name"]
        for u in users
    )
    bots = [r for r in generated if r["event"] == "bot"]
    assert all(
        list(b["data"]) == ["elements", "quick_replies", "buttons", "attachment", "image", "custom"]
        for b in bots
    )
    assert any(s["name"] == "requested_slot" for s in generated if s["event"] == "slot")


def test_interleaved_and_ordered(generated: list[dict[str, Any]]) -> None:
    stamps = [record["timestamp"] for record in generated]
    assert stamps == sorted(stamps)
    senders = [record["sender_id"] for record in generated[:200]]
    switches = sum(a != b for a, b in itertools.pairwise(senders))
    assert switches > 50  # conversations interleave, as on a topic
    for events in by_conversation(generated).values():
        own = [e["timestamp"] for e in events]
        assert all(a < b for a, b in itertools.pairwise(own))


@pytest.mark.parametrize("length", [10, 1000])
def test_exact_length(length: int) -> None:
    lines = list(records(Plan(5000, seed=5, exact_length=length)))
    assert len(lines) == 5000
    sizes = Counter(record["sender_id"] for record in lines)
    assert set(sizes.values()) == {length}
