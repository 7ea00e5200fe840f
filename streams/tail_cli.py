"""``trackerflow tail``: print the records of a trackerflow topic as JSON lines."""

from __future__ import annotations

import sys
from typing import Any

import click
import orjson

from streams.cli_params import bootstrap_servers_option, topic_prefix_option
from streams.settings import Settings, SettingsError, kafka_client_config, load_settings
from streams.topics import Topics, connection_failures

STREAMS = ("signals", "events", "dlq")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("stream", type=click.Choice(STREAMS), default="signals")
@bootstrap_servers_option
@topic_prefix_option
@click.option(
    "--from-beginning/--from-end",
    default=True,
    show_default=True,
    help="Start at the oldest record, or only show new ones.",
)
@click.option(
    "--max",
    "limit",
    type=click.IntRange(min=1),
    help="Stop after this many records [default: no limit].",
)
@click.option(
    "--idle",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Stop after this many seconds without a record [default: follow forever].",
)
def tail(
    stream: str,
    bootstrap_servers: str | None,
    topic_prefix: str | None,
    from_beginning: bool,
    limit: int | None,
    idle: float | None,
) -> None:
    """Print the records of STREAM (signals, events or dlq) as JSON lines, committed ones only.

    Each line is {"topic", "partition", "offset", "key", "value"} (value parsed as JSON when it
    is JSON; dead letters add "headers" with the reason and source). Follows the topic until
    Ctrl-C, --max or --idle.

    \b
    Examples:
      trackerflow tail signals --idle 5
      trackerflow tail dlq --max 10
    """
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    try:
        settings = load_settings(bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix)
        config = kafka_client_config(settings)
    except SettingsError as error:
        raise click.ClickException(str(error)) from None
    topic = getattr(Topics.from_settings(settings), stream)
    try:
        with connection_failures(settings) as failures:
            consumer = KafkaConsumer(
                topic,
                auto_offset_reset="earliest" if from_beginning else "latest",
                isolation_level="read_committed",
                enable_auto_commit=False,
                consumer_timeout_ms=int(idle * 1000) if idle else float("inf"),
                **config,
            )
    except KafkaError as error:
        message = _cannot_read(topic, settings, error) + failures.explain()
        raise click.ClickException(message) from None
    shown = 0
    try:
        for message in consumer:
            sys.stdout.buffer.write(orjson.dumps(_line(message)) + b"\n")
            sys.stdout.flush()
            shown += 1
            if limit is not None and shown >= limit:
                break
    except KeyboardInterrupt:
        pass
    except KafkaError as error:
        raise click.ClickException(_cannot_read(topic, settings, error)) from None
    finally:
        consumer.close()


def _cannot_read(topic: str, settings: Settings, error: Exception) -> str:
    return (
        f"cannot read {topic} from {settings.bootstrap_servers} "
        f"({settings.security_protocol}): {error}"
    )


def _line(message: Any) -> dict[str, Any]:
    try:
        value: Any = orjson.loads(message.value)
    except (orjson.JSONDecodeError, TypeError):
        value = None if message.value is None else message.value.decode("utf-8", "replace")
    line = {
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "key": None if message.key is None else message.key.decode("utf-8", "replace"),
        "value": value,
    }
    if message.headers:
        line["headers"] = {
            name: value.decode("utf-8", "replace") for name, value in message.headers
        }
    return line


if __name__ == "__main__":
    tail()
