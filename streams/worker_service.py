"""The HTTP API's view of a running worker, and serving the API from the worker process.

* A conversation belongs to the partition Kafka's default partitioner (murmur2) gives its id;
  the worker that has that partition answers for it, others forward (``owner``).
* ``append`` publishes through the events topic, like every producer, and answers once this
  worker has folded the events, so the API never changes state behind the stream's back.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Callable, Mapping
from importlib.metadata import version as package_version
from typing import Any

from aiohttp import web

from events import record_decoder
from events.model import Event
from processors.domain import Domain
from processors.stream import REPLACE, Head
from processors.tracker import DialogueStateTracker
from streams.http_api import ConversationService, create_app
from streams.http_errors import ConversationUnavailable
from streams.publisher import Publisher
from streams.settings import Settings
from streams.worker import BATCH_WRITER, Worker, head_summary

APPEND_TIMEOUT_S = 15.0


class WorkerService(ConversationService):
    """``ConversationService`` over this process's worker."""

    def __init__(self, worker: Worker, publisher: Publisher, url: str) -> None:
        self.worker = worker
        self.publisher = publisher
        self.url = url
        self.started = time.time()

    @property
    def version(self) -> str:
        return package_version("trackerflow")

    def peers(self) -> list[str]:
        mine = self.url.rstrip("/")
        return sorted({u for u in self.worker.assignor.owners.values() if u.rstrip("/") != mine})

    def owner(self, conversation_id: str) -> str | None:
        url = self.worker.assignor.owners.get(self.worker.partition_of(conversation_id))
        if not url:
            raise ConversationUnavailable(
                f"no worker owns conversation {conversation_id!r} right now (a rebalance is "
                "moving partitions); retry in a moment"
            )
        return None if url.rstrip("/") == self.url.rstrip("/") else url

    async def tracker(self, conversation_id: str) -> DialogueStateTracker | None:
        owned = self.worker.owned(conversation_id)
        if owned is None or owned.heads.get(conversation_id) is None:
            return None
        return owned.folder.tracker(conversation_id, partition=owned.number)

    async def reminders(self, conversation_id: str) -> list[dict[str, Any]] | None:
        return self.worker.reminders(conversation_id)

    async def conversations(self, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        ids = self.worker.local_conversations()
        page = []
        for conversation_id in ids[offset : offset + limit]:
            head = self.worker.head(conversation_id)
            if head is None:
                continue
            state = None
            if head.get("state") is None:  # kept without it: the tracker has it
                tracker = await self.tracker(conversation_id)
                if tracker is None:
                    continue  # its partition went away meanwhile
                state = tracker.current_state()
            page.append(head_summary(head, state))
        return page, len(ids)

    async def append(self, conversation_id: str, events: list[Event]) -> None:
        head = self.worker.head(conversation_id)
        target = (0 if head is None else head["count"]) + len(events)
        for event in events:
            await self.publisher.publish(event, conversation_id)
        await self.publisher.flush()
        await self._folded(conversation_id, lambda head: head["count"] >= target)

    async def replace(self, conversation_id: str, events: list[Event]) -> None:
        request = uuid.uuid4().hex
        await self.publisher.publish_control(conversation_id, REPLACE, {"request": request})
        for event in events:
            await self.publisher.publish(event, conversation_id)
        await self.publisher.flush()
        await self._folded(
            conversation_id,
            lambda head: head.get("replaced") == request and head["count"] >= len(events),
        )

    async def _folded(self, conversation_id: str, done: Callable[[Head], bool]) -> None:
        """Wait until this worker's head of the conversation satisfies ``done``."""
        deadline = time.monotonic() + APPEND_TIMEOUT_S
        while True:
            head = self.worker.head(conversation_id)
            if head is not None and done(head):
                return
            if time.monotonic() > deadline:
                raise ConversationUnavailable(
                    f"the events were published but not folded within {APPEND_TIMEOUT_S:.0f} s",
                    published=True,
                )
            await asyncio.sleep(0.02)

    def health(self) -> dict[str, Any]:
        kafka, now = self.worker.kafka, time.monotonic()
        wait = self.worker.fetch_wait
        failing = [f.report(now) for _, f in sorted(self.worker.failing.items())]
        return {
            "status": "degraded" if kafka.answering is False or failing else "ok",
            "kafka": kafka.report(),
            "failing": failing,
            "lag": {str(number): n for number, n in sorted(kafka.lag.items())},
            "uptime_s": round(time.time() - self.started, 1),
            "partitions": sorted(self.worker.partitions),
            "producers": self.worker.producers(),
            "records": dict(self.worker.counts),
            "transactions": self.worker.transactions,
            "store": self.worker.settings.store,
            "decoder": record_decoder(),
            "reader": self.worker.reader,
            "writer": "aiokafka" if BATCH_WRITER is None else "compiled",
            "refused": self.worker.assignor.refused,
            "restored_records": self.worker.restored_records,
            "fetches": None if wait is None else wait.report(),
            "reminders": {
                **self.worker.reminder_counts,
                "pending": self.worker.pending_reminders(),
            },
        }


async def run_worker(
    settings: Settings,
    *,
    domain: Domain | None = None,
    message_limits: Mapping[str, int] | None = None,
) -> None:
    """Run a worker and its HTTP API until SIGINT or SIGTERM (``message_limits``: the topics'
    ``max.message.bytes``, as ``ensure_topics`` found them)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    worker = Worker(settings, domain=domain, message_limits=message_limits)
    async with Publisher(settings) as publisher:
        service = WorkerService(worker, publisher, worker.url)
        runner = web.AppRunner(create_app(service, settings, domain=domain))
        await runner.setup()
        await web.TCPSite(runner, settings.web_host, settings.web_port).start()
        try:
            await worker.run(stop)
        finally:
            await runner.cleanup()
