"""bitrag's MCP servers in memory through fastmcp's Client: tools, resources, prompts, argument
checks and refusals (tests/test_mcp_transports.py starts them as real subprocesses)."""

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client, FastMCP
from fastmcp.exceptions import ToolError

from mcp_servers.auth import bind_problem, is_loopback
from mcp_servers.retrieval_server import build_retrieval_server
from mcp_servers.retrieval_service import RetrievalService
from mcp_servers.tools_server import build_tools_server

DOCS = ("gguf-k-quants.md", "lora-qlora.md", "model-context-protocol-mcp.md")
CALL_TIMEOUT_S = 120


def run(coro: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def text_of(result: Any) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


@pytest.fixture(scope="module")
def retrieval_server(small_index: Path) -> FastMCP:
    return build_retrieval_server(RetrievalService(small_index))


@pytest.fixture(scope="module")
def tools_server(file_root: Path) -> FastMCP:
    return build_tools_server(file_root)


async def _call(server: FastMCP, name: str, arguments: dict[str, Any]) -> Any:
    async with Client(server) as client:
        return await client.call_tool(name, arguments, raise_on_error=False)


def call(server: FastMCP, name: str, **arguments: Any) -> Any:
    return run(_call(server, name, arguments))


def call_ok(server: FastMCP, name: str, **arguments: Any) -> Any:
    result = call(server, name, **arguments)
    assert not result.is_error, text_of(result)
    return result.structured_content


def call_error(server: FastMCP, name: str, **arguments: Any) -> str:
    result = call(server, name, **arguments)
    assert result.is_error, result
    return text_of(result)


# -- retrieval server, in memory ----------------------------------------------------------


def test_retrieval_lists_its_tools_resources_and_prompt(retrieval_server: FastMCP) -> None:
    async def listing() -> tuple[set[str], list[Any], set[str]]:
        async with Client(retrieval_server) as client:
            tools = {t.name for t in await client.list_tools()}
            resources = await client.list_resources()
            prompts = {p.name for p in await client.list_prompts()}
            return tools, resources, prompts

    tools, resources, prompts = run(listing())
    assert tools == {"search", "get_chunk", "list_sources", "ingest"}
    assert sorted(r.name for r in resources) == sorted(DOCS)
    assert all(str(r.uri).startswith("bitrag://document/") for r in resources)
    assert "answer_with_citations" in prompts


def test_search_returns_ranked_chunks_with_source_and_score(retrieval_server: FastMCP) -> None:
    for retriever in ("hybrid", "bm25"):
        data = call_ok(retrieval_server, "search", query="What is QLoRA?", k=3, retriever=retriever)
        rows = data["results"]
        assert [r["rank"] for r in rows] == [1, 2, 3]
        for row in rows:
            assert {"rank", "score", "source", "chunk_id", "text"} <= row.keys()
            assert isinstance(row["score"], float)
        assert Path(rows[0]["source"]).name == "lora-qlora.md"


def test_concurrent_searches_share_one_index(retrieval_server: FastMCP) -> None:
    questions = ["QLoRA 4-bit", "k-quants super-block", "MCP 서버 도구", "LoRA rank"] * 4

    async def many() -> list[Any]:
        async with Client(retrieval_server) as client:
            calls = [
                client.call_tool("search", {"query": q, "k": 2}, raise_on_error=False)
                for q in questions
            ]
            return await asyncio.gather(*calls)

    results = run(many())
    assert len(results) == 16 and not any(r.is_error for r in results)
    assert all("results" in r.structured_content for r in results)


def test_get_chunk_and_list_sources(retrieval_server: FastMCP) -> None:
    top = call_ok(retrieval_server, "search", query="k-quants", k=1, retriever="bm25")
    chunk_id = top["results"][0]["chunk_id"]
    chunk = call_ok(retrieval_server, "get_chunk", chunk_id=chunk_id)
    assert chunk["chunk_id"] == chunk_id
    assert chunk["text"] == top["results"][0]["text"]
    assert "no chunk" in call_error(retrieval_server, "get_chunk", chunk_id="nope#9")

    sources = call_ok(retrieval_server, "list_sources")
    assert sorted(Path(s["source"]).name for s in sources["sources"]) == sorted(DOCS)
    assert sum(s["chunks"] for s in sources["sources"]) == sources["chunks"] > 0


def test_document_resource_and_citation_prompt(retrieval_server: FastMCP) -> None:
    async def read() -> tuple[str, str]:
        async with Client(retrieval_server) as client:
            resources = await client.list_resources()
            lora = next(r for r in resources if r.name == "lora-qlora.md")
            contents = await client.read_resource(str(lora.uri))
            prompt = await client.get_prompt(
                "answer_with_citations", {"question": "What is QLoRA?"}
            )
            return contents[0].text, prompt.messages[0].content.text

    document, prompt = run(read())
    assert "lora-qlora.md" in document and "QLoRA" in document
    assert "[1]" in prompt and "lora-qlora.md" in prompt and "What is QLoRA?" in prompt


def test_ingest_is_off_unless_enabled(retrieval_server: FastMCP, workdir: Path) -> None:
    message = call_error(retrieval_server, "ingest", path=str(workdir / "corpus"))
    assert "--allow-ingest" in message


def test_ingest_inside_allowed_root_only(small_index: Path, workdir: Path) -> None:
    index = workdir / "ingest-index"
    shutil.copytree(small_index, index)
    allowed = workdir / "allowed"
    allowed.mkdir()
    (allowed / "zebra.md").write_text("# Zebra\nThe zebra hyperloop runs on quaternions.\n")
    server = build_retrieval_server(RetrievalService(index, ingest_roots=[allowed]))
    outside = call_error(server, "ingest", path=str(workdir / "corpus"))
    assert "outside" in outside
    assert "outside" in call_error(server, "ingest", path="../corpus")
    report = call_ok(server, "ingest", path=str(allowed))
    assert report["added"] == 1
    hits = call_ok(server, "search", query="zebra hyperloop", k=1, retriever="bm25")
    assert Path(hits["results"][0]["source"]).name == "zebra.md"


def test_bad_search_arguments_are_clear_errors(retrieval_server: FastMCP) -> None:
    assert "k" in call_error(retrieval_server, "search", query="lora", k=0)
    assert "retriever" in call_error(retrieval_server, "search", query="lora", retriever="magic")
    assert "empty" in call_error(retrieval_server, "search", query="   ")
    assert "query" in call_error(retrieval_server, "search", k=2)  # missing required argument
    assert "unknown tool 'drop_index'" in call_error(retrieval_server, "drop_index")
    assert call_ok(retrieval_server, "search", query="lora", k=1)["results"]  # still serving


# -- tools server, in memory --------------------------------------------------------------


def test_calculator(tools_server: FastMCP) -> None:
    assert call_ok(tools_server, "calculate", expression="4194304/7e9*100")["result"] == (
        "0.05991862857"
    )
    assert call_ok(tools_server, "calculate", expression="2**10")["value"] == 1024


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("__import__('os')", "not allowed"),
        ("9**9**9", "exponent is too large"),
        ("1+" * 500_000 + "1", "too long"),  # a 1 MB expression
        ("().__class__", "not allowed"),
        ("1/0", "division by zero"),
    ],
)
def test_calculator_abuse_is_refused_and_server_keeps_serving(
    tools_server: FastMCP, expression: str, expected: str
) -> None:
    async def abuse_then_good() -> tuple[Any, Any]:
        async with Client(tools_server) as client:
            bad = await client.call_tool(
                "calculate", {"expression": expression}, raise_on_error=False
            )
            good = await client.call_tool("calculate", {"expression": "6*7"})
            return bad, good

    bad, good = run(abuse_then_good())
    assert bad.is_error and expected in text_of(bad)
    assert len(text_of(bad)) < 500
    assert good.structured_content["result"] == "42"


