"""deploy/: what can be checked without a Docker engine (none runs here or in CI)."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from streams.cli import main
from streams.settings import load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_the_compose_workers_run_real_trackerflow_commands_against_the_compose_kafka() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    workers = [s for name, s in services.items() if name.startswith("worker")]
    assert len(workers) == 2
    ports = set()
    for worker in workers:
        command = worker["command"]
        assert command[0] == "worker"
        result = CliRunner().invoke(main, [*command, "--help"])
        assert result.exit_code == 0, result.output
        assert worker["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        ports.add(command[command.index("--web-port") + 1])
    assert len(ports) == 2  # distinct HTTP ports, so the two workers can forward to each other
    # the rocksdb store, each worker with its own declared volume at its state directory
    volumes = set()
    for worker in workers:
        environment = worker["environment"]
        assert load_settings(store=environment["TRACKERFLOW_STORE"]).store == "rocksdb"
        (volume,) = worker["volumes"]
        name, mount = volume.split(":")
        assert mount == environment["TRACKERFLOW_STATE_DIR"] and name in compose["volumes"]
        volumes.add(name)
    assert len(volumes) == 2
    assert "INTERNAL://kafka:9092" in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]


def test_the_image_installs_the_three_packages_and_runs_the_cli() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for package in ("events", "processors", "streams"):
        assert f"COPY {package} {package}" in dockerfile
    assert 'ENTRYPOINT ["trackerflow"]' in dockerfile


def test_the_worker_help_explains_each_setting_with_its_default_and_variable() -> None:
    from streams.settings import Settings
    from streams.worker_cli import FIELDS

    result = CliRunner().invoke(main, ["worker", "--help"])
    assert result.exit_code == 0, result.output
    chunks = {  # option -> its help, on one line
        chunk.split()[0]: " ".join(chunk.split()) for chunk in result.output.split("\n  --")[1:]
    }
    for field in FIELDS:
        line = chunks[field.replace("_", "-")]
        info = Settings.model_fields[field]
        assert f"(default: {info.default};" in line and f"TRACKERFLOW_{field.upper()}" in line
        assert (info.description or "")[1:20] in line
