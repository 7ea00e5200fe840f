"""How long the worker's fetches may wait at the broker: briefly while records flow, long while
none do.

A fetch names how long the broker may hold it (``fetch_max_wait_ms``) for how many bytes
(``fetch_min_bytes``). Under load the worker asks for a lot and waits briefly (``BUSY``): each
fetch then brings a batch, not a few records, and costs the broker and the worker one request
per batch. An idle worker asking that way sends a fetch every few milliseconds that comes back
empty (about 140 a second: a tenth of a core of the worker's, more of the broker's). So once
a fetch comes back with nothing, the next asks for a single byte and may wait long (``IDLE``):
the broker answers it when the first record arrives (no later than a busy fetch would have) or
when the wait is over, and as soon as a fetch brings records the next one is busy again.

Rules of this module:

* A fetch is idle only if every node's last fetch came back without records and no fetched
  record waits in the consumer. aiokafka leaves partitions with records waiting out of the next
  fetch; an idle fetch in flight would hold their next records back, so there must be none.
  Every assigned partition (the worker pauses none) is then in the idle fetch and any record
  that arrives for one ends its wait.
* What an idle fetch can delay, by at most ``IDLE_WAIT_MS``: a fetch from a position the
  consumer was moved to while it was in flight (a shard rolled back), and the consumer's other
  requests to that broker, which Kafka answers in order on the connection (end offsets for the
  health probe, metadata).
* It sets the two numbers aiokafka's fetcher reads each time it builds a fetch request
  (``Fetcher._get_actions_per_node``, aiokafka 0.14) and learns what each fetch brought from
  ``Fetcher._proc_fetch_request``'s result (whether it buffered records or an error); both are
  wrapped on the consumer's own fetcher. If that fetcher is not built as expected, nothing is
  wrapped and every fetch is busy, as before.
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from typing import Any

log = logging.getLogger(__name__)

# Busy. A fetch that the broker answers as soon as one record arrives costs a request and a
# response per few records under a steady load: at 1,000 events/s that was hundreds of fetches
# a second, a third of the worker's CPU and a large share of the broker's. So a busy fetch waits
# up to FETCH_WAIT_MS for FETCH_MIN_BYTES (more than arrives in that time at such loads): records
# wait at most that long, mostly while the previous batch's transaction is still committing.
# (The wait must stay short: partitions with unread buffered records sit out the next fetch,
# and a long broker-side wait on it would delay them; aiokafka's default 500 ms showed up as
# p99 latency.)
FETCH_WAIT_MS = 5
FETCH_MIN_BYTES = 256 * 1024
BUSY = (FETCH_WAIT_MS, FETCH_MIN_BYTES)  # (fetch_max_wait_ms, fetch_min_bytes)
# Idle: answered at the first record. The wait bounds what an idle fetch can delay (see the
# rules) and what an idle worker costs (a fetch per wait).
IDLE_WAIT_MS = 500
IDLE = (IDLE_WAIT_MS, 1)

# what the wrapped methods take (aiokafka 0.14, which this was written for)
ACTIONS_ARGUMENTS = ("assignment",)
FETCH_ARGUMENTS = ("assignment", "node_id", "request")


class FetchWait:
    """Chooses, for each fetch request a consumer's fetcher builds, whether it is busy or idle
    (see the module rules), and counts the requests of each kind (``counts``)."""

    def __init__(self, fetcher: Any, busy: tuple[int, int] = BUSY, idle: tuple[int, int] = IDLE):
        self.fetcher = fetcher
        self.busy, self.idle = busy, idle
        self.counts: Counter[str] = Counter({"busy": 0, "idle": 0})
        self._busy_nodes: set[Any] = set()  # nodes whose last fetch brought records
        self._actions = fetcher._get_actions_per_node
        self._fetch = fetcher._proc_fetch_request

    def install(self) -> None:
        """Wrap the fetcher's two methods (on the instance: other consumers keep theirs)."""
        self.fetcher._get_actions_per_node = self.actions
        self.fetcher._proc_fetch_request = self.fetch

    def actions(self, assignment: Any) -> Any:
        """The fetcher's next requests, built with the wait this moment calls for."""
        fetcher = self.fetcher
        kind = "busy" if self._busy_nodes or fetcher._records else "idle"
        fetcher._fetch_max_wait_ms, fetcher._fetch_min_bytes = getattr(self, kind)
        actions = self._actions(assignment)
        self.counts[kind] += len(actions[0])
        return actions

    async def fetch(self, assignment: Any, node_id: Any, request: Any) -> Any:
        """Send one fetch; remember whether it brought records (or an error) from its node."""
        brought = await self._fetch(assignment, node_id, request)
        if brought:
            self._busy_nodes.add(node_id)
        else:
            self._busy_nodes.discard(node_id)
        return brought

    def report(self) -> dict[str, int]:
        return dict(self.counts)


def fits(fetcher: Any) -> bool:
    """Whether the fetcher is built as this module expects (aiokafka 0.14's ``Fetcher``)."""
    try:
        actions = tuple(inspect.signature(fetcher._get_actions_per_node).parameters)
        fetch = tuple(inspect.signature(fetcher._proc_fetch_request).parameters)
    except (AttributeError, TypeError, ValueError):
        return False
    return (
        actions == ACTIONS_ARGUMENTS
        and fetch == FETCH_ARGUMENTS
        and inspect.iscoroutinefunction(fetcher._proc_fetch_request)
        and all(
            hasattr(fetcher, name)
            for name in ("_records", "_fetch_max_wait_ms", "_fetch_min_bytes")
        )
    )


def adapt(
    consumer: Any, busy: tuple[int, int] = BUSY, idle: tuple[int, int] = IDLE
) -> FetchWait | None:
    """Let a started consumer's fetches wait as the module rules say; None (every fetch waits as
    the consumer was configured) if its fetcher is not built as expected."""
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is None or not fits(fetcher):
        log.warning(
            "aiokafka's fetcher is not the one trackerflow was written for: every fetch waits "
            "at most %d ms, even when idle",
            busy[0],
        )
        return None
    wait = FetchWait(fetcher, busy, idle)
    wait.install()
    return wait