def test_unit_conversion_and_model_memory(tools_server: FastMCP) -> None:
    gib = call_ok(tools_server, "convert_units", value=4, from_unit="GiB", to_unit="GB")
    assert gib["result"] == pytest.approx(4.294967296)
    assert (
        call_ok(tools_server, "convert_units", value=1, from_unit="B", to_unit="bit")["result"] == 8
    )
    memory = call_ok(tools_server, "model_memory", params="7B", bits_per_weight=4.5)
    assert memory["bytes"] == pytest.approx(7e9 * 4.5 / 8)
    assert memory["GB"] == pytest.approx(3.9375)
    assert "unknown unit" in call_error(
        tools_server, "convert_units", value=1, from_unit="parsec", to_unit="B"
    )
    assert "bits_per_weight" in call_error(
        tools_server, "model_memory", params="7B", bits_per_weight=0
    )


def test_date_and_time(tools_server: FastMCP) -> None:
    now = call_ok(tools_server, "now", timezone="Asia/Seoul")
    assert now["iso"].endswith("+09:00")
    days = call_ok(tools_server, "days_between", start="2026-01-01", end="2026-03-01")
    assert days["days"] == 59
    assert "time zone" in call_error(tools_server, "now", timezone="Mars/Olympus")
    assert "date" in call_error(tools_server, "days_between", start="yesterday", end="2026-01-01")


