"""One rung measured in its own process, so its peak resident memory is its own.

    python -m eval.rung_worker SPEC.json

SPEC (written by eval/ladder_run.py): model, threads, n_ctx, bench_prompt (token ids),
gen_tokens, reps, windows (an .npy of token windows), reference (the top rung's .npy of
log-probs), write_reference (true for the top rung), out (where the result JSON goes) and,
optionally, kld_out (where the per-token KLD goes, a float64 .npy, before the JSON).

Order: load the model as the agent does (timed), measure prompt and generation speed
(greedy, median of `reps`), read the peak RSS, free the model; then load it again with
logits for every position and stream the divergence windows. The top rung first writes the
reference, then compares a second, fresh evaluation against it (its self-KLD, which must
be 0). The result is written atomically as JSON.
"""

import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from eval.divergence import Comparison, ReferenceWriter, log_softmax, scored_rows


def _llama(spec: dict, **kwargs):
    from llama_cpp import Llama

    return Llama(
        model_path=spec["model"],
        n_threads=spec["threads"],
        n_threads_batch=spec["threads"],
        seed=0,
        verbose=False,
        **kwargs,
    )


def speed(spec: dict) -> dict:
    """Load time, prompt and generation tokens/s (greedy), peak RSS after generating."""
    started = time.perf_counter()
    llm = _llama(spec, n_ctx=spec["n_ctx"])
    load_s = time.perf_counter() - started
    prompt = list(spec["bench_prompt"])
    prompt_tps, gen_tps = [], []
    for _ in range(spec["reps"]):
        llm.reset()
        begin = time.perf_counter()
        first = last = begin
        count = 0
        for _token in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
            count += 1
            last = time.perf_counter()
            if count == 1:
                first = last
            if count >= spec["gen_tokens"]:
                break
        prompt_tps.append(len(prompt) / (first - begin))
        if count > 1:
            gen_tps.append((count - 1) / (last - first))
    peak_kb = _peak_rss_kb()
    llm.close()
    return {
        "load_s": round(load_s, 3),
        "prompt_tokens_per_s": round(statistics.median(prompt_tps), 1),
        "gen_tokens_per_s": round(statistics.median(gen_tps), 1) if gen_tps else None,
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "bench_prompt_tokens": len(prompt),
        "bench_gen_tokens": spec["gen_tokens"],
        "reps": spec["reps"],
    }


def _peak_rss_kb() -> int:
    """VmHWM: this process's own peak (ru_maxrss would carry the parent's across fork)."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1))


def _window_logprobs(llm, tokens: np.ndarray) -> np.ndarray:
    llm.reset()
    llm.eval(tokens.tolist())
    return log_softmax(llm.scores[scored_rows(len(tokens))])


def divergence(spec: dict) -> dict:
    windows = np.load(spec["windows"])
    llm = _llama(spec, n_ctx=windows.shape[1], n_batch=windows.shape[1], logits_all=True)
    reference = Path(spec["reference"])
    started = time.perf_counter()
    if spec["write_reference"]:
        tmp = reference.with_name(reference.name + f".{os.getpid()}.tmp.npy")
        writer = ReferenceWriter(tmp, windows, llm.n_vocab())
        for w in range(len(windows)):
            writer.add(w, _window_logprobs(llm, windows[w]))
        writer.close()
        os.replace(tmp, reference)
    compare = Comparison.open(reference, windows)
    for w in range(len(windows)):
        compare.add(w, _window_logprobs(llm, windows[w]))
    seconds = time.perf_counter() - started
    llm.close()
    if spec.get("kld_out"):  # per-token KLD, for paired differences between rungs
        kld_out = Path(spec["kld_out"])
        tmp = kld_out.with_name(kld_out.name + f".{os.getpid()}.tmp.npy")
        np.save(tmp, compare.per_token_kld())
        os.replace(tmp, kld_out)
    return compare.summary() | {"_seconds": round(seconds, 2)}


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    result = {"speed": speed(spec)}
    result["divergence"] = divergence(spec)
    result["speed"]["divergence_s"] = result["divergence"].pop("_seconds")
    out = Path(spec["out"])
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
