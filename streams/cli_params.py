"""Parameter types and errors shared by the ``trackerflow`` commands."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click


class BadInput(click.ClickException):
    """An input file cannot be read (exit code 2, like a usage error)."""

    exit_code = 2


class Timestamp(click.ParamType):
    """A Unix timestamp or an ISO-8601 date-time (naive means UTC), as epoch seconds."""

    name = "TIMESTAMP"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        text = str(value).strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            self.fail(
                f"{value!r} is neither a Unix timestamp (e.g. 1700000000.5) nor an ISO-8601 "
                "date-time (e.g. 2023-11-14T22:13:20Z)",
                param,
                ctx,
            )
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
