"""The `bitrag` command line. Errors become one line on stderr and a non-zero exit."""

import json
import os
import signal
import sys
from pathlib import Path

import click

from mcp_servers.registry import SERVERS as MCP_SERVERS
from retrieval.errors import UserError
from retrieval.paths import SAMPLE_CORPUS, default_index_dir
from retrieval.tokenize import has_hangul, preload_kiwi

INDEX_HELP = "Index directory (default: $BITRAG_HOME/index)."
MODEL_HELP = "GGUF model file (default: $BITRAG_MODEL or the embedded model)."
LLM_URL_HELP = "OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1 (or $BITRAG_LLM_URL)."


class BitragGroup(click.Group):
    """Turns exceptions into a one-line message unless --debug was given."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except UserError as exc:
            raise click.ClickException(" ".join(str(exc).split())) from None
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            line = " ".join(f"{type(exc).__name__}: {exc}".split())
            raise click.ClickException(f"{line} (rerun with --debug for details)") from None


def _print_json(obj: object) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False, indent=2))


def _index_dir(index: str | None) -> Path:
    return Path(index).expanduser() if index else default_index_dir()


@click.group(cls=BitragGroup)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.option(
    "--threads",
    type=click.IntRange(1),
    help="llama.cpp threads (or $BITRAG_THREADS; default: the cores idle right now).",
)
def cli(debug: bool, threads: int | None) -> None:
    """Private, offline question answering over your own documents."""
    if threads:
        os.environ["BITRAG_THREADS"] = str(threads)


@cli.command()
@click.option("--model", help=MODEL_HELP)
@click.option("--index", help=INDEX_HELP)
@click.option("--mcp-config", help="mcp.json to check (default: $BITRAG_HOME/mcp.json).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def doctor(model: str | None, index: str | None, mcp_config: str | None, as_json: bool) -> None:
    """Check the installation, model, embedder, index and MCP servers."""
    from agent.doctor import diagnose

    report = diagnose(model, Path(index).expanduser() if index else None, mcp_config)
    if as_json:
        _print_json(report)
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


def _show_progress(stage: str, done: int, total: int) -> None:
    """A one-line progress display on stderr, shown only on a terminal."""
    if sys.stderr.isatty():
        end = "\n" if done == total else ""
        click.echo(f"\r{stage} {done}/{total}", err=True, nl=False)
        click.echo(end, err=True, nl=False)


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--index", help=INDEX_HELP)
@click.option(
    "--max-mb", default=50, show_default=True, type=click.IntRange(1), help="Skip larger files."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ingest(paths: tuple[str, ...], index: str | None, max_mb: int, as_json: bool) -> None:
    """Add files and folders to the index (unchanged files are skipped, deleted ones removed)."""
    from retrieval.store import ingest as run_ingest

    roots = [Path(p).expanduser() for p in paths]
    report = run_ingest(roots, _index_dir(index), max_mb * 1024 * 1024, _show_progress).as_dict()
    if as_json:
        _print_json(report)
    else:
        counts = ("added", "updated", "unchanged", "removed", "chunks")
        click.echo(", ".join(f"{key} {report[key]}" for key in counts))
        for skipped in report["skipped"]:
            click.echo(f"skipped {skipped['path']}: {skipped['reason']}", err=True)
    if _indexed_nothing(report):
        where = ", ".join(paths)
        if report["skipped"]:
            raise UserError(f"nothing under {where} could be indexed: every file was skipped")
        raise UserError(f"no supported files (.txt .md .pdf .html) under {where}")


def _indexed_nothing(report: dict) -> bool:
    """No document of these paths is in the index now and none was removed from it."""
    kept = any(s["reason"].startswith("kept") for s in report["skipped"])
    touched = ("added", "updated", "unchanged", "removed")
    return not kept and not any(report[key] for key in touched)


@cli.command()
@click.argument("query")
@click.option(
    "--retriever",
    type=click.Choice(["bm25", "dense", "faiss", "hybrid"]),
    default="hybrid",
    show_default=True,
)
@click.option("-k", "k", default=5, show_default=True, type=click.IntRange(1, 100))
@click.option("--index", help=INDEX_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def search(query: str, retriever: str, k: int, index: str | None, as_json: bool) -> None:
    """Show the chunks that best match QUERY."""
    if not query.strip():
        raise UserError("the query is empty")
    hits = _open(index).search(query, k, retriever)
    rows = [
        {
            "rank": h.rank,
            "score": h.score,
            "source": h.chunk.source,
            "chunk_id": h.chunk.chunk_id,
            "text": h.chunk.text,
        }
        for h in hits
    ]
    if as_json:
        _print_json({"results": rows})
        return
    for row in rows:
        click.echo(f"{row['rank']}. {row['score']:.4f} {row['chunk_id']}")
    if not rows:
        click.echo("no matching chunks", err=True)


def _open(index: str | None):
    """The given index, or the default one (built from the sample corpus on first use)."""
    from retrieval.store import open_index

    return open_index(_index_dir(index), None if index else SAMPLE_CORPUS)


SESSION_HELP = "Conversation name: follow-ups resolve against it, also after a restart."
MCP_CONFIG_HELP = "mcp.json of MCP servers whose tools the agent may use "
MCP_CONFIG_HELP += "(default: $BITRAG_HOME/mcp.json when it exists)."


def _mcp_tools(mcp_config: str | None):
    """The started MCP servers of mcp.json (None without one); a server that does not start is
    named in one line on stderr and left out."""
    from mcp_servers.client.config import config_path

    if config_path(mcp_config) is None:
        return None  # no servers: the mcp SDK is not even imported
    from mcp_servers.client.toolbox import open_toolbox

    return open_toolbox(mcp_config, lambda line: click.echo(line, err=True))


@cli.command()
@click.argument("question")
@click.option("--model", help=MODEL_HELP)
@click.option("--llm-url", help=LLM_URL_HELP)
@click.option("--index", help=INDEX_HELP)
@click.option("--session", help=SESSION_HELP)
@click.option("--mcp-config", help=MCP_CONFIG_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ask(
    question: str,
    model: str | None,
    llm_url: str | None,
    index: str | None,
    session: str | None,
    mcp_config: str | None,
    as_json: bool,
) -> None:
    """Answer QUESTION from the indexed documents, quoting and citing them."""
    if has_hangul(question):
        preload_kiwi()  # ~1.4 s of loading overlaps the imports below
    from agent.assemble import make_agent
    from agent.render import show_answer

    if not question.strip():
        raise UserError("the question is empty")
    toolbox = _mcp_tools(mcp_config)
    try:
        tools = toolbox.tools if toolbox else []
        agent = make_agent(_open(index), model, llm_url, session, tools)
        result = agent.ask(question, session or "default")
    finally:
        if toolbox:
            toolbox.close()
    if as_json:
        _print_json(result)
        return
    show_answer(result, click.echo)


@cli.command()
@click.option("--model", help=MODEL_HELP)
@click.option("--llm-url", help=LLM_URL_HELP)
@click.option("--index", help=INDEX_HELP)
@click.option("--session", help=SESSION_HELP)
@click.option("--mcp-config", help=MCP_CONFIG_HELP)
def chat(
    model: str | None,
    llm_url: str | None,
    index: str | None,
    session: str | None,
    mcp_config: str | None,
) -> None:
    """Talk with your notes; answers stream, evidence follows (/help inside)."""
    from agent.chat import Chat, run_chat

    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C stops one answer

    def write(text: str) -> None:
        click.echo(text, nl=False)
        sys.stdout.flush()

    toolbox = _mcp_tools(mcp_config)
    try:
        tools = toolbox.tools if toolbox else []
        run_chat(Chat(_open(index), model, llm_url, session, click.echo, tools), write)
    finally:
        if toolbox:
            toolbox.close()


@cli.command()
@click.argument("src")
@click.option("--types", required=True, help="Comma-separated types, e.g. Q8_0,Q4_K_M,Q2_K.")
@click.option("--out", "out_dir", required=True, help="Output folder.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def quantize(src: str, types: str, out_dir: str, as_json: bool) -> None:
    """Requantize a GGUF model into each of the given types (llama.cpp)."""
    from eval.quantize import quantize as run_quantize

    wanted = [t.strip() for t in types.split(",") if t.strip()]
    if not wanted:
        raise UserError("no quantization types given: pass --types Q8_0,Q4_K_M,...")

    def show(message: str) -> None:
        if not as_json:
            click.echo(message, err=True)

    result = run_quantize(Path(src).expanduser(), wanted, Path(out_dir).expanduser(), show)
    if as_json:
        _print_json(result)
        return
    if result["ceiling_note"]:
        click.echo(result["ceiling_note"])
    for row in result["outputs"]:
        click.echo(
            f"{row['type']:8} {row['bits_per_weight']:6.3f} bpw {row['bytes']:>12} B  {row['path']}"
        )


@cli.command()
@click.option("--model", help=MODEL_HELP)
@click.option("--runs", default=3, show_default=True, type=click.IntRange(1, 20))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def bench(model: str | None, runs: int, as_json: bool) -> None:
    """Tokens/s through bitrag's stack vs raw llama-cpp-python, measured side by side."""
    from eval.bench_llm import bench as run_bench

    result = run_bench(model, runs)
    if as_json:
        _print_json(result)
        return
    click.echo(f"model: {result['model']} ({result['threads']} threads, n_ctx {result['n_ctx']})")
    for label, ours, raw, ratio in (
        ("prompt tok/s", "prompt_tokens_per_s", "raw_prompt_tokens_per_s", "prompt_ratio"),
        ("gen tok/s", "gen_tokens_per_s", "raw_gen_tokens_per_s", "gen_ratio"),
    ):
        click.echo(
            f"{label:13} bitrag {result[ours]:8.1f}  raw {result[raw]:8.1f}  "
            f"ratio {result[ratio]:.3f}"
        )
    click.echo(
        f"RSS MB        bitrag {result['rss_mb']:8.1f}  raw {result['raw_rss_mb']:8.1f}  "
        f"overhead {result['rss_overhead_mb']:.1f}"
    )


