"""The lifetime of the MCP servers of one mcp.json: started once, kept open, stopped once.

``McpToolbox`` runs an asyncio loop in a background thread. It starts every listed server in
parallel on that loop, each within a time limit, and keeps one session per server open (a task
holds it until ``close``). Tool calls from the agent's (synchronous) tools node run on that loop
with a time limit too. A server that fails to start is named in one line and left out; the
others' tools are in ``tools``. ``open_toolbox`` is what ``ask``/``chat`` use, ``probe`` what
``bitrag doctor`` uses.
"""

import asyncio
import atexit
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.tools import BaseTool, ToolException

from mcp_servers.client.adapt import langchain_tool, unique_name
from mcp_servers.client.config import McpConfig, ServerConfig, config_path, load_config
from mcp_servers.client.failures import leaf, one_line, reason
from mcp_servers.client.transports import Trace, list_tools, nonempty, open_session
from retrieval.errors import UserError

START_TIMEOUT_S = 30.0  # to start a server, initialize and list its tools
CALL_TIMEOUT_S = 60.0  # one tool call
STOP_TIMEOUT_S = 10.0
START_TIMEOUT_ENV = "BITRAG_MCP_START_TIMEOUT"
CALL_TIMEOUT_ENV = "BITRAG_MCP_TIMEOUT"

Warn = Callable[[str], None]


def _seconds(variable: str, default: float) -> float:
    try:
        value = float(os.environ.get(variable) or default)
    except ValueError:
        raise UserError(f"{variable} must be a number of seconds") from None
    return value if value > 0 else default


@dataclass
class ServerStatus:
    """How starting one server went: for the warning line and for doctor."""

    name: str
    transport: str
    target: str
    ok: bool = False
    tools: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    log: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "transport": self.transport,
            "target": self.target,
            "ok": self.ok,
            "tools": self.tools,
            "error": self.error,
            "seconds": round(self.seconds, 3),
            "log": self.log if self.log and nonempty(self.log) else None,
        }


