"""Load benchmark of the retrieval MCP server over streamable HTTP, against in-process search.

    python -m eval.bench.mcp [--n 1000] [--concurrency 16] [--retriever hybrid] [--index DIR]

Starts `bitrag mcp serve retrieval --transport http` on 127.0.0.1 (a free port), sends N `search`
calls from `concurrency` concurrent MCP sessions (official `mcp` SDK client), and counts errors
and latencies. Then, in this process, runs the same searches directly on the index, once one at a
time and once from `concurrency` threads. Reported side by side: p50/p99 of each, and the ratios
HTTP p50 / in-process p50 (target <= 3 at equal concurrency). Bounded in count (N) and time
(--time-limit; calls not started by then are reported as not run).
"""

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

QA = Path(__file__).resolve().parent.parent / "data" / "eval" / "qa.jsonl"
START_TIMEOUT_S = 180


def queries(n: int) -> list[str]:
    """N questions from the sample QA set, cycled."""
    questions = [
        json.loads(line)["question"] for line in QA.read_text(encoding="utf-8").splitlines()
    ]
    return [questions[i % len(questions)] for i in range(n)]


def _percentile(ordered: list[float], q: float) -> float:
    """The q-quantile of sorted seconds, in milliseconds (nearest rank)."""
    if not ordered:
        return float("nan")
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)


def summary(latencies: list[float], errors: int, wall: float, planned: int) -> dict[str, Any]:
    ordered = sorted(latencies)
    return {
        "calls": len(latencies),
        "errors": errors,
        "not_run": planned - len(latencies),
        "p50_ms": round(statistics.median(ordered) * 1000, 3) if ordered else float("nan"),
        "p99_ms": _percentile(ordered, 0.99),
        "max_ms": _percentile(ordered, 1.0),
        "wall_s": round(wall, 3),
        "calls_per_s": round(len(latencies) / wall, 1) if wall else 0.0,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bitrag() -> list[str]:
    script = Path(sys.executable).parent / "bitrag"
    return [str(script)] if script.exists() else [sys.executable, "-m", "agent"]


def start_server(index: str | None, port: int, log) -> subprocess.Popen:
    args = [*_bitrag(), "mcp", "serve", "retrieval", "--transport", "http", "--port", str(port)]
    if index:
        args += ["--index", index]
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
    stop(process)
    log.seek(0)
    raise SystemExit(f"the MCP server did not start: {log.read()[-2000:]}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)


async def http_load(
    url: str, texts: list[str], k: int, retriever: str, concurrency: int, time_limit: float
) -> dict[str, Any]:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    latencies: list[float] = []
    errors: list[str] = []
    todo = iter(enumerate(texts))
    deadline = time.monotonic() + time_limit

    async def worker() -> None:
        async with streamable_http_client(url) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                for _, query in todo:
                    if time.monotonic() > deadline:
                        return
                    arguments = {"query": query, "k": k, "retriever": retriever}
                    start = time.perf_counter()
                    try:
                        result = await asyncio.wait_for(session.call_tool("search", arguments), 60)
                        if result.is_error or "results" not in result.structured_content:
                            errors.append(" ".join(c.text for c in result.content)[:200])
                    except Exception as exc:  # noqa: BLE001 - every failure is counted
                        errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    latencies.append(time.perf_counter() - start)

    # warm up (the first hybrid search loads the embedder), outside the measurement
    warm = list(texts[:2])
    async with streamable_http_client(url) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            for query in warm:
                await session.call_tool("search", {"query": query, "k": k, "retriever": retriever})
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result = summary(latencies, len(errors), time.perf_counter() - start, len(texts))
    result["error_samples"] = errors[:5]
    return result


def in_process(
    service, texts: list[str], k: int, retriever: str, concurrency: int, time_limit: float
) -> dict[str, Any]:
    deadline = time.monotonic() + time_limit
    errors = 0

    def one(query: str) -> float | None:
        nonlocal errors
        if time.monotonic() > deadline:
            return None
        start = time.perf_counter()
        try:
            service.search(query, k, retriever)["results"]
        except Exception:  # noqa: BLE001
            errors += 1
        return time.perf_counter() - start

    service.search(texts[0], k, retriever)  # warm up
    start = time.perf_counter()
    if concurrency == 1:
        times = [one(q) for q in texts]
    else:
        with ThreadPoolExecutor(concurrency) as pool:
            times = list(pool.map(one, texts))
    done = [t for t in times if t is not None]
    return summary(done, errors, time.perf_counter() - start, len(texts))


def bench(
    n: int, concurrency: int, retriever: str, k: int, index: str | None, time_limit: float
) -> dict[str, Any]:
    from mcp_servers.retrieval_service import RetrievalService
    from retrieval.paths import SAMPLE_CORPUS, default_index_dir

    texts = queries(n)
    directory = Path(index) if index else default_index_dir()
    service = RetrievalService(directory, None if index else SAMPLE_CORPUS)  # builds if absent
    service.wait()  # it loads in the background; the server started next must find it built
    port = _free_port()
    with tempfile.TemporaryFile("w+") as log:
        process = start_server(index, port, log)
        try:
            url = f"http://127.0.0.1:{port}/mcp"
            http = asyncio.run(http_load(url, texts, k, retriever, concurrency, time_limit))
        finally:
            stop(process)
    sequential = in_process(service, texts, k, retriever, 1, time_limit)
    concurrent = in_process(service, texts, k, retriever, concurrency, time_limit)
    return {
        "n": n,
        "concurrency": concurrency,
        "retriever": retriever,
        "k": k,
        "cpu_count": os.cpu_count(),
        "http": http,
        "in_process_sequential": sequential,
        "in_process_concurrent": concurrent,
        "ratio_p50_vs_sequential": round(http["p50_ms"] / sequential["p50_ms"], 2),
        "ratio_p50_same_concurrency": round(http["p50_ms"] / concurrent["p50_ms"], 2),
        "target_met": http["errors"] == 0
        and http["not_run"] == 0
        and http["p50_ms"] <= 3 * concurrent["p50_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--retriever", default="hybrid", choices=["hybrid", "bm25", "dense", "faiss"]
    )
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--index", help="Index directory (default: $BITRAG_HOME/index).")
    parser.add_argument("--time-limit", type=float, default=300.0, help="Seconds per phase.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not 1 <= args.n <= 100_000 or not 1 <= args.concurrency <= 256:
        parser.error("--n must be 1..100000 and --concurrency 1..256")
    result = bench(args.n, args.concurrency, args.retriever, args.k, args.index, args.time_limit)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{result['n']} search calls, concurrency {result['concurrency']}, "
        f"retriever {result['retriever']}, {result['cpu_count']} CPUs"
    )
    for label in ("http", "in_process_sequential", "in_process_concurrent"):
        row = result[label]
        print(
            f"{label:22} p50 {row['p50_ms']:8.2f} ms  p99 {row['p99_ms']:8.2f} ms  "
            f"errors {row['errors']}  not run {row['not_run']}  {row['calls_per_s']} calls/s"
        )
    print(
        f"HTTP p50 / in-process p50: {result['ratio_p50_same_concurrency']} at equal concurrency, "
        f"{result['ratio_p50_vs_sequential']} vs one at a time; target met: {result['target_met']}"
    )


if __name__ == "__main__":
    main()
