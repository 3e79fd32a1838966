"""Would answering several questions per forward pass speed up `bitrag eval`? Measured.

    python -m eval.bench.batching [--model GGUF|NAME] [--seqs 1,2,4,8] [--prompt 256] [--gen 48]
                                  [--reps 3]

On a CPU, decoding one token reads every weight once, so it is bound by memory bandwidth;
decoding n sequences in one llama_decode (one token each, a llama_batch with n sequence ids)
reads the weights once for all n. This prints, per n, the aggregate greedy generation
tokens/s and prompt tokens/s of n sequences decoded together, against one sequence at a
time in the same run (medians of --reps runs; the ratio is the speed-up the eval's answer
step could get), and whether every batched sequence produced the same greedy tokens as it
did alone. Each prompt is the opening of a different sample note; the thread count is
bitrag's.
"""

import argparse
import json
import time
from contextlib import ExitStack
from dataclasses import dataclass

import llama_cpp
import numpy as np
from llama_cpp._utils import suppress_stdout_stderr

from agent.runtime.model_file import checked_model
from retrieval.paths import SAMPLE_CORPUS
from retrieval.threads import threads


@dataclass
class Run:
    prompt_s: float
    gen_s: float
    tokens: list[list[int]]  # the greedy tokens of each sequence


def _fill(batch, items: list[tuple[int, int, int, bool]]) -> None:
    """items: (token, position, sequence id, wants logits)."""
    for i, (token, pos, seq, logits) in enumerate(items):
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
        batch.seq_id[i][0], batch.logits[i] = seq, logits
    batch.n_tokens = len(items)


def _argmax(ctx, i: int, n_vocab: int) -> int:
    row = llama_cpp.llama_get_logits_ith(ctx, i)
    return int(np.argmax(np.ctypeslib.as_array(row, shape=(n_vocab,))))


def _decode(ctx, batch, items) -> None:
    _fill(batch, items)
    if llama_cpp.llama_decode(ctx, batch) != 0:
        raise RuntimeError("llama_decode failed")


def generate(ctx, batch, n_vocab: int, prompts: list[list[int]], gen: int) -> Run:
    """Greedy `gen` tokens for every prompt, all sequences in each decode."""
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    start = time.perf_counter()
    items = [(t, p, s, p == len(pr) - 1) for s, pr in enumerate(prompts) for p, t in enumerate(pr)]
    _decode(ctx, batch, items)
    last = np.cumsum([len(p) for p in prompts]) - 1
    out = [[_argmax(ctx, int(i), n_vocab)] for i in last]
    prompt_s = time.perf_counter() - start
    start = time.perf_counter()
    for step in range(gen - 1):
        _decode(ctx, batch, [(o[-1], len(prompts[s]) + step, s, True) for s, o in enumerate(out)])
        for s, o in enumerate(out):
            o.append(_argmax(ctx, s, n_vocab))
    return Run(prompt_s, time.perf_counter() - start, out)


def steady(ctx, batch, n_vocab: int, prompts: list[list[int]], gen: int, reps: int) -> Run:
    """`generate` `reps` times: the median seconds, the first run's tokens (greedy: the same
    every time)."""
    runs = [generate(ctx, batch, n_vocab, prompts, gen) for _ in range(reps)]
    median = float(np.median([r.gen_s for r in runs])), float(np.median([r.prompt_s for r in runs]))
    return Run(median[1], median[0], runs[0].tokens)


def prompts_from_corpus(vocab, n: int, length: int) -> list[list[int]]:
    texts = [p.read_text(encoding="utf-8") for p in sorted(SAMPLE_CORPUS.glob("*.md"))]
    found = []
    for text in texts:
        raw = text.encode("utf-8")
        buf = (llama_cpp.llama_token * (len(raw) + 8))()
        got = llama_cpp.llama_tokenize(vocab, raw, len(raw), buf, len(buf), True, False)
        if got >= length:
            found.append(list(buf[:length]))
        if len(found) == n:
            return found
    raise RuntimeError(f"the sample corpus has fewer than {n} notes of {length} tokens")


def measure(model: str | None, seqs: list[int], prompt: int, gen: int, reps: int = 3) -> dict:
    path = checked_model(model).path
    most = max(seqs)
    with ExitStack() as stack:
        llama_cpp.llama_backend_init()
        mparams = llama_cpp.llama_model_default_params()
        lm = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
        stack.callback(llama_cpp.llama_model_free, lm)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = most * (prompt + gen)
        params.n_batch = params.n_ubatch = most * prompt
        params.n_seq_max, params.kv_unified = most, True
        params.n_threads = params.n_threads_batch = threads()
        ctx = llama_cpp.llama_init_from_model(lm, params)
        stack.callback(llama_cpp.llama_free, ctx)
        batch = llama_cpp.llama_batch_init(most * prompt, 0, 1)
        stack.callback(llama_cpp.llama_batch_free, batch)
        vocab = llama_cpp.llama_model_get_vocab(lm)
        n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        prompts = prompts_from_corpus(vocab, most, prompt)
        generate(ctx, batch, n_vocab, prompts[:1], 4)  # warm-up
        alone = [steady(ctx, batch, n_vocab, [p], gen, reps) for p in prompts]
        rows = []
        for n in seqs:
            together = steady(ctx, batch, n_vocab, prompts[:n], gen, reps)
            one = alone[:n]
            rows.append(
                {
                    "sequences": n,
                    "gen_tokens_per_s": round(n * (gen - 1) / together.gen_s, 1),
                    "gen_speedup": round(sum(r.gen_s for r in one) / together.gen_s, 2),
                    "prompt_tokens_per_s": round(n * prompt / together.prompt_s, 1),
                    "prompt_speedup": round(sum(r.prompt_s for r in one) / together.prompt_s, 2),
                    "same_tokens": sum(
                        a.tokens[0] == b for a, b in zip(one, together.tokens, strict=True)
                    ),
                }
            )
    single = alone[0]
    return {
        "model": path.name,
        "threads": params.n_threads,
        "prompt_tokens": prompt,
        "gen_tokens": gen,
        "reps": reps,
        "alone_gen_tokens_per_s": round((gen - 1) / single.gen_s, 1),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--seqs", default="1,2,4,8")
    parser.add_argument("--prompt", type=int, default=256)
    parser.add_argument("--gen", type=int, default=48)
    parser.add_argument("--reps", type=int, default=3, help="median of this many runs")
    args = parser.parse_args()
    seqs = [int(s) for s in args.seqs.split(",")]
    with suppress_stdout_stderr(disable=False):  # llama.cpp's load chatter
        result = measure(args.model, seqs, args.prompt, args.gen, args.reps)
    for row in result["rows"]:
        print(
            f"{row['sequences']} sequences: {row['gen_tokens_per_s']} generated tok/s "
            f"(x{row['gen_speedup']} over one at a time), prompt x{row['prompt_speedup']}, "
            f"same greedy tokens {row['same_tokens']}/{row['sequences']}"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
