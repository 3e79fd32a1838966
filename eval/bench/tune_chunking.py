"""Choose chunk sizes on the dev split: BM25, dense and hybrid quality per chunking setting.

    python -m eval.bench.tune_chunking [--max 600,900,1200] [--floor 150,300,600]
                                 [--embedders minilm,e5] [--split dev] [--out FILE]

For every (MAX_CHARS, FLOOR) pair the sample corpus is chunked in memory and ranked with
the index's own pieces (Kiwi BM25 over chunking.indexed_text, exact dense search, the
hybrid fusion), without writing an index. Texts are embedded once per embedder and reused
across settings. Per retriever and row (language, group): hit@5 (a top-5 chunk is from a
right note), answer@5 (the top-5 chunks from the right notes hold every keyword group of
the gold answer, the chunk-level measure fragments lose on) and MRR@10.
"""

import argparse
import json
import os
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np

from eval.bench.retrieval import answer_at
from eval.dataset import load_questions
from eval.retrieval_metrics import hit_at, mrr_at
from retrieval import chunking, hybrid
from retrieval.bm25 import BM25
from retrieval.dense import ExactDense
from retrieval.embedders.embedder import embed, resolve_embedder
from retrieval.loaders import Document, RawFile, iter_candidates, parse, read_raw, resolved
from retrieval.paths import SAMPLE_CORPUS
from retrieval.tokenize import tokenize


def _documents() -> list[Document]:
    docs = []
    for path in iter_candidates([resolved(SAMPLE_CORPUS)]):
        raw = read_raw(path)
        doc = parse(raw) if isinstance(raw, RawFile) else raw
        if isinstance(doc, Document):
            docs.append(doc)
    return docs


class _Vectors:
    """Embeddings by text, so settings that cut a section the same way share its vector."""

    def __init__(self, name: str) -> None:
        os.environ["BITRAG_EMBEDDER"] = name
        self.embedder = resolve_embedder()
        self.cache: dict[tuple[str, str], np.ndarray] = {}

    def __call__(self, texts: list[str], kind: str = "passage") -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if (kind, t) not in self.cache))
        if missing:
            for t, v in zip(missing, embed(missing, self.embedder, kind=kind), strict=True):
                self.cache[(kind, t)] = v
        return np.vstack([self.cache[(kind, t)] for t in texts])


def evaluate(docs, questions, vectors: dict[str, _Vectors], split: str) -> dict:
    chunks = [c for doc in docs for c in chunking.chunk_document(doc)]
    texts = [chunking.indexed_text(c) for c in chunks]
    bm25 = BM25.build([tokenize(t) for t in texts])
    by_id = {q.id: q for q in questions}
    asked = [q for q in questions if q.answerable and split in ("all", q.split)]
    queries = [
        f"{by_id[q.follows].question} {q.question}" if q.follows else q.question for q in asked
    ]
    rankers = {"bm25": lambda i, q: bm25.top(tokenize(q), 10)}
    for name, vec in vectors.items():
        exact = ExactDense(vec(texts))
        qv = vec(queries, "query")
        langs = vec.embedder.languages

        def dense(i, q, exact=exact, qv=qv):
            return exact.top(qv[i], hybrid.DEPTH)

        def fused(i, q, dense=dense, langs=langs):
            lexical = bm25.top(tokenize(q), hybrid.DEPTH)
            return hybrid.fuse(lexical, dense(i, q), hybrid.dense_weight(q, langs), 10)

        rankers[f"dense-{name}"] = dense
        rankers[f"hybrid-{name}"] = fused
    scores: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for i, (q, text) in enumerate(zip(asked, queries, strict=True)):
        relevant = set(q.sources)
        for name, rank in rankers.items():
            top = [chunks[j] for j, _ in rank(i, text)[:10]]
            docs_ = [Path(c.source).name for c in top]
            held = [c.text for c in top[:5] if Path(c.source).name in relevant]
            for key in ["all", q.lang] + ([q.group, f"{q.group}/{q.lang}"] if q.group else []):
                row = scores[name][key]
                row["hit@5"].append(hit_at(docs_, relevant, 5))
                row["answer@5"].append(answer_at(held, q.keywords))
                row["mrr@10"].append(mrr_at(docs_, relevant, 10))
    sizes = [len(c.text) for c in chunks]
    return {
        "chunks": len(chunks),
        "min_chars": min(sizes),
        "mean_chars": round(statistics.mean(sizes)),
        "scores": {
            r: {
                k: {m: round(statistics.mean(v), 3) for m, v in ms.items()}
                for k, ms in rows.items()
            }
            for r, rows in scores.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", default="600,900,1200")
    parser.add_argument("--floor", default="150,300,600")
    parser.add_argument("--embedders", default="minilm,e5", help="'' for BM25 only")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    docs, questions = _documents(), load_questions()
    vectors = {n: _Vectors(n) for n in args.embedders.split(",") if n}
    results = []
    for max_chars in (int(x) for x in args.max.split(",")):
        for floor in (int(x) for x in args.floor.split(",")):
            chunking.MAX_CHARS, chunking.FLOOR = max_chars, floor
            row = {"max_chars": max_chars, "floor": floor} | evaluate(
                docs, questions, vectors, args.split
            )
            results.append(row)
            summary = {
                r: {k: s[k]["answer@5"] for k in ("en", "ko", "outline") if k in s}
                for r, s in row["scores"].items()
            }
            print(json.dumps({k: row[k] for k in ("max_chars", "floor", "chunks")} | summary))
            if args.out:
                args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
