"""Weighted reciprocal-rank fusion of a lexical (BM25) and a dense ranking.

score(chunk) = sum over rankings r of weight_r / (RRF_K + rank_r(chunk)).
The dense ranking's weight drops for queries in a language the embedder cannot
read (the embedded all-MiniLM-L6-v2 is English-only, so for Korean its ranking is
near noise and must not drag the BM25 ranking down); dense candidates whose
cosine similarity is under DENSE_FLOOR are not counted at all.
"""

from retrieval.tokenize import has_hangul

RRF_K = 60
DEPTH = 50
DENSE_FLOOR = 0.3
UNREADABLE_DENSE_WEIGHT = 0.1


def dense_weight(query: str, embedder_languages: frozenset[str] | None) -> float:
    """1.0 when the embedder reads the query's language (or its languages are unknown)."""
    if embedder_languages is None:
        return 1.0
    language = "ko" if has_hangul(query) else "en"
    return 1.0 if language in embedder_languages else UNREADABLE_DENSE_WEIGHT


def fuse(
    lexical: list[tuple[int, float]],
    dense: list[tuple[int, float]],
    dense_weight: float,
    k: int,
) -> list[tuple[int, float]]:
    """(chunk position, fused score) for the k best chunks of the two rankings."""
    fused: dict[int, float] = {}
    for rank, (i, _) in enumerate(lexical, 1):
        fused[i] = fused.get(i, 0.0) + 1.0 / (RRF_K + rank)
    for rank, (i, cosine) in enumerate(dense, 1):
        if cosine >= DENSE_FLOOR:
            fused[i] = fused.get(i, 0.0) + dense_weight / (RRF_K + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:k]
