"""``trackerflow worker``: run a worker of the consumer group until stopped (Ctrl-C / SIGTERM)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click
import yaml

from events.errors import EventError
from processors.domain import Domain
from streams.settings import SettingsError, env_vars, load_settings
from streams.topics import TopicsError, ensure_topics

FIELDS = {
    "bootstrap_servers": "HOST:PORT[,...]",
    "topic_prefix": "PREFIX",
    "app_id": "NAME",
    "store": "URL",
    "data_dir": "DIR",
    "web_host": "HOST",
    "web_port": "PORT",
}


def _setting_options(command: Any) -> Any:
    for field, metavar in reversed(FIELDS.items()):
        names = env_vars(field)
        command = click.option(
            f"--{field.replace('_', '-')}",
            metavar=metavar,
            envvar=list(names),
            show_envvar=True,
            help=f"The {field.replace('_', ' ')} setting (see README, Settings).",
        )(command)
    return command


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@_setting_options
@click.option(
    "--domain",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="TRACKERFLOW_DOMAIN",
    show_envvar=True,
    help="A Rasa domain.yml whose slots the trackers use (default: any slot name).",
)
@click.option(
    "--loglevel",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
    envvar="TRACKERFLOW_LOGLEVEL",
    show_envvar=True,
    help="How much the worker logs.",
)
def worker(domain: Path | None, loglevel: str, **overrides: Any) -> None:
    """Fold the events topic into conversation trackers and emit signals, exactly once.

    Joins the consumer group APP_ID on the broker, creates missing topics, takes its share of the
    events topic's partitions (start more workers with the same APP_ID to scale out), folds each
    conversation's events into its tracker (state in tables with changelogs, recovered on
    restart), and publishes signals to <prefix>.signals and undecodable records to <prefix>.dlq.
    Serves the HTTP API (conversation trackers, stories, appending events) on WEB_HOST:WEB_PORT.
    Runs until Ctrl-C or SIGTERM.

    \b
    Example:
      trackerflow broker start
      trackerflow worker --web-port 6066
    """
    import faust

    from streams.worker import Worker
    from streams.worker_service import serve_http

    try:
        settings = load_settings(**overrides)
        parsed = Domain.from_dict(yaml.safe_load(domain.read_text())) if domain else None
        ensure_topics(settings)
    except (SettingsError, TopicsError, EventError, OSError, yaml.YAMLError) as error:
        raise click.ClickException(str(error)) from None
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    fold = Worker(settings, domain=parsed)
    serve_http(fold)
    faust.Worker(fold.app, loglevel=loglevel, quiet=True).execute_from_commandline()


if __name__ == "__main__":
    worker()
