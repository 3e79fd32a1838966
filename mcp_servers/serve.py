"""Build one of bitrag's MCP servers by name and run it over stdio or streamable HTTP."""

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fastmcp import FastMCP

from mcp_servers.auth import BearerTokenMiddleware, bind_problem
from retrieval.errors import UserError
from retrieval.paths import SAMPLE_CORPUS, default_index_dir

Transport = Literal["stdio", "http"]
MCP_PATH = "/mcp"


@dataclass
class ServeOptions:
    """What `bitrag mcp serve` was given; each server reads the parts it uses."""

    index: Path | None = None  # None: the default index, built from the sample corpus if absent
    allow_ingest: list[Path] = field(default_factory=list)
    root: Path | None = None
    model: str | None = None  # agent: a GGUF path or registered name (None: the default)


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


def _retrieval(options: ServeOptions) -> FastMCP:
    from mcp_servers.retrieval_server import build_retrieval_server
    from mcp_servers.retrieval_service import RetrievalService

    directory = options.index or default_index_dir()
    corpus = None if options.index else SAMPLE_CORPUS
    for root in options.allow_ingest:
        if not root.expanduser().is_dir():
            raise UserError(f"--allow-ingest {root}: not a folder")
    return build_retrieval_server(RetrievalService(directory, corpus, options.allow_ingest))


def _tools(options: ServeOptions) -> FastMCP:
    from mcp_servers.tools_server import build_tools_server

    if options.root is not None and not options.root.expanduser().is_dir():
        raise UserError(f"--root {options.root}: not a folder")
    return build_tools_server(options.root)


def _agent(options: ServeOptions) -> FastMCP:
    from mcp_servers.agent_server import AgentService, build_agent_server

    directory = options.index or default_index_dir()
    corpus = None if options.index else SAMPLE_CORPUS
    return build_agent_server(AgentService(directory, corpus, options.model))


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
        server.run(transport="stdio", show_banner=False, log_level="WARNING")
        return
    from starlette.middleware import Middleware

    middleware = [Middleware(BearerTokenMiddleware, token=token)] if token else []
    shown = f"[{host}]" if ":" in host else host
    guard = "bearer token required" if token else "no token: loopback only"
    print(f"bitrag {name} MCP server on http://{shown}:{port}{MCP_PATH} ({guard})", file=sys.stderr)
    server.run(
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
