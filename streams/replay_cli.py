"""``trackerflow replay``: rebuild conversation trackers from event logs, offline.

The command parses its options into a :class:`~streams.replay.ReplayOptions`, opens the inputs
(``streams.sources``) and outputs (``streams.outputs``), drives :class:`~streams.replay.Replay`
with a progress display (``streams.progress``) and reports rejected lines and a summary on stderr.
Exit codes: 0 done; 1 ``--strict`` saw rejected lines; 2 bad usage or unreadable input.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import IO

import click

from events import dumps
from processors import EventVerbosity
from streams.cli_params import (
    BadInput,
    Timestamp,
    count,
    domain_option,
    load_domain,
    max_record_bytes_option,
    quiet_option,
    rejects_option,
    writable,
)
from streams.progress import FileProgress
from streams.replay import Replay, ReplayOptions, paused_gc
from streams.sources import STDIN, InputError, Source

MAX_SHOWN_REJECTS = 20
VERBOSITIES = ("none", "applied", "after_restart", "all")


REPLAY_EPILOG = """\
Examples:

\b
  # trackers of every conversation in a log, one JSON object per line
  trackerflow replay events.jsonl -o trackers.jsonl
\b
  # several files (gzip recognised by content) and standard input, in that order
  zcat old.jsonl.gz | trackerflow replay day1.jsonl day2.jsonl.gz - -o trackers.jsonl
\b
  # one conversation as it was at a moment, with its applied events
  trackerflow replay events.jsonl -c 5f2a... --until 2023-11-14T22:30:00Z --events applied
\b
  # YAML stories of every conversation; keep bad lines and fail if there were any
  trackerflow replay events.jsonl -o /dev/null --stories stories.yml --rejects bad.jsonl --strict

Input: each line is one broker record, a Rasa event object plus "sender_id", e.g.
{"sender_id": "c1", "event": "slot", "timestamp": 1700000000.5, "name": "city", "value": "Berlin"}.
Blank lines are skipped. Events without a timestamp get the time the run started (Rasa stamps
them with "now").

Bad lines never stop the replay: each is reported on stderr (file, line, conversation, reason;
the first 20), counted, and written to --rejects.

Terminal: a progress bar (rate, and ETA for regular files) when stderr is a terminal, then a
one-line summary on stderr (events, conversations, rejected lines, events/s) unless --quiet.

