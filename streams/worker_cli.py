"""``trackerflow worker``: run a worker of the consumer group until stopped (Ctrl-C / SIGTERM)."""

from __future__ import annotations

import asyncio
import gc
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click
from aiokafka.errors import KafkaError

from streams.cli_params import domain_option, load_domain
from streams.heap import prepare
from streams.settings import Settings, SettingsError, env_vars, load_settings
from streams.stores import StateError
from streams.topics import TopicsError, starting_topics

FIELDS = {
    "bootstrap_servers": "HOST:PORT[,...]",
    "topic_prefix": "PREFIX",
    "app_id": "NAME",
    "max_batch_records": "N",
    "partitions_per_transaction": "N",
    "store": "memory|rocksdb",
    "state_dir": "DIR",
    "reminder_grace_s": "SECONDS",
    "web_host": "HOST",
    "web_port": "PORT",
}


def _help(field: str) -> str:
    """The setting's description and default, as the option's help."""
    info = Settings.model_fields[field]
    text = info.description or field.replace("_", " ")
    return f"{text[:1].upper()}{text[1:]} (default: {info.default}; README: Settings)."


def _setting_options(command: Any) -> Any:
    for field, metavar in reversed(FIELDS.items()):
        names = env_vars(field)
        command = click.option(
            f"--{field.replace('_', '-')}",
            metavar=metavar,
            envvar=list(names),
            show_envvar=True,
            help=_help(field),
        )(command)
    return command


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@_setting_options
@domain_option
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
    conversation's events into its tracker (state backed by compacted changelog topics and
    restored from them when a worker takes a partition), and publishes signals to
    <prefix>.signals and undecodable records to <prefix>.dlq, all in Kafka transactions.
    Serves the HTTP API (conversation trackers, stories, appending events) on WEB_HOST:WEB_PORT.
    Runs until Ctrl-C or SIGTERM, then commits what it folded and leaves the group.

    \b
    Example:
      trackerflow broker start
      trackerflow worker --web-port 6066
    """
    parsed = load_domain(domain) if domain is not None else None
    try:
        settings = load_settings(**overrides)
    except SettingsError as error:
        raise click.ClickException(str(error)) from None
    heap = prepare(settings.heap_keep_mib, settings.heap_prefault_mib)
    # the topics are looked up (and made if missing) while this process imports the worker;
    # the imports make tens of thousands of objects that live as long as the process (modules,
    # classes, functions) and hardly any garbage: the collector waits until they are done
    # (about a tenth of the imports' time; the worker sets its own thresholds when it runs),
    # and then leaves them out of every collection (frozen: the first collections after the
    # imports walked all of them, about 60 ms before the worker had read anything)
    gc.disable()
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="trackerflow-topics") as pool:
            made = pool.submit(starting_topics, settings)
            from streams.liveness import quiet_repeats
            from streams.worker_service import run_worker

            try:
                topics = made.result()
            except TopicsError as error:
                raise click.ClickException(str(error)) from None
    finally:
        gc.freeze()
        gc.enable()
    logging.basicConfig(
        level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.root.level))
    quiet_repeats()  # a broker away makes aiokafka log every retry of every connection
    log = logging.getLogger("trackerflow.worker")
    log.info("topics: %s", topics.summary())
    for warning in topics.warnings:
        log.warning("%s", warning)
    log.info(
        "memory: freed memory kept for reuse up to %d MiB, object arenas kept faulted in: "
        "%d MiB (0: off; TRACKERFLOW_HEAP_KEEP_MIB, TRACKERFLOW_HEAP_PREFAULT_MIB)",
        *heap,
    )
    try:
        asyncio.run(run_worker(settings, domain=parsed, message_limits=topics.limits))
    except (KafkaError, OSError, StateError) as error:
        raise click.ClickException(f"the worker stopped: {error}") from None


if __name__ == "__main__":
    worker()
