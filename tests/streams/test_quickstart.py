"""The README's main job, ``make run`` (``deploy/quickstart.sh``), run as a user runs it.

It gets the test broker through ``KAFKA_BOOTSTRAP_SERVERS`` (the script starts its own only when
that is unset; starting brokers is tested in ``test_broker.py``) and its own topics, consumer
group, HTTP port and output directory.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import uuid
from pathlib import Path

import orjson
import pytest

pytestmark = [pytest.mark.broker, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "deploy" / "samples" / "conversations.jsonl"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_the_quickstart_folds_the_sample_and_shows_trackers_and_signals(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    prefix = f"q{uuid.uuid4().hex[:10]}"
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "TRACKERFLOW_TOPIC_PREFIX": prefix,
        "TRACKERFLOW_APP_ID": prefix,
        "TRACKERFLOW_WEB_PORT": str(port),
        "TRACKERFLOW_QUICKSTART_OUT": str(tmp_path),
    }
    try:
        done = subprocess.run(
            ["bash", str(ROOT / "deploy" / "quickstart.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        pid_file = tmp_path / "worker.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    sample = SAMPLE.read_bytes().splitlines()
    folded_line = next(line for line in out.splitlines() if line.startswith("folded:"))
    health = orjson.loads(folded_line.removeprefix("folded:").strip())
    assert health["records"]["folded"] == len(sample)
    assert health["transactions"] >= 1 and health["partitions"] == list(range(6))
    conversations = {orjson.loads(line)["sender_id"] for line in sample}
    listing = orjson.loads(out.split("== conversations")[1].splitlines()[1])
    assert listing["total"] == len(conversations) and len(listing["conversations"]) == 5
    tracker = orjson.loads(out.split("== one tracker")[1].splitlines()[1])
    assert tracker["sender_id"] == listing["conversations"][0]["sender_id"]
    signals = [
        orjson.loads(line)
        for line in out.split("== signals")[1].splitlines()[1:]
        if line.startswith("{")
    ]
    assert len(signals) == 8 and all(
        s["value"]["conversation_id"] in conversations for s in signals
    )
    assert f"curl http://127.0.0.1:{port}/conversations" in out
