"""The worker's HTTP API: Rasa's tracker endpoints, served from trackerflow's state.

Rules of this module:

* The API is an ``aiohttp`` application that knows nothing of the engine: it asks a
  :class:`ConversationService` for trackers, listings and appends. The worker serves it.
* Endpoints (Rasa 3.6 behaviour where Rasa has them, ``rasa-semantics.md`` §7)::

      GET  /health                             no auth; the service's health
      GET  /metrics                            no auth; the health's numbers for Prometheus
      GET  /version                            no auth; version, minimum_compatible_version
      GET  /conversations?offset=&limit=&scope=  a page of conversation summaries (all workers)
      GET  /conversations/{id}/tracker?include_events=&until=
      POST /conversations/{id}/tracker/events  one event or a list; answers the new state
      PUT  /conversations/{id}/tracker/events  a list that replaces the history
      GET  /conversations/{id}/story?until=&all_sessions=
      GET  /conversations/{id}/reminders       pending reminders, soonest first

  Conversation ids may contain ``/`` (Rasa's ``path`` converter) and arrive percent-decoded.
* A conversation request goes through, in order: auth (:mod:`streams.http_auth`), the body limit
  (413), routing to the owning worker (:mod:`streams.http_forward`), then the handler. Query
  parameters with a blank value count as absent, as in Rasa (Sanic drops them).
* Every error is JSON in Rasa's shape (:mod:`streams.http_errors`); an unexpected exception is a
  500 ``ConversationError`` and is logged.
* Differences from Rasa: an unknown conversation's tracker is an empty one that is *not* stored
  and has no session-start events (trackerflow runs no actions); ``output_channel`` and
  ``execute_side_effects`` are ignored (reminders in posted events are scheduled anyway, since the
  worker folds every event); a bad event is a 400 naming its index, never a 500.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, Final, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import SecretStr

from events import ACTION_SESSION_START, ActionExecuted, Event, yaml_stories
from events.errors import show
from processors import DialogueStateTracker, Domain
from streams import http_inputs as inputs
from streams.http_auth import Auth
from streams.http_errors import ApiError, ConversationUnavailable, error_middleware, json_response
from streams.http_forward import Forwarder
from streams.http_metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from streams.http_metrics import metrics_text

__all__ = [
    "DEFAULT_FORWARD_TIMEOUT",
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "ApiError",
    "ApiSettings",
    "ConversationService",
    "ConversationUnavailable",
    "create_app",
]

logger = logging.getLogger(__name__)

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
MAX_LOCAL_LIMIT: Final = 1_000_000  # a worker asking another for the head of its list
DEFAULT_FORWARD_TIMEOUT: Final = 30.0

ConversationHandler = Callable[[web.Request, str, bytes], Awaitable[web.StreamResponse]]


class ConversationService(Protocol):
    """What the API needs from a worker."""

    @property
    def version(self) -> str:
        """trackerflow's version, reported by ``/version`` and in error bodies."""
        ...

    async def tracker(self, conversation_id: str) -> DialogueStateTracker | None:
        """The conversation's full tracker (every session), or None if it is unknown.

        The API only reads it (``current_state``, ``travel_back_in_time``, story export)."""
        ...

    async def conversations(self, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """A page of JSON-ready conversation summaries and the total number of conversations."""
        ...

    async def reminders(self, conversation_id: str) -> list[dict[str, Any]] | None:
        """The conversation's pending reminders, soonest first (None: unknown conversation)."""
        ...

    async def append(self, conversation_id: str, events: list[Event]) -> None:
        """Publish ``events`` and return once the worker has folded them (or raise
        ``ConversationUnavailable``)."""
        ...

    async def replace(self, conversation_id: str, events: list[Event]) -> None:
        """Make ``events`` the conversation's whole history, then return (as ``append``)."""
        ...

    def peers(self) -> list[str]:
        """The base URLs of the other workers that own partitions now (for ``/conversations``)."""
        ...

    def owner(self, conversation_id: str) -> str | None:
        """The base URL of the worker that owns the conversation, or None if it is this one
        (``ConversationUnavailable`` while no worker owns it, e.g. during a rebalance)."""
        ...

    def health(self) -> dict[str, Any]:
        """A JSON-ready health report for ``/health``."""
        ...


class ApiSettings(Protocol):
    """The settings the API reads (``streams.settings.Settings`` has them)."""

    @property
    def auth_token(self) -> SecretStr | None: ...

    @property
    def jwt_secret(self) -> SecretStr | None: ...

    @property
    def jwt_method(self) -> str: ...

    @property
    def max_body_bytes(self) -> int: ...


def create_app(
    service: ConversationService,
    settings: ApiSettings,
    *,
    domain: Domain | None = None,
    clock: Callable[[], float] = time.time,
    forward_timeout: float = DEFAULT_FORWARD_TIMEOUT,
    minimum_compatible_version: str | None = None,
) -> web.Application:
    """The HTTP API over ``service`` (see the module rules for the endpoints).

    ``domain``: the worker's domain, so an unknown conversation shows the slots a new one would.
    ``clock``: "now" for posted events without a timestamp. ``forward_timeout``: seconds to wait
    for the owning worker. ``minimum_compatible_version`` defaults to the service's version.
    Raises ``ValueError`` if the JWT algorithm or key cannot be used.
    """
    auth = Auth(
        token=_secret(settings.auth_token),
        jwt_key=_secret(settings.jwt_secret),
        jwt_method=settings.jwt_method,
    )
    weak = auth.key_warning()
    if weak:
        logger.warning("jwt_secret: %s", weak)
    forwarder = Forwarder(forward_timeout)
    api = _Api(service, auth, forwarder, domain, clock, settings.max_body_bytes)
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[error_middleware(lambda: service.version)],
    )
    app.cleanup_ctx.append(forwarder.session_context)
    versions = {
        "version": service.version,
        "minimum_compatible_version": minimum_compatible_version or service.version,
    }

    async def version(request: web.Request) -> web.Response:
        return json_response(versions)

    app.router.add_get("/health", api.health)
    app.router.add_get("/metrics", api.metrics)
    app.router.add_get("/version", version)
    app.router.add_get("/conversations", api.conversations)
    one = "/conversations/{conversation_id:.+}"
    app.router.add_get(f"{one}/tracker", api.per_conversation(api.get_tracker))
    app.router.add_post(f"{one}/tracker/events", api.per_conversation(api.append_events))
    app.router.add_put(f"{one}/tracker/events", api.per_conversation(api.replace_events))
    app.router.add_get(f"{one}/story", api.per_conversation(api.story))
    app.router.add_get(f"{one}/reminders", api.per_conversation(api.reminders))
    return app


