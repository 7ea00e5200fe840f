"""The Kafka topics trackerflow uses: their names, their configurations, and creating them.

Rules of this module:

* Names come from the prefix only: ``<prefix>.events`` (the source of truth, key = conversation
  id), ``<prefix>.signals`` and ``<prefix>.dlq``. faust names the changelog topics of its tables
  itself; :func:`changelog_config` is the configuration they get (compacted).
* Configurations: events ``cleanup.policy=delete`` with ``events_retention_ms`` (forever by
  default: everything else is rebuilt from it); signals ``delete`` with ``signals_retention_ms``
  (7 days); dlq ``delete`` with ``dlq_retention_ms`` (30 days). Events and dead letters accept
  records up to ``max_record_bytes`` (dead letters twice that: they carry the original bytes plus
  a reason); ``min.insync.replicas`` is 2 when there are 3 or more replicas, else 1.
* :func:`ensure_topics` creates what is missing and leaves existing topics as they are, so it can
  run at every start. It reports topics with fewer partitions than configured (more partitions
  cannot be added without moving keys to other partitions, which would break per-conversation
  order; that is a person's decision).
* Blocking (kafka-python's admin client): async callers run it in a thread.
* :func:`starting_topics` is what a starting worker or ``trackerflow publish`` does: it reads
  what it needs, and makes the topics that are missing, with aiokafka's admin client, which
  both load anyway, and so never loads kafka-python (a tenth of a second of the worker's
  start-up, a fifth of a small ``publish``). Anything else (a broker that refuses the client or
  a topic, one that does not answer, ...) goes to :func:`ensure_topics`, which creates them or
  says why it cannot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from events import TrackerflowError
from streams.settings import DAY_MS, Settings, kafka_client_config

EVENTS, SIGNALS, DLQ, REKEYED = "events", "signals", "dlq", "events.rekeyed"
log = logging.getLogger("trackerflow.topics")

RECORD_OVERHEAD: Final = 64 * 1024  # batch and record headers, key and Kafka headers
TOPIC_ALREADY_EXISTS: Final = 36  # Kafka error code
# kafka-python 3.0 loads its protocol schemas with importlib.resources APIs Python 3.11 deprecates.
_KAFKA_PYTHON_DEPRECATIONS = r"(read_text|open_text) is deprecated"


class TopicsError(TrackerflowError):
    """Topics could not be listed or created; the message says which and why."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class Topics:
    """The names of trackerflow's topics."""

    events: str
    signals: str
    dlq: str
    rekeyed: str  # internal: keyless event records, forwarded under their sender_id

    @classmethod
    def for_prefix(cls, prefix: str) -> Topics:
        return cls(
            f"{prefix}.{EVENTS}", f"{prefix}.{SIGNALS}", f"{prefix}.{DLQ}", f"{prefix}.{REKEYED}"
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        return cls.for_prefix(settings.topic_prefix)


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic as it should be created."""

    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TopicsReport:
    """What :func:`ensure_topics` did: topics created, topics already there, and warnings."""

    created: tuple[str, ...] = ()
    existing: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    # each topic's max.message.bytes as the broker has it (the largest record batch it takes);
    # empty if the broker would not say
    limits: Mapping[str, int] = field(default_factory=dict)
    # the Kafka client that asked: "kafka-python" (ensure_topics) or "aiokafka" (found_topics)
    client: str = field(default="kafka-python", compare=False)

    def summary(self) -> str:
        """The report in a line, for a log."""
        made = f" ({', '.join(self.created)})" if self.created else ""
        return (
            f"{len(self.existing)} existing, {len(self.created)} created{made}; "
            f"asked with {self.client}"
        )


TABLES = ("heads", "history")


def changelog_topics(settings: Settings) -> tuple[str, ...]:
    """The worker's table changelogs (faust names them ``<app id>-<table>-changelog``)."""
    return tuple(f"{settings.app_id}-{table}-changelog" for table in TABLES)


def changelog_config() -> dict[str, str]:
    """The configuration of a table's changelog topic: compacted, the latest value per key;
    a deletion's tombstone is kept a day after compaction reaches it (Kafka's default, set
    here because ``streams.stores`` relies on it)."""
    return {"cleanup.policy": "compact", "delete.retention.ms": str(DAY_MS)}


def _min_insync(replication_factor: int) -> str:
    return "2" if replication_factor >= 3 else "1"


def message_limits(settings: Settings) -> dict[str, int]:
    """The ``max.message.bytes`` trackerflow gives its topics (the largest record batch each
    accepts): a record of ``max_record_bytes`` and its overhead, for the events and re-keyed
    topics, the changelogs (a history record is an event; a head too large loses its state, see
    ``processors.stream.encode_head``) and the signals; twice that for the dead-letter topic
    (the original bytes and the reason)."""
    topics = Topics.from_settings(settings)
    record = settings.max_record_bytes + RECORD_OVERHEAD
    return {
        topics.events: record,
        topics.rekeyed: record,
        **dict.fromkeys(changelog_topics(settings), record),
        topics.signals: record,
        topics.dlq: 2 * settings.max_record_bytes + RECORD_OVERHEAD,
    }


def topic_specs(settings: Settings, *, events_topic: str | None = None) -> tuple[TopicSpec, ...]:
    """The events, signals and dead-letter topics of ``settings`` (``events_topic`` replaces
    the events topic's name, keeping its configuration)."""
    topics = Topics.from_settings(settings)
    replicas = settings.replication_factor
    common = {"cleanup.policy": "delete", "min.insync.replicas": _min_insync(replicas)}
    limits = message_limits(settings)
    record = limits[topics.events]
    return (
        TopicSpec(
            events_topic or topics.events,
            settings.events_partitions,
            replicas,
            {
                **common,
                "retention.ms": str(settings.events_retention_ms),
                "max.message.bytes": str(record),
            },
        ),
        TopicSpec(
            topics.rekeyed,
            settings.events_partitions,  # co-partitioned with the events topic
            replicas,
            {
                **common,
                "retention.ms": str(settings.events_retention_ms),
                "max.message.bytes": str(record),
            },
        ),
        *(
            TopicSpec(
                name,
                settings.events_partitions,  # a table's changelog follows its source partitions
                replicas,
                {
                    **changelog_config(),
                    "min.insync.replicas": _min_insync(replicas),
                    "max.message.bytes": str(limits[name]),
                },
            )
            for name in changelog_topics(settings)
        ),
        TopicSpec(
            topics.signals,
            settings.signals_partitions,
            replicas,
            {
                **common,
                "retention.ms": str(settings.signals_retention_ms),
                "max.message.bytes": str(limits[topics.signals]),
            },
        ),
        TopicSpec(
            topics.dlq,
            settings.dlq_partitions,
            replicas,
            {
                **common,
                "retention.ms": str(settings.dlq_retention_ms),
                "max.message.bytes": str(limits[topics.dlq]),
            },
        ),
    )


def ensure_topics(
    settings: Settings,
    specs: Iterable[TopicSpec] | None = None,
    *,
    timeout_ms: int = 30_000,
) -> TopicsReport:
    """Create the topics of ``specs`` (default: :func:`topic_specs`) that do not exist yet and
    wait until they have leaders. Existing topics are left alone; one with fewer partitions than
    its spec is reported in ``warnings``. Raises :class:`TopicsError`."""
    wanted = list(topic_specs(settings) if specs is None else specs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", _KAFKA_PYTHON_DEPRECATIONS, DeprecationWarning)
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

    where = f"Kafka at {settings.bootstrap_servers}"
    _check_reachable(settings)
    try:
        with connection_failures(settings) as failures:
            admin = KafkaAdminClient(
                **kafka_client_config(settings),
                request_timeout_ms=timeout_ms,
                bootstrap_timeout_ms=timeout_ms,
            )
    except (KafkaError, OSError) as error:
        verb = "log in to" if failures.authentication else "reach"
        raise TopicsError(
            f"cannot {verb} {where}: {_describe(error)}{failures.explain()}",
            retryable=not failures.authentication,
        ) from None
    try:
        return _ensure(admin, wanted, timeout_ms)
    except KafkaError as error:
        raise TopicsError(
            f"cannot create topics on {where}: {_describe(error)}",
            retryable=bool(getattr(error, "retriable", False)),
        ) from None
    finally:
        admin.close()


def _ensure(admin: Any, wanted: list[TopicSpec], timeout_ms: int) -> TopicsReport:
    found = _partition_counts(admin, [spec.name for spec in wanted])
    missing = [spec for spec in wanted if spec.name not in found]
    created: list[str] = []
    raced: list[str] = []
    if missing:
        response = admin.create_topics(
            {
                spec.name: {
                    "num_partitions": spec.partitions,
                    "replication_factor": spec.replication_factor,
                    "configs": dict(spec.config),
                }
                for spec in missing
            },
            timeout_ms=timeout_ms,
            raise_errors=False,
        )
        failures = []
        for result in response["topics"]:
            code, name = result["error_code"], result["name"]
            if code == 0:
                created.append(name)
            elif code == TOPIC_ALREADY_EXISTS:  # created meanwhile by another process
                raced.append(name)
            else:
                failures.append(f"{name!r}: {result.get('error_message') or f'error {code}'}")
        if failures:
            raise TopicsError("cannot create topics: " + "; ".join(failures))
        admin.wait_for_topics(created, timeout_ms=timeout_ms)
    if raced:
        found.update(_partition_counts(admin, raced))
    existing = tuple(spec.name for spec in wanted if spec.name in found)
    limits = _message_limits(admin, [spec.name for spec in wanted])
    return TopicsReport(
        created=tuple(created),
        existing=existing,
        warnings=_fewer_partitions(wanted, found),
        limits=limits,
    )


def _fewer_partitions(wanted: list[TopicSpec], found: Mapping[str, int]) -> tuple[str, ...]:
    """A warning for each topic of ``wanted`` that has fewer partitions than its spec."""
    return tuple(
        f"topic {spec.name!r} has {found[spec.name]} partitions, fewer than the "
        f"{spec.partitions} configured; it was left as it is (adding partitions moves "
        "conversations to other partitions, see the topics documentation)"
        for spec in wanted
        if spec.name in found and found[spec.name] < spec.partitions
    )


def starting_topics(settings: Settings, specs: Iterable[TopicSpec] | None = None) -> TopicsReport:
    """:func:`ensure_topics` for a process starting (a worker, ``trackerflow publish``; see the
    module rules): the same report, from aiokafka unless it fails. Raises
    :class:`TopicsError`."""
    _check_reachable(settings)
    return asyncio.run(known_topics(settings, specs))


async def known_topics(
    settings: Settings, specs: Iterable[TopicSpec] | None = None, *, quiet: bool = True
) -> TopicsReport:
    """:func:`found_topics` (``quiet`` as there, making what is missing), else
    :func:`ensure_topics` in a thread: the topics of ``specs`` (default: :func:`topic_specs`)
    as they are, made where missing. Raises :class:`TopicsError`."""
    wanted = list(topic_specs(settings) if specs is None else specs)
    found = await found_topics(settings, wanted, quiet=quiet, create=True)
    return found if found is not None else await asyncio.to_thread(ensure_topics, settings, wanted)


async def found_topics(
    settings: Settings,
    specs: Iterable[TopicSpec] | None = None,
    *,
    timeout_s: float = 10.0,
    quiet: bool = True,
    create: bool = False,
) -> TopicsReport | None:
    """What :func:`ensure_topics` reports, asked with aiokafka's admin client: when every topic
    of ``specs`` (default: :func:`topic_specs`) exists already, or, with ``create``, once those
    that did not are made (as :func:`ensure_topics` makes them, waiting for their leaders).
    None if one is missing (without ``create``), or the broker cannot be asked, refuses to
    make one or does not say everything (within ``timeout_s``): :func:`ensure_topics` then
    tries again and says why. The topics are listed with a request for all of them (one for
    named topics may create them, on a broker that creates topics on demand) and their
    ``max.message.bytes`` described. With ``quiet``, aiokafka's log is silenced meanwhile (a
    failure here is not an error, as ``ensure_topics`` then tries again): only while nothing
    else in the process uses aiokafka, as when a worker starts."""
    from aiokafka.admin import AIOKafkaAdminClient

    wanted = list(topic_specs(settings) if specs is None else specs)
    admin = AIOKafkaAdminClient(
        **kafka_client_config(settings), request_timeout_ms=int(timeout_s * 1000)
    )
    with _quiet("aiokafka") if quiet else contextlib.nullcontext():
        try:
            async with asyncio.timeout(timeout_s):
                await admin.start()
                return await _found(admin, wanted, create, int(timeout_s * 1000))
        except Exception:  # any failure: ensure_topics asks again, and explains
            return None
        finally:
            with contextlib.suppress(Exception):
                await admin.close()


async def _found(
    admin: Any, wanted: list[TopicSpec], create: bool, timeout_ms: int
) -> TopicsReport | None:
    """:func:`found_topics` with a started aiokafka admin client."""
    from aiokafka.admin import NewTopic
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    names = [spec.name for spec in wanted]
    found = await _aiokafka_partition_counts(admin)
    missing = [spec for spec in wanted if spec.name not in found]
    if missing and not create:
        return None
    created: list[str] = []
    if missing:
        response = await admin.create_topics(
            [
                NewTopic(
                    spec.name,
                    spec.partitions,
                    spec.replication_factor,
                    topic_configs=dict(spec.config),
                )
                for spec in missing
            ],
            timeout_ms=timeout_ms,
        )
        for result in response.to_object()["topic_errors"]:
            if result["error_code"] == 0:
                created.append(result["topic"])
            elif result["error_code"] != TOPIC_ALREADY_EXISTS:  # ensure_topics says why
                return None
        await _leaders_of(admin, created)
        meanwhile = [spec.name for spec in missing if spec.name not in created]
        if meanwhile:  # made by another process since the listing: reported as existing
            found.update(await _aiokafka_partition_counts(admin, meanwhile))
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, name, {"max.message.bytes": None})
        for name in names
    ]
    limits = _described_limits(await admin.describe_configs(resources))
    if set(limits) != set(names):
        return None
    return TopicsReport(
        created=tuple(created),
        existing=tuple(name for name in names if name in found),
        warnings=_fewer_partitions(wanted, found),
        limits=limits,
        client="aiokafka",
    )