def test_read_file_inside_root(tools_server: FastMCP, file_root: Path) -> None:
    note = call_ok(tools_server, "read_file", path="note.txt")
    assert note["text"] == "bitrag keeps notes offline.\n" and not note["truncated"]
    deep = call_ok(tools_server, "read_file", path=str(file_root / "sub" / "deep.md"))
    assert deep["path"] == "sub/deep.md"
    assert call_ok(tools_server, "read_file", path="inside-link.txt")["path"] == "note.txt"
    cut = call_ok(tools_server, "read_file", path="note.txt", max_bytes=6)
    assert cut["text"] == "bitrag" and cut["truncated"]
    listing = call_ok(tools_server, "list_files")
    assert {"path": "note.txt", "kind": "file"} in listing["entries"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("../secret.txt", "'..' is not allowed"),
        ("sub/../../secret.txt", "'..' is not allowed"),
        ("/etc/passwd", "outside the allowed folder"),
        ("escape.txt", "outside the allowed folder"),  # a symlink that leaves the root
        ("blob.bin", "binary"),
        ("sub", "not a regular file"),
        ("missing.txt", "no such file"),
    ],
)
def test_read_file_refusals(tools_server: FastMCP, path: str, expected: str) -> None:
    async def bad_then_good() -> tuple[Any, Any]:
        async with Client(tools_server) as client:
            bad = await client.call_tool("read_file", {"path": path}, raise_on_error=False)
            good = await client.call_tool("read_file", {"path": "note.txt"})
            return bad, good

    bad, good = run(bad_then_good())
    assert bad.is_error and expected in text_of(bad)
    assert "outside the root" not in text_of(bad)  # the secret's content never leaks
    assert good.structured_content["text"].startswith("bitrag")


def test_read_file_is_off_without_a_root() -> None:
    assert "--root" in call_error(build_tools_server(None), "read_file", path="note.txt")


def test_unknown_tool_and_malformed_arguments(tools_server: FastMCP) -> None:
    assert "unknown tool 'rm_rf'" in call_error(tools_server, "rm_rf", path="/")
    assert "invalid arguments for calculate" in call_error(tools_server, "calculate", expr="1")
    wrong_type = call_error(tools_server, "convert_units", value="lots", from_unit="B", to_unit="b")
    assert "value" in wrong_type
    assert "max_bytes" in call_error(tools_server, "read_file", path="note.txt", max_bytes=10**9)
    with pytest.raises(ToolError):  # what a client sees when it asks to raise
        run(_raise(tools_server))
    assert call_ok(tools_server, "calculate", expression="1+1")["result"] == "2"


async def _raise(server: FastMCP) -> None:
    async with Client(server) as client:
        await client.call_tool("calculate", {"expression": "__import__('os')"})


# -- bind rules and the config snippet ----------------------------------------------------


def test_bind_rules() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("10.0.0.2")
    assert bind_problem("127.0.0.1", None) is None
    assert bind_problem("0.0.0.0", "s3cret") is None
    assert "refusing" in (bind_problem("0.0.0.0", None) or "")


def test_mcp_config_snippet(run_json, home: Path, small_index: Path) -> None:
    snippet = run_json("mcp", "config", "--index", str(small_index))
    servers = snippet["mcpServers"]
    assert set(servers) == {"bitrag-retrieval", "bitrag-tools", "bitrag-agent"}
    for name, entry in servers.items():
        command = Path(entry["command"])
        assert command.is_absolute() and command.exists()
        args = entry["args"]
        at = args.index("mcp")
        assert args[at : at + 3] == ["mcp", "serve", name.removeprefix("bitrag-")]
        assert "stdio" in entry["args"]
        assert entry["env"]["BITRAG_HOME"] == str(home.resolve())
    assert str(small_index.resolve()) in servers["bitrag-retrieval"]["args"]
    assert str(small_index.resolve()) in servers["bitrag-agent"]["args"]


def test_serve_refuses_options_of_another_server(run) -> None:
    result = run("mcp", "serve", "tools", "--index", "/tmp")
    assert result.exit_code != 0 and "--index does not apply" in result.output


# -- real subprocesses, official SDK client -----------------------------------------------
