"""The HTTP API's view of a running worker, and serving the API from the worker process.

* A conversation belongs to the partition Kafka's default partitioner (murmur2) gives its id;
  the worker that has that partition answers for it, others forward (``owner``).
* ``append`` publishes through the events topic, like every producer, and answers once this
  worker has folded the events, so the API never changes state behind the stream's back.
"""

from __future__ import annotations

import asyncio
import time
from importlib.metadata import version as package_version
from typing import Any

from aiohttp import web
from aiokafka.partitioner import murmur2
from faust.types import TP

from events.model import Event
from processors.tracker import DialogueStateTracker
from streams.http_api import ConversationService, create_app
from streams.http_errors import ApiError, ConversationUnavailable
from streams.publisher import Publisher
from streams.worker import Worker, head_summary

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

    def partition_of(self, conversation_id: str) -> int:
        partitions = self.worker.settings.events_partitions
        hashed: int = murmur2(conversation_id.encode())
        return (hashed & 0x7FFFFFFF) % partitions

    def owner(self, conversation_id: str) -> str | None:
        changelog = self.worker.heads_table.changelog_topic.get_topic_name()
        tp = TP(changelog, self.partition_of(conversation_id))
        url = self.worker.app.assignor._tps_url.get(tp)
        if url is None:
            raise ConversationUnavailable(
                f"no worker owns conversation {conversation_id!r} right now (a rebalance is "
                "moving partitions); retry in a moment"
            )
        return None if str(url).rstrip("/") == self.url.rstrip("/") else str(url)

    async def tracker(self, conversation_id: str) -> DialogueStateTracker | None:
        if self.worker.heads.get(conversation_id) is None:
            return None
        return self.worker.folder.tracker(
            conversation_id, partition=self.partition_of(conversation_id)
        )

    async def conversations(self, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        owned = {
            tp.partition
            for tp in self.worker.app.assignor.assigned_actives()
            if tp.topic == self.worker.topics.events
        }
        ids = sorted(c for c in self.worker.heads if self.partition_of(c) in owned)
        page = ids[offset : offset + limit]
        return [head_summary(self.worker.heads[c]) for c in page], len(ids)

    async def append(self, conversation_id: str, events: list[Event]) -> None:
        head = self.worker.heads.get(conversation_id)
        target = (0 if head is None else head["count"]) + len(events)
        for event in events:
            await self.publisher.publish(event, conversation_id)
        await self.publisher.flush()
        deadline = time.monotonic() + APPEND_TIMEOUT_S
        while True:
            head = self.worker.heads.get(conversation_id)
            if head is not None and head["count"] >= target:
                return
            if time.monotonic() > deadline:
                raise ConversationUnavailable(
                    f"the events were published but not folded within {APPEND_TIMEOUT_S:.0f} s",
                    published=True,
                )
            await asyncio.sleep(0.02)

    async def replace(self, conversation_id: str, events: list[Event]) -> None:
        raise ApiError(
            501,
            "NotImplemented",
            "replacing a conversation's history is not supported: the events topic is "
            "append-only; POST the events to append them instead",
        )

    def health(self) -> dict[str, Any]:
        assigned = self.worker.app.assignor.assigned_actives()
        return {
            "status": "ok",
            "uptime_s": round(time.time() - self.started, 1),
            "partitions": sorted(
                tp.partition for tp in assigned if tp.topic == self.worker.topics.events
            ),
            "records": dict(self.worker.counts),
        }


def serve_http(worker: Worker) -> None:
    """Run the HTTP API on the worker's web host and port for as long as the app runs."""
    settings = worker.settings
    url = f"http://{settings.web_host}:{settings.web_port}"

    async def http_api() -> None:
        async with Publisher(settings) as publisher:
            service = WorkerService(worker, publisher, url)
            runner = web.AppRunner(create_app(service, settings, domain=worker.folder.domain))
            await runner.setup()
            await web.TCPSite(runner, settings.web_host, settings.web_port).start()
            try:
                await asyncio.Event().wait()
            finally:
                await runner.cleanup()

    worker.app.task(http_api)
