"""A real Kafka broker for the tests that need one, and a fresh topic per test.

``kafka_bootstrap`` (one per session) is, in this order:

1. ``KAFKA_BOOTSTRAP_SERVERS``, if set (it must answer);
2. an ``apache/kafka`` container through testcontainers, if a Docker engine answers;
3. the local launcher of ``streams/broker.py`` (real Kafka from Maven jars) in a temporary data
   dir, started once and stopped by pid at the end of the session.

The Kafka version of 2 and 3 is ``TRACKERFLOW_KAFKA_VERSION`` (default 3.9.2). When none of them is
possible the broker tests are skipped with the reason, except in CI (``CI=true``), where they fail:
CI never skips broker tests.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Iterator

import pytest

# kafka-python 3.0 reads its protocol schemas with importlib.resources.read_text/open_text, which
# Python 3.11 and 3.12 deprecate; its modules load them on import, some lazily during a test.
KAFKA_PYTHON_DEPRECATIONS = r"(read_text|open_text) is deprecated\. Use files\(\) instead"
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", KAFKA_PYTHON_DEPRECATIONS, DeprecationWarning)
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError

    from streams import broker


def pytest_configure(config: pytest.Config) -> None:
    ignore = f"ignore:{KAFKA_PYTHON_DEPRECATIONS}:DeprecationWarning"
    config.addinivalue_line("filterwarnings", ignore)


KAFKA_VERSION = os.environ.get("TRACKERFLOW_KAFKA_VERSION", broker.DEFAULT_VERSION)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"true", "1", "yes"}


def no_broker(reason: str) -> None:
    """Skip the test for want of a broker, or fail it in CI, where broker tests never skip."""
    if in_ci():
        pytest.fail(f"CI=true and no Kafka broker: {reason}", pytrace=False)
    pytest.skip(f"no Kafka broker: {reason}")


def local_broker_missing() -> str | None:
    """Why the local launcher cannot run here, or None if it can."""
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "no java for the local launcher (JAVA_HOME or PATH)"
    if not broker.jars_cached(KAFKA_VERSION) and shutil.which("mvn") is None:
        return f"the Kafka {KAFKA_VERSION} jars are not cached and mvn is missing"
    return None


@pytest.fixture(scope="session")
def local_kafka_version() -> str:
    """The Kafka version the local launcher runs in tests (skips or fails if it cannot run)."""
    reason = local_broker_missing()
    if reason is not None:
        no_broker(reason)
    return KAFKA_VERSION


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The bootstrap address of a real Kafka broker for this test session."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        if not broker.reachable(configured, timeout_ms=10_000):
            pytest.fail(f"KAFKA_BOOTSTRAP_SERVERS={configured} does not answer", pytrace=False)
        yield configured
    elif _docker_answers():
        yield from _container_broker()
    else:
        reason = local_broker_missing()
        if reason is not None:
            no_broker(f"KAFKA_BOOTSTRAP_SERVERS unset, no Docker engine, and {reason}")
        data_dir = tmp_path_factory.mktemp("kafka")
        info = broker.start(data_dir, version=KAFKA_VERSION)
        try:
            yield info.bootstrap
        finally:
            broker.stop(data_dir)


@pytest.fixture
def kafka_topic(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new topic for one test, deleted afterwards. One partition unless parametrized with a count
    (``@pytest.mark.parametrize("kafka_topic", [3], indirect=True)``)."""
    partitions = int(getattr(request, "param", 1))
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:100]
    name = f"test-{slug}-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="trackerflow-tests")
    try:
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        yield name
        with contextlib.suppress(KafkaError):  # a cluster may forbid deletes; names are unique
            admin.delete_topics([name])
    finally:
        admin.close()


def _docker_answers() -> bool:
    # docker-py leaks a socket when no engine answers; keep its ResourceWarning out of the tests.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            import docker

            client = docker.from_env(timeout=5)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:
            return False
        finally:
            gc.collect()


def _container_broker() -> Iterator[str]:
    """A single-node KRaft ``apache/kafka`` container; the settings mirror server.properties."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    port = broker.free_port()
    container = DockerContainer(f"apache/kafka:{KAFKA_VERSION}")
    host = container.get_docker_client().host()
    settings = {
        "node.id": "1",
        "process.roles": "broker,controller",
        "controller.quorum.voters": "1@localhost:9093",
        "listeners": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
    }
    # The image's naming rule: prefix KAFKA_, upper case, '.' -> '_', '_' -> '__', '-' -> '___'.
    for key, value in settings.items():
        env = key.replace("_", "__").replace("-", "___").replace(".", "_").upper()
        container.with_env(f"KAFKA_{env}", value)
    container.with_bind_ports(9092, port)
    container.waiting_for(LogMessageWaitStrategy("Kafka Server started"))
    try:
        container.start()
        yield f"{host}:{port}"
    finally:
        container.stop()
