"""Hardening of the MCP servers (issue 25):
- the retrieval server's `ingest` tool refuses what leaves its --allow-ingest root through a
  symlink (a file link, a folder link), over a real in-memory client;
- on a new BITRAG_HOME the servers answer `initialize` and `tools/list` while the default index
  is still being built in the background (stdio and HTTP), and `search` then returns hits;
- a client that goes away (closes its end of the pipe and stdin) ends the server quietly, and
  the child building the index with it.
"""

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from fastmcp import Client
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from mcp_servers.child import bitrag_command, served_over_http
from mcp_servers.retrieval_server import build_retrieval_server
from mcp_servers.retrieval_service import RetrievalService

DOCS = ("lora-qlora.md",)  # the small_index fixture indexes these
START_TIMEOUT_S = 120  # a server process imports fastmcp on 2 loaded cores
BUILD_TIMEOUT_S = 600  # the sample corpus, indexed by a child of the server
EXIT_TIMEOUT_S = 60
INITIALIZE = {
    "protocolVersion": "2025-06-18",
    "capabilities": {},
    "clientInfo": {"name": "test", "version": "1"},
}


def run(coro: Any, timeout: float) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def text_of(result: Any) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


def fresh_home(workdir: Path, name: str) -> tuple[Path, dict[str, str]]:
    """A new, empty BITRAG_HOME and the environment of a server started on it."""
    home = workdir / name
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITRAG_")}
    return home, env | {"BITRAG_HOME": str(home), "HF_HUB_OFFLINE": "1"}


def built(home: Path) -> bool:
    return (home / "index" / "CURRENT").is_file()


# -- ingest stays inside its root -----------------------------------------------------------


def test_ingest_refuses_symlinks_that_lead_out_of_the_root(small_index: Path, workdir: Path):
    outside = workdir / "outside"
    (outside / "folder").mkdir(parents=True)
    (outside / "secret.md").write_text("# Secret\nThe launch code is zebra-quasar-42.\n")
    (outside / "folder" / "inner.md").write_text("# Inner\nThe vault pin is okapi-9911.\n")
    root = workdir / "allowed"
    (root / "sub").mkdir(parents=True)
    (root / "note.md").write_text("# Note\nApples ripen in autumn.\n")
    (root / "sub" / "clean.md").write_text("# Clean\nPears ripen later.\n")
    (root / "same.md").symlink_to(root / "note.md")  # a link that stays inside is fine
    (root / "link.md").symlink_to(outside / "secret.md")
    (root / "linked-folder").symlink_to(outside / "folder", target_is_directory=True)
    server = build_retrieval_server(RetrievalService(small_index, ingest_roots=[root]))

    async def talk() -> dict[str, Any]:
        async with Client(server) as client:

            async def call(name: str, **arguments: Any) -> Any:
                return await client.call_tool(name, arguments, raise_on_error=False)

            answers = {
                path: await call("ingest", path=path)
                for path in (".", str(root), "link.md", "linked-folder", "linked-folder/inner.md")
            }
            answers["sub"] = await call("ingest", path="sub")
            (root / "link.md").unlink()
            answers["after"] = await call("ingest", path=".")
            answers["sources"] = await call("list_sources")
            answers["secret"] = await call("search", query="zebra quasar okapi", retriever="bm25")
            return answers

    answers = run(talk(), BUILD_TIMEOUT_S)
    for path in (".", str(root)):
        assert answers[path].is_error, text_of(answers[path])
        message = text_of(answers[path])
        assert "link.md" in message and "outside" in message and "remove" in message
    for path in ("link.md", "linked-folder", "linked-folder/inner.md"):
        assert answers[path].is_error and "outside" in text_of(answers[path])
    assert answers["sub"].structured_content["added"] == 1
    assert answers["after"].structured_content["added"] == 1  # note.md (same.md is its twin)
    sources = [row["source"] for row in answers["sources"].structured_content["sources"]]
    assert not [s for s in sources if str(outside) in s]
    assert sorted(Path(s).name for s in sources if str(root) in s) == ["clean.md", "note.md"]
    hits = answers["secret"].structured_content["results"]
    assert not [h for h in hits if "zebra" in h["text"] or "okapi" in h["text"]]


# -- a fast start on a new BITRAG_HOME ----------------------------------------------------------


