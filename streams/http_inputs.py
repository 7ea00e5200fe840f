"""Reading HTTP API requests: query parameters, the body, and the events in it.

Rules of this module (Rasa 3.6's rules where Rasa has them, ``rasa-semantics.md`` §7):

* A query parameter with a blank value counts as absent (Sanic, under Rasa, drops them); of
  repeated parameters the first counts.
* ``include_events`` is ``NONE|APPLIED|AFTER_RESTART|ALL`` in any case, default
  ``AFTER_RESTART``; anything else is Rasa's 400. A float parameter such as ``until`` that does
  not parse is ignored (Rasa's ``float_arg``); a boolean is true only for ``true`` in any case.
* Paging parameters are whole decimal numbers within bounds, else 400.
* The body is at most ``max_body_bytes`` (413 otherwise, whether or not a ``Content-Length`` was
  sent); it must be JSON (a 400 says where it is not), and every event a JSON object that
  ``events.wire.decode_event`` accepts (a 400 names the first bad event's index and the reason).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson
from aiohttp import web

from events import Event, EventError
from events.errors import show
from events.wire import decode_event
from processors import EventVerbosity
from streams.http_errors import ApiError

logger = logging.getLogger(__name__)

_DIGITS = re.compile(r"[0-9]+")
_VERBOSITIES = ", ".join(v.name for v in EventVerbosity)


def arg(request: web.Request, name: str) -> str | None:
    """A query parameter; None when absent or blank."""
    return request.query.get(name) or None


def verbosity(request: web.Request) -> EventVerbosity:
    """``include_events``, or Rasa's 400 for a value that is not a verbosity."""
    text = arg(request, "include_events")
    if text is None:
        return EventVerbosity.AFTER_RESTART
    try:
        return EventVerbosity[text.upper()]
    except KeyError:
        raise ApiError(
            400,
            "BadRequest",
            f"Invalid parameter value for 'include_events'. Should be one of {_VERBOSITIES}",
            {"parameter": "include_events", "in": "query"},
        ) from None


def float_arg(request: web.Request, name: str) -> float | None:
    """A float query parameter; None when absent or unparsable (logged)."""
    text = arg(request, name)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        logger.warning("ignoring query parameter %s=%r: not a number", name, text)
        return None


def bool_arg(request: web.Request, name: str) -> bool:
    """True only for ``true`` in any case."""
    return (arg(request, name) or "").lower() == "true"


def int_arg(request: web.Request, name: str, default: int, *, maximum: int | None = None) -> int:
    """A whole number from 0 to ``maximum``; ``default`` when absent; 400 otherwise."""
    text = arg(request, name)
    if text is None:
        return default
    if not _DIGITS.fullmatch(text) or (maximum is not None and int(text) > maximum):
        bound = f"0 to {maximum}" if maximum is not None else "0 or more"
        raise ApiError(
            400,
            "BadRequest",
            f"Invalid parameter value for '{name}': expected a whole number {bound}, got {text!r}",
            {"parameter": name, "in": "query"},
        )
    return int(text)


def choice_arg(request: web.Request, name: str, choices: tuple[str, ...], default: str) -> str:
    """One of ``choices``; ``default`` when absent; 400 otherwise."""
    text = arg(request, name)
    if text is None:
        return default
    if text not in choices:
        raise ApiError(
            400,
            "BadRequest",
            f"Invalid parameter value for '{name}': expected one of "
            f"{', '.join(choices)}, got {text!r}",
            {"parameter": name, "in": "query"},
        )
    return text


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, or a 413 if it is over ``limit`` bytes."""
    size = request.content_length
    if size is not None and size > limit:
        raise _too_large(f"The request body is {size} bytes", limit)
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _too_large("The request body is larger", limit) from None


def parse_json(body: bytes, expected: str) -> Any:
    """The JSON value of ``body``, or a 400 saying it is empty or where it stops being JSON."""
    if not body.strip():
        raise ApiError(
            400, "BadRequest", f"The request body is empty; expected {expected}.", {"in": "body"}
        )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ApiError(
            400,
            "BadRequest",
            f"The request body is not valid JSON: {error.msg} at line {error.lineno} column "
            f"{error.colno} (char {error.pos}).",
            {"in": "body", "line": error.lineno, "column": error.colno, "position": error.pos},
        ) from None


def decode_events(items: list[Any], *, now: float) -> list[Event]:
    """Every item as an event (missing timestamps become ``now``), or a 400 naming the first
    bad one's index and what is wrong with it."""
    events: list[Event] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):  # decode_event would also read JSON text: not here
            got = show(item)
            raise _bad_event(index, f"an event must be a JSON object, got {got}", got=got)
        try:
            events.append(decode_event(item, now=now))
        except EventError as error:
            raise _bad_event(
                index,
                error.reason,
                error=type(error).__name__,
                expected=error.expected,
                got=error.got,
            ) from None
    return events


def _bad_event(index: int, reason: str, **details: Any) -> ApiError:
    known = {key: value for key, value in details.items() if value is not None}
    return ApiError(
        400,
        "BadRequest",
        f"Event #{index} of the request body is invalid: {reason}",
        {"in": "body", "index": index, **known},
    )


def _too_large(what: str, limit: int) -> ApiError:
    return ApiError(
        413,
        "PayloadTooLarge",
        f"{what}, over the limit of {limit} bytes (max_body_bytes).",
        {"in": "body", "limit": limit},
    )
