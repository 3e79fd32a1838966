"""`bitrag doctor`: what is installed, what is wrong, what to do."""

from pathlib import Path

import click

from agent.cli.common import INDEX_HELP, MODEL_HELP, print_json


def _threads_from(llama: dict) -> str:
    """e.g. "--threads 999, clamped to the 2 cores", "BITRAG_THREADS=1" or "cores idle now"."""
    source = llama["threads_from"]
    if llama["threads_asked"] is None:
        return source
    joint = " " if source.startswith("--") else "="
    clamp = f", clamped to the {llama['cores']} cores" if llama["threads_clamped"] else ""
    return f"{source}{joint}{llama['threads_asked']}{clamp}"


@click.command()
@click.option("--model", help=MODEL_HELP)
@click.option("--index", help=INDEX_HELP)
@click.option("--mcp-config", help="mcp.json to check (default: $BITRAG_HOME/mcp.json).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def doctor(model: str | None, index: str | None, mcp_config: str | None, as_json: bool) -> None:
    """Check the installation, model, embedder, index and MCP servers."""
    from agent.doctor import diagnose

    flag = click.get_current_context().find_root().params.get("threads") is not None
    report = diagnose(model, Path(index).expanduser() if index else None, mcp_config, flag)
    if as_json:
        print_json(report)
    else:
        model = report["model"]
        click.echo(f"model:    {model['name']}: {model['path']} sha256_ok={model['sha256_ok']}")
        click.echo(f"embedder: {report['embedder']['path']}")
        click.echo(f"index:    {report['index']['path']} ({report['index']['status']})")
        click.echo(f"sessions: {report['sessions']['path']} ({report['sessions']['status']})")
        llama = report["llama_cpp"]
        click.echo(f"llama.cpp: {llama['system_info']}")
        click.echo(f"threads:  {llama['threads']} ({_threads_from(llama)})")
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
