"""`bitrag eval`: accuracy versus bit-width on the user's own documents, start to finish.

    1. check the rungs (eval/rung_plan.py: types, imatrix-only ones refused without
       --imatrix, calibrations, prune settings), the source model, the dataset, a --lora
       adapter (its file, and its student: the source), the index,
       and warn of each source a question names that the index does not hold (report.md
       lists them too);
    2. sample held-out tokens from the indexed chunk text (seeded); compute each --imatrix
       calibration's matrix on the other chunks (eval/calibrated.py), then requantize the
       source into every rung (cached under --out/models);
    3. measure each rung in its own process: load time, tokens/s, peak RSS, divergence from
       the top rung (the unpruned rung with the most bits per weight, which writes the
       reference log-probs), per-token KLD kept for the calibrated rungs' paired differences;
    4. answer the questions through the agent graph: the evidence-only row first (it fills
       the recorded retrieval), then every rung over the same hits, each followed by its
       twin with the --lora adapter applied (eval/lora_eval.py; the adapter is checked in 1);
    5. paired bootstrap intervals, recommendation, results.json, report.md, the plot.

Everything is cached under --out/cache by what it depends on (eval/eval_cache.py), so an
interrupted run resumes and a repeated one reuses its work. Numbers are deterministic
(temperature 0, seed 0, fixed samples); timings, memory and seconds sit under `measured`.
"""

import hashlib
import os
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eval import eval_cache, question_set
from eval.dataset import QA_PATH

EVAL_LADDER: tuple[str, ...] = ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")
BENCH_PROMPT_TOKENS = 128
BENCH_GEN_TOKENS = 32
BENCH_REPS = 3
MODES = ["generated", "quoted", "abstained"]


@dataclass
class Options:
    source: str | None = None
    types: list[str] = field(default_factory=lambda: list(EVAL_LADDER))
    dataset: Path = QA_PATH
    index: Path | None = None
    split: str = "test"
    limit: int | None = None
    out: Path = Path("bitrag-eval")
    kld_tokens: int = 2048
    imatrix: list[str] | None = None  # calibrations (eval/rung_plan.py), None: none
    prune: list[str] | None = None  # prune settings: N layers or P%
    prune_rule: str = "measured"  # which layers go first (eval/prune_order.py)
    lora: str | None = None  # a LoRA adapter GGUF of the source: every rung again with it


class Progress:
    """One overwritten status line on stderr, only when stderr is a terminal."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def __call__(self, message: str) -> None:
        if self.enabled:
            sys.stderr.write(f"\r\033[K{message}")
            sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


@contextmanager
def pinned_threads(n: int):
    """The same thread count for every rung and the agent, for the whole run."""
    old = os.environ.get("BITRAG_THREADS")
    os.environ["BITRAG_THREADS"] = str(n)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("BITRAG_THREADS", None)
        else:
            os.environ["BITRAG_THREADS"] = old


def sample_index_name() -> str:
    """The folder under BITRAG_HOME of the eval's own sample-corpus index, one per index
    format and corpus location: ingest keeps the documents outside the paths it is given,
    so a bitrag installed elsewhere (another venv, an upgrade) must not add its copy of the
    corpus to an index that already holds this one's."""
    from retrieval.paths import SAMPLE_CORPUS
    from retrieval.store import FORMAT_VERSION

    where = hashlib.sha256(str(SAMPLE_CORPUS.resolve()).encode()).hexdigest()[:8]
    return f"eval-sample-index-v{FORMAT_VERSION}-{where}"


def _open_index(index: Path | None):
    from retrieval.paths import SAMPLE_CORPUS, bitrag_home
    from retrieval.store import open_index

    if index is None:  # the sample corpus, brought up to date (unchanged files are skipped)
        from retrieval.store import Index, ingest

        directory = bitrag_home() / sample_index_name()
        ingest([SAMPLE_CORPUS], directory)
        return Index.load(directory)
    return open_index(index)


def _source(source: str | None, memo: Path) -> dict:
    from agent.runtime.model_file import checked_model
    from eval.quantize import _describe_source

    info = checked_model(source)
    described = _describe_source(info)
    quantized = bool(described["ceiling_note"])
    return described | {
        "name": info.path.name,
        "quantized": quantized,
        "sha256": eval_cache.sha256_file(info.path, memo),
        "layers": info.layers,
        "parameters": info.parameters,
    }


