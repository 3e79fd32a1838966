"""`bitrag bench`: generation speed through bitrag's stack against raw llama-cpp-python.

Both run in the same process and the same run, on the same GGUF with the same
threads, context size, seed and greedy settings, alternating per repetition so
machine load hits both alike. "Ours" streams through BitragChatModel (LangChain) over
the shared LocalLLM; "raw" streams from a plain `llama_cpp.Llama`. Prompt speed is
prompt tokens / time to first token; generation speed is the tokens after the first
/ the time after the first. Resident memory is read in two fresh subprocesses that
each load the model one way and generate once.
"""

import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from agent.runtime.chat_model import BitragChatModel
from agent.runtime.context import count_messages
from agent.runtime.llm import N_CTX, SEED, LocalLLM, sampling
from agent.runtime.model_file import checked_model

MAX_TOKENS = 96
TOPICS = [
    "floating point formats",
    "GGUF k-quants",
    "LoRA adapters",
    "BM25 ranking",
    "knowledge distillation",
    "FAISS HNSW indexes",
]


def _messages(run: int) -> list[dict[str, str]]:
    topic = TOPICS[run % len(TOPICS)]
    context = " ".join(f"Note {i} on {topic}: details, numbers and caveats." for i in range(12))
    return [
        {"role": "system", "content": f"Run {run}. You explain {topic} to a student."},
        {"role": "user", "content": f"{context}\n\nWrite a long explanation of {topic}."},
    ]


def _timed(pieces: Iterator[str], started: float) -> tuple[float, float, int]:
    first = end = 0.0
    count = 0
    for _ in pieces:
        count += 1
        end = time.perf_counter()
        if count == 1:
            first = end
    return first - started, end - first, count


def _raw_stream(llama, messages) -> Iterator[str]:
    for part in llama.create_chat_completion(
        messages=messages, stream=True, **sampling(MAX_TOKENS, None)
    ):
        if part["choices"][0]["delta"].get("content"):
            yield part["choices"][0]["delta"]["content"]


def _rss_mb(mode: str, path: Path) -> float:
    """Resident memory (VmRSS) of a fresh process after it loaded the model `mode`-wise and
    generated; the peak would hide the difference under the loader's transient peak."""
    code = (
        "import re, sys\n"
        f"path = {str(path)!r}\n"
        "if sys.argv[1] == 'raw':\n"
        "    from llama_cpp import Llama\n"
        f"    m = Llama(model_path=path, n_ctx={N_CTX}, seed={SEED}, verbose=False)\n"
        "    m.create_chat_completion([{'role': 'user', 'content': 'hi'}], max_tokens=8)\n"
        "else:\n"
        "    from pathlib import Path\n"
        "    from langchain_core.messages import HumanMessage\n"
        "    from agent.runtime.chat_model import BitragChatModel\n"
        "    from agent.runtime.llm import LocalLLM\n"
        "    m = BitragChatModel(llm=LocalLLM(Path(path)), max_tokens=8)\n"
        "    m.invoke([HumanMessage('hi')])\n"
        "status = open('/proc/self/status').read()\n"
        "print(re.search(r'VmRSS:\\s+(\\d+)', status).group(1))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, mode], capture_output=True, text=True, check=True, timeout=300
    )
    return int(out.stdout.split()[-1]) / 1024


def bench(model: str | None = None, runs: int = 3) -> dict:
    from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
    from llama_cpp import Llama

    path = checked_model(model).path
    ours = LocalLLM(path)
    threads = ours.threads
    chat = BitragChatModel(llm=ours, max_tokens=MAX_TOKENS)
    raw = Llama(model_path=str(path), n_ctx=N_CTX, n_threads=threads, seed=SEED, verbose=False)
    rows: dict[str, list[tuple[float, float, int, int]]] = {"ours": [], "raw": []}
    for run in range(runs):
        messages = _messages(run)
        lc: list[BaseMessage] = [
            SystemMessage(messages[0]["content"]),
            HumanMessage(messages[1]["content"]),
        ]
        prompt = count_messages(ours, messages)  # the same count for both sides
        for name in ("raw", "ours"):
            started = time.perf_counter()
            stream = (
                _raw_stream(raw, messages)
                if name == "raw"
                else (c.content for c in chat.stream(lc))
            )
            ttft, gen_time, count = _timed(stream, started)
            rows[name].append((ttft, gen_time, count, prompt))

    def speeds(name: str) -> tuple[float, float]:
        prompt = statistics.median(p / t for t, _, _, p in rows[name])
        gen = statistics.median((n - 1) / g for _, g, n, _ in rows[name] if n > 1 and g > 0)
        return round(prompt, 1), round(gen, 1)

    (p_ours, g_ours), (p_raw, g_raw) = speeds("ours"), speeds("raw")
    rss_ours, rss_raw = _rss_mb("ours", path), _rss_mb("raw", path)
    return {
        "model": str(path),
        "threads": threads,
        "n_ctx": N_CTX,
        "runs": runs,
        "max_tokens": MAX_TOKENS,
        "prompt_tokens_per_s": p_ours,
        "gen_tokens_per_s": g_ours,
        "raw_prompt_tokens_per_s": p_raw,
        "raw_gen_tokens_per_s": g_raw,
        "gen_ratio": round(g_ours / g_raw, 3),
        "prompt_ratio": round(p_ours / p_raw, 3),
        "rss_mb": round(rss_ours, 1),
        "raw_rss_mb": round(rss_raw, 1),
        "rss_overhead_mb": round(rss_ours - rss_raw, 1),
    }
