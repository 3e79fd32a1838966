"""The agent's local tools, as LangChain tools.

Local tools are ``langchain_core.tools.BaseTool`` objects, the same interface that
langchain-mcp-adapters returns for tools served by MCP servers, so the tools node can offer both
through one list later. ``tool_schema`` reduces a tool's argument schema (a pydantic model for
local tools, a plain dict for MCP tools) to the JSON schema that llama.cpp turns into a grammar.
"""

from typing import Any

from langchain_core.tools import BaseTool, StructuredTool, ToolException
from pydantic import BaseModel, Field

from agent.calculator import CalculatorError, calculate, format_number


class CalculatorInput(BaseModel):
    """Arguments of the calculator tool."""

    expression: str = Field(
        description=(
            "An arithmetic expression, e.g. '4194304/7e9*100' or 'sqrt(2)*pi'. "
            "Operators: + - * / // % ** and parentheses; functions: sqrt, log, log2, log10, "
            "exp, abs, round, min, max, floor, ceil; constants: pi, e."
        )
    )


def _calculate(expression: str) -> str:
    try:
        return format_number(calculate(expression))
    except CalculatorError as exc:
        raise ToolException(str(exc)) from exc


calculator: BaseTool = StructuredTool.from_function(
    func=_calculate,
    name="calculator",
    description=(
        "Evaluate an arithmetic expression exactly and return the result. Use it for any "
        "calculation instead of doing arithmetic yourself."
    ),
    args_schema=CalculatorInput,
    handle_tool_error=False,
)


def local_tools() -> list[BaseTool]:
    """The tools that run in this process (MCP tools are added separately)."""
    return [calculator]


def tool_schema(tool: BaseTool) -> dict[str, Any]:
    """The JSON schema of a tool's arguments, keeping only type, properties and required."""
    full = _full_schema(tool.args_schema)
    return {
        "type": full.get("type", "object"),
        "properties": full.get("properties", {}),
        "required": list(full.get("required", [])),
    }


def _full_schema(args_schema: Any) -> dict[str, Any]:
    if args_schema is None:
        return {}
    if isinstance(args_schema, dict):
        return args_schema
    if isinstance(args_schema, type) and issubclass(args_schema, BaseModel):
        return args_schema.model_json_schema()
    raise TypeError(f"unsupported args_schema type: {type(args_schema).__name__}")
