"""SASL and TLS against a real broker: a local Kafka (the project's launcher) with SASL_PLAINTEXT,
SSL and SASL_SSL listeners next to its PLAINTEXT one (SASL mechanisms PLAIN, SCRAM-SHA-256 and
SCRAM-SHA-512), and trackerflow's commands run as a user runs them, configured the way Rasa's
Kafka broker is (``security_protocol``, ``sasl_*``, ``ssl_*``).

The broker's TLS certificate is self-signed (made with the JDK's ``keytool``, for 127.0.0.1), and
the clients trust it as their CA file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams import broker
from streams.broker import free_port
from tests.conftest import local_kafka_version  # noqa: F401 - a fixture
from tests.streams.test_worker import assert_same_signals, offline, sample

pytestmark = [pytest.mark.broker, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
STORE_PASSWORD = "broker-store-secret"
USERS = {"alice": "alice-secret"}  # PLAIN users (in the listeners' JAAS configs)
# SCRAM users, apart from the PLAIN ones: a client that did not use SCRAM would be refused
SCRAM_USERS = {"bob": "bob-scram-secret"}
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass
class Secured:
    """The secured broker: a bootstrap address per listener, and the CA file clients trust."""

    listeners: dict[str, str]  # security protocol (or MTLS) -> host:port
    cafile: Path
    client_cert: Path  # the certificate and key the MTLS listener requires
    client_key: Path

    def env(self, protocol: str, mechanism: str = "PLAIN", **more: str) -> dict[str, str]:
        """The environment of a trackerflow command using ``protocol`` (as alice with PLAIN, as
        bob with SCRAM)."""
        environ = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("TRACKERFLOW_") and k != "KAFKA_BOOTSTRAP_SERVERS"
        }
        environ |= {
            "KAFKA_BOOTSTRAP_SERVERS": self.listeners[protocol],
            "TRACKERFLOW_SECURITY_PROTOCOL": "SSL" if protocol == "MTLS" else protocol,
        }
        if protocol.startswith("SASL_"):
            environ |= {
                "TRACKERFLOW_SASL_MECHANISM": mechanism,
                "TRACKERFLOW_SASL_USERNAME": "alice" if mechanism == "PLAIN" else "bob",
                "TRACKERFLOW_SASL_PASSWORD": USERS["alice"]
                if mechanism == "PLAIN"
                else SCRAM_USERS["bob"],
            }
        if protocol in ("SSL", "SASL_SSL", "MTLS"):
            environ |= {
                "TRACKERFLOW_SSL_CAFILE": str(self.cafile),
                "TRACKERFLOW_SSL_CHECK_HOSTNAME": "true",
            }
        return environ | more


def keystore(directory: Path) -> tuple[Path, Path]:
    """A PKCS12 keystore with a self-signed certificate for 127.0.0.1, and that certificate as
    PEM (the clients' CA file)."""
    java = Path(os.path.realpath(broker._java()))
    keytool = java.parent / "keytool"
    store, cafile = directory / "broker.p12", directory / "ca.pem"
    common = ["-keystore", str(store), "-storetype", "PKCS12", "-storepass", STORE_PASSWORD]
    subprocess.run(
        [
            str(keytool), "-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048",
            "-dname", "CN=127.0.0.1", "-ext", "SAN=IP:127.0.0.1,DNS:localhost", "-validity", "2",
            "-keypass", STORE_PASSWORD, *common,
        ],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [str(keytool), "-exportcert", "-rfc", "-alias", "broker", "-file", str(cafile), *common],
        check=True,
        capture_output=True,
    )
    return store, cafile


def client_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed client certificate and its unencrypted private key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt.pem", directory / f"{name}.key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def secured(
    tmp_path_factory: pytest.TempPathFactory,
    local_kafka_version: str,  # noqa: F811
) -> Iterator[Secured]:
    data_dir = tmp_path_factory.mktemp("secured-kafka")
    store, cafile = keystore(data_dir)
    client_cert, client_key = client_certificate(data_dir, "trackerflow-client")
    plain, controller = free_port(), free_port()
    # MTLS: an SSL listener that requires a client certificate (trusting the one made above)
    ports = {name: free_port() for name in ("SASL_PLAINTEXT", "SSL", "SASL_SSL", "MTLS")}
    listeners = {p: f"127.0.0.1:{port}" for p, port in ports.items()}
    users = " ".join(f'user_{name}="{password}"' for name, password in USERS.items())
    jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="alice" password="{USERS["alice"]}" {users};'
    )
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    # SCRAM users live in the cluster metadata: added when the storage is formatted
    scram_users = [
        ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
        for mechanism in MECHANISMS[1:]
        for name, password in SCRAM_USERS.items()
    ]
    extra = {
        "listeners": ",".join(
            [
                f"PLAINTEXT://127.0.0.1:{plain}",
                f"CONTROLLER://127.0.0.1:{controller}",
                *(f"{p}://{address}" for p, address in listeners.items()),
            ]
        ),
        "advertised.listeners": ",".join(
            [f"PLAINTEXT://127.0.0.1:{plain}", *(f"{p}://{a}" for p, a in listeners.items())]
        ),
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
        "SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL,MTLS:SSL",
        "listener.name.mtls.ssl.client.auth": "required",
        "listener.name.mtls.ssl.truststore.type": "PEM",
        "listener.name.mtls.ssl.truststore.location": str(client_cert),
        "sasl.enabled.mechanisms": ",".join(MECHANISMS),
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": jaas,
        "listener.name.sasl_ssl.plain.sasl.jaas.config": jaas,
        **{
            f"listener.name.{listener}.{mechanism.lower()}.sasl.jaas.config": scram
            for listener in ("sasl_plaintext", "sasl_ssl")
            for mechanism in MECHANISMS[1:]
        },
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(store),
        "ssl.keystore.password": STORE_PASSWORD,
        "ssl.key.password": STORE_PASSWORD,
        "ssl.client.auth": "none",
    }
    broker.start(
        data_dir,
        port=plain,
        controller_port=controller,
        version=local_kafka_version,
        extra_config=extra,
        format_args=[arg for pair in scram_users for arg in pair],
    )
    try:
        yield Secured(listeners, cafile, client_cert, client_key)
    finally:
        broker.stop(data_dir)


