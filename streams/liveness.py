"""Whether Kafka answers the worker, and how far behind the worker is: what ``/health`` tells.

A running worker rides out a broker outage by itself: its clients retry, a transaction that
fails is rolled back and its records are read again. What it must not do is look healthy
meanwhile. So every ``PROBE_S`` the worker asks the broker for the end offsets (the last
stable offsets, as a ``read_committed`` reader sees them) of the partitions it reads; an
answer within ``PROBE_TIMEOUT_S`` means Kafka answers, and gives each owned partition's lag
(records on the broker not yet folded and committed). No answer, or an error, means it does
not: ``/health`` says ``degraded`` with the error and the seconds since the last answer.

The worker logs the change both ways (and, while it lasts, every ``REMIND_S``). aiokafka logs
every retry of every connection while the broker is away, tens of lines a second; ``quiet_repeats``
lets one of each kind through per ``REPEAT_WINDOW_S`` and says how many it held back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

log = logging.getLogger(__name__)

PROBE_S = 2.0  # how often the worker asks
PROBE_TIMEOUT_S = 5.0  # no answer in this time: Kafka does not answer
REMIND_S = 60.0  # while Kafka does not answer, log it again this often
REPEAT_WINDOW_S = 30.0  # aiokafka's repeated log lines: one of each kind per window


@dataclass
class KafkaCheck:
    """What the broker's last answers say (``clock``: seconds, monotonic)."""

    clock: Callable[[], float] = time.monotonic
    answering: bool | None = None  # None: not asked yet
    last_answer: float | None = None  # clock time of the last answer
    error: str | None = None  # why the last probe got no answer
    down_since: float | None = None
    reminded: float | None = None
    lag: dict[int, int] = field(default_factory=dict)  # partition -> records not yet committed

    def answered(self, lag: Mapping[int, int]) -> None:
        now = self.clock()
        if self.answering is False:
            log.warning("Kafka answers again, after %.1f s without an answer", now - self._since())
        self.answering, self.last_answer, self.error = True, now, None
        self.down_since = self.reminded = None
        self.lag = dict(lag)

    def failed(self, error: str) -> None:
        now = self.clock()
        if self.answering is not False:
            self.down_since = self.reminded = now
            log.warning(
                "Kafka does not answer (%s): nothing is folded or committed until it does; "
                "the worker keeps retrying and goes on by itself",
                error,
            )
        elif self.reminded is not None and now - self.reminded >= REMIND_S:
            self.reminded = now
            log.warning("Kafka has not answered for %.0f s (%s)", self.unanswered_s(), error)
        self.answering, self.error = False, error

    def unanswered_s(self) -> float | None:
        """Seconds since the last answer (None: none yet), 0 while Kafka answers."""
        if self.answering:
            return 0.0
        return None if self.answering is None else round(self.clock() - self._since(), 1)

    def _since(self) -> float:
        """When Kafka last answered (or, if it never did, first did not); only once it failed."""
        since = self.last_answer if self.last_answer is not None else self.down_since
        assert since is not None
        return since

    def report(self) -> dict[str, Any]:
        """``/health``'s ``kafka`` field."""
        return {
            "answering": self.answering,
            "unanswered_s": self.unanswered_s(),
            "error": self.error,
        }

    async def probe(
        self,
        end_offsets: Callable[[list[TopicPartition]], Awaitable[Mapping[TopicPartition, int]]],
        partitions: Collection[TopicPartition],
        positions: Callable[[], Mapping[TopicPartition, int]],
    ) -> None:
        """Ask for the end offsets of ``partitions`` once; the lag of each partition number is
        its end offsets less ``positions()`` (the committed read positions of the owned ones,
        taken once the answer is there)."""
        try:
            ends = await asyncio.wait_for(end_offsets(list(partitions)), PROBE_TIMEOUT_S)
        except (TimeoutError, KafkaError, OSError) as error:
            self.failed(describe(error))
            return
        lag: dict[int, int] = {}
        for tp, position in positions().items():
            end = ends.get(tp)
            if end is not None:
                lag[tp.partition] = lag.get(tp.partition, 0) + max(0, end - position)
        self.answered(lag)


def describe(error: BaseException) -> str:
    if isinstance(error, asyncio.TimeoutError):
        return f"no answer within {PROBE_TIMEOUT_S:g} s"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class RepeatFilter(logging.Filter):
    """Lets one record of each kind (logger, level, message template) through per ``window_s``
    from the loggers under ``prefix``; the next one let through says how many were held back."""

    def __init__(
        self,
        prefix: str,
        window_s: float = REPEAT_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.prefix = prefix
        self.window_s = window_s
        self.clock = clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}  # kind -> (passed, held)

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if name != self.prefix and not name.startswith(self.prefix + "."):
            return True
        kind = (name, record.levelno, str(record.msg))
        now = self.clock()
        seen = self._seen.get(kind)
        if seen is not None:
            passed, held = seen
            if now - passed < self.window_s:
                self._seen[kind] = (passed, held + 1)
                return False
            if held:
                shown = record.getMessage()
                record.msg = f"{shown} ({held} more like it in the last {now - passed:.0f} s)"
                record.args = None
        self._seen[kind] = (now, 0)
        return True


def quiet_repeats(prefix: str = "aiokafka", window_s: float = REPEAT_WINDOW_S) -> RepeatFilter:
    """Install a ``RepeatFilter`` on every handler of the root logger; returns it."""
    repeats = RepeatFilter(prefix, window_s)
    for handler in logging.getLogger().handlers:
        handler.addFilter(repeats)
    return repeats
