"""The IO shell: the command line, offline replay of event logs, inputs and outputs.

The public surface is re-exported here, loaded when first asked for: importing ``streams`` (as
every ``streams.*`` module does) loads no engine, opens nothing and imports none of them, so a
command starts without the modules it does not use. The CLI entry point is ``streams.cli:main``
(the ``trackerflow`` command).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streams.outputs import OutputFile
    from streams.replay import Counts, Reject, Replay, ReplayOptions
    from streams.sources import InputError, Line, Source

_EXPORTS = {
    "Counts": "streams.replay",
    "InputError": "streams.sources",
    "Line": "streams.sources",
    "OutputFile": "streams.outputs",
    "Reject": "streams.replay",
    "Replay": "streams.replay",
    "ReplayOptions": "streams.replay",
    "Source": "streams.sources",
}

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'streams' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
