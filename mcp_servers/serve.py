"""Build one of bitrag's MCP servers by name and run it over stdio or streamable HTTP.

Building a server is quick: the index (and the agent's model) load in a background thread
(``mcp_servers.loading``), so ``initialize`` is answered at once. A client that goes away (it
closes stdin, or its end of the pipe, or drops the connection) ends the server quietly.
"""

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import anyio
from fastmcp import FastMCP

from mcp_servers.auth import BearerTokenMiddleware, bind_problem
from retrieval.errors import UserError
from retrieval.paths import SAMPLE_CORPUS, default_index_dir

if TYPE_CHECKING:
    from retrieval.store.postgres_open import Store

Transport = Literal["stdio", "http"]
GONE = (BrokenPipeError, ConnectionResetError, anyio.BrokenResourceError, anyio.ClosedResourceError)
MCP_PATH = "/mcp"


@dataclass
class ServeOptions:
    """What `bitrag mcp serve` was given; each server reads the parts it uses."""

    index: Path | None = None  # None: the default index, built from the sample corpus if absent
    allow_ingest: list[Path] = field(default_factory=list)
    root: Path | None = None
    model: str | None = None  # agent: a GGUF path or registered name (None: the default)
    store: "Store | None" = None  # retrieval, agent: a PostgreSQL store instead of `index`


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send anything printed while loading (by us, torch or C code) to stderr, not the wire."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _index_source(options: ServeOptions) -> tuple[Path, Path | None]:
    """The index directory, and the corpus to build it from when absent (the default only).
    With a store: checks now that it holds an index (one line, not on the first tool call)."""
    if options.store is not None:
        from retrieval.store.postgres_open import open_store

        open_store(options.store).close()
        return default_index_dir(), None
    if options.index is None:
        return default_index_dir(), SAMPLE_CORPUS
    if not (options.index / "CURRENT").is_file():  # said now, not on the first tool call
        hint = f"run `bitrag ingest PATH --index {options.index}`"
        raise UserError(f"no index at {options.index}: {hint}")
    return options.index, None


def _retrieval(options: ServeOptions) -> FastMCP:
    from mcp_servers.retrieval_server import build_retrieval_server
    from mcp_servers.retrieval_service import RetrievalService

    for root in options.allow_ingest:
        if not root.expanduser().is_dir():
            raise UserError(f"--allow-ingest {root}: not a folder")
    directory, corpus = _index_source(options)
    service = RetrievalService(directory, corpus, options.allow_ingest, options.store)
    return build_retrieval_server(service)


def _tools(options: ServeOptions) -> FastMCP:
    from mcp_servers.tools_server import build_tools_server

    if options.root is not None and not options.root.expanduser().is_dir():
        raise UserError(f"--root {options.root}: not a folder")
    return build_tools_server(options.root)


def _agent(options: ServeOptions) -> FastMCP:
    from mcp_servers.agent_server import AgentService, build_agent_server

    directory, corpus = _index_source(options)
    return build_agent_server(AgentService(directory, corpus, options.model, store=options.store))


BUILDERS: dict[str, Callable[[ServeOptions], FastMCP]] = {
    "retrieval": _retrieval,
    "tools": _tools,
    "agent": _agent,
}


def build(name: str, options: ServeOptions) -> FastMCP:
    if name not in BUILDERS:
        raise UserError(f"no MCP server named {name!r}; choose from {', '.join(BUILDERS)}")
    with stdout_to_stderr():
        return BUILDERS[name](options)


def serve(
    name: str,
    options: ServeOptions,
    transport: Transport = "stdio",
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
) -> None:
    """Build the server, then serve until stdin closes (stdio) or Ctrl-C (HTTP)."""
    if transport == "http" and (problem := bind_problem(host, token)):
        raise UserError(problem)
    server = build(name, options)
    if transport == "stdio":
        _until_client_leaves(
            lambda: server.run(transport="stdio", show_banner=False, log_level="WARNING")
        )
        return
    from starlette.middleware import Middleware

    middleware = [Middleware(BearerTokenMiddleware, token=token)] if token else []
    shown = f"[{host}]" if ":" in host else host
    guard = "bearer token required" if token else "no token: loopback only"
    print(f"bitrag {name} MCP server on http://{shown}:{port}{MCP_PATH} ({guard})", file=sys.stderr)
    _until_client_leaves(
        lambda: server.run(
            transport="http",
            host=host,
            port=port,
            path=MCP_PATH,
            show_banner=False,
            log_level="WARNING",
            middleware=middleware,
            host_origin_protection="auto",
            uvicorn_config={"access_log": False},
        )
    )


def _until_client_leaves(run: Callable[[], None]) -> None:
    """Run the server; a client that went away mid-reply ends it quietly, not with a traceback."""
    try:
        run()
    except BaseException as exc:
        if not _client_gone(exc):
            raise


def _client_gone(exc: BaseException) -> bool:
    """A closed pipe or connection, alone or as every leaf of an ExceptionGroup."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_client_gone(e) for e in exc.exceptions)
    return isinstance(exc, GONE)
