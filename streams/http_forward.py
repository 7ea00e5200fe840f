"""Routing a conversation's request to the worker that owns it, and relaying the answer.

Rules of this module:

* A conversation lives on one partition, and one worker owns each partition. When the
  ``ConversationService`` names another worker as the owner, the request is sent there
  unchanged — method, path and query as received (still percent-encoded), body, and the
  ``Authorization``, ``Content-Type`` and ``Accept`` headers — plus ``X-Trackerflow-Routed-From``
  naming this worker. The owner's status, body and ``Content-Type`` come back as they are, with
  ``X-Trackerflow-Routed-To`` naming the owner.
* One hop at most: a request that already carries ``X-Trackerflow-Routed-From`` and is still not
  ours is refused with 503 (the workers disagree about who owns the partition, which happens
  briefly during a rebalance), never forwarded again.
* The owner cannot be reached -> 502 ``BadGateway``; it does not answer within the timeout ->
  504 ``GatewayTimeout``. One ``aiohttp.ClientSession`` per application, opened on startup.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Final

import aiohttp
from aiohttp import web
from yarl import URL

from streams.http_errors import ApiError

ROUTED_FROM: Final = "X-Trackerflow-Routed-From"
ROUTED_TO: Final = "X-Trackerflow-Routed-To"
FORWARDED_HEADERS: Final = ("Authorization", "Content-Type", "Accept")
RELAYED_HEADERS: Final = ("Content-Type", "Retry-After", "Allow")


class Forwarder:
    """Sends requests on to the owning worker (see the module rules)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def session_context(self, app: web.Application) -> AsyncIterator[None]:
        """An ``aiohttp`` cleanup context: the client session lives as long as the app."""
        self._session = aiohttp.ClientSession(timeout=self.timeout)
        try:
            yield
        finally:
            await self._session.close()
            self._session = None

    async def forward(
        self, request: web.Request, owner: str, body: bytes, conversation_id: str
    ) -> web.Response:
        """The owner's answer to ``request`` (or an ``ApiError`` 502/503/504)."""
        routed_from = request.headers.get(ROUTED_FROM)
        if routed_from is not None:
            raise ApiError(
                503,
                "RoutingLoop",
                f"conversation {conversation_id!r} was routed here from {routed_from}, but this "
                f"worker says {owner} owns it: the workers disagree about who owns its partition "
                "(a rebalance is probably under way); retry shortly",
                {"routed_from": routed_from, "owner": owner},
                headers={"Retry-After": "1"},
            )
        if self._session is None:
            raise RuntimeError("the application is not started: no client session to forward")
        try:
            url = URL(owner.rstrip("/") + request.raw_path, encoded=True)
        except ValueError as error:
            raise _unreachable(conversation_id, owner, f"bad owner URL: {error}") from None
        headers = _passed_on(request)
        try:
            async with self._session.request(
                request.method, url, data=body or None, headers=headers, allow_redirects=False
            ) as upstream:
                payload = await upstream.read()
                relayed = {
                    name: upstream.headers[name]
                    for name in RELAYED_HEADERS
                    if name in upstream.headers
                }
                status = upstream.status
        except TimeoutError:
            raise ApiError(
                504,
                "GatewayTimeout",
                f"the worker that owns conversation {conversation_id!r} ({owner}) did not answer "
                f"within {self.timeout.total} s",
                {"owner": owner},
            ) from None
        except (aiohttp.ClientError, OSError) as error:
            raise _unreachable(conversation_id, owner, str(error) or type(error).__name__) from None
        relayed[ROUTED_TO] = owner
        return web.Response(status=status, body=payload, headers=relayed)

    async def get_json(
        self, request: web.Request, peer: str, query: dict[str, str]
    ) -> dict[str, Any]:
        """``GET <peer><request path>?<query>`` with the request's credentials (its
        ``Authorization`` header and ``token`` parameter): the peer's JSON answer, or an
        ``ApiError`` naming the peer (502/504, or the peer's own error status)."""
        if self._session is None:
            raise RuntimeError("the application is not started: no client session to forward")
        params = dict(query)
        if "token" in request.query:
            params["token"] = request.query["token"]
        headers = _passed_on(request)
        url = URL(peer.rstrip("/")).with_path(request.path).with_query(params)
        try:
            async with self._session.get(url, headers=headers, allow_redirects=False) as upstream:
                payload = await upstream.read()
                status = upstream.status
        except TimeoutError:
            raise ApiError(
                504,
                "GatewayTimeout",
                f"the worker {peer} did not answer within {self.timeout.total} s",
                {"peer": peer},
            ) from None
        except (aiohttp.ClientError, OSError) as error:
            why = str(error) or type(error).__name__
            raise ApiError(
                502, "BadGateway", f"cannot reach the worker {peer}: {why}", {"peer": peer}
            ) from None
        try:
            answer = json.loads(payload)
        except ValueError:
            answer = None
        if status != 200 or not isinstance(answer, dict):
            raise ApiError(
                502,
                "BadGateway",
                f"the worker {peer} answered {status} instead of its conversations",
                {"peer": peer, "status": status},
            )
        return answer


def _passed_on(request: web.Request) -> dict[str, str]:
    """The headers a request to another worker carries: the caller's credentials and content
    headers, and where it comes from."""
    headers = {name: request.headers[name] for name in FORWARDED_HEADERS if name in request.headers}
    headers[ROUTED_FROM] = f"{request.scheme}://{request.host}"
    return headers


def _unreachable(conversation_id: str, owner: str, why: str) -> ApiError:
    return ApiError(
        502,
        "BadGateway",
        f"cannot reach the worker that owns conversation {conversation_id!r} ({owner}): {why}",
        {"owner": owner},
    )
