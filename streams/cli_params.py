"""Parameter types and errors shared by the ``trackerflow`` commands."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import click
import yaml

from events.errors import EventError
from events.wire import DEFAULT_MAX_RECORD_BYTES
from processors.domain import Domain
from streams.outputs import OutputFile

bootstrap_servers_option = click.option(
    "--bootstrap-servers",
    metavar="HOST:PORT[,...]",
    envvar=["TRACKERFLOW_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"],
    show_envvar=True,
    help="Kafka brokers to connect to [default: 127.0.0.1:9092].",
)
topic_prefix_option = click.option(
    "--topic-prefix",
    envvar="TRACKERFLOW_TOPIC_PREFIX",
    show_envvar=True,
    help="Prefix of trackerflow's topic names [default: trackerflow].",
)
quiet_option = click.option(
    "-q",
    "--quiet",
    is_flag=True,
    envvar="TRACKERFLOW_QUIET",
    show_envvar=True,
    help="No progress bar and no summary; only errors and warnings on stderr.",
)


domain_option = click.option(
    "--domain",
    type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path),
    envvar="TRACKERFLOW_DOMAIN",
    show_envvar=True,
    help="A Rasa domain.yml: its slots (with initial values) are the trackers' slots and slot "
    "events for other names are ignored, as in Rasa. Without it any slot name is accepted.",
)


def load_domain(path: Path) -> Domain:
    """Parse ``--domain`` (only slots and forms matter to a tracker); a usage error if unusable."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return Domain.from_dict(data or {})
    except (OSError, UnicodeDecodeError, yaml.YAMLError, EventError) as error:
        raise click.BadParameter(
            f"cannot use {str(path)!r}: {error}", param_hint="--domain"
        ) from None


def rejects_option(envvar: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--rejects FILE``: where a command writes the lines it rejected."""
    return click.option(
        "--rejects",
        type=click.Path(dir_okay=False, writable=True, allow_dash=True),
        envvar=envvar,
        show_envvar=True,
        help="Write every rejected line here as JSON lines: source, line, conversation_id, "
        "error, reason, expected, got, raw (the line as text; invalid UTF-8 replaced).",
    )


def max_record_bytes_option(
    help_text: str,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--max-record-bytes`` (shared env var ``TRACKERFLOW_MAX_RECORD_BYTES``)."""
    return click.option(
        "--max-record-bytes",
        type=click.IntRange(min=1),
        default=DEFAULT_MAX_RECORD_BYTES,
        show_default=True,
        envvar="TRACKERFLOW_MAX_RECORD_BYTES",
        show_envvar=True,
        help=help_text,
    )


class BadInput(click.ClickException):
    """An input file cannot be read (exit code 2, like a usage error)."""

    exit_code = 2


class Timestamp(click.ParamType[float]):
    """A Unix timestamp or an ISO-8601 date-time (naive means UTC), as epoch seconds."""

    name = "TIMESTAMP"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        text = str(value).strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            self.fail(
                f"{value!r} is neither a Unix timestamp (e.g. 1700000000.5) nor an ISO-8601 "
                "date-time (e.g. 2023-11-14T22:13:20Z)",
                param,
                ctx,
            )
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()


@contextlib.contextmanager
def writable(path: str | None, option: str) -> Iterator[IO[bytes] | None]:
    """An :class:`OutputFile`, with an unwritable destination reported as a usage error."""
    output = OutputFile(path)
    try:
        stream = output.__enter__()
    except OSError as error:
        reason = error.strerror or str(error)
        raise click.BadParameter(f"cannot write {path!r}: {reason}", param_hint=option) from None
    try:
        yield stream
    except BaseException as error:
        output.__exit__(type(error), error, error.__traceback__)
        raise
    output.__exit__(None, None, None)


def count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"
