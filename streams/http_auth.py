"""Who may call the HTTP API: Rasa's ``requires_auth`` rules, with PyJWT for the tokens.

Rules (``rasa-semantics.md`` §7.1), checked in this order for every endpoint except ``/health``
and ``/version``:

1. an auth token is configured and the query has ``token=<that token>`` -> allowed (the JWT is
   not looked at);
2. a JWT key is configured and ``Authorization: Bearer <jwt>`` verifies with it and the configured
   algorithm (signature, and ``exp``/``nbf`` when present) -> the payload decides: ``{"user":
   {"role": "admin"}}`` may do everything; ``{"user": {"role": "user", "username": U}}`` only
   what concerns the conversation whose id is ``U``; anything else -> **403** ``NotAuthorized``;
3. neither a token nor a JWT key is configured -> allowed (the API is open);
4. otherwise -> **401** ``NotAuthenticated``.

As in Rasa, an empty JWT key disables JWT, while an empty auth token matches no request (a blank
``token=`` counts as absent), so it does not open the API.
"""

from __future__ import annotations

import hmac
import warnings
from dataclasses import dataclass
from typing import Any

from streams.http_errors import ApiError

NOT_AUTHENTICATED = "User is not authenticated."
NOT_AUTHORIZED = "User has insufficient permissions."


@dataclass(frozen=True, slots=True)
class Auth:
    """The API's credentials: the auth token, the JWT key and its algorithm (None: not used)."""

    token: str | None = None
    jwt_key: str | None = None
    jwt_method: str = "HS256"

    def __post_init__(self) -> None:
        if self.jwt_key:
            _check_key(self.jwt_key, self.jwt_method)

    @property
    def is_open(self) -> bool:
        """True when no credentials are configured: every request is allowed."""
        return self.token is None and not self.jwt_key

    def check(
        self,
        *,
        token: str | None,
        authorization: str | None,
        conversation_id: str | None,
    ) -> None:
        """Allow the request or raise ``ApiError`` 401/403 (see the module rules).

        ``token`` is the ``token`` query parameter, ``authorization`` the header, and
        ``conversation_id`` the conversation the endpoint concerns (None for listings).
        """
        if self.token and token and hmac.compare_digest(token.encode(), self.token.encode()):
            return
        why = "The 'token' query parameter is missing or wrong."
        if self.jwt_key:
            payload, why = self._payload(authorization)
            if payload is not None:
                if _sufficient_scope(payload, conversation_id):
                    return
                scope = "this conversation" if conversation_id is not None else "this endpoint"
                raise ApiError(
                    403, "NotAuthorized", f"{NOT_AUTHORIZED} The JWT's user may not use {scope}."
                )
        if self.is_open:
            return
        raise ApiError(401, "NotAuthenticated", f"{NOT_AUTHENTICATED} {why}")

    def _payload(self, authorization: str | None) -> tuple[dict[str, Any] | None, str]:
        """The verified JWT payload, or None and why there is none."""
        assert self.jwt_key is not None
        if not authorization:
            return None, "Neither a 'token' query parameter nor an 'Authorization' header."
        scheme, _, encoded = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not encoded.strip():
            return None, "The 'Authorization' header is not 'Bearer <JWT>'."
        import jwt  # PyJWT (and its crypto) loads only where a JWT key is configured

        try:
            with warnings.catch_warnings():
                # a short HMAC key warns on every decode; it was reported once at startup
                warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
                payload = jwt.decode(encoded.strip(), self.jwt_key, algorithms=[self.jwt_method])
        except jwt.PyJWTError as error:
            return None, f"The JWT is not valid: {error}."
        return payload, ""

    def key_warning(self) -> str | None:
        """Why the JWT key is weak for its algorithm (e.g. an HMAC key that is too short)."""
        if not self.jwt_key:
            return None
        import jwt

        algorithm = jwt.get_algorithm_by_name(self.jwt_method)
        return algorithm.check_key_length(algorithm.prepare_key(self.jwt_key))


def _check_key(key: str, method: str) -> None:
    """Fail at startup, not on every request, when PyJWT cannot verify with this algorithm and
    key (an unknown algorithm, RS256 without the ``cryptography`` package, a malformed key)."""
    if method.lower() == "none":
        raise ValueError("jwt_method 'none' would accept unsigned tokens; choose e.g. HS256")
    import jwt

    try:
        jwt.get_algorithm_by_name(method).prepare_key(key)
    except NotImplementedError as error:
        raise ValueError(f"jwt_method {method!r} cannot be used: {error}") from None
    except jwt.PyJWTError as error:
        raise ValueError(f"jwt_secret is not a usable {method} key: {error}") from None


def _sufficient_scope(payload: dict[str, Any], conversation_id: str | None) -> bool:
    user = payload.get("user")
    if not isinstance(user, dict):
        return False
    role = user.get("role")
    if role == "admin":
        return True
    if role == "user":
        return conversation_id is not None and user.get("username") == conversation_id
    return False
