"""`bitrag mcp serve retrieval|agent --store postgresql://...` against a real PostgreSQL server
started here (retrieval.store.postgres_server): the retrieval server answers search,
get_chunk and list_sources from the store (in memory, and as a real stdio subprocess with the
store in BITRAG_STORE) with the file store's ranking, follows a newly published generation,
the agent server answers from the store, and wrong combinations are one line."""

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastmcp import Client, FastMCP
from mcp import ClientSession, StdioServerParameters, stdio_client

from agent.cli import cli
from mcp_servers.retrieval_service import RECHECK_S
from mcp_servers.serve import ServeOptions, build
from retrieval.store import Index
from retrieval.store.postgres import publish
from retrieval.store.postgres_open import store_from
from retrieval.store.postgres_server import LocalPostgres

DOCS = ("gguf-k-quants.md", "lora-qlora.md", "model-context-protocol-mcp.md")
SCHEMA = "course"
QUERY = "What does QLoRA quantize the frozen base model to?"
TIMEOUT_S = 300  # a subprocess loads torch / Kiwi on 2 shared cores


def run(coro: Any, timeout: float = TIMEOUT_S) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture(scope="module")
def pg() -> Iterator[LocalPostgres]:
    with LocalPostgres() as server:
        yield server


@pytest.fixture(scope="module")
def published(pg: LocalPostgres, small_index: Path) -> Index:
    """The module's notes, published as generation 1 of schema `course`."""
    index = Index.load(small_index)
    assert publish(pg.dsn, index, SCHEMA) == 1
    return index


def _server(name: str, pg: LocalPostgres) -> FastMCP:
    return build(name, ServeOptions(store=store_from(pg.dsn, SCHEMA)))


async def _calls(server: FastMCP, calls: list[tuple[str, dict]]) -> list[Any]:
    async with Client(server) as client:
        return [await client.call_tool(n, a, raise_on_error=False) for n, a in calls]


def _ids(result: Any) -> list[str]:
    assert not result.is_error, result
    return [row["chunk_id"] for row in result.structured_content["results"]]


def test_retrieval_server_searches_the_store(pg: LocalPostgres, published: Index) -> None:
    expected = [hit.chunk.chunk_id for hit in published.search(QUERY, 5, "hybrid")]
    search, chunk, sources = run(
        _calls(
            _server("retrieval", pg),
            [
                ("search", {"query": QUERY, "k": 5}),
                ("get_chunk", {"chunk_id": expected[0]}),
                ("list_sources", {}),
            ],
        )
    )
    assert _ids(search) == expected  # the file store's ranking, read from PostgreSQL
    assert Path(search.structured_content["results"][0]["source"]).name == "lora-qlora.md"
    assert chunk.structured_content["text"] == published.search(QUERY, 1)[0].chunk.text
    listed = sources.structured_content
    assert listed["documents"] == len(DOCS) and listed["chunks"] == len(published.chunks)


def test_retrieval_server_follows_a_new_generation(
    pg: LocalPostgres, published: Index, sample_index: Path
) -> None:
    server = _server("retrieval", pg)

    async def before_and_after() -> tuple[Any, Any]:
        async with Client(server) as client:
            before = await client.call_tool("list_sources", {})
            assert publish(pg.dsn, Index.load(sample_index), SCHEMA) == 2
            await asyncio.sleep(RECHECK_S + 0.5)
            after = await client.call_tool("list_sources", {})
            return before, after

    try:
        before, after = run(before_and_after())
    finally:
        publish(pg.dsn, published, SCHEMA)  # generation 3: the module's notes again
    assert before.structured_content["documents"] == len(DOCS)
    assert after.structured_content["documents"] == len(Index.load(sample_index).docs)


def test_retrieval_over_stdio_reads_bitrag_store(
    pg: LocalPostgres, published: Index, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITRAG_")}
    env |= {"BITRAG_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "BITRAG_THREADS": "1"}
    env |= {"BITRAG_STORE": pg.dsn, "BITRAG_STORE_SCHEMA": SCHEMA}
    script = Path(sys.executable).parent / "bitrag"
    params = StdioServerParameters(
        command=str(script), args=["mcp", "serve", "retrieval", "--transport", "stdio"], env=env
    )

    async def talk() -> Any:
        with open(tmp_path / "stderr.log", "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    return await session.call_tool("search", {"query": QUERY, "k": 3})

    result = run(talk())
    assert not result.is_error, result
    expected = [hit.chunk.chunk_id for hit in published.search(QUERY, 3, "hybrid")]
    assert [row["chunk_id"] for row in result.structured_content["results"]] == expected
    assert not (tmp_path / "index").exists()  # no file index was built for the server


def test_agent_server_answers_from_the_store(pg: LocalPostgres, published: Index) -> None:
    (ask,) = run(_calls(_server("agent", pg), [("ask", {"question": "What does QLoRA quantize?"})]))
    assert not ask.is_error, ask
    answer = ask.structured_content
    assert answer["evidence"], answer
    assert {Path(e["source"]).name for e in answer["evidence"]} <= set(DOCS)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["tools", "--store", "postgresql://x@h/db"], "--store does not apply to the tools"),
        (["retrieval", "--index", "/tmp/i", "--store", "x"], "--index and --store"),
        (["retrieval", "--allow-ingest", "/tmp", "--store", "host=/nowhere"], "--allow-ingest"),
    ],
)
def test_wrong_store_options_are_one_line(args: list[str], says: str) -> None:
    result = CliRunner().invoke(cli, ["mcp", "serve", *args])
    assert result.exit_code != 0 and says in result.output, result.output


def test_a_schema_without_an_index_is_said_at_start(pg: LocalPostgres) -> None:
    start = time.monotonic()
    result = CliRunner().invoke(
        cli, ["mcp", "serve", "retrieval", "--store", pg.dsn, "--store-schema", "empty"]
    )
    assert result.exit_code != 0, result.output
    assert "no bitrag index in PostgreSQL schema 'empty'" in result.output
    assert time.monotonic() - start < 60
