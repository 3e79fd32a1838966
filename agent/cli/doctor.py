"""`bitrag doctor`: what is installed, what is wrong, what to do."""

from pathlib import Path

import click

from agent.cli.common import INDEX_HELP, MODEL_HELP, print_json


@click.command()
@click.option("--model", help=MODEL_HELP)
@click.option("--index", help=INDEX_HELP)
@click.option("--mcp-config", help="mcp.json to check (default: $BITRAG_HOME/mcp.json).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def doctor(model: str | None, index: str | None, mcp_config: str | None, as_json: bool) -> None:
    """Check the installation, model, embedder, index and MCP servers."""
    from agent.doctor import diagnose

    report = diagnose(model, Path(index).expanduser() if index else None, mcp_config)
    if as_json:
        print_json(report)
    else:
        click.echo(f"model:    {report['model']['path']} sha256_ok={report['model']['sha256_ok']}")
        click.echo(f"embedder: {report['embedder']['path']}")
        click.echo(f"index:    {report['index']['path']} ({report['index']['status']})")
        llama = report["llama_cpp"]
        click.echo(f"llama.cpp: {llama['system_info']}")
        click.echo(f"threads:  {llama['threads']} ({llama['threads_from']})")
        mcp = report["mcp"]
        click.echo(f"mcp:      {mcp['config'] or 'no mcp.json'}")
        for server in mcp["servers"]:
            state = (
                f"ok, {len(server['tools'])} tools ({', '.join(server['tools'])})"
                if server["ok"]
                else f"FAILS: {server['error']}"
            )
            click.echo(f"  {server['name']} [{server['transport']}] {state}")
        for problem in report["problems"]:
            click.echo(f"PROBLEM: {problem['what']} -> {problem['fix']}")
        click.echo("all good" if report["ok"] else f"{len(report['problems'])} problem(s)")
    if not report["ok"]:
        raise click.exceptions.Exit(1)
