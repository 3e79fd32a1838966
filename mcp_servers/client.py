"""bitrag as an MCP client: the servers listed in an ``mcp.json`` become tools of the agent.

The file uses the ``mcpServers`` format of Claude Desktop and Cursor::

    {"mcpServers": {
        "tools": {"command": "bitrag", "args": ["mcp", "serve", "tools"], "env": {...}},
        "web":   {"url": "http://127.0.0.1:8766/mcp", "headers": {"Authorization": "Bearer x"}}
    }}

(``"type"``/``"transport"`` may say ``stdio``, ``http``/``streamable-http`` or ``sse``; an entry
with ``"disabled": true`` is skipped; ``${VAR}`` in ``env`` and ``headers`` values is expanded.)
It is read from ``--mcp-config PATH``, else ``$BITRAG_HOME/mcp.json`` when that exists.

``McpToolbox`` starts every listed server once, in parallel, on an asyncio loop running in a
background thread, keeps one session per server open (the official ``mcp`` SDK client), and turns
each server tool into a synchronous LangChain ``BaseTool`` (the interface of the local tools) for
the agent's tools node. Each call runs on that loop with a time limit; the tool's metadata names
its server, which the answer shows as provenance. A server that fails to start (command missing,
exits, no answer in time) is named in one line on stderr and left out; the agent goes on without
it. A stdio server's own stderr goes to ``$BITRAG_HOME/logs/mcp-<name>.log``, not into the
user's terminal.

Why not langchain-mcp-adapters: its 0.3.x releases are written against the ``mcp`` 1.x SDK
(``mcp.server.fastmcp`` imports, camelCase ``inputSchema``/``isError``, a three-part
streamable-HTTP transport), and 0.3.2 declares ``mcp<2``; bitrag's servers need ``mcp`` 2.x
(fastmcp 4). What it would do here is the few lines of ``McpToolbox._wrap``.
"""

import asyncio
import atexit
import json
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrieval.errors import UserError
from retrieval.paths import bitrag_home

START_TIMEOUT_S = 30.0  # to start a server, initialize and list its tools
CALL_TIMEOUT_S = 60.0  # one tool call
STOP_TIMEOUT_S = 10.0
START_TIMEOUT_ENV = "BITRAG_MCP_START_TIMEOUT"
CALL_TIMEOUT_ENV = "BITRAG_MCP_TIMEOUT"
CHILD_ENV = "BITRAG_MCP_CHILD"  # set in stdio servers bitrag starts: they load no mcp.json
HTTP_TYPES = {"http", "streamable-http", "streamable_http"}
_VAR = re.compile(r"\$\{([^}]+)\}")


def _seconds(variable: str, default: float) -> float:
    try:
        value = float(os.environ.get(variable) or default)
    except ValueError:
        raise UserError(f"{variable} must be a number of seconds") from None
    return value if value > 0 else default


# -- the config file -----------------------------------------------------------------------


@dataclass(frozen=True)
class ServerConfig:
    """One entry of mcpServers, checked: its transport and what connecting needs."""

    name: str
    transport: str  # "stdio", "http" or "sse"
    connection: dict[str, Any]

    @property
    def target(self) -> str:
        if self.transport == "stdio":
            return " ".join([self.connection["command"], *self.connection["args"]])
        return str(self.connection["url"])


@dataclass
class McpConfig:
    path: Path
    servers: list[ServerConfig] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # entries left out, one line each


def default_config_path() -> Path:
    return bitrag_home() / "mcp.json"


def config_path(given: str | Path | None) -> Path | None:
    """The mcp.json to use: the given one (which must exist), else BITRAG_HOME's if present."""
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise UserError(f"--mcp-config {path}: no such file")
        return path
    if os.environ.get(CHILD_ENV):
        return None  # a server bitrag started does not start servers of its own
    path = default_config_path()
    return path if path.is_file() else None


def _expand(value: str) -> str:
    return _VAR.sub(lambda m: os.environ.get(m.group(1), m.group(0)), value)


def _strings(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"{what} must map names to strings")
    return {k: _expand(v) for k, v in value.items()}


def _entry(name: str, entry: Any) -> ServerConfig:
    if not isinstance(entry, dict):
        raise ValueError("must be an object with `command` or `url`")
    kind = str(entry.get("type") or entry.get("transport") or "").lower()
    if "url" in entry or kind in HTTP_TYPES | {"sse"}:
        url = entry.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError("`url` must be an http(s) URL")
        transport = "sse" if kind == "sse" else "http"
        connection: dict[str, Any] = {"transport": transport, "url": url}
        if headers := _strings(entry.get("headers"), "`headers`"):
            connection["headers"] = headers
        return ServerConfig(name, transport, connection)
    command = entry.get("command")
    if not isinstance(command, str) or not command.strip():
        raise ValueError("needs a `command` (stdio) or a `url` (HTTP)")
    args = entry.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ValueError("`args` must be a list of strings")
    env = _strings(entry.get("env"), "`env`") | {CHILD_ENV: "1"}
    connection = {"transport": "stdio", "command": command, "args": args, "env": env}
    if isinstance(entry.get("cwd"), str):
        connection["cwd"] = entry["cwd"]
    return ServerConfig(name, "stdio", connection)


