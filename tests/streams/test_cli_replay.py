"""``trackerflow replay`` run as a user runs it: a subprocess, files, pipes and exit codes.

Outputs are checked against folding the same records directly with ``processors`` (a cross-check,
not hard-coded values) and, for one small hand-written log, against values worked out by hand
from rasa-semantics.md (§2.3 rewinds, §2.5 current_state, §2.6 loop flags, §2.8 time travel).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from events import EventError, decode_record
from processors import DialogueStateTracker, Domain, EventVerbosity
from streams import cli

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "deploy" / "samples" / "conversations.jsonl"


def trackerflow(
    *args: str | Path, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m streams.cli ARGS`` with no TRACKERFLOW_* variables but ``env``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TRACKERFLOW_")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *map(str, args)],
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        env=environ,
        cwd=ROOT,
        timeout=300,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    """stderr of a run that must have succeeded."""
    assert result.returncode == 0, result.stderr.decode()
    return result.stderr.decode()


def read_jsonl(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in data.splitlines()]


def fold_directly(
    lines: Iterable[bytes], domain: Domain | None = None
) -> dict[str, DialogueStateTracker]:
    """The cross-check: decode each record and fold it into its conversation, in order."""
    trackers: dict[str, DialogueStateTracker] = {}
    for line in lines:
        try:
            record = decode_record(line)
        except EventError:
            continue
        if record.sender_id not in trackers:
            trackers[record.sender_id] = DialogueStateTracker(record.sender_id, domain)
        trackers[record.sender_id].update(record.event)
    return trackers


def states(
    trackers: dict[str, DialogueStateTracker],
    verbosity: EventVerbosity = EventVerbosity.NONE,
    until: float | None = None,
) -> list[dict[str, Any]]:
    """current_state() of each tracker, as JSON would carry it."""
    chosen = (t if until is None else t.travel_back_in_time(until) for t in trackers.values())
    return [orjson.loads(orjson.dumps(t.current_state(verbosity))) for t in chosen]


@pytest.fixture(scope="module")
def sample() -> list[bytes]:
    return SAMPLE.read_bytes().splitlines()


@pytest.fixture(scope="module")
def sample_trackers(sample: list[bytes]) -> dict[str, DialogueStateTracker]:
    return fold_directly(sample)


# -- a small log checked by hand ------------------------------------------------------------------


def rec(sender: str, t: float, event: str, **keys: Any) -> dict[str, Any]:
    return {"sender_id": sender, "event": event, "timestamp": t, **keys}


def user(
    sender: str, t: float, text: str, intent: str, channel: str, **entity: Any
) -> dict[str, Any]:
    entities = [{"entity": k, "value": v} for k, v in entity.items()]
    parse = {"intent": {"name": intent, "confidence": 1.0}, "entities": entities, "text": text}
    return rec(sender, t, "user", text=text, parse_data=parse, input_channel=channel)


def act(sender: str, t: float, name: str) -> dict[str, Any]:
    return rec(sender, t, "action", name=name, policy="RulePolicy", confidence=1.0)


HAND_LOG = [
    act("alice", 100.0, "action_session_start"),
    act("bob", 100.05, "action_session_start"),
    rec("alice", 100.1, "session_started"),
    rec("bob", 100.15, "session_started"),
    act("alice", 100.2, "action_listen"),
    act("bob", 100.25, "action_listen"),
    user("alice", 101.0, "a table for 4", "request_restaurant", "rest", number=4),
    rec("alice", 101.1, "slot", name="num_people", value=4),
    act("alice", 101.2, "restaurant_form"),
    rec("alice", 101.3, "active_loop", name="restaurant_form"),
    rec("alice", 101.4, "slot", name="requested_slot", value="cuisine"),
    rec("alice", 101.5, "bot", text="What cuisine?", data={}),
    act("alice", 101.6, "action_listen"),
    user("bob", 105.0, "hi", "greet", "telegram"),
    rec("bob", 105.05, "slot", name="name", value="Bob"),
    act("bob", 105.1, "utter_greet"),
    rec("bob", 105.2, "bot", text="Hey Bob!"),
    rec("bob", 105.3, "pause"),
    user("alice", 110.0, "Paris please", "inform", "rest", city="Paris"),
    rec("alice", 110.1, "slot", name="city", value="Paris"),
    act("alice", 110.2, "action_default_fallback"),
    rec("alice", 110.3, "bot", text="Sorry?"),
    rec("alice", 110.4, "rewind"),
    act("alice", 110.5, "action_listen"),
    user("bob", 115.0, "hello?", "greet", "telegram"),
    rec("bob", 115.1, "followup", name="utter_x"),
    user("alice", 120.0, "italian", "inform", "socketio", cuisine="italian"),
    rec("alice", 120.1, "slot", name="cuisine", value="italian"),
    rec("alice", 120.2, "action_execution_rejected", name="restaurant_form"),
    act("alice", 120.3, "utter_cannot_help"),
    rec("alice", 120.4, "bot", text="I can't help with that."),
    act("alice", 120.5, "action_listen"),
]


@pytest.fixture
def hand_log(tmp_path: Path) -> Path:
    path = tmp_path / "hand.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in HAND_LOG))
    return path


def test_hand_verified_values(hand_log: Path) -> None:
    alice, bob = read_jsonl(trackerflow("replay", hand_log, "--quiet").stdout)
    # the rewind reverted city (kept as a slot, reset to None) and left the form's slots
    assert alice["slots"] == {
        "num_people": 4,
        "requested_slot": "cuisine",
        "city": None,
        "cuisine": "italian",
    }
    assert alice["latest_message"]["text"] == "italian"
    assert alice["latest_input_channel"] == "socketio"
    assert alice["latest_action_name"] == "action_listen"
    assert alice["latest_event_time"] == 120.5
    assert alice["followup_action"] is None
    loop = alice["active_loop"]
    assert (loop["name"], loop["is_interrupted"], loop["rejected"]) == (
        "restaurant_form",
        False,
        True,
    )
    assert loop["trigger_message"]["text"] == "a table for 4"
    assert bob["slots"] == {"name": "Bob"}
    assert (bob["paused"], bob["followup_action"]) == (True, "utter_x")
    assert (bob["latest_message"]["text"], bob["latest_action_name"]) == ("hello?", "utter_greet")


def test_hand_verified_event_lists_and_time_travel(hand_log: Path) -> None:
    applied = read_jsonl(trackerflow("replay", hand_log, "--events", "applied", "-q").stdout)
    everything = read_jsonl(trackerflow("replay", hand_log, "--events", "ALL", "-q").stdout)
    # alice: 22 events; applied drops the session start, the reverted turn and its listen
    assert [len(s["events"]) for s in everything] == [22, 10]
    assert [len(s["events"]) for s in applied] == [14, 8]
    assert [e["event"] for e in applied[0]["events"][:8]] == [
        "action", "user", "slot", "action", "active_loop", "slot", "bot", "action",
    ]  # fmt: skip
    alice, bob = read_jsonl(trackerflow("replay", hand_log, "--until", "110.25", "-q").stdout)
    # init_copy keeps every slot the whole tracker knows, reset (rasa-semantics §2.2): cuisine
    assert alice["slots"] == {
        "num_people": 4,
        "requested_slot": "cuisine",
        "city": "Paris",
        "cuisine": None,
    }
    assert alice["latest_action_name"] == "action_default_fallback"
    assert (bob["paused"], bob["followup_action"], bob["latest_message"]["text"]) == (
        True,
        None,
        "hi",
    )


# -- the sample log, cross-checked ----------------------------------------------------------------


def test_sample_equals_direct_fold(
    tmp_path: Path, sample: list[bytes], sample_trackers: dict[str, DialogueStateTracker]
) -> None:
    out = tmp_path / "trackers.jsonl"
    stderr = ok(trackerflow("replay", SAMPLE, "--output", out))
    got = read_jsonl(out.read_bytes())
    assert got == states(sample_trackers)
    first_seen = list(dict.fromkeys(json.loads(line)["sender_id"] for line in sample))
    assert [s["sender_id"] for s in got] == first_seen
    assert f"replayed {len(sample):,} events into {len(first_seen)} conversations" in stderr
    assert "0 lines rejected" in stderr and "events/s" in stderr


@pytest.mark.parametrize("name", ["none", "applied", "after_restart", "all"])
def test_events_verbosity(name: str, sample_trackers: dict[str, DialogueStateTracker]) -> None:
    got = read_jsonl(trackerflow("replay", SAMPLE, "--events", name, "-q").stdout)
    verbosity = EventVerbosity.parse(name)
    assert got == states(sample_trackers, verbosity)
    lengths = [None if s["events"] is None else len(s["events"]) for s in got]
    if name == "none":
        assert set(lengths) == {None}
    elif name == "all":
        assert lengths == [len(t.events) for t in sample_trackers.values()]
    else:
        assert all(
            n is not None and n <= len(t.events)
            for n, t in zip(lengths, sample_trackers.values(), strict=True)
        )


def test_gzip_stdin_and_several_files_give_the_same_trackers(
    tmp_path: Path, sample: list[bytes]
) -> None:
    whole = trackerflow("replay", SAMPLE, "-q").stdout
    packed = tmp_path / "sample.jsonl.gz"
    packed.write_bytes(gzip.compress(SAMPLE.read_bytes()))
    assert trackerflow("replay", packed, "-q").stdout == whole
    assert trackerflow("replay", "-", "-q", stdin=SAMPLE.read_bytes()).stdout == whole
    assert trackerflow("replay", "-", "-q", stdin=packed.read_bytes()).stdout == whole
    third = len(sample) // 3
    parts = [sample[:third], sample[third : 2 * third], sample[2 * third :]]
    first, last = tmp_path / "part1.jsonl", tmp_path / "part3.jsonl.gz"
    first.write_bytes(b"\n".join(parts[0]) + b"\n")
    last.write_bytes(gzip.compress(b"\n".join(parts[2]) + b"\n"))
    middle = b"\n".join(parts[1]) + b"\n"
    result = trackerflow("replay", first, "-", last, stdin=middle)
    assert result.stdout == whole
    assert "from 3 inputs" in ok(result)


def test_until_accepts_epoch_and_iso(
    sample: list[bytes], sample_trackers: dict[str, DialogueStateTracker]
) -> None:
    stamps = sorted(json.loads(line)["timestamp"] for line in sample)
    moment = float(int(stamps[len(stamps) // 2]))
    by_epoch = read_jsonl(trackerflow("replay", SAMPLE, "--until", str(moment), "-q").stdout)
    assert by_epoch == states(sample_trackers, until=moment)
    assert any(
        s["latest_event_time"] is not None and s["latest_event_time"] < stamps[-1] for s in by_epoch
    )
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment))
    for text in (iso, iso + "Z", iso + "+00:00"):
        assert read_jsonl(trackerflow("replay", SAMPLE, "--until", text, "-q").stdout) == by_epoch
    result = trackerflow("replay", SAMPLE, "--until", "yesterday")
    assert result.returncode == 2 and b"ISO-8601" in result.stderr


def test_conversation_filter(
    sample: list[bytes], sample_trackers: dict[str, DialogueStateTracker]
) -> None:
    ids = list(sample_trackers)
    chosen = [ids[5], ids[1]]
    result = trackerflow(
        "replay", SAMPLE, "-c", chosen[0], "--conversation", chosen[1], "-c", "nobody"
    )
    got = read_jsonl(result.stdout)
    assert [s["sender_id"] for s in got] == [ids[1], ids[5]]  # first-seen order, not option order
    assert got == [s for s in states(sample_trackers) if s["sender_id"] in chosen]
    stderr = ok(result)
    folded = sum(len(sample_trackers[i].events) for i in chosen)
    assert f"replayed {folded:,} events into 2 conversations" in stderr
    assert f"{len(sample) - folded:,} records of other conversations skipped" in stderr
    assert "conversation 'nobody' does not occur in the input" in stderr
    by_env = trackerflow(
        "replay", SAMPLE, "-q", env={"TRACKERFLOW_REPLAY_CONVERSATION": " ".join(chosen)}
    )
    assert by_env.stdout == result.stdout


def test_stories_one_header_one_story_per_conversation(
    tmp_path: Path, sample_trackers: dict[str, DialogueStateTracker]
) -> None:
    stories = tmp_path / "stories.yml"
    ok(trackerflow("replay", SAMPLE, "-o", os.devnull, "--stories", stories, "-q"))
    text = stories.read_text()
    assert text.count("version:") == 1 and text.count("stories:") == 1
    document = yaml.safe_load(text)
    assert [s["story"] for s in document["stories"]] == list(sample_trackers)
    trackers = list(sample_trackers.values())
    expected = trackers[0].export_stories() + "".join(
        t.export_stories(should_append_stories=True) for t in trackers[1:]
    )
    assert text == expected
    assert any(
        {"slot_was_set": [{"cuisine": "italian"}]} in s["steps"] for s in document["stories"]
    )


def test_rejects_report_line_numbers_and_reasons(tmp_path: Path) -> None:
    good = orjson.dumps(act("c1", 1.0, "action_listen"))
    huge = orjson.dumps(rec("c1", 3.0, "bot", text="x" * 3000))
    padding = 2001 - len(orjson.dumps(rec("c1", 4.0, "bot", text="")))
    just_over = orjson.dumps(rec("c1", 4.0, "bot", text="y" * padding))
    assert len(just_over) == 2001
    lines = [
        good,  # 1
        b'{"sender_id": "c1", "event": ',  # 2 invalid JSON
        b'{"sender_id": "c2", "event": "teleport", "timestamp": 1}',  # 3 unknown event
        b'{"event": "action", "name": "utter_x", "timestamp": 2}',  # 4 no sender_id
        b'\xff\xfe{"sender_id": "c1"}',  # 5 not UTF-8
        b"   ",  # 6 blank: skipped, not a reject
        orjson.dumps(act("c1", 2.0, "utter_hi")),  # 7
        huge,  # 8 far over --max-record-bytes
        just_over,  # 9 one byte over
    ]
    log = tmp_path / "bad.jsonl"
    log.write_bytes(b"\n".join(lines) + b"\n")
    rejects, out = tmp_path / "rejects.jsonl", tmp_path / "out.jsonl"
    args = ("replay", log, "-o", out, "--rejects", rejects, "--max-record-bytes", "2000")
    stderr = ok(trackerflow(*args))
    found = read_jsonl(rejects.read_bytes())
    assert [(r["line"], r["error"]) for r in found] == [
        (2, "InvalidJson"), (3, "UnknownEvent"), (4, "MissingField"), (5, "InvalidJson"),
        (8, "RecordTooLarge"), (9, "RecordTooLarge"),
    ]  # fmt: skip
    assert {r["source"] for r in found} == {str(log)}
    assert found[1]["conversation_id"] == "c2" and "teleport" in found[1]["reason"]
    assert "sender_id" in found[2]["reason"]
    assert "UTF-8" in found[3]["reason"] and found[3]["raw"].startswith("\ufffd\ufffd")
    assert found[0]["raw"] == lines[1].decode()
    assert "2001 bytes" in found[5]["reason"]
    assert f"{log}, line 3, conversation 'c2'" in stderr
    assert "6 lines rejected" in stderr
    (tracker,) = read_jsonl(out.read_bytes())
    assert tracker["latest_action_name"] == "utter_hi"
    strict = trackerflow(*args, "--strict")
    assert strict.returncode == 1
    assert read_jsonl(out.read_bytes()) == [tracker]


def test_missing_timestamps_get_the_run_time(tmp_path: Path) -> None:
    log = tmp_path / "stamps.jsonl"
    log.write_bytes(b'{"sender_id": "s", "event": "action", "name": "action_listen"}\n')
    before = time.time()
    (state,) = read_jsonl(trackerflow("replay", log, "-q").stdout)
    assert before <= state["latest_event_time"] <= time.time()


def test_domain_slots(tmp_path: Path, sample: list[bytes]) -> None:
    domain_file = tmp_path / "domain.yml"
    spec = {
        "slots": {"cuisine": {"type": "text"}, "num_people": {"type": "float", "initial_value": 2}},
        "forms": {"restaurant_form": {"required_slots": ["cuisine", "num_people"]}},
    }
    domain_file.write_text(yaml.safe_dump(spec))
    got = read_jsonl(trackerflow("replay", SAMPLE, "--domain", domain_file, "-q").stdout)
    assert got == states(fold_directly(sample, Domain.from_dict(spec)))
    assert all(
        set(s["slots"]) == {"cuisine", "num_people", "requested_slot", "session_started_metadata"}
        for s in got
    )
    domain_file.write_text("slots: [1, 2")
    broken = trackerflow("replay", SAMPLE, "--domain", domain_file)
    assert broken.returncode == 2 and b"--domain" in broken.stderr


def test_help_mentions_every_option_and_env_var() -> None:
    result = trackerflow("replay", "--help")
    ok(result)
    text = result.stdout.decode()
    command = cli.main.commands["replay"]
    options = [p for p in command.params if p.param_type_name == "option"]
    assert len(options) >= 10
    for option in options:
        for flag in option.opts:
            assert flag in text
        if option.name != "help":
            assert isinstance(option.envvar, str) and option.envvar.startswith("TRACKERFLOW_")
            assert option.envvar in text
    assert "Examples:" in text and "Exit status" in text
    version = trackerflow("--version")
    assert version.returncode == 0 and b"trackerflow" in version.stdout


def test_env_vars_set_options(
    tmp_path: Path, sample_trackers: dict[str, DialogueStateTracker]
) -> None:
    out = tmp_path / "env.jsonl"
    env = {
        "TRACKERFLOW_REPLAY_EVENTS": "all",
        "TRACKERFLOW_REPLAY_OUTPUT": str(out),
        "TRACKERFLOW_QUIET": "1",
    }
    result = trackerflow("replay", SAMPLE, env=env)
    assert ok(result) == ""
    assert read_jsonl(out.read_bytes()) == states(sample_trackers, EventVerbosity.ALL)


def test_unreadable_inputs_exit_2_and_leave_outputs_alone(tmp_path: Path) -> None:
    missing = trackerflow("replay", tmp_path / "nope.jsonl")
    assert missing.returncode == 2 and b"does not exist" in missing.stderr
    twice = trackerflow("replay", "-", "-")
    assert twice.returncode == 2 and b"standard input" in twice.stderr
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"previous\n")
    fake = tmp_path / "fake.jsonl.gz"
    fake.write_bytes(b"\x1f\x8b" + b"not gzip at all" * 10)
    bad = trackerflow("replay", SAMPLE, fake, "-o", out)
    assert bad.returncode == 2 and b"fake.jsonl.gz" in bad.stderr and b"gzip" in bad.stderr
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(gzip.compress(SAMPLE.read_bytes())[:20_000])
    cut = trackerflow("replay", truncated, "-o", out)
    assert cut.returncode == 2 and b"truncated" in cut.stderr
    assert b"Traceback" not in bad.stderr + cut.stderr
    assert out.read_bytes() == b"previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cut.jsonl.gz",
        "fake.jsonl.gz",
        "out.jsonl",
    ]
    nowhere = trackerflow("replay", SAMPLE, "-o", tmp_path / "no" / "such" / "dir.jsonl")
    assert nowhere.returncode == 2 and b"--output" in nowhere.stderr
    both = trackerflow("replay", SAMPLE, "--stories", "-")
    assert both.returncode == 2 and b"only one of --output, --stories and --rejects" in both.stderr
