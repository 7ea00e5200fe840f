"""The IO shell: the command line, offline replay of event logs, inputs and outputs.

The public surface is re-exported here. Importing ``streams`` loads no engine and opens nothing;
the CLI entry point is ``streams.cli:main`` (the ``trackerflow`` command).
"""

from streams.outputs import OutputFile
from streams.replay import Counts, Reject, Replay, ReplayOptions
from streams.sources import InputError, Line, Source

__all__ = [
    "Counts",
    "InputError",
    "Line",
    "OutputFile",
    "Reject",
    "Replay",
    "ReplayOptions",
    "Source",
]
