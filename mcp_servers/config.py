"""The ``mcpServers`` snippet with which an MCP host (Claude Desktop, Cursor) starts bitrag.

Paths are absolute, for this install: the ``bitrag`` script next to the running Python (else the
one on PATH, else ``python -m agent``), and BITRAG_HOME (or ``--index``) resolved now, so the host
finds the same index whatever its working directory or environment.
"""

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from mcp_servers.registry import SERVERS
from retrieval.paths import bitrag_home


def bitrag_command() -> list[str]:
    """The absolute command that runs this install's `bitrag`."""
    beside = Path(sys.executable).parent / "bitrag"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside.absolute())]
    found = shutil.which("bitrag")
    if found:
        return [str(Path(found).absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "agent"]


def mcp_servers_config(index: Path | None = None, root: Path | None = None) -> dict[str, Any]:
    """{"mcpServers": {"bitrag-<name>": {"command", "args", "env"}}} for every server."""
    command, *prefix = bitrag_command()
    servers: dict[str, Any] = {}
    for spec in SERVERS.values():
        args = [*prefix, "mcp", "serve", spec.name, "--transport", "stdio"]
        if spec.uses_index and index is not None:
            args += ["--index", str(index.expanduser().resolve())]
        if spec.name == "tools" and root is not None:
            args += ["--root", str(root.expanduser().resolve())]
        env = {"BITRAG_HOME": str(bitrag_home().expanduser().resolve())}
        servers[f"bitrag-{spec.name}"] = {"command": command, "args": args, "env": env}
    return {"mcpServers": servers}
