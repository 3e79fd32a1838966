"""Retrieval benchmark: quality on the sample question set, and speed at 1k/10k/100k chunks.

    python -m eval.bench.retrieval [--sizes 1000,10000,100000|none] [--real-limit 10000]
                                   [--queries 200] [--split all|dev|test|dev,test]
                                   [--embedder minilm|e5|PATH] [--out DIR]

Quality: hit@5, answer@5 (the top-5 chunks from the right notes hold the gold answer's
keywords), recall@5, MRR@10 and nDCG@10 per retriever and question language, and per
question group (the optional `group` key of data/eval/qa.jsonl, e.g. "outline", as a
whole and per language); follow-up questions are asked with the question they follow.
--split picks the questions (tune on dev, report test); the sample corpus is ingested
once for all the splits asked. --embedder (else BITRAG_EMBEDDER) picks the embedder for
every index the benchmark builds; queries are embedded as queries (kind="query"). Scale: a synthetic
corpus (eval/synthetic.py). Up to --real-limit chunks it goes through the real
ingest path (files on disk, loaders, Kiwi, MiniLM, FAISS), which also gives ingest
throughput and the time to re-ingest it unchanged. Above that limit, embedding every
chunk on 2 CPU cores would take most of an hour, so chunk vectors are MiniLM
embeddings of a pool of real synthetic sections plus Gaussian noise (renormalized),
written with the same index writer; BM25 terms are always real. The report says
which sizes were built which way.
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from eval import synthetic
from eval.dataset import load_questions
from eval.retrieval_metrics import hit_at, mrr_at, ndcg_at, recall_at
from retrieval.chunking import Chunk
from retrieval.dense import ExactDense
from retrieval.embedders.embedder import embed, resolve_embedder
from retrieval.paths import SAMPLE_CORPUS
from retrieval.store import RETRIEVERS, Index, IndexRows, ingest, write_generation
from retrieval.tokenize import language, tokenize

POOL = 4000
NOISE = 0.35


def answer_at(texts: list[str], keywords: list[list[str]]) -> float:
    """1.0 when the top chunks from the right notes hold an alternative of every keyword group
    of the gold answer: a chunk-level hit, which fragment chunks lose and whole notes win."""
    joined = "\n".join(texts).lower()
    return float(all(any(alt.lower() in joined for alt in group) for group in keywords))


def _slices(lang: str, group: str | None) -> list[str]:
    """The report rows a question counts in: its language, and its group whole and by language."""
    return [lang] + ([group, f"{group}/{lang}"] if group else [])


def quality(workdir: Path, splits: tuple[str, ...] = ("all",)) -> dict:
    """Per split, retriever and row (language; group; group/language): mean hit@5, answer@5,
    recall@5, MRR@10, nDCG@10 over the answerable questions."""
    if not (workdir / "sample" / "CURRENT").is_file():
        ingest([SAMPLE_CORPUS], workdir / "sample")
    index = Index.load(workdir / "sample")
    questions = load_questions()
    by_id = {q.id: q for q in questions}
    out = {}
    for split in splits:
        scores: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
        for q in questions:
            if not q.answerable or split not in ("all", q.split):
                continue
            text = f"{by_id[q.follows].question} {q.question}" if q.follows else q.question
            relevant = set(q.sources)
            for retriever in RETRIEVERS:
                hits = index.search(text, 10, retriever)
                docs = [Path(h.chunk.source).name for h in hits]
                held = [h.chunk.text for h in hits[:5] if Path(h.chunk.source).name in relevant]
                for key in _slices(q.lang, q.group):
                    row = scores[retriever][key]
                    row["hit@5"].append(hit_at(docs, relevant, 5))
                    row["recall@5"].append(recall_at(docs, relevant, 5))
                    row["answer@5"].append(answer_at(held, q.keywords))
                    row["mrr@10"].append(mrr_at(docs, relevant, 10))
                    row["ndcg@10"].append(ndcg_at(docs, relevant, 10))
        out[split] = {
            r: {
                key: {m: round(statistics.mean(v), 3) for m, v in metrics.items()} | {"n": n}
                for key, metrics in sorted(rows.items(), key=lambda kv: ("/" in kv[0], kv[0]))
                for n in [len(metrics["hit@5"])]
            }
            for r, rows in scores.items()
        }
    return out


def _real_index(directory: Path, texts: list[str]) -> dict:
    per_file = 1 if len(texts) <= 1000 else 10
    files = synthetic.write_corpus(directory / "files", texts, per_file)
    start = time.perf_counter()
    report = ingest([directory / "files"], directory / "index")
    took = time.perf_counter() - start
    start = time.perf_counter()
    again = ingest([directory / "files"], directory / "index")
    reingest = time.perf_counter() - start
    assert again.unchanged == files and report.chunks == len(texts)
    return {
        "built": "real ingest",
        "files": files,
        "ingest_s": round(took, 2),
        "ingest_chunks_per_s": round(len(texts) / took, 1),
        "reingest_unchanged_s": round(reingest, 3),
    }


def _synthetic_index(directory: Path, texts: list[str]) -> dict:
    embedder = resolve_embedder()
    start = time.perf_counter()
    pool = embed(texts[:POOL], embedder)
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(pool), len(texts))
    vectors = pool[picks] + rng.normal(0, NOISE / np.sqrt(pool.shape[1]), (len(texts), 384))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    vectors[: len(pool)] = pool
    source = str(directory / "synthetic.md")
    chunks = [
        Chunk(f"{source}#{i}", source, f"Section {i}", None, t, 0, len(t), language(t))
        for i, t in enumerate(texts)
    ]
    rows = IndexRows(chunks, [tokenize(t) for t in texts], [vectors])
    write_generation(directory / "index", rows, {source: "synthetic"}, embedder)
    took = time.perf_counter() - start
    return {"built": f"pooled vectors ({POOL} embedded + noise {NOISE})", "build_s": round(took, 1)}


def _latency(index: Index, queries: list[str]) -> dict:
    out = {}
    for retriever in RETRIEVERS:
        for q in queries[:5]:
            index.search(q, 10, retriever)  # warm up: model, mmap, caches
        times = []
        for q in queries:
            start = time.perf_counter()
            index.search(q, 10, retriever)
            times.append((time.perf_counter() - start) * 1000)
        p50, p95 = np.percentile(times, [50, 95])
        out[retriever] = {"p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2)}
    return out


def _faiss_recall(index: Index, queries: list[str]) -> float:
    vectors = embed(queries, index.embedder, kind="query")
    exact = ExactDense(np.asarray(index.vectors))
    overlap = []
    for v in vectors:
        truth = {i for i, _ in exact.top(v, 10)}
        found = {i for i, _ in index.faiss.top(v, 10)}
        overlap.append(len(truth & found) / len(truth))
    return round(float(np.mean(overlap)), 4)


def scale(workdir: Path, size: int, real_limit: int, n_queries: int) -> dict:
    texts = synthetic.sections(size, seed=size)
    directory = workdir / f"n{size}"
    build = (
        _real_index(directory, texts) if size <= real_limit else _synthetic_index(directory, texts)
    )
    index = Index.load(directory / "index")
    queries = synthetic.queries(texts, n_queries)
    return {
        "chunks": size,
        **build,
        "latency": _latency(index, queries),
        "faiss_recall@10": _faiss_recall(index, queries),
        "faiss_index": type(index.faiss.index).__name__,
    }


def markdown(result: dict) -> str:
    lines = []
    for split, table in result["quality"].items():
        lines += [
            f"## Quality (sample corpus, split {split}, embedder {result.get('embedder')})",
            "",
            "| retriever | lang / group | n | hit@5 | answer@5 | recall@5 | MRR@10 | nDCG@10 |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r, rows in table.items():
            for key, m in rows.items():
                lines.append(
                    f"| {r} | {key} | {m['n']} | {m['hit@5']} | {m['answer@5']} | "
                    f"{m['recall@5']} | {m['mrr@10']} | {m['ndcg@10']} |"
                )
        lines.append("")
    if not result["scale"]:
        return "\n".join(lines)
    lines += [
        "",
        "## Scale (synthetic corpus, ms per query, k=10)",
        "",
        "| chunks | built | "
        + " | ".join(f"{r} p50/p95" for r in RETRIEVERS)
        + " | FAISS recall@10 | ingest chunks/s | re-ingest unchanged s |",
        "| --- " * (len(RETRIEVERS) + 5) + "|",
    ]
    for s in result["scale"]:
        lat = " | ".join(
            f"{s['latency'][r]['p50_ms']}/{s['latency'][r]['p95_ms']}" for r in RETRIEVERS
        )
        lines.append(
            f"| {s['chunks']} | {s['built']} | {lat} | {s['faiss_recall@10']} "
            f"({s['faiss_index']}) | {s.get('ingest_chunks_per_s', '-')} | "
            f"{s.get('reingest_unchanged_s', '-')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="'none' skips scale")
    parser.add_argument("--split", default="all", help="all, dev, test, or a comma list")
    parser.add_argument("--embedder", default=None, help="minilm, e5 or a model folder")
    parser.add_argument("--real-limit", type=int, default=10000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None, help="write results.json/report.md")
    args = parser.parse_args()
    splits = tuple(s.strip() for s in args.split.split(","))
    if bad := [s for s in splits if s not in ("all", "dev", "test")]:
        parser.error(f"--split {','.join(bad)}: use all, dev or test")
    if args.embedder:  # every index built below (ingest) resolves the embedder from here
        os.environ["BITRAG_EMBEDDER"] = args.embedder
    sizes = [] if args.sizes.strip().lower() in ("", "none", "0") else args.sizes.split(",")
    with tempfile.TemporaryDirectory(prefix="bitrag-bench-") as tmp:
        workdir = Path(tmp)
        embedder = resolve_embedder().id
        result = {"embedder": embedder, "quality": quality(workdir, splits), "scale": []}
        for size in (int(s) for s in sizes):
            result["scale"].append(scale(workdir, size, args.real_limit, args.queries))
            print(json.dumps(result["scale"][-1]), flush=True)
    report = markdown(result)
    print(report)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(result, indent=2))
        (args.out / "report.md").write_text(report)


if __name__ == "__main__":
    main()
