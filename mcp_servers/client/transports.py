"""Opening one MCP client session of the official ``mcp`` SDK over a server's transport.

stdio: the server is started as a subprocess; its stderr goes to
``$BITRAG_HOME/logs/mcp-<name>.log`` rather than the user's terminal. Streamable HTTP and SSE:
the entry's ``headers`` are sent with every request, and the status of the last HTTP error
answer to a request (a POST) is noted in the ``Trace``: the SDK reports a refused request only
as "Server returned an error response", and the status is what tells a missing or wrong bearer
token apart.
"""

import re
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp import ClientSession

from mcp_servers.client.config import ServerConfig
from retrieval.errors import UserError
from retrieval.paths import bitrag_home

MAX_TOOL_PAGES = 100


@dataclass
class Trace:
    """What connecting to one server left behind, for the line that explains a failure."""

    log: str | None = None  # a stdio server's stderr
    http_status: int | None = None  # the last HTTP answer of 400 or more


def log_path(name: str) -> Path | None:
    """Where a stdio server's stderr goes, or None when BITRAG_HOME/logs is not writable."""
    try:
        folder = bitrag_home() / "logs"
        folder.mkdir(parents=True, exist_ok=True)
    except (OSError, UserError):
        return None
    return folder / f"mcp-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.log"


def nonempty(path: str) -> bool:
    try:
        return Path(path).stat().st_size > 0
    except OSError:
        return False


async def list_tools(session: ClientSession) -> list[Any]:
    """Every tool of the server, following pagination (bounded)."""
    from mcp import types

    tools: list[Any] = []
    cursor = None
    for _ in range(MAX_TOOL_PAGES):
        params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        tools += page.tools
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


def open_session(
    server: ServerConfig, trace: Trace, stack: AsyncExitStack
) -> AbstractAsyncContextManager[ClientSession]:
    """A ClientSession over the server's transport, not yet initialized. `stack` holds what
    must outlive the session's context (the stdio log file)."""
    if server.transport == "stdio":
        return _stdio(server, trace, stack)
    if server.transport == "sse":
        return _sse(server)
    return _http(server, trace)


@asynccontextmanager
async def _stdio(
    server: ServerConfig, trace: Trace, stack: AsyncExitStack
) -> AsyncIterator[ClientSession]:
    from mcp import StdioServerParameters
    from mcp.client.stdio import stdio_client

    connection = server.connection
    params = StdioServerParameters(
        command=connection["command"],
        args=connection["args"],
        env=connection["env"],
        cwd=connection.get("cwd"),
    )
    path = log_path(server.name)
    log = stack.enter_context(path.open("w", encoding="utf-8")) if path else sys.stderr
    trace.log = str(path) if path else None
    async with stdio_client(params, errlog=log) as (read, write):
        async with ClientSession(read, write) as session:
            yield session


@asynccontextmanager
async def _http(server: ServerConfig, trace: Trace) -> AsyncIterator[ClientSession]:
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    async def note_refusal(response: Any) -> None:
        if response.status_code >= 400 and response.request.method == "POST":
            trace.http_status = response.status_code

    url, headers = server.connection["url"], server.connection.get("headers")
    async with create_mcp_http_client(headers=headers) as client:
        client.event_hooks = {"response": [note_refusal]}
        async with streamable_http_client(url, http_client=client) as (read, write):
            async with ClientSession(read, write) as session:
                yield session


@asynccontextmanager
async def _sse(server: ServerConfig) -> AsyncIterator[ClientSession]:
    from mcp.client.sse import sse_client

    url, headers = server.connection["url"], server.connection.get("headers")
    async with sse_client(url, headers=headers) as (read, write):
        async with ClientSession(read, write) as session:
            yield session