def _windows(index, source: Path, tokens: int, cache: Path, source_sha: str, manifest: str):
    """The divergence windows (tokenized by the source: every rung shares its vocabulary) and
    the ids of the chunks they hold, the held-out text calibration must not see."""
    from llama_cpp import Llama
    from llama_cpp._utils import suppress_stdout_stderr

    from eval.divergence import SEED, WINDOW, sample_windows_used

    window = min(WINDOW, max(16, 2 * tokens))
    name = eval_cache.key(
        what="windows", source=source_sha, index=manifest, tokens=tokens, window=window, seed=SEED
    )
    path, held = cache / f"windows-{name}.npy", cache / f"windows-{name}.chunks.json"
    if not path.is_file() or eval_cache.read_json(held) is None:
        with suppress_stdout_stderr(disable=False):  # llama.cpp's context chatter
            vocab = Llama(model_path=str(source), vocab_only=True, verbose=False)
        texts = [c.text for c in index.chunks]
        windows, used = sample_windows_used(
            texts, lambda t: vocab.tokenize(t.encode("utf-8"), add_bos=False), tokens, window
        )
        eval_cache.write_json(held, {"chunks": [index.chunks[i].chunk_id for i in used]})
        tmp = cache / f".windows-{name}.{os.getpid()}.npy"
        np.save(tmp, windows)
        os.replace(tmp, path)
    return name, path, np.load(path), eval_cache.read_json(held)["chunks"]


def measure_rungs(
    rungs: list[dict],
    cache: Path,
    windows_key: str,
    windows_path: Path,
    windows: np.ndarray,
    threads: int,
    progress: Callable[[str], None],
) -> dict[str, Path]:
    """Speed, memory and divergence for every rung (top first: it writes the reference);
    returns label -> the rung's per-token KLD (.npy)."""
    from agent.runtime.llm import N_CTX
    from eval.rungs import measure

    top = rungs[0]
    ref_path = (
        cache / f"ref-{eval_cache.key(what='ref', model=top['sha256'], windows=windows_key)}.npy"
    )
    bench = {"prompt": BENCH_PROMPT_TOKENS, "gen": BENCH_GEN_TOKENS, "reps": BENCH_REPS}

    def result_file(rung: dict) -> Path:
        name = eval_cache.key(what="rung", model=rung["sha256"], ref=ref_path.name, bench=bench)
        return cache / f"rung-{name}.json"

    def measured(rung: dict) -> bool:
        out = result_file(rung)
        return out.is_file() and out.with_suffix(".kld.npy").is_file()

    kld: dict[str, Path] = {}
    for i, rung in enumerate(rungs):
        out = result_file(rung)
        result = eval_cache.read_json(out) if measured(rung) else None
        missing = any(not measured(r) for r in rungs[1:])
        needs_ref = rung is top and not ref_path.is_file() and missing
        if result is None or needs_ref:
            progress(f"[{i + 1}/{len(rungs)}] measuring {rung['type']} (speed, memory, divergence)")
            spec = {
                "model": rung["path"],
                "threads": threads,
                "n_ctx": N_CTX,
                "bench_prompt": windows.reshape(-1)[:BENCH_PROMPT_TOKENS].tolist(),
                "gen_tokens": BENCH_GEN_TOKENS,
                "reps": BENCH_REPS,
                "windows": str(windows_path),
                "reference": str(ref_path),
                "write_reference": rung is top,
                "out": str(out),
                "kld_out": str(out.with_suffix(".kld.npy")),
            }
            result = measure(spec, cache / f".spec-{out.stem}.json")
        rung["divergence"] = result["divergence"]
        rung["measured"] = result["speed"] | {"threads": threads}
        kld[rung["type"]] = out.with_suffix(".kld.npy")
    ref_path.unlink(missing_ok=True)  # every rung is measured now; results are cached
    return kld


def answer_rows(
    rungs,
    questions,
    index,
    settings: dict,
    cache: Path,
    progress: Callable[[str], None],
    lora: dict | None = None,
) -> dict[str, list[dict]]:
    """Records per row: evidence-only first (it fills the recorded retrieval), then rungs,
    each followed by its twin with the LoRA adapter (`lora`) where it has one (eval/lora_eval.py).
    `settings`: `languages`, `reader` and the cache `keys` of the questions and index."""
    from eval.answers_per_rung import evidence_agent, run_row, rung_row
    from eval.lora_eval import adapted, lora_label

    def counter(label: str):
        return lambda done, total: progress(f"answers {label}: {done}/{total}")

    rows: dict[str, list[dict]] = {}
    name = eval_cache.key(what="answers", row="evidence", **settings["keys"])
    rows["evidence"] = run_row(
        lambda: evidence_agent(index),
        questions,
        cache / f"answers-{name}.jsonl",
        counter("evidence"),
    )
    for rung in rungs:
        label = rung["type"]
        rows[label] = rung_row(rung, None, index, questions, settings, cache, counter(label))
        if lora and adapted(rung):
            label = lora_label(rung["type"])
            rows[label] = rung_row(rung, lora, index, questions, settings, cache, counter(label))
    return rows


