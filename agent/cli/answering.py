"""The answering commands: `bitrag ask` (one question) and `bitrag chat` (a conversation)."""

import signal
import sys

import click

from agent.cli.common import INDEX_HELP, LLM_URL_HELP, MODEL_HELP, print_json
from agent.cli.notes import open_notes, store_options
from retrieval.errors import UserError
from retrieval.tokenize import has_hangul, preload_kiwi

SESSION_HELP = "Conversation name: follow-ups resolve against it, also after a restart."
MCP_CONFIG_HELP = "mcp.json of MCP servers whose tools the agent may use "
MCP_CONFIG_HELP += "(default: $BITRAG_HOME/mcp.json when it exists)."
LORA_HELP = "LoRA adapter GGUF (from `bitrag tune`) applied to the local model."


def _mcp_tools(mcp_config: str | None):
    """The started MCP servers of mcp.json (None without one); a server that does not start is
    named in one line on stderr and left out."""
    from mcp_servers.client.config import config_path

    if config_path(mcp_config) is None:
        return None  # no servers: the mcp SDK is not even imported
    from mcp_servers.client.toolbox import open_toolbox

    return open_toolbox(mcp_config, lambda line: click.echo(line, err=True))


@click.command()
@click.argument("question")
@click.option("--model", help=MODEL_HELP)
@click.option("--llm-url", help=LLM_URL_HELP)
@click.option("--index", help=INDEX_HELP)
@store_options
@click.option("--session", help=SESSION_HELP)
@click.option("--mcp-config", help=MCP_CONFIG_HELP)
@click.option("--lora", help=LORA_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ask(
    question: str,
    model: str | None,
    llm_url: str | None,
    index: str | None,
    store: str | None,
    store_schema: str | None,
    session: str | None,
    mcp_config: str | None,
    lora: str | None,
    as_json: bool,
) -> None:
    """Answer QUESTION from the indexed documents, quoting and citing them."""
    if has_hangul(question):
        preload_kiwi()  # ~1.4 s of loading overlaps the imports below
    from agent.assemble import make_agent
    from agent.render import answer_live

    if not question.strip():
        raise UserError("the question is empty")
    toolbox = _mcp_tools(mcp_config)
    try:
        tools = toolbox.tools if toolbox else []
        opened = open_notes(index, store, store_schema)
        agent = make_agent(opened, model, llm_url, session, tools, lora)
        if as_json:
            print_json(agent.ask(question, session or "default"))
            return

        def turn(on_token, on_evidence) -> dict:
            return agent.ask(question, session or "default", on_token, on_evidence)

        answer_live(turn, click.echo, _write)
    finally:
        if toolbox:
            toolbox.close()


def _write(text: str) -> None:
    click.echo(text, nl=False)
    sys.stdout.flush()


@click.command()
@click.option("--model", help=MODEL_HELP)
@click.option("--llm-url", help=LLM_URL_HELP)
@click.option("--index", help=INDEX_HELP)
@store_options
@click.option("--session", help=SESSION_HELP)
@click.option("--mcp-config", help=MCP_CONFIG_HELP)
@click.option("--lora", help=LORA_HELP)
def chat(
    model: str | None,
    llm_url: str | None,
    index: str | None,
    store: str | None,
    store_schema: str | None,
    session: str | None,
    mcp_config: str | None,
    lora: str | None,
) -> None:
    """Talk with your notes: evidence first, the answer streams under it (/help inside)."""
    from agent.chat import Chat, run_chat

    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C stops one answer

    toolbox = _mcp_tools(mcp_config)
    try:
        tools = toolbox.tools if toolbox else []
        opened = open_notes(index, store, store_schema)
        run_chat(Chat(opened, model, llm_url, session, click.echo, tools, lora), _write)
    finally:
        if toolbox:
            toolbox.close()
