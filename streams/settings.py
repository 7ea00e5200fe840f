"""trackerflow's settings: one frozen object, read from the environment once, at the edge.

Rules of this module:

* Every setting is an environment variable ``TRACKERFLOW_<FIELD>`` (upper case). Two also answer
  to the names other tools use: ``KAFKA_BOOTSTRAP_SERVERS`` (after
  ``TRACKERFLOW_BOOTSTRAP_SERVERS``) and Rasa's ``RASA_ENVIRONMENT`` (after
  ``TRACKERFLOW_RASA_ENVIRONMENT_HEADER``). An empty variable counts as unset.
* Commands build one :class:`Settings` with :func:`load_settings` (environment plus their own
  options) and pass it down; nothing below the edge reads the environment.
* Secrets are ``SecretStr``: they never appear in ``repr``, logs or error messages.
* A bad value is a :class:`SettingsError` naming the variable, what is allowed and what arrived.
* Kafka security follows Rasa's ``KafkaEventBroker`` (``security_protocol`` PLAINTEXT,
  SASL_PLAINTEXT, SSL or SASL_SSL, with the same ``sasl_*`` and ``ssl_*`` settings);
  :func:`kafka_client_config` turns them into keyword arguments that aiokafka and kafka-python
  clients both accept.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any, Final, Literal, get_args

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from events import DEFAULT_MAX_RECORD_BYTES, TrackerflowError

ENV_PREFIX: Final = "TRACKERFLOW_"
SECURITY_PROTOCOLS: Final = ("PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL")
SASL_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
RASA_ENVIRONMENT_NOT_SET: Final = "RASA_ENVIRONMENT_NOT_SET"
MiB: Final = 1 << 20
DAY_MS: Final = 86_400_000
# Kafka topic names: at most 249 characters of [a-zA-Z0-9._-]; the longest suffix is ".signals".
_TOPIC_PREFIX = re.compile(r"^[A-Za-z0-9._-]{1,241}$")
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^\s:,\[\]]+):(\d{1,5})$")

JwtMethod = Literal["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512"]
JWT_METHODS: Final = get_args(JwtMethod)
SECRETS: Final = frozenset({"sasl_password", "auth_token", "jwt_secret"})


class SettingsError(TrackerflowError, ValueError):
    """The settings are invalid; the message names each variable and what is wrong with it."""


class Settings(BaseSettings):
    """Everything trackerflow can be configured with (frozen; see :func:`load_settings`)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        frozen=True,
        extra="forbid",
        env_ignore_empty=True,
        populate_by_name=True,
        validate_default=True,
    )

    # -- Kafka ------------------------------------------------------------------------------
    bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        validation_alias=AliasChoices("TRACKERFLOW_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"),
        description="Kafka brokers to bootstrap from, host:port[,host:port...]",
    )
    client_id: str = Field("trackerflow", min_length=1, description="Kafka client id")
    security_protocol: str = Field(
        "PLAINTEXT", description="PLAINTEXT, SASL_PLAINTEXT, SSL or SASL_SSL (as in Rasa)"
    )
    sasl_mechanism: str = Field(
        "PLAIN", description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL_* protocols)"
    )
    sasl_username: str | None = Field(None, description="SASL user name")
    sasl_password: SecretStr | None = Field(None, description="SASL password (secret)")
    ssl_cafile: Path | None = Field(None, description="CA certificates (PEM) to verify brokers")
    ssl_certfile: Path | None = Field(None, description="client certificate (PEM)")
    ssl_keyfile: Path | None = Field(None, description="client private key (PEM)")
    ssl_check_hostname: bool = Field(
        False, description="verify that broker certificates match their host names"
    )
    rasa_environment_header: str | None = Field(
        None,
        validation_alias=AliasChoices("TRACKERFLOW_RASA_ENVIRONMENT_HEADER", "RASA_ENVIRONMENT"),
        description=f"value of the RASA_ENVIRONMENT record header ({RASA_ENVIRONMENT_NOT_SET} "
        "when unset, as Rasa writes it)",
    )

    # -- topics -----------------------------------------------------------------------------
    topic_prefix: str = Field(
        "trackerflow", description="topics are <prefix>.events, <prefix>.signals, <prefix>.dlq"
    )
    events_partitions: int = Field(6, ge=1, description="partitions of the events topic")
    signals_partitions: int = Field(6, ge=1, description="partitions of the signals topic")
    dlq_partitions: int = Field(1, ge=1, description="partitions of the dead-letter topic")
    replication_factor: int = Field(1, ge=1, le=32767, description="replicas of every topic")
    events_retention_ms: int = Field(
        -1, ge=-1, description="retention of the events topic (-1: forever, the source of truth)"
    )
    signals_retention_ms: int = Field(
        7 * DAY_MS, ge=-1, description="retention of the signals topic (-1: forever)"
    )
    dlq_retention_ms: int = Field(
        30 * DAY_MS, ge=-1, description="retention of the dead-letter topic (-1: forever)"
    )

    # -- records ----------------------------------------------------------------------------
    max_record_bytes: int = Field(
        DEFAULT_MAX_RECORD_BYTES, ge=1, description="largest event record accepted or published"
    )
    history_max_events: int | None = Field(
        None,
        ge=1,
        description="Rasa's max_event_history for the worker's trackers: the most events a "
        "tracker holds and shows (unset: all); the history changelog keeps every event",
    )

    # -- worker -----------------------------------------------------------------------------
    app_id: str = Field(
        "trackerflow",
        min_length=1,
        description="consumer group of the workers; prefixes changelog topics and "
        "transactional ids",
    )

    # -- HTTP API ---------------------------------------------------------------------------
    web_host: str = Field("127.0.0.1", min_length=1, description="address the HTTP API binds")
    web_port: int = Field(6066, ge=0, le=65535, description="port of the HTTP API (0: any)")
    auth_token: SecretStr | None = Field(None, description="token the HTTP API requires (secret)")
    jwt_secret: SecretStr | None = Field(
        None, description="key that verifies JWTs on the HTTP API (secret)"
    )
    jwt_method: JwtMethod = Field("HS256", description="JWT signature algorithm")
    max_body_bytes: int = Field(MiB, ge=1, description="largest HTTP request body accepted")
    reminder_grace_s: float = Field(
        300.0,
        ge=0,
        description="how late a reminder may still fire (it fell due while no worker ran); "
        "later ones are reported as missed",
    )
    reminder_events: bool = Field(
        True,
        description="publish the external user event of a fired reminder to the events topic "
        "(as Rasa logs it), not only the reminder_triggered signal",
    )
    store: Literal["memory", "rocksdb"] = Field(
        "memory",
        description="where a worker keeps its state: memory (read again from the changelogs "
        "whenever it takes a partition) or rocksdb (on disk under state_dir; it reads only "
        "what the changelogs gained since; for production)",
    )
    state_dir: Path = Field(
        Path(".trackerflow/state"),
        description="directory of the rocksdb store; one worker per directory (it is locked)",
    )
    max_batch_records: int = Field(
        5000,
        ge=1,
        le=100_000,
        description="most records the worker folds and commits in one transaction per "
        "partition (a batch is what has arrived, so a quiet stream commits record by record)",
    )

    partitions_per_transaction: int = Field(
        1,
        ge=1,
        le=10_000,
        description="events partitions that share one transactional producer and commit "
        "their batches in one transaction (partitions p with the same p // N; a worker owns "
        "them as one). 1: every partition commits alone and as many workers as partitions "
        "share the load. More: fewer, larger transactions (less broker work and lower "
        "latency under load), at most partitions / N workers with work. Every worker of a "
        "group must use the same value",
    )

    compiled_reader: bool = Field(
        True,
        description="the worker reads fetched record batches with trackerflow's compiled "
        "reader (the same records as aiokafka's, in a third of the time); false: with "
        "aiokafka's own reader. Without the compiled extension aiokafka's reader is used",
    )

    heap_keep_mib: int = Field(
        64,
        ge=0,
        le=2047,
        description="freed memory (MiB) the worker process keeps to reuse instead of giving it "
        "back to the kernel at once (glibc's malloc: blocks up to 32 MiB come from the heap, "
        "and up to this much free memory stays at its top), so its fetch and produce buffers "
        "do not fault in fresh pages; 0: the C library's defaults. Only with glibc",
    )
    heap_prefault_mib: int = Field(
        16,
        ge=0,
        le=2047,
        description="memory (MiB) a background thread of the worker keeps faulted in for "
        "Python's object arenas, so the fold does not wait for the kernel to map fresh pages "
        "as its state grows; 0: off. Needs the compiled extension",
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        servers = [part.strip() for part in value.split(",")]
        bad = [s for s in servers if not _valid_host_port(s)]
        if bad or not value.strip():
            shown = ", ".join(repr(s) for s in bad) or repr(value)
            raise ValueError(f"must be host:port[,host:port...] (e.g. 127.0.0.1:9092), got {shown}")
        return ",".join(servers)

    @field_validator("security_protocol", "sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("security_protocol")
    @classmethod
    def _check_protocol(cls, value: str) -> str:
        if value not in SECURITY_PROTOCOLS:
            raise ValueError(
                f"must be one of {', '.join(SECURITY_PROTOCOLS)} (as in Rasa's Kafka broker), "
                f"got {value!r}"
            )
        return value

    @field_validator("sasl_mechanism")
    @classmethod
    def _check_mechanism(cls, value: str) -> str:
        if value not in SASL_MECHANISMS:
            raise ValueError(f"must be one of {', '.join(SASL_MECHANISMS)}, got {value!r}")
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not _TOPIC_PREFIX.match(value) or value in {".", ".."}:
            raise ValueError(
                "must be 1 to 241 characters of letters, digits, '.', '_' and '-' "
                f"(it starts Kafka topic names), got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _check_security(self) -> Settings:
        if self.security_protocol.startswith("SASL_") and not (
            self.sasl_username and self.sasl_password and self.sasl_password.get_secret_value()
        ):
            raise ValueError(
                f"security_protocol {self.security_protocol} with sasl_mechanism "
                f"{self.sasl_mechanism} needs {env_var('sasl_username')} and "
                f"{env_var('sasl_password')}"
            )
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError(
                f"{env_var('ssl_keyfile')} is set but {env_var('ssl_certfile')} is not "
                "(a client key needs its certificate)"
            )
        return self

    @property
    def bootstrap_list(self) -> list[str]:
        """The bootstrap servers as a list of ``host:port``."""
        return self.bootstrap_servers.split(",")

    @property
    def rasa_environment(self) -> str:
        """The ``RASA_ENVIRONMENT`` header value Rasa's Kafka broker would write."""
        return self.rasa_environment_header or RASA_ENVIRONMENT_NOT_SET


def _valid_host_port(server: str) -> bool:
    match = _HOST_PORT.match(server)
    return match is not None and 0 < int(match.group(2)) <= 65535


def env_var(field: str) -> str:
    """The environment variable of a setting (its first name when it has several)."""
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        first = alias.choices[0]
        assert isinstance(first, str)
        return first
    return f"{ENV_PREFIX}{field.upper()}"


def env_vars(field: str) -> tuple[str, ...]:
    """Every environment variable a setting is read from, in order of precedence."""
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(str(choice) for choice in alias.choices)
    return (env_var(field),)


def load_settings(**overrides: Any) -> Settings:
    """The settings from the environment, with ``overrides`` (by field name, ``None`` = not
    given) taking precedence. Raises :class:`SettingsError` naming every bad variable."""
    given = {name: value for name, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as error:
        raise SettingsError(describe_errors(error)) from None


def describe_errors(error: ValidationError) -> str:
    """A message with one line per problem: variable, reason, and the value if not secret."""
    lines = ["invalid trackerflow settings:"]
    for problem in error.errors(include_url=False):
        reason = str(problem["msg"]).removeprefix("Value error, ")
        if not problem["loc"]:
            lines.append(f"  {reason}")
            continue
        location = str(problem["loc"][0])
        field = _field_of(location)
        if field is None:
            lines.append(f"  {location}: not a trackerflow setting")
            continue
        first, *others = env_vars(field)
        variable = f"{first} (or {', '.join(others)})" if others else first
        shown = ""
        if field not in SECRETS and "input" in problem and "got " not in reason:
            shown = f" (got {problem['input']!r})"
        lines.append(f"  {variable}: {reason}{shown}")
    return "\n".join(lines)


def _field_of(location: str) -> str | None:
    if location in Settings.model_fields:
        return location
    for name in Settings.model_fields:
        if location.upper() in env_vars(name):
            return name
    return None


def kafka_client_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for aiokafka and kafka-python clients (producer, consumer, admin):
    bootstrap servers, client id and the security settings, with an SSL context for SSL and
    SASL_SSL. Raises :class:`SettingsError` if the certificate files cannot be used."""
    protocol = settings.security_protocol
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_list,
        "client_id": settings.client_id,
        "security_protocol": protocol,
    }
    if protocol in {"SSL", "SASL_SSL"}:
        config["ssl_context"] = ssl_context(settings)
    if protocol.startswith("SASL_"):
        password = settings.sasl_password
        config["sasl_mechanism"] = settings.sasl_mechanism
        config["sasl_plain_username"] = settings.sasl_username
        config["sasl_plain_password"] = None if password is None else password.get_secret_value()
    return config


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """The client SSL context: the CA file (else the system's CAs), the client certificate and
    key if given, and host-name checking as ``ssl_check_hostname`` says (off by default, as in
    Rasa). Certificates are always verified."""
    from aiokafka.helpers import create_ssl_context

    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=settings.ssl_cafile,
            certfile=settings.ssl_certfile,
            keyfile=settings.ssl_keyfile,
        )
    except (OSError, ssl.SSLError) as error:
        files = ", ".join(
            f"{env_var(name)}={getattr(settings, name)}"
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
            if getattr(settings, name) is not None
        )
        reason = getattr(error, "strerror", None) or str(error)
        raise SettingsError(
            f"cannot build the SSL context from {files or 'the system CA store'}: {reason}"
        ) from None
    context.check_hostname = settings.ssl_check_hostname
    return context