@cli.command("eval")
@click.option("--source", help="GGUF file or registered name to requantize (default: embedded).")
@click.option("--types", help="Comma-separated rungs (default: F16,Q8_0,Q6_K,...,Q2_K).")
@click.option("--dataset", help="Questions in the qa.jsonl schema (default: data/eval/qa.jsonl).")
@click.option("--index", help="Index the questions are about (default: the sample corpus).")
@click.option(
    "--split", type=click.Choice(["test", "dev", "all"]), default="test", show_default=True
)
@click.option("--limit", type=click.IntRange(1), help="Only the first N questions.")
@click.option("--out", "out_dir", default="bitrag-eval", show_default=True, help="Output folder.")
@click.option("--kld-tokens", default=2048, show_default=True, type=click.IntRange(8, 1 << 20),
              help="Held-out tokens scored for divergence.")
@click.option("--json", "as_json", is_flag=True, help="Print results.json.")
def eval_cmd(source, types, dataset, index, split, limit, out_dir, kld_tokens, as_json) -> None:
    """Accuracy versus bit-width on your documents: report.md, results.json, a plot."""
    from eval.ladder_run import Options, Progress, run_eval

    opts = Options(source=source, split=split, limit=limit, out=Path(out_dir).expanduser(),
                   kld_tokens=kld_tokens, index=Path(index).expanduser() if index else None)
    if types is not None:
        opts.types = [t.strip() for t in types.split(",") if t.strip()]
    if dataset:
        opts.dataset = Path(dataset).expanduser()
    results = run_eval(opts, Progress())
    if as_json:
        _print_json(results)
        return
    click.echo(results["recommendation"]["summary"])
    click.echo(f"wrote {opts.out / 'report.md'}, results.json, accuracy_vs_bits.png")


