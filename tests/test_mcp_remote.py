"""MCP over streamable HTTP with real server processes and the official `mcp` SDK client:
- `bitrag mcp serve agent --transport http --token T`: 401 without the token; with it,
  tools/list and a real `ask` on the embedded model against the sample index;
- mcp.json entries given by `url` (and `headers`): bitrag's own tools server over HTTP with a
  token. The right token lists and calls its tools with their provenance; a wrong or missing
  one is one line naming the server, and the agent answers without it."""

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.tools import ToolException
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from mcp_servers.child import bitrag_command, served_over_http
from mcp_servers.client import McpToolbox, load_config, probe

TIMEOUT_S = 300  # a subprocess loads torch / llama.cpp on 2 shared cores
TOKEN = "correct-horse-battery-staple"
TOKEN_ENV = "BITRAG_TEST_REMOTE_TOKEN"
UNIT_QUESTION = "How many GiB is 16 GB?"
NOTES_QUESTION = "What are the sign, exponent and mantissa bit counts of bfloat16?"


def child_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITRAG_")}
    env |= {"BITRAG_HOME": str(home), "HF_HUB_OFFLINE": "1", "BITRAG_THREADS": "1"}
    return env


@contextmanager
def served(name: str, args: list[str], home: Path, token: str | None) -> Iterator[str]:
    """A bitrag MCP server over HTTP on 127.0.0.1, its log under `home`; always stopped."""
    with (home / f"served-{name}.log").open("w+") as log:
        with served_over_http(
            name, args, log, child_env(home), token=token, start_timeout=TIMEOUT_S
        ) as url:
            yield url


def write_mcp_json(path: Path, servers: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"mcpServers": servers}), encoding="utf-8")
    return path


# -- the agent server over streamable HTTP ---------------------------------------------------


def test_agent_server_over_http_with_token(home_with_sample_index: Path) -> None:
    async def talk(url: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with create_mcp_http_client(headers=headers) as http:
            async with streamable_http_client(url, http_client=http) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    tools = await session.list_tools()
                    answer = await session.call_tool("ask", {"question": NOTES_QUESTION})
                    empty = await session.call_tool("ask", {"question": "   "})
                    math = await session.call_tool("ask", {"question": "What is 6 * 7?"})
                    return {"tools": tools.tools, "answer": answer, "empty": empty, "math": math}

    with served("agent", [], home_with_sample_index, TOKEN) as url:
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        accept = {"Accept": "application/json, text/event-stream"}
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            refused = httpx.post(url, json=body, headers=accept | headers, timeout=30)
            assert refused.status_code == 401, headers
        got = asyncio.run(asyncio.wait_for(talk(url), TIMEOUT_S))

    (tool,) = got["tools"]
    assert tool.name == "ask"
    assert set(tool.input_schema["properties"]) == {"question", "session"}
    first = got["answer"]
    assert not first.is_error, first.content
    answer = first.structured_content
    assert answer["mode"] in ("generated", "quoted") and not answer["abstained"]
    assert answer["route"] == "docs"
    assert "bfloat16" in answer["evidence"][0]["quote"]
    assert answer["citations"] and {"n", "source", "chunk_id"} <= answer["citations"][0].keys()
    assert any(Path(c["source"]).name for c in answer["citations"])
    # a bad argument is a clear MCP error, and the server keeps serving
    assert got["empty"].is_error
    assert "question is empty" in " ".join(b.text for b in got["empty"].content)
    math = got["math"].structured_content
    assert math["route"] == "tool" and "42" in math["answer"]


# -- mcp.json entries given by url -----------------------------------------------------------


def test_url_entries_with_right_wrong_and_missing_token(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "note.txt").write_text("remote notes stay local.\n", encoding="utf-8")
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with served("tools", ["--root", str(root)], home, TOKEN) as url:
        path = write_mcp_json(
            tmp_path / "mcp.json",
            {
                "remote-tools": {
                    "type": "http",
                    "url": url,
                    "headers": {"Authorization": f"Bearer ${{{TOKEN_ENV}}}"},
                },
                "wrong-token": {"url": url, "headers": {"Authorization": "Bearer nope"}},
                "no-token": {"url": url},
            },
        )
        lines: list[str] = []
        with McpToolbox(load_config(path), warn=lines.append, start_timeout=60) as toolbox:
            assert toolbox.status["remote-tools"].ok
            assert toolbox.status["remote-tools"].transport == "http"
            tools = {tool.name: tool for tool in toolbox.tools}
            assert {"convert_units", "read_file", "calculate"} <= tools.keys()
            assert {t.metadata["mcp_server"] for t in toolbox.tools} == {"remote-tools"}
            convert = tools["convert_units"]
            assert convert.metadata == {"mcp_server": "remote-tools", "mcp_tool": "convert_units"}
            gib = convert.invoke({"value": 16, "from_unit": "GB", "to_unit": "GiB"})
            assert gib == "16 GB = 14.9012 GiB"
            assert tools["read_file"].invoke({"path": "note.txt"}) == "remote notes stay local.\n"
            with pytest.raises(ToolException, match="'..' is not allowed"):
                tools["read_file"].invoke({"path": "../mcp.json"})
            assert tools["calculate"].invoke({"expression": "6*7"}) == "42"  # still serving
        with pytest.raises(ToolException, match="was stopped"):
            convert.invoke({"value": 1, "from_unit": "GB", "to_unit": "GiB"})

        report = probe(path)  # what doctor shows
    rows = {row["name"]: row for row in report["servers"]}
    assert rows["remote-tools"]["ok"] and rows["remote-tools"]["target"] == url
    assert not rows["wrong-token"]["ok"] and "401" in rows["wrong-token"]["error"]

    assert len(lines) == 2, lines
    wrong = next(line for line in lines if "'wrong-token'" in line)
    missing = next(line for line in lines if "'no-token'" in line)
    for line in (wrong, missing):
        assert "\n" not in line and "did not start" in line and "going on without it" in line
        assert f"{url} answered HTTP 401 Unauthorized" in line
    assert "bearer token was refused" in wrong
    assert "needs a bearer token" in missing and '"Authorization": "Bearer <token>"' in missing
    assert TOKEN not in " ".join(lines)


def test_agent_answers_with_a_tool_of_a_remote_server(home_with_sample_index: Path) -> None:
    home = home_with_sample_index
    with served("tools", [], home, TOKEN) as url:
        path = write_mcp_json(
            home / "remote-mcp.json",
            {
                "locked": {"url": url},  # listed first: its failure must not stop the other
                "remote-tools": {"url": url, "headers": {"Authorization": f"Bearer {TOKEN}"}},
            },
        )
        result = subprocess.run(
            [*bitrag_command(), "ask", UNIT_QUESTION, "--mcp-config", str(path), "--json"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            env=child_env(home),
            stdin=subprocess.DEVNULL,
        )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["route"] == "tool"
    tool = answer["tool"]
    assert tool["server"] == "remote-tools" and tool["server_tool"] == "convert_units"
    assert tool["ok"] and "14.9" in tool["output"]
    assert "14.9" in answer["answer"] and "remote-tools" in answer["answer"]
    lines = [line for line in result.stderr.splitlines() if "locked" in line]
    assert len(lines) == 1, result.stderr
    assert "did not start" in lines[0] and "HTTP 401" in lines[0]
    assert "needs a bearer token" in lines[0]
