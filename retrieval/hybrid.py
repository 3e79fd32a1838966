"""Fusion of a lexical (BM25) and a dense ranking: a convex combination of normalised scores.

score(chunk) = (1 - DENSE_WEIGHT) * bm25' + DENSE_WEIGHT * dense', where x' is the score
min-max scaled over that ranking's DEPTH candidates (a chunk one ranking lacks gets 0 from
it). Scores, unlike reciprocal ranks, keep how far ahead BM25's top chunk is: a note that
names the question's rare terms stays first however the embedder orders it.

The dense ranking fed here should be language-centred (retrieval.dense.LanguageCentered):
a multilingual embedder gives a query a higher cosine to every chunk in the query's own
language (e5-small on the sample corpus: Korean queries average 0.84 to Korean chunks and
0.79 to English ones, while the right chunk stands ~0.03 above its language's mean), so
raw cosines bury a cross-language answer, and with them any dense weight lowered Korean
hit@5 below BM25 alone (e5, dev: RRF 0.80 against BM25's 0.97). Tuned on the dev split
(both embedders, both languages, all groups): with centring, weights 0.1-0.4 all keep
hit@5 at or above the best single retriever everywhere, where weighted RRF (k 5-60) and
uncentred scores did not; 0.3 gave e5 its best English MRR@10 (0.95) and Korean within
0.003 of its best (0.94, against BM25's 0.82). Without centring (eval/bench/tune_chunking.py
feeds raw cosines) the same fusion still lowers e5's Korean dev hit@5 to 0.91.

A query in a language the embedder cannot read (MiniLM and Korean) is ranked by BM25
alone; the dense ranking is all there is only when BM25 matches nothing.
"""

from retrieval.tokenize import language

DEPTH = 50
DENSE_WEIGHT = 0.3

Ranking = list[tuple[int, float]]


def dense_weight(query: str, embedder_languages: frozenset[str] | None) -> float:
    """DENSE_WEIGHT when the embedder reads the query's language (or its languages are
    unknown), else 0."""
    readable = embedder_languages is None or language(query) in embedder_languages
    return DENSE_WEIGHT if readable else 0.0


def scaled(ranking: Ranking) -> dict[int, float]:
    """Scores min-max scaled to [0, 1] over the ranking (a lone or tied ranking: all 1)."""
    if not ranking:
        return {}
    low = min(s for _, s in ranking)
    span = max(s for _, s in ranking) - low
    return {i: (s - low) / span if span > 0 else 1.0 for i, s in ranking}


def fuse(lexical: Ranking, dense: Ranking, dense_weight: float, k: int) -> Ranking:
    """(chunk position, fused score) for the k best chunks of the two rankings."""
    if not lexical:
        dense_weight = 1.0  # nothing matched lexically: the dense ranking is all there is
    if dense_weight <= 0:
        dense = []
    lex, den = scaled(lexical), scaled(dense)
    fused = {
        i: (1.0 - dense_weight) * lex.get(i, 0.0) + dense_weight * den.get(i, 0.0)
        for i in lex.keys() | den.keys()
    }
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:k]
