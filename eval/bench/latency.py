"""Answer latency as a user feels it: a cold one-shot `bitrag ask` and a warm chat turn.

    python -m eval.bench.latency [--split test|dev] [--limit N] [--model NAME|GGUF] [--out DIR]

Cold: each question runs as a fresh `bitrag ask` process (imports, index, models and
all), timed from start to the first evidence line on its stdout and to exit. Warm: one
agent in this process, as `bitrag chat` holds it, answers the same questions after one
warm-up question; per answer, the seconds until its evidence is shown and the graph's
total, and the tokens llama.cpp evaluated for it (prompt tokens left after the prompt
cache, over every job of the turn, and generated tokens). Both use the default index
under BITRAG_HOME (built if missing) and the embedded model unless --model names another.
The load average is printed beside the numbers: on a 2-core machine a second busy program
doubles every figure.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from eval.dataset import load_questions

CALL_TIMEOUT_S = 300


def questions(split: str, limit: int) -> list[str]:
    """Answerable, stand-alone questions of the split, English and Korean alternating."""
    chosen = [q for q in load_questions() if q.split == split and q.answerable and not q.follows]
    english = [q.question for q in chosen if q.lang == "en"]
    korean = [q.question for q in chosen if q.lang == "ko"]
    mixed = [q for pair in zip(english, korean, strict=False) for q in pair]
    return mixed[:limit]


def bitrag_command() -> list[str]:
    script = Path(sys.executable).parent / "bitrag"
    return [str(script)] if script.exists() else [sys.executable, "-m", "agent"]


def cold(texts: list[str], model: str | None) -> dict[str, list[float]]:
    """Per question, seconds from starting one `bitrag ask` process to its first evidence
    line ("[1] ...") and to its exit."""
    times: dict[str, list[float]] = {"evidence_s": [], "total_s": []}
    chosen = ["--model", model] if model else []
    env = os.environ | {"PYTHONUNBUFFERED": "1"}  # lines leave as a terminal would see them
    for text in texts:
        begin = time.perf_counter()
        shown = None
        with subprocess.Popen(
            [*bitrag_command(), "ask", text, *chosen],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        ) as ask:
            for line in ask.stdout:
                if shown is None and line.startswith("[1] "):
                    shown = time.perf_counter() - begin
            if ask.wait(timeout=CALL_TIMEOUT_S):
                raise SystemExit(f"bitrag ask failed on {text!r}")
        total = time.perf_counter() - begin
        times["evidence_s"].append(total if shown is None else shown)
        times["total_s"].append(total)
    return times


def warm(texts: list[str], warm_up: str, model: str | None) -> dict[str, list[float]]:
    """Per answer in one long-lived agent, after one warm-up answer to another question (so
    that no measured prompt is already cached whole): seconds to its evidence and in all,
    and the prompt and generated tokens llama.cpp evaluated."""
    from agent.assemble import make_agent
    from retrieval.paths import SAMPLE_CORPUS, default_index_dir
    from retrieval.store import open_index

    agent = make_agent(open_index(default_index_dir(), SAMPLE_CORPUS), model)
    agent.ask(warm_up, "bench-warm-up")
    llm = agent.context.llm
    counted = getattr(llm, "evaluated", lambda: (0, 0))
    keys = ("evidence_s", "total_s", "prompt_tokens", "gen_tokens")
    times: dict[str, list[float]] = {k: [] for k in keys}
    for i, text in enumerate(texts):
        shown: list[float] = []
        before, begin = counted(), time.perf_counter()

        def on_evidence(_: list[dict], shown=shown, begin=begin) -> None:
            shown.append(time.perf_counter() - begin)

        total = agent.ask(text, f"bench-{i}", on_evidence=on_evidence)["timings"]["total_s"]
        after = counted()
        times["evidence_s"].append(shown[0] if shown else total)
        times["total_s"].append(total)
        times["prompt_tokens"].append(after[0] - before[0])
        times["gen_tokens"].append(after[1] - before[1])
    return times


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {
        "n": len(values),
        "p50": round(statistics.median(ordered), 2),
        "max": round(ordered[-1], 2),
        "mean": round(statistics.fmean(ordered), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test", choices=["test", "dev"])
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--model", help="registered name or GGUF (default: the embedded model)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not args.model:  # `ask` alone would take the default pack when it is installed
        from agent.runtime.model_file import embedded_model_path

        args.model = str(embedded_model_path())
    *texts, warm_up = questions(args.split, args.limit + 1)
    cold([texts[0]], args.model)  # the first run builds the default index when there is none
    load_before = os.getloadavg()[0]
    result = {
        "model": args.model,
        "cold_ask": {k: summary(v) for k, v in cold(texts, args.model).items()},
        "warm_chat": {k: summary(v) for k, v in warm(texts, warm_up, args.model).items()},
    }
    result["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    result["cpus"] = os.cpu_count()
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "latency.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
