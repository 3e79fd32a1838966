"""The names of bitrag's MCP servers and what each one takes; imports nothing heavy.

The CLI builds its choices and `bitrag mcp config` its snippet from ``SERVERS``, so adding a
server is one entry here and one builder in ``mcp_servers.serve``.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSpec:
    name: str
    default_port: int
    summary: str
    uses_index: bool = False  # takes --index (and builds the default index on first use)
    uses_model: bool = False  # takes --model (a GGUF file or a registered name)


SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in (
        ServerSpec("retrieval", 8765, "search, chunks and documents of your notes", True),
        ServerSpec("tools", 8766, "calculator, units, date/time, files inside --root"),
        ServerSpec("agent", 8767, "ask: answers from your notes with citations", True, True),
    )
}
