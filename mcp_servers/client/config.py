"""Reading ``mcp.json``: the ``mcpServers`` format of Claude Desktop and Cursor, checked.

Each entry is either a local server started as a subprocess (``command``, ``args``, ``env``,
``cwd``) and spoken to over stdio, or a remote one reached by ``url`` over streamable HTTP (or
SSE when ``"type"``/``"transport"`` says ``sse``), with optional ``headers`` such as
``{"Authorization": "Bearer <token>"}``. ``${VAR}`` in ``env`` and ``headers`` values is expanded
from the environment; an entry with ``"disabled": true`` is skipped. A malformed file is a
``UserError``; a malformed entry is one problem line and is left out.
"""

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrieval.errors import UserError
from retrieval.paths import bitrag_home

CHILD_ENV = "BITRAG_MCP_CHILD"  # set in stdio servers bitrag starts: they load no mcp.json
HTTP_TYPES = {"http", "streamable-http", "streamable_http"}
_VAR = re.compile(r"\$\{([^}]+)\}")


@dataclass(frozen=True)
class ServerConfig:
    """One entry of mcpServers, checked: its transport and what connecting needs."""

    name: str
    transport: str  # "stdio", "http" or "sse"
    connection: dict[str, Any]

    @property
    def target(self) -> str:
        """The command line (stdio) or URL (HTTP, SSE), for messages and doctor."""
        if self.transport == "stdio":
            return " ".join([self.connection["command"], *self.connection["args"]])
        return str(self.connection["url"])

    @property
    def sends_token(self) -> bool:
        """Whether this remote entry sends an Authorization header."""
        headers = self.connection.get("headers") or {}
        return any(key.lower() == "authorization" for key in headers)


@dataclass
class McpConfig:
    """The usable servers of one mcp.json, and a line for each entry left out."""

    path: Path
    servers: list[ServerConfig] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


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


def parse_entry(name: str, entry: Any) -> ServerConfig:
    """One mcpServers entry as a ServerConfig; ValueError says what is wrong with it."""
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
            config.servers.append(parse_entry(name, entry))
        except ValueError as exc:
            config.problems.append(f"MCP server {name!r} in {path}: {exc}; left out")
    return config
