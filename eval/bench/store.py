"""Store benchmark: the file store against PostgreSQL + pgvector (issue 28, point 4).

    python -m eval.bench.store [--sizes 10000,100000] [--queries 200] [--per-thread 50]
                               [--pool 4000] [--maintenance-work-mem 1GB] [--out FILE.json]
    python -m eval.bench.store --crash 10 [--seed 28] [--out FILE.json]

Per size: ingest throughput (chunks/s) of the file store (writing a generation: BM25, FAISS,
chunk files) and of publishing that generation to PostgreSQL (COPY, HNSW build, one
transaction); hybrid query p50/p99 (k=10, one at a time, query embedding included) on both;
16 concurrent queries (4 processes x 4 threads, each thread on its own connection) against
the one PostgreSQL store: errors, p50, p99; and recall@10 of pgvector's HNSW neighbours
(PgDense.top, the query path's own call) against exact inner-product search.

Corpus rule (deterministic; embedding 100k chunks with the real embedder would take most of
an hour on 2 cores): --pool synthetic sections (eval/synthetic.py, seed 0) are embedded with
the real embedder. Chunk i is built from section i mod pool: the first `pool` chunks are the
sections with their own embeddings; every later one is that section with about 10% of its
words replaced by words of a second section drawn at random (its "mate"; numpy seed 0,
words by random.Random(i)), and the embedding section + MIX * mate + Gaussian noise (sigma
NOISE/sqrt(dim)), renormalized. (Without the mate, 100k chunks are 50 near-copies of each
of 2000 sections; pgvector's HNSW recall@10 measured 0.29 on that clustered set.) BM25 terms
are always real (Kiwi/English tokenizer). Embedding time is in neither store's ingest throughput.
Queries: eval.synthetic.queries over the corpus (seed 1). It starts its own LocalPostgres
(maintenance_work_mem raised for the HNSW build, as a real server would set it) and stops it.

--crash N instead kills a real `python -m agent ingest --store` N times at seeded random
points (eval.bench.store_crash): generation A is the sample corpus but one note, B
adds it; every other kill is aimed at the publishing transaction. It prints one line per run
and a last line saying how many runs saw only a whole generation (A or B, never a mix) and
in how many the following ingest succeeded.
"""

import argparse
import json
import multiprocessing as mp
import random
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from eval import synthetic
from eval.bench.store_crash import Rig, summary
from retrieval.chunking import Chunk
from retrieval.dense import ExactDense
from retrieval.embedders.embedder import embed, resolve_embedder
from retrieval.paths import SAMPLE_CORPUS
from retrieval.store import Index, IndexRows, write_generation
from retrieval.store.postgres import PgIndex, publish
from retrieval.store.postgres_server import LocalPostgres
from retrieval.tokenize import language, tokenize

NOISE = 0.35  # as eval.bench.retrieval's pooled vectors
MIX = 0.5  # weight of the second ("mate") section's embedding in a replicated chunk
VARY = 0.10  # share of words replaced in a replicated section
PROCESSES = 4
THREADS = 4
CRASH_ADDED = "mixed-precision-training.md"  # generation B of --crash: A plus this note
MACHINE_NOTE = (
    "timings taken on a shared 2-core machine while another long benchmark was running: "
    "absolute numbers are pessimistic, the file/PostgreSQL ratios are the comparison"
)


def _vary(text: str, other: str, seed: int) -> str:
    """`text` with about VARY of its words replaced by words of `other` (deterministic)."""
    rng = random.Random(seed)
    words, donors = text.rstrip(".").split(), other.rstrip(".").split()
    return " ".join(rng.choice(donors) if rng.random() < VARY else w for w in words) + "."


