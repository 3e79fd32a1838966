"""One line saying why an MCP server did not start or a call to it failed.

The SDK and anyio wrap errors in (nested) exception groups; ``leaf`` digs out the first real
one, and ``reason`` words it for the user: a timeout, a missing command, a stdio server that
exited, an HTTP server that cannot be reached or refuses the request (401/403: a missing or
wrong bearer token).
"""

import asyncio

from mcp_servers.client.config import ServerConfig

MAX_REASON_CHARS = 300


def leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def one_line(exc: BaseException) -> str:
    """The error's message on one line, or its type when it has none."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _http_refusal(status: int, server: ServerConfig) -> str:
    from http import HTTPStatus

    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    refused = f"{server.target} answered HTTP {status} {phrase}"
    if status in (401, 403):
        if server.sends_token:
            return f"{refused}: its bearer token was refused (check `headers` in its entry)"
        return (
            f"{refused}: it needs a bearer token; add "
            '"headers": {"Authorization": "Bearer <token>"} to its entry'
        )
    return refused


def reason(
    exc: BaseException, server: ServerConfig, timeout: float, http_status: int | None = None
) -> str:
    """Why `server` failed, in one line: `exc` as raised, `http_status` as last answered."""
    exc = leaf(exc)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return f"no answer within {timeout:g} s"
    if server.transport == "stdio":
        if isinstance(exc, FileNotFoundError):
            return f"command not found: {server.connection['command']}"
        if isinstance(exc, PermissionError):
            return f"command not executable: {server.connection['command']}"
    else:
        response = getattr(exc, "response", None)  # httpx's HTTPStatusError (the SSE client)
        status = http_status or getattr(response, "status_code", None)
        if isinstance(status, int) and status >= 400:
            return _http_refusal(status, server)
        if type(exc).__name__ == "ConnectError":
            return f"cannot connect to {server.target}: {one_line(exc)}"[:MAX_REASON_CHARS]
    text = one_line(exc)
    if "connection closed" in text.lower():
        return "it exited before answering"
    return f"{type(exc).__name__}: {text}"[:MAX_REASON_CHARS]
