"""The HTTP API's errors, answered as JSON in the shape of Rasa's HTTP server.

::

    TrackerflowError
    ├── ApiError                  an answer other than 2xx: status, reason, message, details
    └── ConversationUnavailable   the service cannot answer for a conversation right now (503)

Every error body has Rasa's seven keys::

    {"version": "<trackerflow version>", "status": "failure", "message": "...",
     "reason": "BadRequest", "details": {...}, "help": null, "code": 400}

``reason`` is Rasa's word where Rasa has one (``BadRequest``, ``NotAuthenticated``,
``NotAuthorized``, ``Not found``, ``ConversationError``); otherwise the HTTP status phrase without
spaces (``PayloadTooLarge``, ``BadGateway``, ...). :func:`error_middleware` turns every failure of
a handler into such a body: ``ApiError`` as it is, ``ConversationUnavailable`` as 503, aiohttp's
own errors (no route: 404, wrong method: 405) by status, anything else as a logged 500
``ConversationError``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from events import TrackerflowError

logger = logging.getLogger(__name__)


class ApiError(TrackerflowError):
    """An error answer: HTTP ``status``, a short ``reason``, a sentence and JSON-ready details."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.details = details or {}
        self.headers = headers or {}

    def body(self, version: str) -> dict[str, Any]:
        """The JSON body Rasa's server would send for this error."""
        return {
            "version": version,
            "status": "failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "help": None,
            "code": self.status,
        }

    @classmethod
    def for_status(
        cls, status: int, message: str, details: dict[str, Any] | None = None
    ) -> ApiError:
        """An error whose reason is the status phrase (``413`` -> ``PayloadTooLarge``)."""
        return cls(status, status_reason(status), message, details)


class ConversationUnavailable(TrackerflowError):
    """Raised by a ``ConversationService`` that cannot answer now (a rebalance is moving the
    conversation, or its events were not folded in time); the API answers 503.

    ``published`` says whether the request's events were already published: a client must not
    simply retry a POST whose events were published, or they would be appended twice.
    """

    retryable = True

    def __init__(self, message: str, *, published: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.published = published


def status_reason(status: int) -> str:
    """``404`` -> ``NotFound``: the HTTP phrase without spaces or dashes."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return f"Status{status}"
    return "".join(word.capitalize() for word in phrase.replace("-", " ").split())


def error_middleware(version: Callable[[], str]) -> Middleware:
    """An aiohttp middleware answering every failure in Rasa's error shape (see the module)."""

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as error:
            return error_response(error, version())
        except ConversationUnavailable as error:
            unavailable = ApiError(
                503,
                "ServiceUnavailable",
                error.message,
                {"published": error.published},
                headers={"Retry-After": "1"},
            )
            return error_response(unavailable, version())
        except web.HTTPException as error:
            if error.status < 400:
                raise
            return error_response(_http_error(request, error), version())
        except Exception as error:
            logger.exception("%s %s failed", request.method, request.path)
            failed = ApiError(
                500, "ConversationError", f"An unexpected error occurred. Error: {error}"
            )
            return error_response(failed, version())

    return errors


def error_response(error: ApiError, version: str) -> web.Response:
    return json_response(error.body(version), status=error.status, headers=error.headers)


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """``data`` as ``application/json`` (orjson)."""
    return web.Response(
        body=orjson.dumps(data), status=status, headers=headers, content_type="application/json"
    )


def _http_error(request: web.Request, error: web.HTTPException) -> ApiError:
    """aiohttp's own errors (no route, wrong method, ...) as API errors."""
    if error.status == 404:
        message = f"There is no endpoint {request.method} {request.path}."
    elif error.status == 405:
        allowed = error.headers.get("Allow", "")
        message = f"{request.method} is not allowed on {request.path} (allowed: {allowed})."
    else:
        message = error.text or error.reason
    api_error = ApiError.for_status(error.status, message)
    if "Allow" in error.headers:
        api_error.headers["Allow"] = error.headers["Allow"]
    return api_error