def build_corpus(size: int, pool: int) -> tuple[list[str], np.ndarray, list[list[str]]]:
    """Texts, float32 unit embeddings and BM25 terms of `size` chunks, by the module's rule."""
    base = synthetic.sections(min(pool, size), seed=0)
    vectors = embed(base, resolve_embedder())
    rng = np.random.default_rng(0)
    picks, mates = np.arange(size) % len(base), rng.integers(0, len(base), size)
    texts = [
        base[i] if i < len(base) else _vary(base[picks[i]], base[mates[i]], i) for i in range(size)
    ]
    noise = rng.normal(0, NOISE / np.sqrt(vectors.shape[1]), (size, vectors.shape[1]))
    noise[: len(base)] = 0
    mix = np.full((size, 1), MIX, dtype=np.float32)
    mix[: len(base)] = 0
    full = vectors[picks] + mix * vectors[mates] + noise
    full = (full / np.linalg.norm(full, axis=1, keepdims=True)).astype(np.float32)
    return texts, full, [tokenize(t) for t in texts]


def _rows(
    texts: list[str], vectors: np.ndarray, terms: list[list[str]]
) -> tuple[IndexRows, dict[str, str]]:
    chunks, docs = [], {}
    for i, text in enumerate(texts):
        source = f"/bench/notes/doc-{i // 100:05d}.md"  # 100 sections a note
        docs[source] = "synthetic"
        chunk_id = f"{source}#{i % 100}"
        chunks.append(
            Chunk(chunk_id, source, f"Section {i}", None, text, 0, len(text), language(text))
        )
    return IndexRows(chunks, terms, [vectors]), docs


def ingest_both(dsn: str, workdir: Path, corpus: tuple, schema: str) -> dict:
    """Write the file generation, then publish it to PostgreSQL; seconds and chunks/s of each."""
    rows, docs = _rows(*corpus)
    n = len(rows.chunks)
    start = time.perf_counter()
    write_generation(workdir, rows, docs, resolve_embedder())
    file_s = time.perf_counter() - start
    start = time.perf_counter()
    publish(dsn, Index.load(workdir), schema)
    pg_s = time.perf_counter() - start
    return {
        "file_s": round(file_s, 2),
        "file_chunks_per_s": round(n / file_s, 1),
        "pg_publish_s": round(pg_s, 2),
        "pg_chunks_per_s": round(n / pg_s, 1),
        "pg_end_to_end_chunks_per_s": round(n / (file_s + pg_s), 1),
    }


def _ms(seconds: list[float]) -> dict:
    if not seconds:
        return {"p50_ms": None, "p99_ms": None}
    p50, p99 = np.percentile(np.array(seconds) * 1000, [50, 99])
    return {"p50_ms": round(float(p50), 2), "p99_ms": round(float(p99), 2)}


def latency(index: Index | PgIndex, queries: list[str]) -> dict:
    """Hybrid k=10, one query at a time, after 5 warm-up queries."""
    for q in queries[:5]:
        index.search(q, 10, "hybrid")
    times = []
    for q in queries:
        start = time.perf_counter()
        index.search(q, 10, "hybrid")
        times.append(time.perf_counter() - start)
    return _ms(times)


def recall(top: Callable, vectors: np.ndarray, asked: np.ndarray) -> float:
    """Mean share of the exact top 10 (inner product) that an approximate `top` returns."""
    exact = ExactDense(vectors)
    overlap = []
    for v in asked:
        truth = {i for i, _ in exact.top(v, 10)}
        found = {i for i, _ in top(v, 10)}
        overlap.append(len(truth & found) / len(truth))
    return round(float(np.mean(overlap)), 4)


def _thread(index: PgIndex, queries: list[str]) -> tuple[list[float], list[str]]:
    times, errors = [], []
    for q in queries:
        start = time.perf_counter()
        try:
            index.search(q, 10, "hybrid")
            times.append(time.perf_counter() - start)
        except Exception as exc:  # noqa: BLE001 - every failure is counted, not raised
            errors.append(f"{type(exc).__name__}: {exc}"[:200])
    return times, errors