def warn_missing_sources(questions, index) -> list[dict]:
    """One stderr line per source a question names that the index does not hold: without it
    the question's retrieval and citations quietly count as misses."""
    missing = question_set.missing_sources(questions, {c.source for c in index.chunks})
    for m in missing:
        print(
            f"Warning: question {m['id']}: source {m['source']} is not in the index "
            f"{index.generation.parent}; finding or citing it counts as a miss",
            file=sys.stderr,
            flush=True,
        )
    return missing


def run_eval(opts: Options, progress: Callable[[str], None] | None = None) -> dict:
    """Run (or resume) the whole eval and write results.json, report.md, accuracy_vs_bits.png."""
    from agent.assemble import model_languages, reader_on
    from eval import answers_per_rung as apr
    from eval import calibrated, lora_eval, prune_order, rung_plan
    from eval import results as results_file
    from eval.divergence import n_scored
    from eval.quantize import check_out_dir
    from retrieval.threads import threads

    say = progress or (lambda message: None)
    started = time.time()
    planned = rung_plan.check(opts)
    questions = question_set.select(
        question_set.load(opts.dataset), opts.split, opts.limit, opts.dataset
    )
    lora = lora_eval.check(opts.lora, opts.source) if opts.lora else None
    out = opts.out
    check_out_dir(out)
    cache, models = out / "cache", out / "models"
    cache.mkdir(exist_ok=True)
    models.mkdir(exist_ok=True)
    memo = cache / "sha256.json"
    source = _source(opts.source, memo)
    languages = model_languages(opts.source, None)
    index = apr.RecordedIndex(_open_index(opts.index))
    missing = warn_missing_sources(questions, index)
    manifest = eval_cache.sha256_file(index.generation / "manifest.json")
    n_threads = threads()
    with pinned_threads(n_threads):
        windows_key, windows_path, windows, held_out = _windows(
            index, Path(source["path"]), opts.kld_tokens, cache, source["sha256"], manifest
        )
        given = list(dict.fromkeys(p.calibration for p in planned if p.calibration))
        matrices = calibrated.matrices(given, source, index, held_out, models, memo, say)
        pruning = None
        if any(p.prune for p in planned):
            pruning = prune_order.order(
                opts.prune_rule,
                source,
                source["layers"],
                index,
                held_out,
                opts.kld_tokens,
                models,
                n_threads,
                say,
            )
        order = pruning["order"] if pruning else []
        rungs = rung_plan.build(planned, source, models, memo, matrices, say, order)
        kld = measure_rungs(rungs, cache, windows_key, windows_path, windows, n_threads, say)
        calibrated.pair(rungs, kld)
        keys = {
            "dataset": eval_cache.sha256_file(opts.dataset),
            "split": opts.split,
            "ids": [q.id for q in questions],
            "index": manifest,
        }
        reader = reader_on(source["parameters"])
        answering = {"languages": languages, "reader": reader, "keys": keys}
        rows = answer_rows(rungs, questions, index, answering, cache, say, lora)
    say("scoring")
    results = results_file.assemble(
        opts=opts,
        source=source,
        rungs=rungs,
        questions=questions,
        rows=rows,
        retrieval=apr.retrieval_metrics(index, questions),
        index={
            "path": str(index.generation.parent),
            "generation": index.generation.name,
            "manifest_sha256": manifest,
            "chunks": len(index.chunks),
        },
        settings={
            "seed": 0,
            "temperature": 0.0,
            "threads": n_threads,
            "kld_tokens": n_scored(windows),
            "kld_tokens_asked": opts.kld_tokens,
            "window": int(windows.shape[1]),
            "bench_prompt_tokens": BENCH_PROMPT_TOKENS,
            "bench_gen_tokens": BENCH_GEN_TOKENS,
            "bench_reps": BENCH_REPS,
            "llama_cpp": __import__("llama_cpp").__version__,
            "languages": sorted(languages) if languages is not None else None,
            "reader": reader,
            "divergence_chunks": held_out,
        },
        seconds=time.time() - started,
        lora=lora,
    )
    results["missing_sources"] = missing
    results["calibrations"] = calibrated.summary(matrices)
    results["prune_order"] = pruning
    results_file.write_outputs(results, out)
    if progress and hasattr(progress, "done"):
        progress.done()
    return results
