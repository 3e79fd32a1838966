"""Bearer-token protection for the HTTP transport, and the rule for where a server may bind.

``BearerTokenMiddleware`` is a plain ASGI middleware: with a token configured, every HTTP request
must carry ``Authorization: Bearer <token>`` or it gets ``401`` before reaching MCP. Tokens are
compared in constant time. A server bound to anything but a loopback address must have a token.
"""

import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]

TOKEN_ENV = "BITRAG_MCP_TOKEN"
LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; False for 0.0.0.0, :: and every other name."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def bind_problem(host: str, token: str | None) -> str | None:
    """Why serving on `host` with this token is refused, or None when it is allowed."""
    if is_loopback(host) or token:
        return None
    return (
        f"refusing to serve MCP on {host} without a token: anyone who can reach it could read "
        f"your notes; pass --token (or set {TOKEN_ENV}), or bind to 127.0.0.1"
    )


def _bearer(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for key, value in headers:
        if key.lower() == b"authorization":
            scheme, _, credentials = value.strip().partition(b" ")
            if scheme.lower() == b"bearer":
                return credentials.strip()
            return None
    return None


class BearerTokenMiddleware:
    """Answer 401 to any HTTP request without the right bearer token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        if not token:
            raise ValueError("an empty token protects nothing")
        self.app = app
        self.token = token.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = _bearer(scope.get("headers", []))
            if given is None or not hmac.compare_digest(given, self.token):
                await _unauthorized(send, "missing" if given is None else "wrong")
                return
        await self.app(scope, receive, send)


async def _unauthorized(send: Any, what: str) -> None:
    body = json.dumps(
        {"error": "unauthorized", "message": f"{what} bearer token: send Authorization: Bearer"}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Bearer realm="bitrag"'),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