def _worker(dsn: str, schema: str, queries: list[list[str]], barrier: Any, results: Any) -> None:
    """One process: THREADS connections, a warm-up query each, then all start together."""
    indexes = [PgIndex.open(dsn, schema) for _ in queries]
    for index in indexes:
        index.search(queries[0][0], 10, "hybrid")
    barrier.wait()
    start = time.perf_counter()
    with ThreadPoolExecutor(len(indexes)) as pool:
        done = list(pool.map(_thread, indexes, queries))
    wall = time.perf_counter() - start
    for index in indexes:
        index.close()
    results.put(([t for times, _ in done for t in times], [e for _, es in done for e in es], wall))


def concurrent(dsn: str, schema: str, queries: list[str], per_thread: int) -> dict:
    """PROCESSES x THREADS searchers at once on one store: errors, p50, p99, queries/s."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    slots = PROCESSES * THREADS
    plan = [
        [queries[(s + j * slots) % len(queries)] for j in range(per_thread)] for s in range(slots)
    ]
    workers = [
        ctx.Process(
            target=_worker,
            args=(dsn, schema, plan[p * THREADS : (p + 1) * THREADS], barrier, results),
        )
        for p in range(PROCESSES)
    ]
    for w in workers:
        w.start()
    got = [results.get(timeout=1800) for _ in workers]
    for w in workers:
        w.join()
    times = [t for ts, _, _ in got for t in ts]
    errors = [e for _, es, _ in got for e in es]
    wall = max(w for _, _, w in got)
    crashed = sum(1 for w in workers if w.exitcode != 0)
    return {
        "concurrency": slots,
        "processes": PROCESSES,
        "queries": slots * per_thread,
        "errors": len(errors) + crashed,
        "first_error": errors[0] if errors else None,
        **_ms(times),
        "queries_per_s": round(len(times) / wall, 1),
    }


def one_size(
    pg: LocalPostgres, workdir: Path, corpus: tuple, size: int, args: argparse.Namespace
) -> dict:
    texts, vectors, terms = (part[:size] for part in corpus)
    schema = f"bench_{size}"
    directory = workdir / f"n{size}"
    result = {
        "chunks": size,
        "ingest": ingest_both(pg.dsn, directory, (texts, vectors, terms), schema),
    }
    queries = synthetic.queries(texts, args.queries)
    files = Index.load(directory)
    result["file_hybrid"] = latency(files, queries)
    asked = embed(queries, files.embedder, kind="query")
    result["faiss_recall@10"] = recall(files.faiss.top, vectors, asked)  # the same data
    with PgIndex.open(pg.dsn, schema) as store:
        result["pg_hybrid"] = latency(store, queries)
        result["hnsw_recall@10"] = recall(store.dense.top, vectors, asked)
    result["pg_concurrent"] = concurrent(pg.dsn, schema, queries, args.per_thread)
    file_p50, pg_p50 = result["file_hybrid"]["p50_ms"], result["pg_hybrid"]["p50_ms"]
    result["pg_over_file_p50"] = round(pg_p50 / file_p50, 2)
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")  # free the disk before the next size
    return result


def _tune(pg: LocalPostgres, maintenance_work_mem: str) -> None:
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(f"ALTER SYSTEM SET maintenance_work_mem = '{maintenance_work_mem}'")
        conn.execute("SELECT pg_reload_conf()")


def table(result: dict) -> str:
    lines = [
        "| chunks | file ingest ch/s | PG publish ch/s | file hybrid p50/p99 ms "
        "| PG hybrid p50/p99 ms | PG/file p50 | pgvector HNSW recall@10 (FAISS) | c16 errors "
        "| c16 p50/p99 ms | c16 q/s |",
        "| --- " * 10 + "|",
    ]
    for s in result["sizes"]:
        ing, f, p, c = s["ingest"], s["file_hybrid"], s["pg_hybrid"], s["pg_concurrent"]
        lines.append(
            f"| {s['chunks']} | {ing['file_chunks_per_s']} | {ing['pg_chunks_per_s']} "
            f"| {f['p50_ms']}/{f['p99_ms']} | {p['p50_ms']}/{p['p99_ms']} "
            f"| {s['pg_over_file_p50']} | {s['hnsw_recall@10']} ({s['faiss_recall@10']}) "
            f"| {c['errors']} "
            f"| {c['p50_ms']}/{c['p99_ms']} | {c['queries_per_s']} |"
        )
    return "\n".join(lines)


def targets(result: dict) -> list[str]:
    """The issue's targets, checked at the largest size run."""
    s = result["sizes"][-1]
    checks = [
        ("PG hybrid p50 <= 3x file", s["pg_over_file_p50"] <= 3),
        ("0 errors at concurrency 16", s["pg_concurrent"]["errors"] == 0),
        ("HNSW recall@10 >= 0.95", s["hnsw_recall@10"] >= 0.95),
    ]
    return [f"{name} at {s['chunks']} chunks: {'met' if ok else 'NOT met'}" for name, ok in checks]