def load_config(path: Path) -> McpConfig:
    """Read mcp.json; a malformed file is a UserError, a malformed entry a problem line."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read MCP config {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"MCP config {path} is not UTF-8 text") from None
    except ValueError as exc:
        raise UserError(f"MCP config {path} is not valid JSON: {exc}") from None
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise UserError(f'MCP config {path} needs an object {{"mcpServers": {{...}}}}')
    config = McpConfig(path)
    for name, entry in servers.items():
        if isinstance(entry, dict) and entry.get("disabled") is True:
            continue
        try:
            config.servers.append(_entry(name, entry))
        except ValueError as exc:
            config.problems.append(f"MCP server {name!r} in {path}: {exc}; left out")
    return config


# -- running servers -------------------------------------------------------------------------


@dataclass
class ServerStatus:
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
            "log": self.log if self.log and _nonempty(self.log) else None,
        }


def _nonempty(path: str) -> bool:
    try:
        return Path(path).stat().st_size > 0
    except OSError:
        return False


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _reason(exc: BaseException, server: ServerConfig, timeout: float) -> str:
    exc = _leaf(exc)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, FileNotFoundError) and server.transport == "stdio":
        return f"command not found: {server.connection['command']}"
    if isinstance(exc, PermissionError) and server.transport == "stdio":
        return f"command not executable: {server.connection['command']}"
    text = " ".join(str(exc).split()) or type(exc).__name__
    if "connection closed" in text.lower():
        return "it exited before answering"
    return f"{type(exc).__name__}: {text}"[:300]


def _log_path(name: str) -> Path | None:
    try:
        folder = bitrag_home() / "logs"
        folder.mkdir(parents=True, exist_ok=True)
    except (OSError, UserError):
        return None
    return folder / f"mcp-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.log"


def _text_of(result: Any) -> str:
    """What an MCP tool answered: its structured result's `text`/`result`, else its text."""
    structured = getattr(result, "structured_content", None)
    if isinstance(structured, dict):
        for key in ("text", "result"):
            if isinstance(structured.get(key), str | int | float):
                return str(structured[key])
    parts = [getattr(block, "text", "") for block in getattr(result, "content", None) or []]
    return " ".join(" ".join(p for p in parts if p).split())


