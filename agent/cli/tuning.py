"""`bitrag tune`: a LoRA adapter for the student, distilled from a teacher on your notes (the
training lives in eval/tune.py). Progress goes to stderr, the summary to stdout."""

from pathlib import Path

import click

from agent.cli.common import INDEX_HELP, index_dir, print_json
from retrieval.paths import SAMPLE_CORPUS

STUDENT_HELP = "Model to tune: a GGUF file or a registered name (default: the embedded model)."
TEACHER_HELP = (
    "Model that writes the training answers (default: the strongest installed pack, "
    "qwen2.5-coder-1.5b then -0.5b, else the student itself for a smoke run)."
)

MINUTES_HELP = (
    "End the run within M minutes: the teacher writes new pairs in the first half, training "
    "stops before a step that would end late (a later run resumes)."
)


@click.command()
@click.option("--student", help=STUDENT_HELP)
@click.option("--teacher", help=TEACHER_HELP)
@click.option("--rank", default=8, show_default=True, type=int, help="LoRA rank.")
@click.option("--alpha", default=16.0, show_default=True, type=float, help="LoRA alpha.")
@click.option("--steps", default=50, show_default=True, type=int, help="Training steps.")
@click.option("--lr", default=1e-3, show_default=True, type=float, help="Learning rate.")
@click.option("--limit", type=int, help="Use at most N chunks of the notes (default: all).")
@click.option("--minutes", type=float, help=MINUTES_HELP)
@click.option("--index", help=INDEX_HELP)
@click.option("--out", "out_dir", default="bitrag-tune", show_default=True, help="Output folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def tune(
    student: str | None,
    teacher: str | None,
    rank: int,
    alpha: float,
    steps: int,
    lr: float,
    limit: int | None,
    minutes: float | None,
    index: str | None,
    out_dir: str,
    as_json: bool,
) -> None:
    """Train a LoRA adapter for the student on teacher-written pairs from your notes."""
    from eval.tune import TuneOptions
    from eval.tune import tune as run_tune

    out = Path(out_dir).expanduser()
    corpus = None if index else SAMPLE_CORPUS  # the default index, as `ask` builds it
    options = TuneOptions(
        index_dir(index), out, student, teacher, rank, alpha, steps, lr, limit, corpus, minutes
    )
    summary = run_tune(options, lambda line: click.echo(line, err=True))
    if as_json:
        print_json(summary)
        return
    _show(summary)


def _show(s: dict) -> None:
    first, last = s["loss_first"], s["loss_last"]
    speed = f"{s['tokens_per_s']:.0f} tokens/s" if s["tokens_per_s"] else "no step run now"
    click.echo(
        f"rank {s['rank']}, alpha {s['alpha']:g}, targets {','.join(s['targets'])}; "
        f"{s['steps']} steps ({s['resumed_from']} resumed), {speed}, {s['distillation']}"
    )
    if first is not None:
        click.echo(f"loss {first:.4f} -> {last:.4f}")
    click.echo(f"adapter: {s['adapter']} ({s['adapter_bytes']} bytes), {s['seconds']:.1f} s")