def crash(runs: int, seed: int, out: Path | None) -> None:
    """--crash: kill -9 of an ingest into PostgreSQL, `runs` times (see the docstring)."""
    notes = sorted(p for p in SAMPLE_CORPUS.iterdir() if p.is_file())
    added = [p for p in notes if p.name == CRASH_ADDED]
    with tempfile.TemporaryDirectory(prefix="bitrag-bench-crash-") as tmp, LocalPostgres() as pg:
        rig = Rig.build(pg.dsn, Path(tmp), [p for p in notes if p not in added], added)
        print(json.dumps({"ingest_s": round(rig.ingest_s, 2), "publish_s": rig.publish_s}))
        rng, done = random.Random(seed), []
        for number in range(runs):
            done.append(rig.run(number, rng))
            print(json.dumps(done[-1]), flush=True)
    line = summary(done)
    if out:
        out.write_text(json.dumps({"seed": seed, "runs": done, "summary": line}, indent=2))
    print(f"\n{line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=200, help="for p50/p99 and recall")
    parser.add_argument("--per-thread", type=int, default=50, help="queries per searcher")
    parser.add_argument("--pool", type=int, default=4000, help="sections really embedded")
    parser.add_argument("--maintenance-work-mem", default="1GB")
    parser.add_argument("--out", type=Path, default=None, help="results as JSON")
    parser.add_argument("--crash", type=int, default=0, metavar="N", help="N kill -9 runs instead")
    parser.add_argument("--seed", type=int, default=28, help="of the --crash kill delays")
    args = parser.parse_args()
    if args.crash:
        crash(args.crash, args.seed, args.out)
        return
    sizes = sorted(int(s) for s in args.sizes.split(","))
    start = time.perf_counter()
    corpus = build_corpus(sizes[-1], args.pool)
    result = {
        "embedder": resolve_embedder().id,
        "corpus": f"synthetic: {args.pool} embedded sections, replicated with varied words "
        f"and mixed, noisy embeddings (mix {MIX}, noise {NOISE}); see the module docstring",
        "note": MACHINE_NOTE,
        "settings": {"maintenance_work_mem": args.maintenance_work_mem, "k": 10},
        "corpus_build_s": round(time.perf_counter() - start, 1),
        "sizes": [],
    }
    print(json.dumps({"corpus_build_s": result["corpus_build_s"]}), flush=True)
    with tempfile.TemporaryDirectory(prefix="bitrag-bench-store-") as tmp, LocalPostgres() as pg:
        _tune(pg, args.maintenance_work_mem)
        for size in sizes:
            result["sizes"].append(one_size(pg, Path(tmp), corpus, size, args))
            print(json.dumps(result["sizes"][-1]), flush=True)
            if args.out:  # keep what is done if a later size runs out of time
                args.out.write_text(json.dumps(result, indent=2))
    result["targets"] = targets(result)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    print(f"\n{result['corpus']}\n{MACHINE_NOTE}\n\n{table(result)}\n")
    print("\n".join(result["targets"]))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
