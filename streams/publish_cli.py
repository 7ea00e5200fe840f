"""``trackerflow publish``: broker records from JSON-lines files (or stdin) onto the events topic.

The command reads its settings once (:func:`streams.settings.load_settings`, with its options on
top), opens every input first (an unreadable one is a usage error before anything is sent),
creates the topics if asked, then validates each line with ``events.decode_record`` and publishes
the good ones with :class:`~streams.publisher.Publisher`, keyed by ``sender_id``. Bad lines are
reported like ``trackerflow replay`` reports them. Exit codes: 0 done; 1 ``--strict`` saw
rejected lines, or records could not be published (broker unreachable, delivery failed); 2 bad
usage, bad settings or an unreadable input.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

import click

from events import EventError, RecordTooLarge, decode_record, dumps
from streams.cli_params import (
    BadInput,
    bootstrap_servers_option,
    count,
    max_record_bytes_option,
    quiet_option,
    rejects_option,
    topic_prefix_option,
    writable,
)
from streams.progress import FileProgress
from streams.publisher import Encoded, Failure, Publisher, PublishError, PublishReport
from streams.replay import Reject
from streams.settings import Settings, SettingsError, load_settings
from streams.sources import STDIN, InputError, Line, Source
from streams.topics import Topics, TopicsError, starting_topics, topic_specs

MAX_SHOWN = 20
PROGRESS_EVERY = 2048
# Their retries and connection attempts would otherwise reach stderr through logging's last-resort
# handler; the command reports every final failure itself.
CLIENT_LOGGERS = ("aiokafka", "kafka")

PUBLISH_EPILOG = """\
Examples:

\b
  # a log of Rasa events onto the events topic (trackerflow.events), keyed by sender_id
  trackerflow publish events.jsonl
\b
  # gzip files and standard input, to another broker and prefix; keep bad lines
  zcat old.jsonl.gz | trackerflow publish day1.jsonl.gz - \\
      --bootstrap-servers kafka:9092 --topic-prefix shop --rejects bad.jsonl --strict

Input: each line is one broker record, a Rasa event object plus "sender_id", as Rasa's Kafka
event broker publishes it (the input of `trackerflow replay`). Blank lines are skipped. Each
record is published as Rasa writes it, keyed by its sender_id, with the RASA_ENVIRONMENT header;
records of one conversation keep their order. Events without a timestamp are stamped with the
time they are published.

Bad lines are never published: each is reported on stderr (file, line, conversation, reason; the
first 20), counted, and written to --rejects.

Kafka security (SASL, SSL) and topic layout come from the TRACKERFLOW_* settings (see the
settings table in the README).