def trackerflow(
    command: str, *args: str, env: dict[str, str], stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", command, *args],
        input=None if stdin is None else stdin.decode(),
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=180, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("protocol", "mechanism"),
    [
        ("SASL_PLAINTEXT", "PLAIN"),
        ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
        ("SSL", "PLAIN"),  # no SASL: the mechanism is not used
        ("SASL_SSL", "PLAIN"),
        ("SASL_SSL", "SCRAM-SHA-512"),
        ("MTLS", "PLAIN"),  # SSL with a client certificate
    ],
)
def test_publish_and_tail_over_each_secured_listener(
    secured: Secured, protocol: str, mechanism: str
) -> None:
    prefix = f"sec{uuid.uuid4().hex[:8]}"
    env = secured.env(protocol, mechanism, TRACKERFLOW_TOPIC_PREFIX=prefix)
    if protocol == "MTLS":
        env |= {
            "TRACKERFLOW_SSL_CERTFILE": str(secured.client_cert),
            "TRACKERFLOW_SSL_KEYFILE": str(secured.client_key),
        }
    lines = b"".join(
        orjson.dumps({"sender_id": f"c{i}", "event": "pause", "timestamp": 1.0 + i}) + b"\n"
        for i in range(3)
    )
    published = trackerflow("publish", "-", env=env, stdin=lines)
    assert published.returncode == 0, published.stderr
    tailed = trackerflow("tail", "events", "--idle", "5", env=env)
    assert tailed.returncode == 0, tailed.stderr
    seen = sorted(orjson.loads(line)["key"] for line in tailed.stdout.splitlines())
    assert seen == ["c0", "c1", "c2"]