async def _aiokafka_partition_counts(admin: Any, names: list[str] | None = None) -> dict[str, int]:
    """The partition count of every topic the broker lists without an error (of ``names``,
    topics known to exist: a request for named topics may create them, see
    :func:`found_topics`)."""
    topics = await admin.describe_topics(names)  # None: all of them
    return {
        topic["topic"]: len(topic["partitions"]) for topic in topics if topic["error_code"] == 0
    }


async def _leaders_of(admin: Any, names: list[str]) -> None:
    """Wait until every partition of the topics ``names`` has a leader."""
    while names:
        described = await admin.describe_topics(names)
        if all(
            topic["error_code"] == 0
            and topic["partitions"]
            and all(p["error_code"] == 0 and p["leader"] >= 0 for p in topic["partitions"])
            for topic in described
        ):
            return
        await asyncio.sleep(0.02)


def _described_limits(responses: Iterable[Any]) -> dict[str, int]:
    """Each topic's ``max.message.bytes`` in aiokafka's describe-configs responses (topics the
    broker reported an error for, or without that config, left out)."""
    limits: dict[str, int] = {}
    for response in responses:
        for resource in response.to_object()["resources"]:
            if resource["error_code"] != 0:
                continue
            for entry in resource["config_entries"]:
                if entry["config_names"] == "max.message.bytes":
                    limits[resource["resource_name"]] = int(entry["config_value"])
    return limits


