"""The agent over MCP, both ways, with real processes and the official `mcp` SDK client:
- `bitrag mcp serve agent` over stdio: tools/list and `ask` returning the `bitrag ask --json` shape;
- bitrag as a client: an mcp.json pointing at bitrag's own `tools` server, whose convert_units
  the agent calls for a unit question (the answer names server and tool); a server whose command
  does not exist is named in one stderr line and the agent still answers; doctor shows both."""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

from mcp_servers.client import load_config

TIMEOUT_S = 300  # a subprocess loads torch / llama.cpp on 2 shared cores
UNIT_QUESTION = "How many GiB is 16 GB?"
NOTES_QUESTION = "What are the sign, exponent and mantissa bit counts of bfloat16?"


def bitrag() -> list[str]:
    script = Path(sys.executable).parent / "bitrag"
    return [str(script)] if script.exists() else [sys.executable, "-m", "agent"]


def child_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITRAG_")}
    env |= {"BITRAG_HOME": str(home), "HF_HUB_OFFLINE": "1", "BITRAG_THREADS": "1"}
    return env


def run_bitrag(*args: str, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*bitrag(), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=child_env(home),
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def mcp_json(home: Path) -> Path:
    """An mcp.json with bitrag's own tools server and one whose command does not exist."""
    command, *prefix = bitrag()
    config = {
        "mcpServers": {
            "bitrag-tools": {
                "command": command,
                "args": [*prefix, "mcp", "serve", "tools", "--transport", "stdio"],
                "env": {"BITRAG_HOME": str(home), "HF_HUB_OFFLINE": "1"},
            },
            "ghost": {"command": str(home / "no-such-mcp-server"), "args": ["--stdio"]},
        }
    }
    path = home / "mcp.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


# -- the agent server ------------------------------------------------------------------------


def test_agent_server_over_stdio_answers_with_evidence_and_citations(
    home_with_sample_index: Path, tmp_path: Path
) -> None:
    command, *prefix = bitrag()
    params = StdioServerParameters(
        command=command,
        args=[*prefix, "mcp", "serve", "agent", "--transport", "stdio"],
        env=child_env(home_with_sample_index),
    )

    async def talk() -> dict[str, Any]:
        with open(tmp_path / "agent-stderr.log", "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    tools = await session.list_tools()
                    question = NOTES_QUESTION
                    first, second = await asyncio.gather(
                        session.call_tool("ask", {"question": question}),
                        session.call_tool("ask", {"question": "What is 6 * 7?"}),
                    )
                    empty = await session.call_tool("ask", {"question": "  "})
                    again = await session.call_tool("ask", {"question": question, "session": "s"})
                    return {
                        "tools": tools.tools,
                        "first": first,
                        "second": second,
                        "empty": empty,
                        "again": again,
                    }

    got = asyncio.run(asyncio.wait_for(talk(), TIMEOUT_S))
    (tool,) = got["tools"]
    assert tool.name == "ask"
    assert set(tool.input_schema["properties"]) == {"question", "session"}

    first = got["first"]
    assert not first.is_error, first.content
    answer = first.structured_content
    assert {"answer", "mode", "evidence", "citations", "abstained", "timings"} <= answer.keys()
    assert answer["mode"] in ("generated", "quoted") and not answer["abstained"]
    assert answer["evidence"] and {"quote", "source", "chunk_id"} <= answer["evidence"][0].keys()
    assert answer["citations"] and {"n", "source", "chunk_id"} <= answer["citations"][0].keys()
    assert "bfloat16" in answer["evidence"][0]["quote"]

    # a concurrent call on the same loaded agent: the calculator, with its provenance
    tool_answer = got["second"].structured_content
    assert tool_answer["route"] == "tool" and "42" in tool_answer["answer"]

    # a bad argument is a clear error and the server keeps serving
    assert got["empty"].is_error
    assert "question is empty" in " ".join(b.text for b in got["empty"].content)
    assert got["again"].structured_content["mode"] == answer["mode"]


def test_serve_refuses_model_for_other_servers(run) -> None:
    result = run("mcp", "serve", "tools", "--model", "x.gguf")
    assert result.exit_code != 0 and "--model does not apply to the tools server" in result.output


def test_mcp_config_lists_the_agent_server(run_json) -> None:
    servers = run_json("mcp", "config")["mcpServers"]
    assert {"bitrag-retrieval", "bitrag-tools", "bitrag-agent"} <= servers.keys()
    assert servers["bitrag-agent"]["args"][-4:] == ["serve", "agent", "--transport", "stdio"]


# -- bitrag as an MCP client -------------------------------------------------------------------


def test_agent_calls_a_tool_of_an_mcp_server_and_names_it(
    home_with_sample_index: Path, mcp_json: Path
) -> None:
    result = run_bitrag(
        "ask", UNIT_QUESTION, "--mcp-config", str(mcp_json), "--json", home=home_with_sample_index
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["route"] == "tool"
    tool = answer["tool"]
    assert tool["server"] == "bitrag-tools" and tool["server_tool"] == "convert_units"
    assert tool["args"] == {"value": 16.0, "from_unit": "GB", "to_unit": "GiB"}
    assert tool["ok"] and "14.9" in tool["output"]
    assert "14.9" in answer["answer"]
    assert "convert_units" in answer["answer"] and "bitrag-tools" in answer["answer"]

    # the server that cannot start: one line naming it, and the answer still came
    lines = [line for line in result.stderr.splitlines() if "ghost" in line]
    assert len(lines) == 1, result.stderr
    assert "did not start" in lines[0] and "command not found" in lines[0]


def test_default_mcp_json_under_home_and_the_docs_still_answer(
    home_with_sample_index: Path, mcp_json: Path
) -> None:
    """$BITRAG_HOME/mcp.json is used without --mcp-config; notes questions stay with the notes."""
    assert mcp_json.parent == home_with_sample_index
    result = run_bitrag("ask", NOTES_QUESTION, "--json", home=home_with_sample_index)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["route"] == "docs" and answer["tool"] is None and answer["citations"]
    assert sum("ghost" in line for line in result.stderr.splitlines()) == 1


def test_without_a_conversion_tool_a_unit_question_goes_to_the_notes(
    run_json, home_with_sample_index: Path
) -> None:
    result = run_json("ask", UNIT_QUESTION)
    assert result["route"] == "docs" and result["tool"] is None


def test_doctor_shows_each_mcp_server_and_whether_it_starts(
    home: Path, mcp_json: Path, run, run_json
) -> None:
    result = run("doctor", "--mcp-config", str(mcp_json), "--json")
    assert result.exit_code == 1  # the ghost server is a problem
    report = json.loads(result.stdout)
    servers = {s["name"]: s for s in report["mcp"]["servers"]}
    assert servers["bitrag-tools"]["ok"] and "convert_units" in servers["bitrag-tools"]["tools"]
    assert not servers["ghost"]["ok"] and "command not found" in servers["ghost"]["error"]
    assert any("ghost" in p["what"] for p in report["problems"])

    text = run("doctor", "--mcp-config", str(mcp_json)).output
    assert "bitrag-tools [stdio] ok, 7 tools" in text
    assert "ghost [stdio] FAILS: command not found" in text


def test_malformed_config_entries(home: Path, run) -> None:
    path = home / "mcp.json"
    path.write_text('{"mcpServers": {"x": {"args": 3}, "off": {"disabled": true}}}')
    config = load_config(path)
    assert config.servers == [] and len(config.problems) == 1 and "'x'" in config.problems[0]
    path.write_text("{not json")
    result = run("ask", "hi", "--mcp-config", str(path))
    assert result.exit_code != 0 and "not valid JSON" in result.output
    result = run("ask", "hi", "--mcp-config", str(home / "missing.json"))
    assert result.exit_code != 0 and "no such file" in result.output
