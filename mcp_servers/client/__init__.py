"""bitrag as an MCP client: the servers listed in an ``mcp.json`` become tools of the agent.

The file uses the ``mcpServers`` format of Claude Desktop and Cursor::

    {"mcpServers": {
        "tools": {"command": "bitrag", "args": ["mcp", "serve", "tools"], "env": {...}},
        "web":   {"url": "http://127.0.0.1:8766/mcp", "headers": {"Authorization": "Bearer x"}}
    }}

It is read from ``--mcp-config PATH``, else ``$BITRAG_HOME/mcp.json`` when that exists.

- ``config``: reading and checking mcp.json (stdio ``command`` entries, HTTP/SSE ``url`` ones);
- ``transports``: one session of the official ``mcp`` SDK client per server;
- ``failures``: the one line that says why a server did not start or a call failed;
- ``adapt``: a server's tool as a LangChain tool with its provenance, for the tools node;
- ``toolbox``: ``McpToolbox``, the servers' lifetime (started once, kept open, stopped once),
  and ``open_toolbox``/``probe`` for ``ask``/``chat`` and ``doctor``.

Why not langchain-mcp-adapters: its 0.3.x releases are written against the ``mcp`` 1.x SDK
(``mcp.server.fastmcp`` imports, camelCase ``inputSchema``/``isError``, a three-part
streamable-HTTP transport), and 0.3.2 declares ``mcp<2``; bitrag's servers need ``mcp`` 2.x
(fastmcp 4). What it would do here is ``adapt.langchain_tool``.
"""

import importlib

# Names load on first use, so a run without mcp.json never imports the mcp SDK (~1 s).
_EXPORTS = {
    "config": (
        "CHILD_ENV",
        "HTTP_TYPES",
        "McpConfig",
        "ServerConfig",
        "config_path",
        "default_config_path",
        "load_config",
        "parse_entry",
    ),
    "toolbox": (
        "CALL_TIMEOUT_ENV",
        "CALL_TIMEOUT_S",
        "START_TIMEOUT_ENV",
        "START_TIMEOUT_S",
        "STOP_TIMEOUT_S",
        "McpToolbox",
        "ServerStatus",
        "open_toolbox",
        "probe",
    ),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> object:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
