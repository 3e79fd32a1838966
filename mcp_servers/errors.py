"""The one place where MCP tool failures become clear, one-line MCP tool errors.

Two layers, both here:
- ``guarded`` wraps each tool function: an expected failure (a bad argument, a refused path, a
  calculator refusal, a problem with the index) is re-raised as a ``ToolError`` carrying its
  own message, so FastMCP returns it as an ``isError`` result without logging a traceback.
- ``ErrorMiddleware`` sits around every ``tools/call``: unknown tools and arguments that fail
  schema validation are reworded into one line naming the tool and the fields; anything else
  unexpected becomes ``<tool> failed: <Type>: <message>``. The server keeps serving.
"""

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from fastmcp.exceptions import NotFoundError, ToolError, ValidationError
from fastmcp.server.middleware import Middleware, MiddlewareContext
from fastmcp.tools import ToolResult
from pydantic import ValidationError as PydanticValidationError

from retrieval.errors import UserError

F = TypeVar("F", bound=Callable[..., Any])
MAX_MESSAGE = 400  # characters of one error line


class ToolArgumentError(ValueError):
    """A tool argument that is well-typed but not acceptable (a path outside the root, ...)."""


# What a tool may raise on bad input; each one's message is already meant for the caller.
EXPECTED = (ToolArgumentError, UserError, ValueError, ArithmeticError, LookupError, OSError)


def one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 3] + "..."


def guarded(fn: F) -> F:
    """Turn the expected exceptions of a tool function into ToolErrors with their message."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ToolError:
            raise
        except OSError as exc:
            raise ToolError(one_line(f"{fn.__name__}: {exc.strerror or exc}")) from None
        except EXPECTED as exc:
            raise ToolError(one_line(f"{fn.__name__}: {exc}")) from None

    return wrapper  # type: ignore[return-value]


def _validation_line(tool: str, exc: BaseException) -> str:
    cause = exc.__cause__ if isinstance(exc.__cause__, PydanticValidationError) else exc
    if isinstance(cause, PydanticValidationError):
        parts = []
        for error in cause.errors():
            where = ".".join(str(p) for p in error.get("loc", ())) or "arguments"
            parts.append(f"{where}: {error.get('msg', 'invalid')}")
        return one_line(f"invalid arguments for {tool}: " + "; ".join(parts))
    return one_line(f"invalid arguments for {tool}: {exc}")


class ErrorMiddleware(Middleware):
    """Every failed tools/call becomes a one-line ToolError; nothing escapes as a crash."""

    async def on_call_tool(
        self, context: MiddlewareContext[Any], call_next: Callable[..., Any]
    ) -> ToolResult:
        name = getattr(context.message, "name", "?")
        try:
            return await call_next(context)
        except ValidationError as exc:
            raise ToolError(_validation_line(name, exc)) from None
        except NotFoundError:
            known = ", ".join(sorted(t.name for t in await self._tools(context)))
            raise ToolError(one_line(f"unknown tool {name!r}; this server has: {known}")) from None
        except ToolError:
            raise
        except Exception as exc:  # noqa: BLE001 - the server must keep serving
            raise ToolError(one_line(f"{name} failed: {type(exc).__name__}: {exc}")) from None

    @staticmethod
    async def _tools(context: MiddlewareContext[Any]) -> list[Any]:
        server = context.fastmcp_context.fastmcp if context.fastmcp_context else None
        if server is None:
            return []
        return list(await server.list_tools(run_middleware=False))