Exit status: 0 ok; 1 lines were rejected and --strict was given, or records could not be
published; 2 bad usage, bad settings or an unreadable input.
"""


@dataclass(slots=True)
class _Counts:
    lines: int = 0
    rejected: int = 0
    conversations: set[str] = field(default_factory=set)


@click.command(
    epilog=PUBLISH_EPILOG,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.argument(
    "inputs",
    metavar="EVENTS...",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False, readable=True, allow_dash=True),
)
@bootstrap_servers_option
@click.option(
    "--topic",
    envvar="TRACKERFLOW_PUBLISH_TOPIC",
    show_envvar=True,
    help="Publish to this topic [default: <topic prefix>.events].",
)
@topic_prefix_option
@click.option(
    "--create-topics/--no-create-topics",
    default=True,
    show_default=True,
    envvar="TRACKERFLOW_PUBLISH_CREATE_TOPICS",
    show_envvar=True,
    help="Create the events (or --topic), signals and dead-letter topics if they are missing, "
    "with the partitions and configuration of the settings. Existing topics are left alone.",
)
@rejects_option("TRACKERFLOW_PUBLISH_REJECTS")
@click.option(
    "--strict",
    is_flag=True,
    envvar="TRACKERFLOW_PUBLISH_STRICT",
    show_envvar=True,
    help="Exit with status 1 if any line was rejected (the good lines are still published).",
)
@max_record_bytes_option("Reject input lines (and encoded records) longer than this many bytes.")
@quiet_option
def publish(
    *,
    inputs: tuple[str, ...],
    bootstrap_servers: str | None,
    topic: str | None,
    topic_prefix: str | None,
    create_topics: bool,
    rejects: str | None,
    strict: bool,
    max_record_bytes: int,
    quiet: bool,
) -> None:
    """Publish Rasa events from JSON-lines files to the events topic.

    EVENTS are JSON-lines files of broker records as Rasa's Kafka event broker publishes them,
    plain or gzip-compressed, or '-' for standard input, read in order. Every valid record is
    published keyed by its sender_id; invalid lines are reported and not published.
    """
    if inputs.count(STDIN) > 1:
        raise click.BadParameter("standard input ('-') can be read only once", param_hint="EVENTS")
    try:
        settings = load_settings(
            bootstrap_servers=bootstrap_servers,
            topic_prefix=topic_prefix,
            max_record_bytes=max_record_bytes,
        )
    except SettingsError as error:
        raise click.UsageError(str(error)) from None
    total = _input_size(inputs)
    target = topic or Topics.from_settings(settings).events
    for name in CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    if create_topics:
        _create_topics(settings, target)
    counts = _Counts()
    started = time.perf_counter()
    report = _publish_inputs(settings, target, inputs, counts, rejects, quiet=quiet, total=total)
    elapsed = time.perf_counter() - started
    _report(report, counts, rejects)
    if not quiet:
        click.echo(_summary(report, counts, target, len(inputs), elapsed), err=True)
    if report.failed or (strict and counts.rejected):
        sys.exit(1)


def _publish_inputs(
    settings: Settings,
    topic: str,
    inputs: tuple[str, ...],
    counts: _Counts,
    rejects: str | None,
    *,
    quiet: bool,
    total: int | None,
) -> PublishReport:
    """Publish every input; the rejects file is written even when publishing stops early."""
    with (
        writable(rejects, "--rejects") as reject_out,
        FileProgress(enabled=not quiet, total_bytes=total) as progress,
    ):
        run = _Run(settings, topic, counts, progress, reject_out)
        try:
            return asyncio.run(run.publish(inputs))
        except (PublishError, InputError) as error:
            failure: Exception = error
    if isinstance(failure, InputError):
        raise BadInput(f"{failure} (the records before it were published)")
    raise click.ClickException(str(failure))


def _create_topics(settings: Settings, events_topic: str) -> None:
    try:
        report = starting_topics(settings, topic_specs(settings, events_topic=events_topic))
    except TopicsError as error:
        raise click.ClickException(str(error)) from None
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)


@dataclass(slots=True)
class _Run:
    """One publishing run: reads the inputs, reports bad lines, publishes the good ones."""

    settings: Settings
    topic: str
    counts: _Counts
    progress: FileProgress
    reject_out: IO[bytes] | None

    async def publish(self, inputs: tuple[str, ...]) -> PublishReport:
        async with Publisher(self.settings, topic=self.topic) as publisher:
            return await publisher.publish_many(self.records(publisher, inputs))

    def records(self, publisher: Publisher, inputs: tuple[str, ...]) -> Iterator[Encoded]:
        """Every valid record of every input, encoded, in order; bad lines are reported."""
        limit, counts, progress = self.settings.max_record_bytes, self.counts, self.progress
        for path in inputs:
            with Source(path) as source:
                progress.start(source)
                for line in source.lines(limit):
                    data = line.data
                    if not data or data.isspace():
                        continue
                    counts.lines += 1
                    if counts.lines % PROGRESS_EVERY == 0:
                        progress.update(counts.lines)
                    try:
                        if line.cut:
                            raise _cut_record(limit)
                        record = decode_record(data, max_bytes=limit)
                        encoded = publisher.encode(record.event, record.sender_id)
                    except EventError as error:
                        self.reject(source, line, error)
                        continue
                    counts.conversations.add(record.sender_id)
                    yield encoded
                progress.update(counts.lines)
                progress.finish(source)

    def reject(self, source: Source, line: Line, error: EventError) -> None:
        self.counts.rejected += 1
        located = error.at(source=source.name, line=line.number)
        if self.reject_out is not None:
            reject = Reject(source.name, line.number, located, line.data)
            self.reject_out.write(dumps(reject.as_dict()) + b"\n")
        if self.counts.rejected <= MAX_SHOWN:
            self.progress.echo(f"rejected: {located}")


def _cut_record(limit: int) -> RecordTooLarge:
    return RecordTooLarge(
        f"record is longer than the limit of {limit} bytes (see --max-record-bytes)",
        expected=f"at most {limit} bytes",
        got=f"more than {limit} bytes",
    )


def _report(report: PublishReport, counts: _Counts, rejects: str | None) -> None:
    """The tail of the rejected lines, and the records that were valid but not published."""
    if counts.rejected > MAX_SHOWN:
        hidden = counts.rejected - MAX_SHOWN
        where = "all are in the --rejects file" if rejects else "use --rejects FILE to keep them"
        click.echo(f"... and {hidden} more rejected lines not shown ({where})", err=True)
    failed = [f for f in report.failures if isinstance(f.error, PublishError)]
    for failure in failed[:MAX_SHOWN]:
        click.echo(f"failed: {_failure(failure)}", err=True)
    if len(failed) > MAX_SHOWN:
        click.echo(f"... and {len(failed) - MAX_SHOWN} more records not published", err=True)


def _failure(failure: Failure) -> str:
    where = f"conversation {failure.conversation_id!r}: " if failure.conversation_id else ""
    return f"record #{failure.index + 1}, {where}{failure.reason}"


def _input_size(inputs: tuple[str, ...]) -> int | None:
    """Open every input once (so unreadable or broken ones fail before anything is published)
    and return their total size in bytes (None when standard input is among them)."""
    total: int | None = 0
    for path in inputs:
        if path == STDIN:
            total = None
            continue
        try:
            with Source(path) as source:
                size = source.size or 0
        except InputError as error:
            raise BadInput(str(error)) from None
        total = None if total is None else total + size
    return total


def _summary(
    report: PublishReport, counts: _Counts, topic: str, inputs: int, elapsed: float
) -> str:
    """The one-line report printed at the end."""
    rate = report.published / elapsed if elapsed > 0 else 0.0
    parts = [
        f"published {count(report.published, 'event')} of "
        f"{count(len(counts.conversations), 'conversation')} to {topic!r} "
        f"from {count(inputs, 'input')}",
        f"{count(counts.rejected, 'line')} rejected",
    ]
    if report.failed:
        parts.append(f"{count(report.failed, 'record')} not published")
    parts.append(f"{elapsed:.2f} s ({rate:,.0f} events/s)")
    return "; ".join(parts)


if __name__ == "__main__":
    publish(prog_name="trackerflow publish")
