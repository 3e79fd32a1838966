"""llama.cpp thread counts on an idle and on a busy machine, measured side by side.

    python -m eval.bench.threads [--model GGUF] [--runs 2] [--busy 2]

For each thread count (1 .. cores) and each machine state (idle, and with `--busy`
CPU-bound processes spinning beside it), one model instance per thread count
processes the same prompt and generates the same greedy 64 tokens; prompt and
generation tokens/s are the medians of `--runs` repetitions. The busy processes
are started for the loaded rows and killed right after.
"""

import argparse
import json
import multiprocessing
import os
import statistics
import time

from agent.runtime.model_file import checked_model

PROMPT = "Summarize why block-wise quantization keeps outliers from hurting accuracy. " * 12
GEN_TOKENS = 64


def _spin() -> None:
    while True:
        pass


def _measure(llama, runs: int) -> dict:
    tokens = llama.tokenize(PROMPT.encode())
    prompt, gen = [], []
    for _ in range(runs):
        llama.reset()
        start = time.perf_counter()
        llama.eval(tokens)
        prompt.append(len(tokens) / (time.perf_counter() - start))
        start = time.perf_counter()
        for n, _token in enumerate(llama.generate(tokens, temp=0.0), 1):  # prefix reused
            if n == GEN_TOKENS:
                break
        gen.append(GEN_TOKENS / (time.perf_counter() - start))
    return {
        "prompt_tokens_per_s": round(statistics.median(prompt), 1),
        "gen_tokens_per_s": round(statistics.median(gen), 1),
    }


def bench(model: str | None, runs: int, busy: int) -> list[dict]:
    from llama_cpp import Llama

    path = checked_model(model).path
    rows = []
    for state in ("idle", "busy"):
        spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(busy)]
        if state == "busy":
            for p in spinners:
                p.start()
            time.sleep(1)
        try:
            for threads in range(1, (os.cpu_count() or 1) + 1):
                llama = Llama(
                    model_path=str(path),
                    n_ctx=1024,
                    n_threads=threads,
                    n_threads_batch=threads,
                    seed=0,
                    verbose=False,
                )
                rows.append({"state": state, "threads": threads, **_measure(llama, runs)})
                del llama
        finally:
            for p in spinners:
                if p.is_alive():
                    p.kill()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--busy", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    rows = bench(args.model, args.runs, args.busy)
    print("| machine | threads | prompt tok/s | gen tok/s |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['state']} | {r['threads']} | {r['prompt_tokens_per_s']} | "
            f"{r['gen_tokens_per_s']} |"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