def test_a_worker_folds_over_sasl_ssl_with_scram_exactly_like_offline(
    secured: Secured, tmp_path: Path
) -> None:
    records = sample()[:400]
    prefix = f"sec{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = secured.env(
        "SASL_SSL",
        "SCRAM-SHA-256",
        TRACKERFLOW_TOPIC_PREFIX=prefix,
        TRACKERFLOW_APP_ID=prefix,
        TRACKERFLOW_WEB_PORT=str(port),
    )
    lines = b"".join(value + b"\n" for _, value in records)
    published = trackerflow("publish", "-", env=env, stdin=lines)
    assert published.returncode == 0, published.stderr
    log = tmp_path / "worker.log"
    with log.open("wb") as errors:
        worker = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--loglevel", "info"],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=errors,
            start_new_session=True,
        )  # fmt: skip
    _, expected_signals = offline(records)
    try:
        wait_for_folds(port, len(records), worker)
        # the signals of the committed transactions, read while the worker runs: the sample's
        # reminders fire (as missed) in transactions after the last record's
        deadline = time.monotonic() + 60
        while True:
            tailed = trackerflow("tail", "signals", "--idle", "3", env=env)
            assert tailed.returncode == 0, tailed.stderr
            signals = [orjson.loads(line)["value"] for line in tailed.stdout.splitlines()]
            try:
                assert_same_signals(signals, expected_signals, records)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
    assert worker.returncode == 0, log.read_text()[-2000:]
    # publish made the topics: the worker found them with aiokafka, over SASL_SSL and SCRAM
    assert "topics: 6 existing, 0 created; asked with aiokafka" in log.read_text()


def wait_for_folds(port: int, total: int, worker: subprocess.Popen[bytes]) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    health: dict[str, Any] = {}
    while time.monotonic() < deadline:
        assert worker.poll() is None, "the worker exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
                health = orjson.loads(answer.read())
        except OSError:
            health = {}
        if health.get("records", {}).get("folded", 0) >= total:
            return health
        time.sleep(0.5)
    raise AssertionError(f"not all folded in time: {health}")


@pytest.mark.parametrize(
    ("protocol", "change", "says"),
    [
        ("SASL_PLAINTEXT", {"TRACKERFLOW_SASL_PASSWORD": "wrong"}, "uthentication"),
        ("SASL_SSL", {"TRACKERFLOW_SASL_USERNAME": "mallory"}, "uthentication"),
    ],
    ids=["wrong-password", "unknown-user"],
)
def test_bad_credentials_fail_with_a_clear_error(
    secured: Secured, protocol: str, change: dict[str, str], says: str
) -> None:
    env = secured.env(protocol, TRACKERFLOW_TOPIC_PREFIX=f"sec{uuid.uuid4().hex[:8]}", **change)
    line = b'{"sender_id": "c1", "event": "pause", "timestamp": 1.0}\n'
    published = trackerflow("publish", "-", env=env, stdin=line)
    assert published.returncode != 0 and "Traceback" not in published.stderr
    assert "check the SASL user name and password" in published.stderr
    # kafka-python reads the refusal, or now and then only the closed connection (seen over
    # TLS; likely the one failure in ten runs without TLS too): the hint is there either way
    assert says in published.stderr or "the broker closed the connection" in published.stderr
    if protocol != "SASL_PLAINTEXT":
        return  # each attempt waits for kafka-python's bootstrap timeout: tail once only
    tailed = trackerflow("tail", "events", "--idle", "1", env=env)
    assert tailed.returncode != 0
    assert "check the SASL user name and password" in tailed.stderr
    # a worker asks with aiokafka first (see streams.topics.starting_topics), then says why
    worked = trackerflow("worker", env=env)
    assert worked.returncode == 1 and "Traceback" not in worked.stderr, worked.stderr
    assert "check the SASL user name and password" in worked.stderr, worked.stderr


def test_a_listener_requiring_a_client_certificate_refuses_a_client_without_one(
    secured: Secured,
) -> None:
    env = secured.env("MTLS", TRACKERFLOW_TOPIC_PREFIX=f"sec{uuid.uuid4().hex[:8]}")
    line = b'{"sender_id": "c1", "event": "pause", "timestamp": 1.0}\n'
    published = trackerflow("publish", "-", env=env, stdin=line)
    assert published.returncode != 0
    assert "cannot reach Kafka" in published.stderr and "Traceback" not in published.stderr
    assert "BAD_CERTIFICATE" in published.stderr  # the broker's TLS alert, passed on


def test_a_certificate_not_trusted_fails_with_a_clear_error(
    secured: Secured, tmp_path: Path
) -> None:
    _, stranger = keystore(tmp_path)  # another self-signed certificate: not the broker's
    env = secured.env(
        "SSL",
        TRACKERFLOW_TOPIC_PREFIX=f"sec{uuid.uuid4().hex[:8]}",
        TRACKERFLOW_SSL_CAFILE=str(stranger),
    )
    line = b'{"sender_id": "c1", "event": "pause", "timestamp": 1.0}\n'
    published = trackerflow("publish", "-", env=env, stdin=line)
    assert published.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in published.stderr
    assert "Traceback" not in published.stderr