class _Api:
    """The request handlers, bound to one service."""

    def __init__(
        self,
        service: ConversationService,
        auth: Auth,
        forwarder: Forwarder,
        domain: Domain | None,
        clock: Callable[[], float],
        max_body_bytes: int,
    ) -> None:
        self.service = service
        self.auth = auth
        self.forwarder = forwarder
        self.domain = domain
        self.clock = clock
        self.max_body_bytes = max_body_bytes

    async def health(self, request: web.Request) -> web.Response:
        return json_response(self.service.health())

    async def metrics(self, request: web.Request) -> web.Response:
        body = metrics_text(self.service.health)
        return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def conversations(self, request: web.Request) -> web.Response:
        """One page of every worker's conversations, sorted by id (``scope=local``: only this
        worker's; that is what workers ask each other for)."""
        self._check_auth(request, None)
        scope = inputs.choice_arg(request, "scope", ("all", "local"), "all")
        offset = inputs.int_arg(request, "offset", 0)
        maximum = MAX_LOCAL_LIMIT if scope == "local" else MAX_LIMIT
        limit = inputs.int_arg(request, "limit", DEFAULT_LIMIT, maximum=maximum)
        peers = self.service.peers() if scope == "all" else []
        if not peers:
            page, total = await self.service.conversations(offset, limit)
        else:
            # the global page is among the first offset + limit of each worker's sorted list
            wanted = offset + limit
            query = {"scope": "local", "offset": "0", "limit": str(wanted)}
            mine, answers = await asyncio.gather(
                self.service.conversations(0, wanted),
                asyncio.gather(*(self.forwarder.get_json(request, p, query) for p in peers)),
            )
            items, total = list(mine[0]), mine[1]
            for answer in answers:
                items += answer["conversations"]
                total += int(answer["total"])
            items.sort(key=lambda item: str(item.get("sender_id")))
            page = items[offset : offset + limit]
        return json_response(
            {"conversations": page, "total": total, "offset": offset, "limit": limit}
        )

    def per_conversation(self, handle: ConversationHandler) -> Handler:
        """``handle`` behind auth, the body limit and routing to the owning worker."""

        async def route(request: web.Request) -> web.StreamResponse:
            conversation_id = request.match_info["conversation_id"]
            self._check_auth(request, conversation_id)
            body = await inputs.read_body(request, self.max_body_bytes)
            owner = self.service.owner(conversation_id)
            if owner is not None:
                return await self.forwarder.forward(request, owner, body, conversation_id)
            return await handle(request, conversation_id, body)

        return route

    async def get_tracker(
        self, request: web.Request, conversation_id: str, _: bytes
    ) -> web.Response:
        verbosity = inputs.verbosity(request)
        until = inputs.float_arg(request, "until")
        tracker = await self._tracker_or_empty(conversation_id)
        if until is not None:
            tracker = tracker.travel_back_in_time(until)
        return json_response(tracker.current_state(verbosity))

    async def append_events(
        self, request: web.Request, conversation_id: str, body: bytes
    ) -> web.Response:
        verbosity = inputs.verbosity(request)
        data = inputs.parse_json(body, "an event object or a list of event objects")
        items = data if isinstance(data, list) else [data]
        events = inputs.decode_events(items, now=self.clock())
        if events:
            await self.service.append(conversation_id, events)
        tracker = await self._tracker_or_empty(conversation_id)
        return json_response(tracker.current_state(verbosity))

    async def replace_events(
        self, request: web.Request, conversation_id: str, body: bytes
    ) -> web.Response:
        verbosity = inputs.verbosity(request)
        data = inputs.parse_json(body, "a list of event objects")
        if not isinstance(data, list):
            raise ApiError(
                400,
                "BadRequest",
                f"PUT replaces the whole history: the body must be a JSON list of events, "
                f"got {show(data)}",
                {"in": "body"},
            )
        await self.service.replace(conversation_id, inputs.decode_events(data, now=self.clock()))
        tracker = await self._tracker_or_empty(conversation_id)
        return json_response(tracker.current_state(verbosity))

    async def story(self, request: web.Request, conversation_id: str, _: bytes) -> web.Response:
        tracker = await self.service.tracker(conversation_id)
        if tracker is None:
            raise _unknown(conversation_id)
        until = inputs.float_arg(request, "until")
        all_sessions = inputs.bool_arg(request, "all_sessions")
        text = _stories(tracker, self.domain, until=until, all_sessions=all_sessions)
        return web.Response(text=text, content_type="text/yaml", charset="utf-8")

    async def reminders(self, request: web.Request, conversation_id: str, _: bytes) -> web.Response:
        pending = await self.service.reminders(conversation_id)
        if pending is None:
            raise _unknown(conversation_id)
        return json_response({"sender_id": conversation_id, "reminders": pending})

    # -- helpers -------------------------------------------------------------------------------

    def _check_auth(self, request: web.Request, conversation_id: str | None) -> None:
        self.auth.check(
            token=inputs.arg(request, "token"),
            authorization=request.headers.get("Authorization"),
            conversation_id=conversation_id,
        )

    async def _tracker_or_empty(self, conversation_id: str) -> DialogueStateTracker:
        tracker = await self.service.tracker(conversation_id)
        if tracker is None:
            return DialogueStateTracker(conversation_id, self.domain)
        return tracker


