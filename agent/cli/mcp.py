"""`bitrag mcp`: serve bitrag's MCP servers, print the snippet a host needs to start them."""

from pathlib import Path
from typing import TYPE_CHECKING

import click

from agent.cli.common import INDEX_HELP, MODEL_HELP, check_port, print_json
from agent.cli.notes import store_options
from mcp_servers.registry import SERVERS as MCP_SERVERS
from retrieval.errors import UserError

if TYPE_CHECKING:
    from retrieval.store.postgres_open import Store


@click.group()
def mcp() -> None:
    """Serve bitrag over MCP (Claude Desktop, Cursor, other agents)."""


@mcp.command("serve")
@click.argument("name", type=click.Choice(list(MCP_SERVERS)))
@click.option(
    "--transport", type=click.Choice(["stdio", "http"]), default="stdio", show_default=True
)
@click.option("--host", default="127.0.0.1", show_default=True, help="HTTP address to bind.")
@click.option("--port", type=click.IntRange(1, 65535), help="HTTP port (default: per server).")
@click.option("--token", envvar="BITRAG_MCP_TOKEN", help="Bearer token HTTP clients must send.")
@click.option("--index", help=INDEX_HELP)
@click.option("--allow-ingest", multiple=True, help="retrieval: let `ingest` read under ROOT.")
@click.option("--root", help="tools: the folder read_file/list_files may read.")
@click.option("--model", help="agent: " + MODEL_HELP)
@store_options
def mcp_serve(
    name: str,
    transport: str,
    host: str,
    port: int | None,
    token: str | None,
    index: str | None,
    allow_ingest: tuple[str, ...],
    root: str | None,
    model: str | None,
    store: str | None,
    store_schema: str | None,
) -> None:
    """Run the NAME MCP server over stdio (default) or streamable HTTP on 127.0.0.1.

    retrieval and agent read --store (or $BITRAG_STORE) when given, as search and ask do.
    """
    from mcp_servers.auth import bind_problem
    from mcp_servers.serve import ServeOptions, serve

    spec = MCP_SERVERS[name]
    for given, flag, applies in (
        (index, "--index", spec.uses_index),
        (allow_ingest, "--allow-ingest", name == "retrieval"),
        (root, "--root", name == "tools"),
        (model, "--model", spec.uses_model),
        (store or store_schema, "--store", spec.uses_index),
    ):
        if given and not applies:
            raise UserError(f"{flag} does not apply to the {name} server")
    target = _store(spec.uses_index, index, store, store_schema, allow_ingest)
    port = port or spec.default_port
    if transport == "http":
        if problem := bind_problem(host, token):
            raise UserError(problem)
        check_port(host, port)
    options = ServeOptions(
        index=Path(index).expanduser() if index else None,
        allow_ingest=[Path(p).expanduser() for p in allow_ingest],
        root=Path(root).expanduser() if root else None,
        model=model,
        store=target,
    )
    try:
        serve(name, options, transport, host, port, token or None)  # type: ignore[arg-type]
    except KeyboardInterrupt:
        pass


def _store(
    uses_index: bool,
    index: str | None,
    store: str | None,
    store_schema: str | None,
    allow_ingest: tuple[str, ...],
) -> "Store | None":
    """The PostgreSQL store a server that reads an index is given (None: the file index)."""
    from retrieval.store.postgres_open import store_from

    if not uses_index:
        return None
    if index and store:
        raise UserError("--index and --store name two different indexes: give one of them")
    target = None if index else store_from(store, store_schema)
    if target is not None and allow_ingest:
        raise UserError(
            f"--allow-ingest does not apply with a PostgreSQL store: run `bitrag ingest PATH "
            f"{target.hint()}` to add notes to it"
        )
    return target


@mcp.command("config")
@click.option("--index", help="Index for the retrieval server (default: BITRAG_HOME's).")
@click.option("--root", help="Folder the tools server may read files from.")
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON snippet.")
def mcp_config(index: str | None, root: str | None, as_json: bool) -> None:
    """Print the mcpServers snippet for Claude Desktop / Cursor to start bitrag's servers."""
    from mcp_servers.config import mcp_servers_config

    snippet = mcp_servers_config(
        Path(index).expanduser() if index else None, Path(root).expanduser() if root else None
    )
    if not as_json:
        click.echo(
            "Add these entries to mcpServers in your host's config (Claude Desktop: "
            "claude_desktop_config.json; Cursor: ~/.cursor/mcp.json):",
            err=True,
        )
    print_json(snippet)