def _quiet(name: str) -> contextlib.AbstractContextManager[None]:
    """Nothing the logger ``name`` logs is shown while the block runs."""
    return _kept_to_itself(logging.getLogger(name), logging.CRITICAL + 1)


@contextlib.contextmanager
def _kept_to_itself(logger: logging.Logger, level: int) -> Iterator[None]:
    """``logger`` at ``level`` and not passing records on to its parents while the block runs
    (its own handlers still get them); as it was afterwards."""
    saved = logger.level, logger.propagate
    logger.setLevel(level)
    logger.propagate = False
    try:
        yield
    finally:
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def _message_limits(admin: Any, names: list[str]) -> dict[str, int]:
    """Each topic's ``max.message.bytes`` (its own or the broker's default); empty if the
    broker does not answer (e.g. no permission to describe configs)."""
    from kafka.admin import ConfigResource, ConfigResourceType
    from kafka.errors import KafkaError

    resources = [
        ConfigResource(ConfigResourceType.TOPIC, name, configs={"max.message.bytes": None})
        for name in names
    ]
    try:
        described = admin.describe_configs(resources, config_filter="all").get("topic", {})
        return {
            name: int(configs["max.message.bytes"]["value"])
            for name, configs in described.items()
            if "max.message.bytes" in configs
        }
    except (KafkaError, KeyError, TypeError, ValueError) as error:
        log.warning("cannot read the topics' max.message.bytes (%s); using the settings'", error)
        return {}