def _unknown(conversation_id: str) -> ApiError:
    return ApiError(
        404,
        "Not found",
        "Conversation ID not found.",
        {"parameter": "conversation_id", "in": "path", "value": conversation_id},
    )


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


def _stories(
    tracker: DialogueStateTracker,
    domain: Domain | None,
    *,
    until: float | None,
    all_sessions: bool,
) -> str:
    """Rasa's ``/story`` text: YAML test stories of the last session (or of every session, named
    ``"<id>, story <n>"`` when there are several), each cut at ``until``, empty ones dropped."""
    sessions = _sessions(tracker.events)
    chosen = sessions if all_sessions else sessions[-1:]
    trackers = [
        tracker
        if len(chosen) == len(sessions) == 1
        else DialogueStateTracker.from_events(tracker.sender_id, events, domain)
        for events in chosen
    ]
    if until is not None:
        trackers = [t.travel_back_in_time(until) for t in trackers]
        trackers = [t for t in trackers if t.events]
    if len(trackers) == 1:
        return trackers[0].export_stories(e2e=True)
    stories = [
        replace(t.as_story(), name=f"{t.sender_id}, story {n}") for n, t in enumerate(trackers, 1)
    ]
    return yaml_stories(stories, header=True, test_stories=True)


def _sessions(events: Sequence[Event]) -> list[Sequence[Event]]:
    """The events split before every ``action_session_start`` action (Rasa's in-memory store
    split); always at least one (possibly empty) session."""
    starts = [
        i
        for i, event in enumerate(events)
        if i > 0 and isinstance(event, ActionExecuted) and event.action_name == ACTION_SESSION_START
    ]
    bounds = [0, *starts, len(events)]
    return [events[a:b] for a, b in itertools.pairwise(bounds)]
