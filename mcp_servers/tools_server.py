"""The ``tools`` MCP server: small, safe local tools for an agent or an MCP host.

- ``calculate``: arithmetic through bitrag's calculator (``ast`` only, never ``eval``; bounded
  input length, nesting, exponent and result size), plus a per-call time limit;
- ``convert_units`` and ``model_memory``: bits/bytes with SI and binary prefixes, and
  parameters x bits per weight -> memory;
- ``now`` and ``days_between``: date and time;
- ``read_file`` and ``list_files``: text files inside the folder given with ``--root`` only.
"""

from pathlib import Path
from typing import Annotated, Any

from fastmcp import FastMCP
from pydantic import Field

from agent.calculator import MAX_LENGTH, format_number
from agent.calculator import calculate as run_calculator
from mcp_servers import clock, units
from mcp_servers.errors import ErrorMiddleware, guarded
from mcp_servers.sandbox import DEFAULT_MAX_BYTES, HARD_MAX_BYTES, SandboxRoot

INSTRUCTIONS = (
    "Local helper tools: exact arithmetic (`calculate`), unit conversion for bits/bytes and "
    "model memory, the current date/time, and reading text files inside one allowed folder."
)
PURE = {"readOnlyHint": True, "idempotentHint": True, "openWorldHint": False}
CALC_TIMEOUT_S = 5.0


def build_tools_server(root: Path | None = None) -> FastMCP:
    """A FastMCP server whose file tools read only inside `root` (none: file reading is off)."""
    sandbox = SandboxRoot.of(root)
    server = FastMCP(
        "bitrag-tools",
        instructions=INSTRUCTIONS,
        middleware=[ErrorMiddleware()],
        mask_error_details=False,
    )

    @server.tool(annotations=PURE, timeout=CALC_TIMEOUT_S)
    @guarded
    def calculate(
        expression: Annotated[
            str,
            Field(
                description=(
                    f"Arithmetic, at most {MAX_LENGTH} characters, e.g. '4194304/7e9*100'. "
                    "Operators + - * / // % ** and parentheses; functions sqrt, log, log2, "
                    "log10, exp, abs, round, min, max, floor, ceil; constants pi, e."
                )
            ),
        ],
    ) -> dict[str, Any]:
        """Evaluate an arithmetic expression exactly."""
        value = run_calculator(expression)
        return {"expression": expression.strip(), "result": format_number(value), "value": value}

    @server.tool(annotations=PURE)
    @guarded
    def convert_units(
        value: float,
        from_unit: Annotated[str, Field(description="e.g. GB, GiB, MB, B, bit, Gbit")],
        to_unit: Annotated[str, Field(description="e.g. GiB, MiB, B, bit")],
    ) -> dict[str, Any]:
        """Convert between bits and bytes with SI (kB, MB, GB) and binary (KiB, MiB, GiB) units."""
        return units.convert(value, from_unit, to_unit)

    @server.tool(annotations=PURE)
    @guarded
    def model_memory(
        params: Annotated[
            str | float, Field(description="Parameter count: 7e9, '7B', '135M', '0.5B'.")
        ],
        bits_per_weight: Annotated[float, Field(description="e.g. 16, 8.5, 4.5, 2.6.")],
    ) -> dict[str, Any]:
        """Memory of a model's weights: parameters x bits per weight, in bytes, GB and GiB."""
        return units.model_memory(params, bits_per_weight)

    @server.tool(annotations={"readOnlyHint": True, "openWorldHint": False})
    @guarded
    def now(
        timezone: Annotated[str, Field(description="IANA zone, e.g. 'Asia/Seoul'.")] = "UTC",
    ) -> dict[str, Any]:
        """The current date and time in a time zone."""
        return clock.now(timezone)

    @server.tool(annotations=PURE)
    @guarded
    def days_between(
        start: Annotated[str, Field(description="A date, YYYY-MM-DD.")],
        end: Annotated[str, Field(description="A date, YYYY-MM-DD.")],
    ) -> dict[str, Any]:
        """Days from start to end (negative when end is earlier)."""
        return clock.days_between(start, end)

    @server.tool(annotations={"readOnlyHint": True, "openWorldHint": False})
    @guarded
    def read_file(
        path: Annotated[str, Field(description="Path relative to the allowed folder.")],
        max_bytes: Annotated[
            int, Field(ge=1, le=HARD_MAX_BYTES, description="Read at most this many bytes.")
        ] = DEFAULT_MAX_BYTES,
    ) -> dict[str, Any]:
        """Read a UTF-8 text file inside the server's allowed folder (--root)."""
        return sandbox.read_text(path, max_bytes)

    @server.tool(annotations={"readOnlyHint": True, "openWorldHint": False})
    @guarded
    def list_files(
        folder: Annotated[str, Field(description="Folder relative to the allowed one.")] = ".",
    ) -> dict[str, Any]:
        """List a folder inside the server's allowed folder (--root)."""
        return sandbox.list_files(folder)

    return server
