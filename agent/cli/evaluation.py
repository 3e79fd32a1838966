"""`bitrag eval`: accuracy versus bit-width on your documents (the harness lives in eval/)."""

from pathlib import Path

import click

from agent.cli.common import print_json
from retrieval.errors import UserError

IMATRIX_HELP = (
    "Calibrated rungs too, comma-separated: notes (the index's notes, minus the divergence "
    "text), notes:en, notes:ko (that language's only), or llama.cpp .dat files. Admits "
    "Q2_K_S, IQ2_XXS..."
)
PRUNE_HELP = "Pruned rungs too, comma-separated: N layers or P% of the source's layers."
LORA_HELP = (
    "A LoRA adapter of the source (`bitrag tune`'s adapter.gguf, its adapter.json beside it): "
    "every rung answers again with it, as TYPE+lora."
)


def _items(text: str | None) -> list[str] | None:
    """A comma-separated option's entries, None when the option is not given."""
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


@click.command("eval")
@click.option(
    "--source", help="GGUF files or registered names, comma-separated (default: embedded)."
)
@click.option("--types", help="Comma-separated rungs (default: F16,Q8_0,Q6_K,...,Q2_K).")
@click.option("--dataset", help="Questions in the qa.jsonl schema (default: data/eval/qa.jsonl).")
@click.option("--index", help="Index the questions are about (default: the sample corpus).")
@click.option(
    "--split", type=click.Choice(["test", "dev", "all"]), default="test", show_default=True
)
@click.option("--limit", type=click.IntRange(1), help="Only the first N questions.")
@click.option("--out", "out_dir", default="bitrag-eval", show_default=True, help="Output folder.")
@click.option(
    "--kld-tokens",
    default=2048,
    show_default=True,
    type=click.IntRange(8, 1 << 20),
    help="Held-out tokens scored for divergence.",
)
@click.option("--imatrix", help=IMATRIX_HELP)
@click.option("--prune", help=PRUNE_HELP)
@click.option(
    "--prune-rule",
    type=click.Choice(["measured", "before-last"]),
    default="measured",
    show_default=True,
    help="Which layers --prune removes: those whose removal alone changes the model least on "
    "your notes, or the blocks just before the last.",
)
@click.option("--lora", help=LORA_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print results.json.")
def eval_cmd(
    source,
    types,
    dataset,
    index,
    split,
    limit,
    out_dir,
    kld_tokens,
    imatrix,
    prune,
    prune_rule,
    lora,
    as_json,
) -> None:
    """Accuracy versus bit-width on your documents: report.md, results.json, a plot."""
    from eval.ladder_run import Options, Progress, run_eval
    from eval.models_run import named_sources, run_models

    sources = named_sources(source)  # several are checked here, before any work
    several = sources if len(sources) > 1 else None
    if several and lora:
        raise UserError("--lora takes one --source: the model the adapter was trained on")
    opts = Options(
        source=sources[0][1],
        split=split,
        limit=limit,
        out=Path(out_dir).expanduser(),
        kld_tokens=kld_tokens,
        index=Path(index).expanduser() if index else None,
        imatrix=_items(imatrix),
        prune=_items(prune),
        prune_rule=prune_rule,
        lora=lora,
    )
    if types is not None:
        opts.types = [t.strip() for t in types.split(",") if t.strip()]
    if dataset:
        opts.dataset = Path(dataset).expanduser()
    results = run_models(opts, several, Progress()) if several else run_eval(opts, Progress())
    if as_json:
        print_json(results)
        return
    click.echo(results["recommendation"]["summary"])
    click.echo(f"wrote {opts.out / 'report.md'}, results.json, accuracy_vs_bits.png")
    if several:
        click.echo(f"each model's own: {', '.join(str(opts.out / n) for n, _ in several)}")
