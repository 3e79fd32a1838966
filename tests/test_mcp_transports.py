"""bitrag's MCP servers as real subprocesses, through the official `mcp` SDK client over stdio
and streamable HTTP (with and without a bearer token), started as a host would start them."""

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from mcp_servers.child import bitrag_command, served_over_http

DOCS = ("gguf-k-quants.md", "lora-qlora.md", "model-context-protocol-mcp.md")
START_TIMEOUT_S = 120  # a server subprocess imports fastmcp (and torch for the index) on 2 cores
CALL_TIMEOUT_S = 120


def run(coro: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def text_of(result: Any) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


def server_env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITRAG_")}
    env["BITRAG_HOME"] = str(workdir / "home")
    env["HF_HUB_OFFLINE"] = "1"
    return env


@contextmanager
def http_server(args: list[str], workdir: Path, token: str | None = None) -> Iterator[str]:
    """`bitrag mcp serve ARGS --transport http` on a free port; its URL; always stopped after."""
    name, *rest = args
    with (workdir / f"server-{name}-{time.monotonic_ns()}.log").open("w+") as log:
        with served_over_http(
            name, rest, log, server_env(workdir), token=token, start_timeout=START_TIMEOUT_S
        ) as url:
            yield url


async def _session_calls(session: ClientSession, calls: list[tuple[str, dict]]) -> dict[str, Any]:
    await session.initialize()
    tools = await session.list_tools()
    results = [await session.call_tool(name, arguments) for name, arguments in calls]
    return {"tools": {t.name for t in tools.tools}, "results": results}


async def over_http(url: str, calls: list[tuple[str, dict]], token: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                return await _session_calls(session, calls)


def test_retrieval_over_stdio(small_index: Path, workdir: Path) -> None:
    command, *prefix = bitrag_command()
    params = StdioServerParameters(
        command=command,
        args=[*prefix, "mcp", "serve", "retrieval", "--transport", "stdio"]
        + ["--index", str(small_index)],
        env=server_env(workdir),
    )

    async def talk() -> dict[str, Any]:
        with open(workdir / "stdio-stderr.log", "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write) as session:
                    return await _session_calls(
                        session,
                        [
                            ("search", {"query": "QLoRA", "k": 2, "retriever": "bm25"}),
                            ("get_chunk", {"chunk_id": "missing"}),
                            ("list_sources", {}),
                        ],
                    )

    answer = run(talk(), START_TIMEOUT_S + CALL_TIMEOUT_S)
    assert answer["tools"] == {"search", "get_chunk", "list_sources", "ingest"}
    search, missing, sources = answer["results"]
    assert not search.is_error
    rows = search.structured_content["results"]
    assert Path(rows[0]["source"]).name == "lora-qlora.md" and rows[0]["chunk_id"]
    assert missing.is_error and "no chunk" in missing.content[0].text
    assert sources.structured_content["documents"] == len(DOCS)


def test_tools_over_stdio(file_root: Path, workdir: Path) -> None:
    command, *prefix = bitrag_command()
    params = StdioServerParameters(
        command=command,
        args=[*prefix, "mcp", "serve", "tools", "--transport", "stdio", "--root", str(file_root)],
        env=server_env(workdir),
    )
    calls = [
        ("convert_units", {"value": 16, "from_unit": "GB", "to_unit": "GiB"}),
        ("calculate", {"expression": "__import__('os')"}),
        ("read_file", {"path": "escape.txt"}),
        ("read_file", {"path": "sub/deep.md"}),
    ]

    async def talk() -> dict[str, Any]:
        with open(workdir / "tools-stdio-stderr.log", "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write) as session:
                    return await _session_calls(session, calls)

    answer = run(talk(), START_TIMEOUT_S + CALL_TIMEOUT_S)
    assert {"calculate", "convert_units", "model_memory", "now", "read_file"} <= answer["tools"]
    convert, abuse, escape, deep = answer["results"]
    assert convert.structured_content["result"] == pytest.approx(16e9 / 2**30)
    assert abuse.is_error and "not allowed" in abuse.content[0].text
    assert escape.is_error and "outside the allowed folder" in escape.content[0].text
    assert deep.structured_content["text"] == "# Deep\n4-bit weights.\n"


def test_retrieval_over_http_with_token(small_index: Path, workdir: Path) -> None:
    token = "correct-horse-battery-staple"
    with http_server(["retrieval", "--index", str(small_index)], workdir, token) as url:
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        accept = {"Accept": "application/json, text/event-stream"}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
            response = httpx.post(url, json=body, headers=accept | headers, timeout=30)
            assert response.status_code == 401, headers
            assert response.headers["www-authenticate"].startswith("Bearer")
        calls = [("search", {"query": "k-quants", "k": 1, "retriever": "bm25"})]
        answer = run(over_http(url, calls, token))
    assert "search" in answer["tools"]
    (search,) = answer["results"]
    assert Path(search.structured_content["results"][0]["source"]).name == "gguf-k-quants.md"


def test_tools_over_http(file_root: Path, workdir: Path) -> None:
    with http_server(["tools", "--root", str(file_root)], workdir) as url:
        calls = [
            ("calculate", {"expression": "9**9**9"}),
            ("calculate", {"expression": "2**8"}),
            ("read_file", {"path": "../secret.txt"}),
            ("read_file", {"path": "note.txt"}),
            ("no_such_tool", {}),
            ("model_memory", {"params": "135M", "bits_per_weight": 5}),
        ]
        answer = run(over_http(url, calls))
    assert {"calculate", "convert_units", "model_memory", "now", "read_file"} <= answer["tools"]
    bad_calc, calc, bad_read, read, unknown, memory = answer["results"]
    assert bad_calc.is_error and "exponent" in bad_calc.content[0].text
    assert calc.structured_content["result"] == "256"
    assert bad_read.is_error and ".." in bad_read.content[0].text
    assert read.structured_content["text"].startswith("bitrag")
    assert unknown.is_error and "unknown tool" in unknown.content[0].text
    assert memory.structured_content["bytes"] == pytest.approx(135e6 * 5 / 8)


def test_non_loopback_without_token_is_refused(workdir: Path) -> None:
    result = subprocess.run(
        [*bitrag_command(), "mcp", "serve", "tools", "--transport", "http", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=120,
        env=server_env(workdir),
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing" in lines[0] and "--token" in lines[0]


def test_config_json_is_valid_for_hosts(run) -> None:
    result = run("mcp", "config")
    assert result.exit_code == 0
    assert "mcpServers" in json.loads(result.stdout)