def _check_reachable(settings: Settings) -> None:
    """Raise :class:`TopicsError` (retryable) if no bootstrap server accepts connections."""
    if not any(_accepts_connections(server) for server in settings.bootstrap_list):
        raise TopicsError(
            f"cannot reach Kafka at {settings.bootstrap_servers}: no broker accepts connections",
            retryable=True,
        )


def _accepts_connections(server: str, timeout: float = 5.0) -> bool:
    """Whether a TCP connection to ``host:port`` opens (kafka-python would retry until its
    bootstrap timeout on a refused connection; this fails fast)."""
    host, _, port = server.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def _partition_counts(admin: Any, names: list[str]) -> dict[str, int]:
    """The partition count of each of ``names`` that exists."""
    existing = set(admin.list_topics())
    present = [name for name in names if name in existing]
    if not present:
        return {}
    return {
        topic["name"]: len(topic["partitions"])
        for topic in admin.describe_topics(present)
        if topic.get("error_code", 0) == 0
    }


class ConnectionFailures(logging.Handler):
    """The reasons kafka-python gave, in its log, for failed connection attempts (it reports
    only "Unable to bootstrap" when it gives up, whatever the reason: refused credentials,
    an untrusted certificate, ...)."""

    def __init__(self, sasl: bool = False) -> None:
        super().__init__(logging.WARNING)
        self.reasons: list[str] = []
        self.sasl = sasl  # the client logs in with SASL

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.name == "kafka.net.manager" and message.startswith("Bootstrap connection to"):
            self.reasons = [*self.reasons[-9:], message]

    @property
    def authentication(self) -> bool:
        """Whether the broker refused the credentials (retrying will not help)."""
        return any("uthentication" in reason for reason in self.reasons)

    def explain(self) -> str:
        """`` (<the reason>)`` to append to an error (a refusal of the credentials first, with
        a hint), or nothing when kafka-python said nothing."""
        if not self.reasons:
            return ""
        refused = [reason for reason in self.reasons if "uthentication" in reason]
        if refused:
            shown, hint = refused[-1], "; check the SASL user name and password"
        else:
            shown, hint = self.reasons[-1], ""
            if self.sasl and "disconnected" in shown:
                # a broker refusing a SASL login closes the connection, and kafka-python may
                # see the close before it reads the refusal (seen with SASL_SSL)
                hint = (
                    "; the broker closed the connection, as it does when it refuses a SASL "
                    "login: check the SASL user name and password"
                )
        return f" ({shown.partition(' (backoff')[0]}{hint})"


@contextlib.contextmanager
def connection_failures(settings: Settings | None = None) -> Iterator[ConnectionFailures]:
    """Collect kafka-python's connection failure reasons while the block runs (also when its
    logging was silenced: then they are collected, still not shown); ``settings`` tell whether
    the client logs in with SASL."""
    sasl = settings is not None and settings.security_protocol.startswith("SASL_")
    handler = ConnectionFailures(sasl)
    logger = logging.getLogger("kafka")
    silenced = logger.getEffectiveLevel() > logging.WARNING
    with _kept_to_itself(logger, logging.WARNING) if silenced else contextlib.nullcontext():
        logger.addHandler(handler)
        try:
            yield handler
        finally:
            logger.removeHandler(handler)


def _describe(error: BaseException) -> str:
    """``Name: message`` for an exception (Kafka errors already start with their name)."""
    text, name = str(error), type(error).__name__
    if not text:
        return name
    return text if text.startswith(name) else f"{name}: {text}"
