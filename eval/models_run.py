"""`bitrag eval --source A,B,...`: several models' ladders, compared in one report.

Every source is checked before anything runs (a duplicate or unknown one is one line). Each
model's ladder then runs exactly as a single-source eval does (eval/ladder_run.py), into
--out/<model>/ with its own cache, rungs, results.json, report.md and plot, so a killed run
resumes model by model. Last, eval/results.py `combine` puts every model x rung into one
results.json, report.md and accuracy_vs_bits.png in --out.
"""

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from eval.ladder_run import Options, run_eval
from retrieval.errors import UserError


def named_sources(text: str | None) -> list[tuple[str, str | None]]:
    """(name, source) per model of --source, comma-separated. One (or no) source comes back
    unchecked as [("", text)], so that it runs exactly as it always has. Several are checked
    as a model is before loading, each named by its registered name or its file's stem (the
    name of its output folder): a name given twice, or one that is neither registered nor a
    file, is refused before anything runs. The embedded model's name (as `bitrag models
    list` shows it) stands for its file."""
    from agent.runtime.model_file import checked_model, resolve_model

    given = [s.strip() for s in (text or "").split(",") if s.strip()]
    if len(given) <= 1:
        return [("", _embedded_path(given[0]) if given else text)]
    named: list[tuple[str, str | None]] = []
    for entry in given:
        source = _embedded_path(entry)
        path = resolve_model(source)
        registered = source != entry or path != Path(source).expanduser()
        if not registered and not path.exists():
            raise UserError(
                f"--source {entry} is neither a registered model name (see `bitrag models "
                "list`) nor an existing file"
            )
        name = entry if registered else path.stem
        if any(name.casefold() == seen.casefold() for seen, _ in named):
            raise UserError(f"--source names {name} twice: give each model once")
        checked_model(source)
        named.append((name, source))
    return named


def _embedded_path(source: str) -> str:
    from agent.runtime.model_file import embedded_model_path
    from agent.runtime.models import EMBEDDED_NAME

    return str(embedded_model_path()) if source == EMBEDDED_NAME else source


def run_models(
    opts: Options,
    sources: list[tuple[str, str | None]],
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run (or resume) each model's ladder into opts.out/<name>/, then write the combined
    results.json, report.md and accuracy_vs_bits.png into opts.out; returns the combined
    results."""
    from eval import results as results_file
    from eval.rung_plan import check

    for _, source in sources:  # every model's rungs (its layer count for --prune) first
        check(replace(opts, source=source))
    started = time.time()
    each = []
    for i, (name, source) in enumerate(sources, 1):
        say = _prefixed(progress, f"[model {i}/{len(sources)}] {name}: ")
        out = opts.out / name
        each.append(
            (name, {"out": str(out)} | run_eval(replace(opts, source=source, out=out), say))
        )
    combined = results_file.combine(each, time.time() - started)
    results_file.write_outputs(combined, opts.out)
    if progress and hasattr(progress, "done"):
        progress.done()
    return combined


def _prefixed(progress: Callable[[str], None] | None, prefix: str) -> Callable[[str], None]:
    """The progress line with the model named in front (nothing when there is no line)."""
    return lambda message: progress(prefix + message) if progress else None