Exit status: 0 ok, 1 lines were rejected and --strict was given, 2 bad usage or unreadable input.
"""


@click.command(epilog=REPLAY_EPILOG)
@click.argument(
    "inputs",
    metavar="EVENTS...",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False, readable=True, allow_dash=True),
)
@click.option(
    "-o",
    "--output",
    default=STDIN,
    show_default=True,
    envvar="TRACKERFLOW_REPLAY_OUTPUT",
    show_envvar=True,
    type=click.Path(dir_okay=False, writable=True, allow_dash=True),
    help="Write the trackers here: one JSON object per conversation and line, in the order "
    "conversations first appear ('-' = standard output). A file is replaced only when the "
    "replay succeeds.",
)
@click.option(
    "--events",
    "verbosity",
    default="none",
    show_default=True,
    envvar="TRACKERFLOW_REPLAY_EVENTS",
    show_envvar=True,
    type=click.Choice(VERBOSITIES, case_sensitive=False),
    help='Which events each tracker lists under "events" (Rasa\'s include_events): none (null), '
    "applied (after the latest restart or session start, reverted turns removed), "
    "after_restart (everything after the latest restart), all.",
)
@click.option(
    "--until",
    type=Timestamp(),
    envvar="TRACKERFLOW_REPLAY_UNTIL",
    show_envvar=True,
    help="Time travel: each tracker as it was at this moment (events up to and including it, "
    "stopping at the first later event, like Rasa's /tracker?until=). A Unix timestamp or an "
    "ISO-8601 date-time; without a zone it is UTC.",
)
@click.option(
    "-c",
    "--conversation",
    "conversations",
    multiple=True,
    metavar="ID",
    envvar="TRACKERFLOW_REPLAY_CONVERSATION",
    show_envvar=True,
    help="Only this conversation (sender_id); repeat for more (space-separated in the env var). "
    "Other conversations are read and checked but not folded or written.",
)
@click.option(
    "--stories",
    type=click.Path(dir_okay=False, writable=True, allow_dash=True),
    envvar="TRACKERFLOW_REPLAY_STORIES",
    show_envvar=True,
    help="Also write every output conversation as a Rasa YAML story (one file, one header).",
)
@rejects_option("TRACKERFLOW_REPLAY_REJECTS")
@click.option(
    "--strict",
    is_flag=True,
    envvar="TRACKERFLOW_REPLAY_STRICT",
    show_envvar=True,
    help="Exit with status 1 if any line was rejected (everything else is still written).",
)
@domain_option
@max_record_bytes_option("Reject input lines longer than this many bytes.")
@quiet_option
def replay(
    *,
    inputs: tuple[str, ...],
    output: str,
    verbosity: str,
    until: float | None,
    conversations: tuple[str, ...],
    stories: str | None,
    rejects: str | None,
    strict: bool,
    domain: Path | None,
    max_record_bytes: int,
    quiet: bool,
) -> None:
    """Rebuild conversation trackers from event logs, offline.

    EVENTS are JSON-lines files of broker records as Rasa's Kafka event broker publishes them
    (conversations interleaved), plain or gzip-compressed, or '-' for standard input. Each
    conversation's events are folded in order into a tracker exactly as Rasa does, and its
    state is written as Rasa's GET /conversations/{id}/tracker returns it.
    """
    if inputs.count(STDIN) > 1:
        raise click.BadParameter("standard input ('-') can be read only once", param_hint="EVENTS")
    if [output, stories, rejects].count(STDIN) > 1:
        raise click.UsageError("only one of --output, --stories and --rejects can be '-' (stdout)")
    options = ReplayOptions(
        verbosity=EventVerbosity.parse(verbosity),
        until=until,
        conversations=frozenset(conversations),
        domain=load_domain(domain) if domain is not None else None,
        max_record_bytes=max_record_bytes,
        now=time.time(),
    )
    result = _replay(inputs, options, (output, stories, rejects), quiet)
    if strict and result.counts.rejected:
        sys.exit(1)


def _replay(
    inputs: tuple[str, ...],
    options: ReplayOptions,
    paths: tuple[str, str | None, str | None],
    quiet: bool,
) -> Replay:
    """Read, fold and write everything; report on stderr. ``paths``: output, stories, rejects."""
    output, stories, rejects = paths
    total = _input_size(inputs)
    replay = Replay(options)
    with (
        writable(output, "--output") as out,
        writable(stories, "--stories") as story_out,
        writable(rejects, "--rejects") as reject_out,
        FileProgress(enabled=not quiet, total_bytes=total) as progress,
    ):
        try:
            with paused_gc():
                for path in inputs:
                    _feed(replay, path, progress, reject_out)
        except InputError as error:
            raise BadInput(str(error)) from None
        folding = progress.elapsed()
        for missing in replay.missing():
            progress.echo(f"warning: conversation {missing!r} does not occur in the input")
        assert out is not None
        progress.writing("trackers", len(replay.trackers))
        replay.write_states(out, progress.wrote)
        if story_out is not None:
            progress.writing("stories", len(replay.trackers))
            replay.write_stories(story_out, progress.echo, progress.wrote)
        elapsed = progress.elapsed()
    if replay.counts.rejected > MAX_SHOWN_REJECTS:
        hidden = replay.counts.rejected - MAX_SHOWN_REJECTS
        where = "all are in the --rejects file" if rejects else "use --rejects FILE to keep them"
        click.echo(f"... and {hidden} more rejected lines not shown ({where})", err=True)
    if not quiet:
        click.echo(_summary(replay, len(inputs), folding, elapsed), err=True)
    return replay


def _feed(replay: Replay, path: str, progress: FileProgress, reject_out: IO[bytes] | None) -> None:
    """Fold one input, showing progress and reporting its rejected lines."""
    counts = replay.counts
    with Source(path) as source:
        progress.start(source)
        for reject in replay.feed(source, lambda: progress.update(counts.lines)):
            if reject_out is not None:
                reject_out.write(dumps(reject.as_dict()) + b"\n")
            if counts.rejected <= MAX_SHOWN_REJECTS:
                progress.echo(f"rejected: {reject.error}")
        progress.update(counts.lines)
        progress.finish(source)


def _input_size(inputs: tuple[str, ...]) -> int | None:
    """Open every input once (so unreadable or broken ones fail before any work) and return
    their total size in bytes (None when standard input is among them)."""
    sizes: list[int | None] = []
    for path in inputs:
        if path == STDIN:
            sizes.append(None)
            continue
        try:
            with Source(path) as source:
                sizes.append(source.size)
        except InputError as error:
            raise BadInput(str(error)) from None
    if any(size is None for size in sizes):
        return None
    return sum(size for size in sizes if size is not None)


def _summary(replay: Replay, files: int, folding: float, elapsed: float) -> str:
    """The one-line report printed at the end."""
    counts = replay.counts
    rate = counts.events / folding if folding > 0 else 0.0
    parts = [
        f"replayed {count(counts.events, 'event')} into "
        f"{count(len(replay.trackers), 'conversation')} from {count(files, 'input')}",
        f"{count(counts.rejected, 'line')} rejected",
    ]
    if counts.skipped:
        parts.append(f"{counts.skipped:,} records of other conversations skipped")
    parts.append(
        f"read and folded in {folding:.2f} s ({rate:,.0f} events/s), {elapsed:.2f} s in all"
    )
    return "; ".join(parts)