@cli.group()
def models() -> None:
    """List, register and install GGUF models."""


def _show_models(rows: list[dict], as_json: bool) -> None:
    if as_json:
        _print_json({"models": rows})
        return
    for r in rows:
        facts = (
            f"{r['quant_type']:7} {r['bits_per_weight']:6.3f} bpw {r['bytes'] / 1e6:8.1f} MB"
            if r["ok"]
            else f"PROBLEM: {r['error']}"
        )
        langs = ",".join(r["languages"]) or "?"
        click.echo(f"{r['name']:28} {r['origin']:10} {langs:6} {facts}  {r['path']}")


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_list(as_json: bool) -> None:
    """Show the models bitrag knows, with size, type, bits per weight and languages."""
    from agent.runtime.models import list_models

    _show_models(list_models(), as_json)


@models.command("add")
@click.argument("path")
@click.option("--name", help="Short name for --model (default: the file name).")
@click.option("--languages", default="", help="Languages known to work, e.g. en,ko.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_add(path: str, name: str | None, languages: str, as_json: bool) -> None:
    """Register your own GGUF file."""
    from agent.runtime.models import add_model

    langs = [x.strip() for x in languages.split(",") if x.strip()]
    _show_models([add_model(Path(path), name, langs)], as_json)


@models.command("install")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_install(name: str, as_json: bool) -> None:
    """Download, verify and register an opt-in model pack (e.g. qwen2.5-coder-0.5b)."""
    from agent.runtime.models import install_pack

    _show_models([install_pack(name, lambda m: click.echo(m, err=True))], as_json)


def _check_port(host: str, port: int) -> None:
    """Bind the address once, as the server will, so a busy port is one line before loading."""
    import errno
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise UserError(f"cannot listen on {host}: {exc.strerror}") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(
                    f"port {port} on {host} is already in use: stop what listens there, "
                    "or pass --port with a free port"
                ) from None
            raise UserError(f"cannot listen on {host}:{port} ({exc.strerror})") from None


@cli.command("serve-llm")
@click.option("--model", help=MODEL_HELP)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--api-key", envvar="BITRAG_LLM_API_KEY", help="Bearer token clients must send.")
def serve_llm(model: str | None, host: str, port: int, api_key: str | None) -> None:
    """Serve the model over an OpenAI-compatible HTTP API (llama_cpp.server)."""
    from agent.runtime.llm import N_CTX, SEED
    from agent.runtime.model_file import checked_model
    from retrieval.threads import threads

    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        raise UserError(f"refusing to serve on {host} without --api-key (or BITRAG_LLM_API_KEY)")
    _check_port(host, port)
    path = checked_model(model).path
    settings = {
        "model": str(path),
        "host": host,
        "port": port,
        "n_ctx": N_CTX,
        "seed": SEED,
        "n_threads": threads(),
    }  # the in-process model's settings
    command = [sys.executable, "-m", "llama_cpp.server"]
    for key, value in settings.items():
        command += [f"--{key}", str(value)]
    if api_key:
        command += ["--api_key", api_key]
    click.echo(f"serving {path.name} on http://{host}:{port}/v1 (Ctrl-C stops)", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)  # become the server: signals reach it, no orphan child


@cli.group()
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
) -> None:
    """Run the NAME MCP server over stdio (default) or streamable HTTP on 127.0.0.1."""
    from mcp_servers.auth import bind_problem
    from mcp_servers.serve import ServeOptions, serve

    spec = MCP_SERVERS[name]
    for given, flag, applies in (
        (index, "--index", spec.uses_index),
        (allow_ingest, "--allow-ingest", name == "retrieval"),
        (root, "--root", name == "tools"),
        (model, "--model", spec.uses_model),
    ):
        if given and not applies:
            raise UserError(f"{flag} does not apply to the {name} server")
    port = port or spec.default_port
    if transport == "http":
        if problem := bind_problem(host, token):
            raise UserError(problem)
        _check_port(host, port)
    options = ServeOptions(
        index=Path(index).expanduser() if index else None,
        allow_ingest=[Path(p).expanduser() for p in allow_ingest],
        root=Path(root).expanduser() if root else None,
        model=model,
    )
    try:
        serve(name, options, transport, host, port, token or None)  # type: ignore[arg-type]
    except KeyboardInterrupt:
        pass


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
    _print_json(snippet)


def main() -> None:
    # Ctrl-C ends a command at once, also inside a long native call (loading torch or a
    # model) where Python would notice it seconds later, or a library would swallow it.
    # Nothing is lost: index and session writes are atomic. `chat` catches it instead.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    cli(prog_name="bitrag")
