"""Weighted reciprocal-rank fusion of a lexical (BM25) and a dense ranking.

score(chunk) = sum over rankings r of weight_r / (RRF_K + rank_r(chunk)).

The embedded embedder (all-MiniLM-L6-v2) reads English only: Korean text becomes
jamo and [UNK] tokens, so its ranking for a Korean query is near noise. Measured
on data/eval/qa.jsonl, any dense weight above zero lowered Korean MRR, so a query
in a language the embedder cannot read is ranked by BM25 alone (dense only fills
in when BM25 matches nothing). For readable queries the dense ranking gets
DENSE_WEIGHT: BM25 is the stronger ranker on notes full of names and numbers, and
0.5 was best on the dev split. Dense candidates under DENSE_FLOOR cosine are dropped.
"""

from retrieval.tokenize import language

RRF_K = 60
DEPTH = 50
DENSE_FLOOR = 0.3
DENSE_WEIGHT = 0.5


def dense_weight(query: str, embedder_languages: frozenset[str] | None) -> float:
    """DENSE_WEIGHT when the embedder reads the query's language (or its languages are
    unknown), else 0."""
    readable = embedder_languages is None or language(query) in embedder_languages
    return DENSE_WEIGHT if readable else 0.0


def fuse(
    lexical: list[tuple[int, float]],
    dense: list[tuple[int, float]],
    dense_weight: float,
    k: int,
) -> list[tuple[int, float]]:
    """(chunk position, fused score) for the k best chunks of the two rankings."""
    dense = [(i, cosine) for i, cosine in dense if cosine >= DENSE_FLOOR]
    if not lexical:
        dense_weight = 1.0  # nothing matched lexically: the dense ranking is all there is
    fused: dict[int, float] = {}
    for rank, (i, _) in enumerate(lexical, 1):
        fused[i] = fused.get(i, 0.0) + 1.0 / (RRF_K + rank)
    if dense_weight > 0:
        for rank, (i, _) in enumerate(dense, 1):
            fused[i] = fused.get(i, 0.0) + dense_weight / (RRF_K + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:k]
