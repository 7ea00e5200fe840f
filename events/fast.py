"""The compiled fast path of ``decode_record``, when the package was built with it.

Rules of this module:

* ``events/native-decoder`` (Rust, built by ``pip install`` through setuptools-rust when a Rust
  toolchain is present) decodes the frequent Rasa 3.6 records from JSON bytes into exactly the
  ``Record`` the Python decoder returns, or answers None and lets the Python decoder decide.
  ``events.wire`` is the reference; the tests hold the two equal on every input they make.
* With it, ``events.decode_record`` *is* the compiled decoder's ``decode_record`` (one call
  less per record), which hands what it defers to ``events.wire.decode_record_python``.
  Without it everything still works, on the Python decoder alone; :func:`native_decoder`
  returns None and ``trackerflow --version`` says which one runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, NamedTuple

from events.model import EVENT_TYPES


def compiled(name: str) -> Any | None:
    """The class ``name`` of the compiled extension (``events._native``), or None if the
    package was built without it (or with an older build that lacks it)."""
    try:
        return getattr(importlib.import_module("events._native"), name)
    except (ImportError, AttributeError):
        return None


def native_decoder(
    record: type[NamedTuple], fallback: Callable[..., Any], default_max_bytes: int
) -> Any | None:
    """The compiled decoder, or None if the package was built without it.

    It builds ``record`` tuples; its ``decode_record`` takes ``decode_record``'s arguments and
    calls ``fallback`` (the Python ``decode_record``) for whatever it defers; its
    ``decode(data, now, conversation_id)`` answers a record or None (for the tests).
    """
    decoder = compiled("Decoder")
    if decoder is None:
        return None
    classes = {cls.__name__: cls for cls in EVENT_TYPES}
    return decoder(classes, record, fallback, default_max_bytes)
