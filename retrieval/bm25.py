"""Okapi BM25 ranking over pre-tokenized chunks."""

from rank_bm25 import BM25Okapi


class BM25:
    """BM25 over a fixed list of term lists (one per chunk)."""

    def __init__(self, corpus_terms: list[list[str]]) -> None:
        self._bm25 = BM25Okapi(corpus_terms) if corpus_terms else None

    def top(self, query_terms: list[str], k: int) -> list[tuple[int, float]]:
        """(chunk position, score) for the k best chunks that contain a query term.

        Okapi idf is negative for terms in more than half the chunks (in a one-note
        index, every term), so matching is decided by the terms, not by the score's sign.
        """
        if self._bm25 is None or not query_terms:
            return []
        scores = self._bm25.get_scores(query_terms)
        matched = [
            i
            for i, freqs in enumerate(self._bm25.doc_freqs)
            if any(t in freqs for t in query_terms)
        ]
        matched.sort(key=lambda i: (-scores[i], i))
        return [(i, float(scores[i])) for i in matched[:k]]
