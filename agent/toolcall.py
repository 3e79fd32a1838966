"""Choosing and calling a tool for a message the router sent to the tools.

The calculator's expression is taken from the message by rule when one is written
there; otherwise the model picks a tool and its arguments under a JSON schema
grammar (the tool names as an enum, each tool's own argument schema), so even a
small model cannot produce a malformed call. Every result names its tool and
arguments, which the answer shows as its provenance.
"""

from collections.abc import Callable
from dataclasses import dataclass

from langchain_core.tools import BaseTool

from agent.constrained import generate_json
from agent.llm import LLM
from agent.routing import expression_in
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

    @property
    def answer(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.call.args.items())
        if not self.ok:
            return f"The {self.call.name} tool could not do that ({shown}): {self.output}"
        return f"{self.output} (from the {self.call.name} tool: {shown})"

    def as_dict(self) -> dict:
        return {
            "name": self.call.name,
            "args": self.call.args,
            "by": self.call.by,
            "output": self.output,
            "ok": self.ok,
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
    messages = [
        {"role": "system", "content": CHOOSE_SYSTEM},
        {"role": "user", "content": message},
    ]
    value = generate_json(llm(), messages, call_schema(tools))
    return ToolCall(value["tool"], value["args"], "model")


def run(call: ToolCall, tools: list[BaseTool]) -> ToolResult:
    tool = next(t for t in tools if t.name == call.name)
    try:
        return ToolResult(call, str(tool.invoke(call.args)), True)
    except Exception as exc:  # a tool's failure is reported in the answer, not raised
        return ToolResult(call, " ".join(str(exc).split()) or type(exc).__name__, False)