def test_stdio_answers_initialize_while_the_index_is_built(workdir: Path) -> None:
    home, env = fresh_home(workdir, "home-stdio")
    command, *prefix = bitrag_command()
    params = StdioServerParameters(
        command=command, args=[*prefix, "mcp", "serve", "retrieval"], env=env
    )

    async def talk() -> tuple[bool, set[str], list[str], Any]:
        with open(workdir / "stdio-fresh.log", "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write) as session:
                    await asyncio.wait_for(session.initialize(), START_TIMEOUT_S)
                    tools = {t.name for t in (await session.list_tools()).tools}
                    built_when_listed = built(home)
                    waits: list[str] = []
                    while (result := await search(session)).is_error:
                        waits.append(text_of(result))
                    return built_when_listed, tools, waits, result

    built_when_listed, tools, waits, result = run(talk(), START_TIMEOUT_S + BUILD_TIMEOUT_S)
    assert not built_when_listed  # initialize and tools/list came while the index was built
    assert tools == {"search", "get_chunk", "list_sources", "ingest"}
    assert all("still being built" in w and "try again" in w for w in waits), waits
    rows = result.structured_content["results"]
    assert Path(rows[0]["source"]).name == "lora-qlora.md" and built(home)


async def search(session: ClientSession) -> Any:
    return await session.call_tool("search", {"query": "QLoRA paged optimizers", "k": 3})


def test_http_port_opens_and_lists_tools_while_the_index_is_built(workdir: Path) -> None:
    home, env = fresh_home(workdir, "home-http")

    async def listing(url: str) -> set[str]:
        async with streamable_http_client(url) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return {t.name for t in (await session.list_tools()).tools}

    with (workdir / "http-fresh.log").open("w+") as log:
        with served_over_http("retrieval", [], log, env, start_timeout=START_TIMEOUT_S) as url:
            tools = run(listing(url), START_TIMEOUT_S)
            assert not built(home)
    assert "search" in tools


# -- a client that goes away -------------------------------------------------------------------


def start(name: str, env: dict[str, str]) -> subprocess.Popen:
    command = [*bitrag_command(), "mcp", "serve", name]
    return subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )


def send(process: subprocess.Popen, message: dict[str, Any]) -> None:
    assert process.stdin is not None
    process.stdin.write(json.dumps({"jsonrpc": "2.0", **message}).encode() + b"\n")
    process.stdin.flush()


def processes_naming(text: str) -> list[str]:
    """Command lines of the live processes that mention `text` (the index build child)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def test_agent_answers_initialize_while_the_index_is_built(workdir: Path) -> None:
    home, env = fresh_home(workdir, "home-agent")
    process = start("agent", env)
    send(process, {"id": 1, "method": "initialize", "params": INITIALIZE})
    assert process.stdout is not None
    answer = json.loads(process.stdout.readline())
    assert answer["result"]["serverInfo"]["name"] == "bitrag-agent"
    send(process, {"method": "notifications/initialized"})
    send(process, {"id": 2, "method": "tools/list"})
    tools = json.loads(process.stdout.readline())["result"]["tools"]
    assert [t["name"] for t in tools] == ["ask"] and not built(home)
    process.stdin.close()  # type: ignore[union-attr]
    assert process.wait(EXIT_TIMEOUT_S) == 0
    assert "Traceback" not in process.stderr.read().decode()  # type: ignore[union-attr]


def test_server_ends_quietly_when_the_client_goes_away(workdir: Path) -> None:
    home, env = fresh_home(workdir, "home-gone")
    process = start("retrieval", env)
    process.stdout.close()  # type: ignore[union-attr]  # the host went away: nobody reads
    send(process, {"id": 1, "method": "initialize", "params": INITIALIZE})
    process.stdin.close()  # type: ignore[union-attr]
    assert process.wait(EXIT_TIMEOUT_S) == 0
    errors = process.stderr.read().decode()  # type: ignore[union-attr]
    assert "Traceback" not in errors and "ExceptionGroup" not in errors and "Error" not in errors
    deadline = time.monotonic() + EXIT_TIMEOUT_S
    while processes_naming(str(home)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not processes_naming(str(home))  # the child indexing the corpus stopped too
    assert not built(home)
