"""Answer latency as a user feels it: a cold one-shot `bitrag ask` and a warm chat turn.

    python -m eval.bench.latency [--split test|dev] [--limit N] [--out DIR]

Cold: each question runs as a fresh `bitrag ask` process (imports, index, models and
all), timed from start to exit. Warm: one agent in this process, as `bitrag chat` holds
it, answers the same questions after one warm-up question; the per-answer time is the
graph's total. Both use the default index under BITRAG_HOME (built if missing) and the
embedded model. The load average is printed beside the numbers: on a 2-core machine a
second busy program doubles every figure.
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


def cold(texts: list[str]) -> list[float]:
    """Seconds from process start to exit for one `bitrag ask` per question."""
    times = []
    for text in texts:
        begin = time.perf_counter()
        subprocess.run(
            [*bitrag_command(), "ask", text],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=CALL_TIMEOUT_S,
            check=True,
        )
        times.append(time.perf_counter() - begin)
    return times


def warm(texts: list[str]) -> list[float]:
    """The graph's seconds per answer in one long-lived agent, after one warm-up answer."""
    from agent.assemble import make_agent
    from retrieval.paths import SAMPLE_CORPUS, default_index_dir
    from retrieval.store import open_index

    agent = make_agent(open_index(default_index_dir(), SAMPLE_CORPUS))
    agent.ask(texts[0], "bench-warm-up")
    return [agent.ask(text, f"bench-{i}")["timings"]["total_s"] for i, text in enumerate(texts)]


def summary(times: list[float]) -> dict:
    ordered = sorted(times)
    return {
        "n": len(times),
        "p50_s": round(statistics.median(ordered), 2),
        "max_s": round(ordered[-1], 2),
        "mean_s": round(statistics.fmean(ordered), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test", choices=["test", "dev"])
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    texts = questions(args.split, args.limit)
    cold([texts[0]])  # the first run builds the default index when there is none
    load_before = os.getloadavg()[0]
    result = {"cold_ask": summary(cold(texts)), "warm_chat": summary(warm(texts))}
    result["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    result["cpus"] = os.cpu_count()
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "latency.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