class McpToolbox:
    """The servers of one mcp.json, started once and kept open; `tools` are ready to call."""

    def __init__(
        self,
        config: McpConfig,
        warn: Warn | None = None,
        start_timeout: float | None = None,
        call_timeout: float | None = None,
    ) -> None:
        self.config = config
        self.start_timeout = start_timeout or _seconds(START_TIMEOUT_ENV, START_TIMEOUT_S)
        self.call_timeout = call_timeout or _seconds(CALL_TIMEOUT_ENV, CALL_TIMEOUT_S)
        self.status: dict[str, ServerStatus] = {}
        self.tools: list[BaseTool] = []
        self._stops: dict[str, asyncio.Event] = {}
        self._holders: dict[str, asyncio.Future] = {}
        self._remote: dict[str, list[tuple[Any, Any]]] = {}
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="bitrag-mcp", daemon=True
        )
        self._thread.start()
        atexit.register(_close_quietly, weakref.ref(self))
        warn = warn or _stderr
        for problem in config.problems:
            warn(problem)
        self._start_all(warn)

    # -- starting and stopping -----------------------------------------------------------

    def _start_all(self, warn: Warn) -> None:
        if not self.config.servers:
            return
        started = asyncio.run_coroutine_threadsafe(self._start_each(), self._loop)
        try:
            started.result(self.start_timeout + STOP_TIMEOUT_S)
        except TimeoutError:
            started.cancel()
        taken: set[str] = set()
        for server in self.config.servers:
            status = self.status.setdefault(
                server.name,
                ServerStatus(server.name, server.transport, server.target, error="did not start"),
            )
            if not status.ok:
                logged = status.log and nonempty(status.log)
                where = f" (its log: {status.log})" if logged else ""
                warn(
                    f"MCP server {server.name!r} did not start: {status.error}{where}; "
                    "going on without it"
                )
        for server in self.config.servers:
            for session, tool in self._remote.get(server.name, []):
                name = unique_name(server.name, tool.name, taken)
                call = self._caller(server.name, session)
                self.tools.append(langchain_tool(server.name, tool, name, call))

    async def _start_each(self) -> None:
        await asyncio.gather(*(self._start(server) for server in self.config.servers))

    async def _start(self, server: ServerConfig) -> None:
        status = ServerStatus(server.name, server.transport, server.target)
        self.status[server.name] = status
        trace = Trace()
        ready: asyncio.Future = self._loop.create_future()
        stop = asyncio.Event()
        self._stops[server.name] = stop
        begin = time.perf_counter()
        holder = asyncio.ensure_future(self._hold(server, trace, ready, stop))
        self._holders[server.name] = holder
        try:
            remote = await asyncio.wait_for(asyncio.shield(ready), self.start_timeout)
            self._remote[server.name] = remote
            status.ok = True
            status.tools = [tool.name for _, tool in remote]
        except BaseException as exc:  # noqa: BLE001 - every failure is reported, none raised
            status.error = reason(exc, server, self.start_timeout, trace.http_status)
            holder.cancel()
            await asyncio.wait({holder}, timeout=STOP_TIMEOUT_S)
        finally:
            status.seconds = time.perf_counter() - begin
            status.log = trace.log

    async def _hold(
        self,
        server: ServerConfig,
        trace: Trace,
        ready: asyncio.Future,
        stop: asyncio.Event,
    ) -> None:
        """Open the session, list the tools, then keep the session open until `stop`."""
        try:
            async with AsyncExitStack() as stack:
                session = await stack.enter_async_context(open_session(server, trace, stack))
                await session.initialize()
                listed = await list_tools(session)
                if not ready.done():
                    ready.set_result([(session, tool) for tool in listed])
                await stop.wait()
        except Exception as exc:  # noqa: BLE001 - handed to _start, which reports it
            if not ready.done():
                ready.set_exception(leaf(exc))
        finally:
            if not ready.done():
                ready.cancel()

    def close(self) -> None:
        """Stop every server (stdio ones get their stdin closed, then are terminated)."""
        if self._closed:
            return
        self._closed = True

        async def stop_all() -> None:
            for stop in self._stops.values():
                stop.set()
            if self._holders:
                await asyncio.wait(set(self._holders.values()), timeout=STOP_TIMEOUT_S)

        try:
            asyncio.run_coroutine_threadsafe(stop_all(), self._loop).result(STOP_TIMEOUT_S + 5)
        except Exception:  # noqa: BLE001 - closing must not fail
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def __enter__(self) -> "McpToolbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calling tools -------------------------------------------------------------------

    def _caller(self, server: str, session: Any) -> Callable[[str, dict[str, Any]], Any]:
        """Call a tool of `server` through its open session, on the loop, within the limit."""

        def call(tool: str, arguments: dict[str, Any]) -> Any:
            if self._closed:
                raise ToolException(f"MCP server {server!r} was stopped")
            future = asyncio.run_coroutine_threadsafe(
                session.call_tool(tool, arguments), self._loop
            )
            try:
                return future.result(self.call_timeout)
            except TimeoutError:
                future.cancel()
                raise ToolException(
                    f"MCP server {server!r} did not answer {tool} within {self.call_timeout:g} s"
                ) from None
            except Exception as exc:  # noqa: BLE001 - a transport failure, reported as one line
                failure = one_line(leaf(exc))
                raise ToolException(f"MCP server {server!r} failed: {failure}") from None

        return call


def _close_quietly(ref: "weakref.ref[McpToolbox]") -> None:
    toolbox = ref()
    if toolbox is not None:
        toolbox.close()


def open_toolbox(given: str | Path | None, warn: Warn | None = None) -> McpToolbox | None:
    """The MCP tools of --mcp-config (or BITRAG_HOME/mcp.json), started; None without a file.
    BITRAG_HOME's mcp.json, which every `ask` and `chat` reads unasked, is named in one line
    when it cannot be read and left out, as a server that does not start is; a given
    --mcp-config that cannot be read is the command's error."""
    path = config_path(given)
    if path is None:
        return None
    try:
        config = load_config(path)
    except UserError as exc:
        if given:
            raise
        (warn or _stderr)(f"{exc}; going on without its servers (fix it, or move it aside)")
        return None
    return McpToolbox(config, warn)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def probe(given: str | Path | None) -> dict[str, Any]:
    """For doctor: which config is used, and whether each server starts (then stop them)."""
    try:
        path = config_path(given)
    except UserError as exc:
        return {"config": str(given), "servers": [], "problems": [str(exc)]}
    if path is None:
        return {"config": None, "servers": [], "problems": []}
    try:
        config = load_config(path)
    except UserError as exc:
        return {"config": str(path), "servers": [], "problems": [str(exc)]}
    with McpToolbox(config, warn=lambda line: None) as toolbox:
        rows = [toolbox.status[s.name].as_dict() for s in config.servers]
    return {"config": str(path), "servers": rows, "problems": list(config.problems)}
