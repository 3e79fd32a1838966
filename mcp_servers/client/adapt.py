"""An MCP server's tool as a synchronous LangChain tool for the agent's tools node.

The tool keeps the server's name, description and input schema; its metadata names the server
and the remote tool (``mcp_server``, ``mcp_tool``), which the answer shows as provenance. A name
that is taken (by another server's tool, or by the local ``calculator``) gets the server's name
in front, so the names the model chooses from stay unique. What the tool returns is the text of
the MCP result; an MCP error result becomes a ``ToolException`` carrying the server's message.
"""

from collections.abc import Callable
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool, ToolException

LOCAL_NAMES = frozenset({"calculator"})

# calls the named tool of one server with these arguments and returns its CallToolResult;
# raises ToolException (one line) when the server cannot be reached or does not answer in time
RemoteCall = Callable[[str, dict[str, Any]], Any]


def unique_name(server: str, tool_name: str, taken: set[str]) -> str:
    """The tool's own name, or `<server>_<name>` when that is taken; added to `taken`."""
    name = tool_name
    if name in taken or name in LOCAL_NAMES:
        name = f"{server}_{tool_name}"
    taken.add(name)
    return name


def text_of(result: Any) -> str:
    """What an MCP tool answered: its structured result's `text`/`result`, else its text."""
    structured = getattr(result, "structured_content", None)
    if isinstance(structured, dict):
        for key in ("text", "result"):
            if isinstance(structured.get(key), str | int | float):
                return str(structured[key])
    parts = [getattr(block, "text", "") for block in getattr(result, "content", None) or []]
    return " ".join(" ".join(p for p in parts if p).split())


def langchain_tool(server: str, tool: Any, name: str, call: RemoteCall) -> BaseTool:
    """`tool` (an mcp ``Tool`` of `server`) as a LangChain tool named `name` that runs `call`."""

    def run(**arguments: Any) -> str:
        result = call(tool.name, arguments)
        if result.is_error:
            raise ToolException(text_of(result) or "the tool reported an error")
        return text_of(result)

    return StructuredTool.from_function(
        func=run,
        name=name,
        description=tool.description or tool.name,
        args_schema=tool.input_schema,
        metadata={"mcp_server": server, "mcp_tool": tool.name},
        handle_tool_error=False,
    )
