"""The local Kafka launcher, driven the way a person drives it: ``trackerflow broker ...``.

The lifecycle test starts its own broker through the CLI in a subprocess (the Kafka version of
``TRACKERFLOW_KAFKA_VERSION``); the round-trip test uses the session broker of ``kafka_bootstrap``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from streams import broker
from streams.broker_cli import broker as broker_group

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``trackerflow broker <args>`` in a subprocess, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "streams.broker_cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False,
    )  # fmt: skip


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for its parent counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in {"Z", "X"}


def round_trip(bootstrap: str, topic: str, count: int = 5) -> list[tuple[bytes, bytes]]:
    """Produce ``count`` keyed records to ``topic`` and consume them back in a fresh group."""
    sent = [(f"conv-{i % 2}".encode(), f"event-{i}".encode()) for i in range(count)]
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for key, value in sent:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=30)
    finally:
        producer.close()
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"test-{uuid.uuid4().hex}",
        auto_offset_reset="earliest", enable_auto_commit=False,
    )  # fmt: skip
    received: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + 30
    try:
        while len(received) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                received.extend((r.key, r.value) for r in records)
    finally:
        consumer.close()
    assert received == sent
    return received


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A data dir whose broker, if a test leaves one running, is stopped afterwards."""
    yield tmp_path / "broker"
    broker.stop(tmp_path / "broker", timeout=5)


@pytest.mark.broker
def test_the_cli_starts_reports_and_stops_a_real_broker(
    data_dir: Path, local_kafka_version: str
) -> None:
    started = cli("start", "--data-dir", str(data_dir), "--port", "0", "--jit", "full")
    assert started.returncode == 0, started.stderr
    bootstrap = started.stdout.strip()
    assert bootstrap.startswith("127.0.0.1:")
    assert f"Kafka {local_kafka_version} ready at {bootstrap}" in started.stderr

    status = cli("status", "--data-dir", str(data_dir), "--json")
    assert status.returncode == 0, status.stdout
    state = json.loads(status.stdout)
    assert state["running"] and state["reachable"]
    assert (state["bootstrap"], state["version"]) == (bootstrap, local_kafka_version)

    # its group coordinator answers at once: a group's first consumer joins without an error
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="trackerflow-tests")
    try:
        (group,) = admin.describe_groups(["first-group"]).values()
        assert group["error"] is None
    finally:
        admin.close()
    round_trip(bootstrap, "lifecycle")
    command = Path(f"/proc/{state['pid']}/cmdline").read_bytes().split(b"\0")
    assert b"kafka.Kafka" in command and b"-XX:TieredStopAtLevel=1" not in command  # --jit full

    again = cli("start", "--data-dir", str(data_dir))
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == bootstrap
    assert f"already runs at {bootstrap} (pid {state['pid']})" in again.stderr

    # stopped with a client connected (the broker closes first: its side lingers in TIME_WAIT),
    # it starts again on the same address, and its topics are there
    host, port = bootstrap.split(":")
    client = socket.create_connection((host, int(port)))
    stopped = cli("stop", "--data-dir", str(data_dir))
    assert stopped.returncode == 0, stopped.stderr
    assert f"Stopped Kafka {local_kafka_version} at {bootstrap}" in stopped.stderr
    assert not alive(state["pid"])
    restarted = cli("start", "--data-dir", str(data_dir), "--jit", "full")
    client.close()
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.stdout.strip() == bootstrap
    round_trip(bootstrap, "lifecycle-again")
    probe = KafkaConsumer(bootstrap_servers=bootstrap)
    assert {"lifecycle", "lifecycle-again"} <= probe.topics()
    probe.close()

    stopped = cli("stop", "--data-dir", str(data_dir))
    assert stopped.returncode == 0, stopped.stderr
    assert not (data_dir / "broker.pid").exists()

    after = cli("status", "--data-dir", str(data_dir))
    assert after.returncode == 3
    assert after.stdout.startswith("not running")


@pytest.mark.broker
def test_the_session_broker_carries_records_both_ways(
    kafka_bootstrap: str, kafka_topic: str
) -> None:
    round_trip(kafka_bootstrap, kafka_topic)


@pytest.mark.broker
def test_a_broker_that_dies_while_starting_fails_fast_with_its_log(
    data_dir: Path, local_kafka_version: str
) -> None:
    began = time.monotonic()
    with pytest.raises(broker.BrokerError) as error:
        broker.start(data_dir, version=local_kafka_version, heap="2m")  # the JVM refuses
    assert "exited with code" in str(error.value)
    assert "heap" in str(error.value).lower()  # the log tail says why
    assert time.monotonic() - began < 30
    assert broker.running(data_dir) is None


def test_stop_when_nothing_runs_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(broker_group, ["stop", "--data-dir", str(tmp_path)])
    assert result.exit_code == 3
    assert f"No broker runs in {tmp_path} (nothing to stop)." in result.output


def test_status_when_nothing_was_started_exits_3(tmp_path: Path) -> None:
    result = CliRunner().invoke(broker_group, ["status", "--data-dir", str(tmp_path)])
    assert result.exit_code == 3
    assert result.output.startswith(f"not running: no broker was ever started in {tmp_path}")


def test_stop_never_signals_a_process_that_is_not_the_broker(tmp_path: Path) -> None:
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        info = broker.BrokerInfo(
            stranger.pid, 9, 10, "3.9.2", str(tmp_path), str(tmp_path / "broker.log"), "x"
        )
        (tmp_path / "broker.json").write_text(json.dumps(info.to_dict()))
        (tmp_path / "broker.pid").write_text(f"{stranger.pid}\n")
        assert broker.stop(tmp_path) is None
        assert stranger.poll() is None
        assert not (tmp_path / "broker.pid").exists()
    finally:
        os.kill(stranger.pid, signal.SIGTERM)
        stranger.wait()


def test_the_quick_jit_stops_at_c1_and_the_full_one_is_the_jvms_default() -> None:
    quick = broker.jvm_options("3.9.2", "512m")
    full = broker.jvm_options("3.9.2", "512m", "full")
    assert "-XX:TieredStopAtLevel=1" in quick
    assert [flag for flag in quick if flag != "-XX:TieredStopAtLevel=1"] == full
    with pytest.raises(broker.BrokerError, match="jit 'fast' is not one of quick, full"):
        broker.jvm_options("3.9.2", "512m", "fast")


def test_cluster_ids_look_like_kafkas_own() -> None:
    ids = {broker.new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cid in ids:
        assert len(cid) == 22
        assert not cid.startswith("-")
        assert set(cid) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_the_pom_has_a_profile_for_the_default_and_the_4x_versions() -> None:
    assert {"3.9.2", "4.1.1", "4.3.0"} <= set(broker.supported_versions())


def test_a_port_is_free_once_its_server_stopped_though_its_connections_linger() -> None:
    """A broker stopped with clients connected leaves its side of their connections in
    TIME_WAIT for a minute; starting it again on its port must work (Kafka binds with
    SO_REUSEADDR), while a port something listens on is in use."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    assert not broker.port_is_free(port)
    accepted.close()  # the server's side closes first, so the server's end waits in TIME_WAIT
    client.close()
    server.close()
    assert broker.port_is_free(port)
    with socket.socket() as plain, pytest.raises(OSError):  # what the check did before
        plain.bind(("127.0.0.1", port))
