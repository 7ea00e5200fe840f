"""``trackerflow broker start|stop|status``: the local single-node Kafka of streams/broker.py.

Exit codes: 0 done (``status``: running and answering), 1 an error (``status``: running but not
answering), 3 no broker runs in the data dir (``status`` and ``stop``). ``start`` prints only the
bootstrap address on stdout, so ``export KAFKA_BOOTSTRAP_SERVERS=$(trackerflow broker start)``
works; everything else goes to stderr.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from streams import broker as local

NOT_RUNNING = 3
DEFAULT_PORT = 9092
DEFAULT_DATA_DIR = Path(".kafka/broker")

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DATA_DIR,
    show_default=True,
    envvar="TRACKERFLOW_BROKER_DATA_DIR",
    show_envvar=True,
    help="Where the broker keeps its topics (kraft/), broker.log, broker.pid and broker.json. "
    "One broker per data dir; topics survive stop and start.",
)


@click.group(name="broker")
def broker() -> None:
    """A local single-node Apache Kafka (KRaft, no ZooKeeper, no Docker) for development and tests.

    The broker is the real Kafka, run from jars that Maven fetches once into .kafka/ (Java 17+
    and Maven needed). It listens on 127.0.0.1 only. To use a Kafka you already have instead,
    skip this and set KAFKA_BOOTSTRAP_SERVERS.
    """


@broker.command()
@data_dir_option
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    envvar="TRACKERFLOW_BROKER_PORT",
    show_envvar=True,
    help="Port of the PLAINTEXT listener on 127.0.0.1. Default: the port of the data dir's "
    f"last start (its clients' address stays true), else {DEFAULT_PORT} if free; 0 picks a "
    "free port.",
)
@click.option(
    "--controller-port",
    type=click.IntRange(0, 65535),
    default=0,
    envvar="TRACKERFLOW_BROKER_CONTROLLER_PORT",
    show_envvar=True,
    help="Port of the KRaft controller listener (clients never use it). 0 picks a free port.",
)
@click.option(
    "--kafka-version",
    type=click.Choice(local.supported_versions()),
    default=local.DEFAULT_VERSION,
    show_default=True,
    envvar="TRACKERFLOW_KAFKA_VERSION",
    show_envvar=True,
    help="Kafka version to run (the versions deploy/kafka/pom.xml has a profile for).",
)
@click.option(
    "--heap",
    default=local.DEFAULT_HEAP,
    show_default=True,
    envvar="TRACKERFLOW_BROKER_HEAP",
    show_envvar=True,
    help="Maximum JVM heap of the broker (-Xmx), e.g. 512m or 2g.",
)
@click.option(
    "--jit",
    type=click.Choice(list(local.JIT_FLAGS)),
    default=local.DEFAULT_JIT,
    show_default=True,
    envvar="TRACKERFLOW_BROKER_JIT",
    show_envvar=True,
    help="How the JVM compiles Kafka: quick (C1 only: no compile bursts while tests run, about "
    "40% more CPU per request) or full (the JVM's normal compilers, as in production: cheaper "
    "once warm, after minutes of compiling).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=90.0,
    show_default=True,
    help="Seconds to wait for the broker to answer a metadata request.",
)
def start(
    *,
    data_dir: Path,
    port: int | None,
    controller_port: int,
    kafka_version: str,
    heap: str,
    jit: str,
    timeout: float,
) -> None:
    """Start the broker and wait until it answers; print its bootstrap address.

    If the broker of this data dir already runs, print its address and exit 0. The first start
    of a Kafka version fetches its jars with Maven (about 45 MB, once).
    """
    began = time.monotonic()
    try:
        current = local.running(data_dir)
        if current is None and port is None and local.status(data_dir) is None:
            port = _default_port()  # a new data dir (one started before keeps its port)
        if current is None and not local.jars_cached(kafka_version):
            _say(f"Fetching the Kafka {kafka_version} jars with Maven (first start only) ...")
        info = local.start(
            data_dir, port=port, controller_port=controller_port or None,
            version=kafka_version, heap=heap, jit=jit, timeout=timeout,
        )  # fmt: skip
    except local.BrokerError as error:
        raise click.ClickException(str(error)) from error
    if current is not None:
        _say(f"Kafka {info.version} already runs at {info.bootstrap} (pid {info.pid}).")
    else:
        _say(
            f"Kafka {info.version} ready at {info.bootstrap} in {time.monotonic() - began:.1f} s "
            f"(pid {info.pid}); log: {info.log_path}\n"
            f"Stop it with: trackerflow broker stop{_data_dir_flag(data_dir)}"
        )
    click.echo(info.bootstrap)


def _data_dir_flag(data_dir: Path) -> str:
    return "" if data_dir == DEFAULT_DATA_DIR else f" --data-dir {data_dir}"


def _default_port() -> int:
    if local.port_is_free(DEFAULT_PORT):
        return DEFAULT_PORT
    raise click.ClickException(
        f"port {DEFAULT_PORT} is in use (another Kafka?). If that is a Kafka you want, set "
        f"KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{DEFAULT_PORT} and skip `broker start`; "
        "otherwise pass --port 0 for any free port, or --port N."
    )


@broker.command()
@data_dir_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=15.0,
    show_default=True,
    help="Seconds to wait after SIGTERM (a clean shutdown) before SIGKILL.",
)
def stop(data_dir: Path, timeout: float) -> None:
    """Stop the broker of the data dir (by its pid); its topics stay for the next start.

    Exits 3 if no broker runs there. Delete the data dir to drop all topics.
    """
    try:
        info = local.stop(data_dir, timeout)
    except local.BrokerError as error:
        raise click.ClickException(str(error)) from error
    if info is None:
        _say(f"No broker runs in {data_dir} (nothing to stop).")
        raise SystemExit(NOT_RUNNING)
    _say(f"Stopped Kafka {info.version} at {info.bootstrap} (pid {info.pid}).")


@broker.command()
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the state as one JSON object.")
def status(data_dir: Path, as_json: bool) -> None:
    """Tell whether the broker of the data dir runs and answers a metadata request.

    Exits 0 if it runs and answers, 1 if it runs but does not answer (yet), 3 if it does not run.
    """
    state = local.status(data_dir)
    if as_json:
        click.echo(json.dumps(state or {"running": False, "reachable": False}))
    else:
        click.echo(_describe(data_dir, state))
    if state is None or not state["running"]:
        raise SystemExit(NOT_RUNNING)
    if not state["reachable"]:
        raise SystemExit(1)


def _describe(data_dir: Path, state: dict[str, Any] | None) -> str:
    if state is None:
        return f"not running: no broker was ever started in {data_dir}"
    if not state["running"]:
        return (
            f"not running: Kafka {state['version']} of {data_dir} is stopped "
            f"(last at {state['bootstrap']}; log: {state['log_path']})"
        )
    answer = "answering" if state["reachable"] else "NOT answering metadata requests"
    return (
        f"running: Kafka {state['version']} at {state['bootstrap']}, pid {state['pid']}, "
        f"{answer}\ndata: {state['data_dir']}\nlog: {state['log_path']}"
    )


def _say(message: str) -> None:
    click.echo(message, err=True)


if __name__ == "__main__":
    broker(prog_name="trackerflow broker")
