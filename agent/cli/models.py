"""The model commands: `bitrag models` (list, add, install), `quantize`, `bench` and
`serve-llm`."""

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from agent.cli.common import INDEX_HELP, MODEL_HELP, check_port, open_default, print_json
from retrieval.errors import UserError

if TYPE_CHECKING:
    from eval.imatrix import Imatrix

PRUNE_HELP = "Remove this many whole layers from every output (which: --prune-rule)."
PRUNE_RULE_HELP = (
    "Which layers --prune removes: those whose removal alone changes the model least on the "
    "index's notes (one Q8_0 requantization per layer to measure), or the blocks just before "
    "the last (no measurement)."
)
IMATRIX_HELP = (
    "Importance matrix for every type (admits Q2_K_S, IQ2_XXS...): a llama.cpp .dat file, or "
    "'notes' to compute one from the index's notes, saved beside the outputs."
)


@click.group()
def models() -> None:
    """List, register and install GGUF models."""


def _show_models(rows: list[dict], as_json: bool) -> None:
    if as_json:
        print_json({"models": rows})
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
@click.option("--force", is_flag=True, help="Re-point a name that already names another file.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_add(path: str, name: str | None, languages: str, force: bool, as_json: bool) -> None:
    """Register your own GGUF file."""
    from agent.runtime.models import add_model

    langs = [x.strip() for x in languages.split(",") if x.strip()]
    _show_models([_said_replaced(add_model(Path(path), name, langs, force=force))], as_json)


def _said_replaced(row: dict) -> dict:
    """The row, after a line on stderr when its name used to name another file."""
    if "replaced" in row:
        message = f"model name {row['name']!r} now names {row['path']}, not {row['replaced']}"
        click.echo(message, err=True)
    return row


@models.command("install")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_install(name: str, as_json: bool) -> None:
    """Download, verify and register an opt-in model pack (qwen2.5-coder-0.5b or -1.5b)."""
    from agent.runtime.models import install_pack

    row = install_pack(name, lambda m: click.echo(m, err=True))
    _show_models([_said_replaced(row)], as_json)


@click.command()
@click.argument("src")
@click.option("--types", required=True, help="Comma-separated types, e.g. Q8_0,Q4_K_M,Q2_K.")
@click.option("--out", "out_dir", required=True, help="Output folder.")
@click.option("--imatrix", "imatrix_from", help=IMATRIX_HELP)
@click.option("--index", help=INDEX_HELP)
@click.option("--prune", default=0, type=click.IntRange(0), help=PRUNE_HELP)
@click.option(
    "--prune-rule",
    type=click.Choice(["measured", "before-last"]),
    default="measured",
    show_default=True,
    help=PRUNE_RULE_HELP,
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def quantize(
    src: str,
    types: str,
    out_dir: str,
    imatrix_from: str | None,
    index: str | None,
    prune: int,
    prune_rule: str,
    as_json: bool,
) -> None:
    """Requantize a GGUF model into each of the given types (llama.cpp)."""
    from eval.quantize import check
    from eval.quantize import quantize as run_quantize

    wanted = [t.strip() for t in types.split(",") if t.strip()]
    if not wanted:
        raise UserError("no quantization types given: pass --types Q8_0,Q4_K_M,...")
    source, out = Path(src).expanduser(), Path(out_dir).expanduser()
    info, _, _ = check(source, wanted, out, imatrix_from is not None, prune)  # before work

    def show(message: str) -> None:
        if not as_json:
            click.echo(message, err=True)

    imatrix = _imatrix(imatrix_from, source, index, out, show) if imatrix_from else None
    layers: int | tuple[int, ...] = prune
    if prune and prune_rule == "measured":
        from eval.prune_order import measured_layers

        layers = measured_layers(info.path, info.layers, prune, open_default(index), out, show)
    result = run_quantize(source, wanted, out, show, imatrix, layers)
    if as_json:
        print_json(result)
        return
    if result["ceiling_note"]:
        click.echo(result["ceiling_note"])
    for row in result["outputs"]:
        click.echo(
            f"{row['type']:8} {row['bits_per_weight']:6.3f} bpw {row['bytes']:>12} B  {row['path']}"
        )


def _imatrix(given: str, src: Path, index: str | None, out: Path, show) -> "Imatrix":
    """The importance matrix --imatrix names: a .dat file, or computed from the notes."""
    from eval.calibration import notes_imatrix
    from eval.imatrix import read

    path = Path(given).expanduser()
    if given == "notes":
        path = notes_imatrix(src, open_default(index), out, show)
        show(f"importance matrix saved: {path}")
    elif not path.is_file():
        raise UserError(f"imatrix file {path} not found: give a llama.cpp .dat file or 'notes'")
    return read(path)


@click.command()
@click.option("--model", help=MODEL_HELP)
@click.option("--runs", default=3, show_default=True, type=click.IntRange(1, 20))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def bench(model: str | None, runs: int, as_json: bool) -> None:
    """Tokens/s through bitrag's stack vs raw llama-cpp-python, measured side by side."""
    from eval.bench.llm import bench as run_bench

    result = run_bench(model, runs)
    if as_json:
        print_json(result)
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


@click.command("serve-llm")
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
    check_port(host, port)
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
