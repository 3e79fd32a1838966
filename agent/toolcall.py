"""Choosing and calling a tool for a message the router sent to the tools.

The calculator's expression is taken from the message by rule when one is written
there, and so are a unit conversion's value and units when a conversion tool (an MCP
server's `convert_units`) is offered; otherwise the model picks a tool and its
arguments under a JSON schema grammar (the tool names as an enum, each tool's own
argument schema), so even a small model cannot produce a malformed call. Every
result names its tool and arguments, and for an MCP tool its server, which the
answer shows as its provenance.
"""

from collections.abc import Callable
from dataclasses import dataclass

from langchain_core.tools import BaseTool

from agent.routing import conversion_in, expression_in
from agent.runtime.constrained import generate_json
from agent.runtime.llm import LLM
from agent.tools import tool_schema
from retrieval.errors import UserError

CHOOSE_SYSTEM = (
    "Pick the tool that answers the user's message and fill in its arguments. Reply in JSON."
)


@dataclass(frozen=True)
class ToolCall:
    name: str
    args: dict
    by: str  # "rule" or "model"


@dataclass(frozen=True)
class ToolResult:
    call: ToolCall
    output: str
    ok: bool
    server: str | None = None  # the MCP server that ran the tool; None for a local tool
    remote_name: str | None = None  # the tool's name on that server

    @property
    def source(self) -> str:
        if self.server is None:
            return f"the {self.call.name} tool"
        return f"the {self.remote_name or self.call.name} tool of MCP server {self.server}"

    @property
    def answer(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.call.args.items())
        if not self.ok:
            who = self.source[0].upper() + self.source[1:]
            return f"{who} could not do that ({shown}): {self.output}"
        return f"{self.output} (from {self.source}: {shown})"

    def as_dict(self) -> dict:
        return {
            "name": self.call.name,
            "args": self.call.args,
            "by": self.call.by,
            "output": self.output,
            "ok": self.ok,
            "server": self.server,
            "server_tool": self.remote_name,
        }


def call_schema(tools: list[BaseTool]) -> dict:
    """One schema admitting exactly the calls {"tool": name, "args": {...}} of `tools`."""
    return {
        "anyOf": [
            {
                "type": "object",
                "properties": {"tool": {"const": t.name}, "args": tool_schema(t)},
                "required": ["tool", "args"],
            }
            for t in tools
        ]
    }


def choose(message: str, tools: list[BaseTool], llm: Callable[[], LLM]) -> ToolCall:
    """The call for `message`: by rule when it writes an expression, else by the model
    (`llm` is called only then, so a rule-made call never loads a model)."""
    names = {t.name for t in tools}
    if not tools:
        raise UserError("no tools are available")
    expression = expression_in(message)
    if expression and "calculator" in names:
        return ToolCall("calculator", {"expression": expression}, "rule")
    converter = conversion_tool(tools)
    if converter is not None and (conversion := conversion_in(message)):
        return ToolCall(converter.name, conversion, "rule")
    messages = [
        {"role": "system", "content": CHOOSE_SYSTEM},
        {"role": "user", "content": message},
    ]
    value = generate_json(llm(), messages, call_schema(tools))
    return ToolCall(value["tool"], value["args"], "model")


CONVERSION_ARGS = {"value", "from_unit", "to_unit"}


def conversion_tool(tools: list[BaseTool]) -> BaseTool | None:
    """The first tool that takes exactly a value and two units (convert_units)."""
    for tool in tools:
        schema = tool_schema(tool)
        if set(schema["properties"]) == CONVERSION_ARGS:
            return tool
    return None


def can_convert(tools: list[BaseTool]) -> bool:
    return conversion_tool(tools) is not None


def run(call: ToolCall, tools: list[BaseTool]) -> ToolResult:
    tool = next(t for t in tools if t.name == call.name)
    meta = tool.metadata or {}
    where = {"server": meta.get("mcp_server"), "remote_name": meta.get("mcp_tool")}
    try:
        return ToolResult(call, str(tool.invoke(call.args)), True, **where)
    except Exception as exc:  # a tool's failure is reported in the answer, not raised
        return ToolResult(call, " ".join(str(exc).split()) or type(exc).__name__, False, **where)
