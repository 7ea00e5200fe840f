"""The ``trackerflow`` command line: one click group, one subcommand per task.

Rules of this module:

* ``main`` is the group; each command lives in its own module (``streams.replay_cli`` for
  ``replay``, ``streams.broker_cli`` for ``broker``) and is registered here with
  ``main.add_command``. Commands parse and check their options, build one frozen options
  object and hand it to the module that does the work.
* Every option can also come from an environment variable, shown in ``--help``; the group's
  ``auto_envvar_prefix`` is ``TRACKERFLOW`` and options name their variable explicitly
  (``TRACKERFLOW_<COMMAND>_<OPTION>``, or ``TRACKERFLOW_<OPTION>`` when commands share it, such
  as ``TRACKERFLOW_DOMAIN`` and ``TRACKERFLOW_MAX_RECORD_BYTES``).
* Exit codes: 0 success; 1 the command's own failure (``replay --strict`` saw rejected lines);
  2 bad invocation or unreadable input (click's usage-error convention).
* ``python -m streams.cli`` runs the same group as the ``trackerflow`` script.
"""

from __future__ import annotations

import click

from events import record_decoder
from streams.broker_cli import broker
from streams.publish_cli import publish
from streams.reminders_cli import reminders
from streams.replay_cli import replay
from streams.tail_cli import tail
from streams.worker_cli import worker


@click.group(
    context_settings={
        "auto_envvar_prefix": "TRACKERFLOW",
        "help_option_names": ["-h", "--help"],
        "max_content_width": 100,
    }
)
@click.version_option(
    package_name="trackerflow",
    prog_name="trackerflow",
    message=f"%(prog)s, version %(version)s (record decoder: {record_decoder()})",
)
def main() -> None:
    """trackerflow: Rasa-compatible dialogue event streams.

    Folds Rasa dialogue events (as Rasa's Kafka event broker publishes them) into conversation
    trackers. Run `trackerflow COMMAND --help` for the options of a command.
    """


main.add_command(replay)
main.add_command(broker)
main.add_command(publish)
main.add_command(worker)
main.add_command(tail)
main.add_command(reminders)

if __name__ == "__main__":
    main()
