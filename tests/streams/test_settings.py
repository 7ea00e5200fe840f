"""The settings object: environment parsing, aliases, validation messages, secrets, Kafka config.

Every test starts from an environment without any TRACKERFLOW_*, KAFKA_BOOTSTRAP_SERVERS or
RASA_ENVIRONMENT variable, so the developer's shell cannot leak in.
"""

from __future__ import annotations

import inspect
import os
import ssl
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from kafka import KafkaAdminClient, KafkaConsumer
from pydantic import ValidationError

from events import DEFAULT_MAX_RECORD_BYTES, TrackerflowError
from streams.settings import (
    RASA_ENVIRONMENT_NOT_SET,
    SECURITY_PROTOCOLS,
    Settings,
    SettingsError,
    env_var,
    env_vars,
    kafka_client_config,
    load_settings,
)

# A self-signed CA certificate (EC P-256, CN=trackerflow-test-ca); its key was thrown away.
TEST_CA = """\
-----BEGIN CERTIFICATE-----
MIIBkzCCATmgAwIBAgIUBW3FRnXHNRA0TtFu8b1bi81yrdEwCgYIKoZIzj0EAwIw
HjEcMBoGA1UEAwwTdHJhY2tlcmZsb3ctdGVzdC1jYTAgFw0yNjExMjEwNjA3MzZa
GA8yMTI2MTAyODA2MDczNlowHjEcMBoGA1UEAwwTdHJhY2tlcmZsb3ctdGVzdC1j
YTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABAgBPgu91nvd1VsPC6GQyjDQ6KQp
aQ+npVN3jQALgIp+WzOn/4n9CxH6RmSj3bzdWHV5a7DJ4SqdwmcZGEhzrTqjUzBR
MB0GA1UdDgQWBBRe1JbnLzfaS5wIZqCyQ52GRv68hjAfBgNVHSMEGDAWgBRe1Jbn
LzfaS5wIZqCyQ52GRv68hjAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gA
MEUCIQD12VIfXR3bEyTUr/+hPFUXbCh8WdKQAYr6GHYev1eSiwIgc3MBW/pGXXzI
PWiCobtc7Gyw2LcmqFBn2+qqA+Kyn4g=
-----END CERTIFICATE-----
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TRACKERFLOW_") or name in {
            "KAFKA_BOOTSTRAP_SERVERS",
            "RASA_ENVIRONMENT",
        }:
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert settings.bootstrap_list == ["127.0.0.1:9092"]
    assert settings.topic_prefix == "trackerflow"
    assert (settings.events_partitions, settings.signals_partitions) == (6, 6)
    assert (settings.dlq_partitions, settings.replication_factor) == (1, 1)
    assert settings.app_id == settings.client_id == "trackerflow"
    assert settings.max_batch_records == 5000
    assert (settings.web_host, settings.web_port) == ("127.0.0.1", 6066)
    assert settings.auth_token is None and settings.jwt_secret is None
    assert settings.jwt_method == "HS256"
    assert settings.max_body_bytes == 1 << 20
    assert settings.max_record_bytes == DEFAULT_MAX_RECORD_BYTES == 1 << 20
    assert settings.history_max_events is None
    assert settings.security_protocol == "PLAINTEXT"
    assert settings.sasl_mechanism == "PLAIN"
    assert settings.sasl_username is None and settings.sasl_password is None
    assert settings.ssl_cafile is None and settings.ssl_check_hostname is False
    assert settings.rasa_environment_header is None
    assert settings.rasa_environment == RASA_ENVIRONMENT_NOT_SET
    assert settings.events_retention_ms == -1


def test_the_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.topic_prefix = "other"


def test_every_field_reads_its_trackerflow_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "TRACKERFLOW_BOOTSTRAP_SERVERS": "k1:9092, k2:9093",
        "TRACKERFLOW_TOPIC_PREFIX": "shop.bot",
        "TRACKERFLOW_EVENTS_PARTITIONS": "12",
        "TRACKERFLOW_SIGNALS_PARTITIONS": "3",
        "TRACKERFLOW_DLQ_PARTITIONS": "2",
        "TRACKERFLOW_REPLICATION_FACTOR": "3",
        "TRACKERFLOW_EVENTS_RETENTION_MS": "86400000",
        "TRACKERFLOW_APP_ID": "shop-worker",
        "TRACKERFLOW_MAX_BATCH_RECORDS": "500",
        "TRACKERFLOW_WEB_HOST": "0.0.0.0",
        "TRACKERFLOW_WEB_PORT": "8080",
        "TRACKERFLOW_AUTH_TOKEN": "token-1",
        "TRACKERFLOW_JWT_SECRET": "jwt-1",
        "TRACKERFLOW_JWT_METHOD": "HS512",
        "TRACKERFLOW_MAX_BODY_BYTES": "2048",
        "TRACKERFLOW_MAX_RECORD_BYTES": "4096",
        "TRACKERFLOW_HISTORY_MAX_EVENTS": "500",
        "TRACKERFLOW_SECURITY_PROTOCOL": "sasl_plaintext",
        "TRACKERFLOW_SASL_MECHANISM": "scram-sha-512",
        "TRACKERFLOW_SASL_USERNAME": "bot",
        "TRACKERFLOW_SASL_PASSWORD": "pw-1",
        "TRACKERFLOW_SSL_CHECK_HOSTNAME": "true",
        "TRACKERFLOW_CLIENT_ID": "shop",
        "TRACKERFLOW_RASA_ENVIRONMENT_HEADER": "production",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.bootstrap_servers == "k1:9092,k2:9093"
    assert settings.bootstrap_list == ["k1:9092", "k2:9093"]
    assert settings.topic_prefix == "shop.bot"
    assert (settings.events_partitions, settings.signals_partitions) == (12, 3)
    assert (settings.dlq_partitions, settings.replication_factor) == (2, 3)
    assert settings.events_retention_ms == 86_400_000
    assert (settings.app_id, settings.max_batch_records) == ("shop-worker", 500)
    assert (settings.web_host, settings.web_port) == ("0.0.0.0", 8080)
    assert settings.auth_token is not None
    assert settings.auth_token.get_secret_value() == "token-1"
    assert settings.jwt_secret is not None
    assert settings.jwt_secret.get_secret_value() == "jwt-1"
    assert settings.jwt_method == "HS512"
    assert (settings.max_body_bytes, settings.max_record_bytes) == (2048, 4096)
    assert settings.history_max_events == 500
    assert settings.security_protocol == "SASL_PLAINTEXT"
    assert settings.sasl_mechanism == "SCRAM-SHA-512"
    assert settings.sasl_username == "bot"
    assert settings.sasl_password is not None
    assert settings.sasl_password.get_secret_value() == "pw-1"
    assert settings.ssl_check_hostname is True
    assert settings.client_id == "shop"
    assert settings.rasa_environment == "production"


def test_kafka_bootstrap_servers_is_an_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:29092")
    assert load_settings().bootstrap_servers == "kafka:29092"
    monkeypatch.setenv("TRACKERFLOW_BOOTSTRAP_SERVERS", "tf:9092")
    assert load_settings().bootstrap_servers == "tf:9092"  # the trackerflow name wins
    assert load_settings(bootstrap_servers="given:1").bootstrap_servers == "given:1"
    assert env_vars("bootstrap_servers") == (
        "TRACKERFLOW_BOOTSTRAP_SERVERS",
        "KAFKA_BOOTSTRAP_SERVERS",
    )


def test_rasa_environment_is_read_like_rasa(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RASA_ENVIRONMENT", "staging")
    assert load_settings().rasa_environment == "staging"
    monkeypatch.setenv("TRACKERFLOW_RASA_ENVIRONMENT_HEADER", "prod")
    assert load_settings().rasa_environment == "prod"


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKERFLOW_AUTH_TOKEN", "")
    monkeypatch.setenv("TRACKERFLOW_WEB_PORT", "")
    settings = load_settings()
    assert settings.auth_token is None
    assert settings.web_port == 6066


def test_overrides_beat_the_environment_and_none_means_not_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRACKERFLOW_TOPIC_PREFIX", "from-env")
    assert load_settings(topic_prefix="given").topic_prefix == "given"
    assert load_settings(topic_prefix=None).topic_prefix == "from-env"


def test_secrets_never_show(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKERFLOW_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("TRACKERFLOW_SASL_USERNAME", "bot")
    monkeypatch.setenv("TRACKERFLOW_SASL_PASSWORD", "hunter2-sasl")
    monkeypatch.setenv("TRACKERFLOW_AUTH_TOKEN", "hunter2-token")
    monkeypatch.setenv("TRACKERFLOW_JWT_SECRET", "hunter2-jwt")
    settings = load_settings()
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert "hunter2" not in text
        assert "**********" in text
    # nor in errors: a bad value of a secret is reported without the value
    with pytest.raises(SettingsError) as caught:
        load_settings(jwt_secret=["hunter2-list"])
    assert "TRACKERFLOW_JWT_SECRET" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_a_bad_security_protocol_names_the_allowed_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRACKERFLOW_SECURITY_PROTOCOL", "TLS")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "TRACKERFLOW_SECURITY_PROTOCOL" in message
    assert "'TLS'" in message
    for protocol in SECURITY_PROTOCOLS:
        assert protocol in message
    assert isinstance(caught.value, TrackerflowError)


def test_every_problem_is_reported_with_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "no-port")
    monkeypatch.setenv("TRACKERFLOW_WEB_PORT", "70000")
    monkeypatch.setenv("TRACKERFLOW_EVENTS_PARTITIONS", "0")
    monkeypatch.setenv("TRACKERFLOW_TOPIC_PREFIX", "bad prefix")
    monkeypatch.setenv("TRACKERFLOW_MAX_BATCH_RECORDS", "0")
    monkeypatch.setenv("TRACKERFLOW_SASL_MECHANISM", "GSSAPI")
    monkeypatch.setenv("TRACKERFLOW_JWT_METHOD", "none")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    lines = str(caught.value).splitlines()
    assert lines[0] == "invalid trackerflow settings:"
    assert len(lines) == 8
    text = "\n".join(lines)
    assert "TRACKERFLOW_BOOTSTRAP_SERVERS (or KAFKA_BOOTSTRAP_SERVERS): must be host:port" in text
    assert "'no-port'" in text
    assert "TRACKERFLOW_WEB_PORT: " in text and "'70000'" in text
    assert "TRACKERFLOW_EVENTS_PARTITIONS: " in text
    assert "TRACKERFLOW_TOPIC_PREFIX: " in text and "'bad prefix'" in text
    assert "TRACKERFLOW_MAX_BATCH_RECORDS: " in text and "'0'" in text
    assert "TRACKERFLOW_SASL_MECHANISM: must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512" in text
    assert "TRACKERFLOW_JWT_METHOD: " in text and "'HS256'" in text


def test_sasl_needs_credentials() -> None:
    with pytest.raises(SettingsError, match=r"TRACKERFLOW_SASL_USERNAME and .*PASSWORD"):
        load_settings(security_protocol="SASL_SSL", sasl_username="bot")
    with pytest.raises(SettingsError, match="TRACKERFLOW_SSL_CERTFILE is not"):
        load_settings(ssl_keyfile="client.key")


def test_unknown_settings_are_refused() -> None:
    with pytest.raises(SettingsError, match="topic_prefx: not a trackerflow setting"):
        load_settings(topic_prefx="typo")


def test_env_var_names() -> None:
    assert env_var("web_port") == "TRACKERFLOW_WEB_PORT"
    assert env_var("rasa_environment_header") == "TRACKERFLOW_RASA_ENVIRONMENT_HEADER"
    assert env_vars("rasa_environment_header")[1] == "RASA_ENVIRONMENT"
    assert all(env_var(name).startswith("TRACKERFLOW_") for name in Settings.model_fields)


def test_plaintext_client_config() -> None:
    config = kafka_client_config(load_settings(bootstrap_servers="a:1,b:2", client_id="me"))
    assert config == {
        "bootstrap_servers": ["a:1", "b:2"],
        "client_id": "me",
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_client_config_carries_the_password_in_clear_for_the_client() -> None:
    settings = load_settings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="bot",
        sasl_password="s3cret",
    )
    config = kafka_client_config(settings)
    assert config["security_protocol"] == "SASL_PLAINTEXT"
    assert config["sasl_mechanism"] == "SCRAM-SHA-256"
    assert config["sasl_plain_username"] == "bot"
    assert config["sasl_plain_password"] == "s3cret"
    assert "ssl_context" not in config


def test_ssl_client_config_builds_a_verifying_context(tmp_path: Path) -> None:
    cafile = tmp_path / "ca.pem"
    cafile.write_text(TEST_CA)
    config = kafka_client_config(load_settings(security_protocol="SSL", ssl_cafile=str(cafile)))
    context = config["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is False  # Rasa's default
    subjects = [cert["subject"] for cert in context.get_ca_certs()]
    assert ((("commonName", "trackerflow-test-ca"),),) in subjects
    assert "sasl_mechanism" not in config

    checked = kafka_client_config(
        load_settings(
            security_protocol="SASL_SSL",
            ssl_cafile=str(cafile),
            ssl_check_hostname=True,
            sasl_username="bot",
            sasl_password="pw",
        )
    )
    assert checked["ssl_context"].check_hostname is True
    assert checked["sasl_plain_password"] == "pw"


def test_unusable_certificate_files_are_settings_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    settings = load_settings(security_protocol="SSL", ssl_cafile=str(missing))
    with pytest.raises(SettingsError, match=f"TRACKERFLOW_SSL_CAFILE={missing}"):
        kafka_client_config(settings)


def test_the_client_config_suits_aiokafka_and_kafka_python() -> None:
    settings = load_settings(security_protocol="SASL_SSL", sasl_username="bot", sasl_password="pw")
    keys = set(kafka_client_config(settings))
    assert keys <= set(inspect.signature(AIOKafkaProducer).parameters)
    assert keys <= set(KafkaConsumer.DEFAULT_CONFIG)
    assert keys <= set(KafkaAdminClient.DEFAULT_CONFIG)