class McpToolbox:
    """The servers of one mcp.json, started once and kept open; `tools` are ready to call."""

    def __init__(
        self,
        config: McpConfig,
        warn: Callable[[str], None] | None = None,
        start_timeout: float | None = None,
        call_timeout: float | None = None,
    ) -> None:
        self.config = config
        self.start_timeout = start_timeout or _seconds(START_TIMEOUT_ENV, START_TIMEOUT_S)
        self.call_timeout = call_timeout or _seconds(CALL_TIMEOUT_ENV, CALL_TIMEOUT_S)
        self.status: dict[str, ServerStatus] = {}
        self.tools: list[Any] = []
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
        warn = warn or (lambda line: print(line, file=sys.stderr, flush=True))
        for problem in config.problems:
            warn(problem)
        self._start_all(warn)

    # -- starting and stopping -----------------------------------------------------------

    def _start_all(self, warn: Callable[[str], None]) -> None:
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
                logged = status.log and _nonempty(status.log)
                where = f" (its log: {status.log})" if logged else ""
                warn(
                    f"MCP server {server.name!r} did not start: {status.error}{where}; "
                    "going on without it"
                )
        for server in self.config.servers:
            for remote in self._remote.get(server.name, []):
                self.tools.append(self._wrap(server.name, remote, taken))

    async def _start_each(self) -> None:
        await asyncio.gather(*(self._start(server) for server in self.config.servers))

    async def _start(self, server: ServerConfig) -> None:
        status = ServerStatus(server.name, server.transport, server.target)
        self.status[server.name] = status
        ready: asyncio.Future = self._loop.create_future()
        stop = asyncio.Event()
        self._stops[server.name] = stop
        begin = time.perf_counter()
        holder = asyncio.ensure_future(self._hold(server, status, ready, stop))
        self._holders[server.name] = holder
        try:
            remote = await asyncio.wait_for(asyncio.shield(ready), self.start_timeout)
            self._remote[server.name] = remote
            status.ok = True
            status.tools = [tool.name for _, tool in remote]
        except BaseException as exc:  # noqa: BLE001 - every failure is reported, none raised
            status.error = _reason(exc, server, self.start_timeout)
            holder.cancel()
            await asyncio.wait({holder}, timeout=STOP_TIMEOUT_S)
        finally:
            status.seconds = time.perf_counter() - begin

    async def _hold(
        self,
        server: ServerConfig,
        status: ServerStatus,
        ready: asyncio.Future,
        stop: asyncio.Event,
    ) -> None:
        """Open the session, list the tools, then keep the session open until `stop`."""
        try:
            async with AsyncExitStack() as stack:
                session = await stack.enter_async_context(_session(server, status, stack))
                await session.initialize()
                listed = await _list_tools(session)
                if not ready.done():
                    ready.set_result([(session, tool) for tool in listed])
                await stop.wait()
        except Exception as exc:  # noqa: BLE001 - handed to _start, which reports it
            if not ready.done():
                ready.set_exception(_leaf(exc))
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

    def _wrap(self, server: str, remote: tuple[Any, Any], taken: set[str]) -> Any:
        """A synchronous LangChain tool that calls the server's tool on the loop, in time."""
        from langchain_core.tools import StructuredTool, ToolException

        session, tool = remote
        name = tool.name
        if name in taken or name == "calculator":  # names stay unique for the grammar
            name = f"{server}_{tool.name}"
        taken.add(name)

        def call(**arguments: Any) -> str:
            if self._closed:
                raise ToolException(f"MCP server {server!r} was stopped")
            future = asyncio.run_coroutine_threadsafe(
                session.call_tool(tool.name, arguments), self._loop
            )
            try:
                result = future.result(self.call_timeout)
            except TimeoutError:
                future.cancel()
                raise ToolException(
                    f"MCP server {server!r} did not answer {tool.name} "
                    f"within {self.call_timeout:g} s"
                ) from None
            except Exception as exc:  # noqa: BLE001 - a transport failure, reported as one line
                leaf = _leaf(exc)
                reason = " ".join(str(leaf).split()) or type(leaf).__name__
                raise ToolException(f"MCP server {server!r} failed: {reason}") from None
            if result.is_error:
                raise ToolException(_text_of(result) or "the tool reported an error")
            return _text_of(result)

        return StructuredTool.from_function(
            func=call,
            name=name,
            description=tool.description or tool.name,
            args_schema=tool.input_schema,
            metadata={"mcp_server": server, "mcp_tool": tool.name},
            handle_tool_error=False,
        )


async def _list_tools(session: Any) -> list[Any]:
    """Every tool of the server, following pagination (bounded)."""
    from mcp import types

    tools: list[Any] = []
    cursor = None
    for _ in range(100):
        params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        tools += page.tools
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


def _session(server: ServerConfig, status: ServerStatus, stack: AsyncExitStack) -> Any:
    """A ClientSession of the official SDK over the server's transport (not yet initialized);
    a stdio server's stderr goes to a log file."""
    from contextlib import asynccontextmanager

    from mcp import ClientSession

    @asynccontextmanager
    async def stdio():
        from mcp import StdioServerParameters
        from mcp.client.stdio import stdio_client

        connection = server.connection
        params = StdioServerParameters(
            command=connection["command"],
            args=connection["args"],
            env=connection["env"],
            cwd=connection.get("cwd"),
        )
        path = _log_path(server.name)
        log = stack.enter_context(path.open("w", encoding="utf-8")) if path else sys.stderr
        status.log = str(path) if path else None
        async with stdio_client(params, errlog=log) as (read, write):
            async with ClientSession(read, write) as session:
                yield session

    @asynccontextmanager
    async def http():
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        url, headers = server.connection["url"], server.connection.get("headers")
        async with create_mcp_http_client(headers=headers) as client:
            async with streamable_http_client(url, http_client=client) as (read, write):
                async with ClientSession(read, write) as session:
                    yield session

    @asynccontextmanager
    async def sse():
        from mcp.client.sse import sse_client

        url, headers = server.connection["url"], server.connection.get("headers")
        async with sse_client(url, headers=headers) as (read, write):
            async with ClientSession(read, write) as session:
                yield session

    return {"stdio": stdio, "http": http, "sse": sse}[server.transport]()


def _close_quietly(ref: "weakref.ref[McpToolbox]") -> None:
    toolbox = ref()
    if toolbox is not None:
        toolbox.close()


def open_toolbox(
    given: str | Path | None, warn: Callable[[str], None] | None = None
) -> McpToolbox | None:
    """The MCP tools of --mcp-config (or BITRAG_HOME/mcp.json), started; None without a file."""
    path = config_path(given)
    if path is None:
        return None
    return McpToolbox(load_config(path), warn)


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
