"""Which words of a generated answer are no claim the evidence must back: everyday English,
and Korean written in the evidence as it stands (agent/verify.py checks the rest)."""

from functools import cache

from retrieval.embedders.embedder import embedded_embedder_path
from retrieval.errors import UserError


@cache
def common_words() -> frozenset[str]:
    """Everyday English words: the whole words of the embedded embedder's 30,522-entry
    vocabulary ("took", "approximately", "uniform"; not "mantissa", "SparseGPT", "GGUF"). In
    a reader model's draft such a word is no claim the evidence must back: a wrong one is the
    reader's confirm job to refuse (agent/reader.py). A draft no model confirms (the cut-off
    path) is held to every word."""
    try:
        vocabulary = (embedded_embedder_path() / "vocab.txt").read_text(encoding="utf-8")
    except (OSError, UserError):
        return frozenset()
    return frozenset(w for w in vocabulary.split() if len(w) > 2 and w.isascii() and w.isalpha())


def written_in(term: str, backing: str) -> bool:
    """Whether a Korean term is in the backing text as written: Kiwi splits a word by its
    context ("이진 마스크" gives 이진, "것: 이진 마스크" gives 진), so a term of the answer
    may be no term of the evidence that says it. One syllable alone says too little to be
    a claim (a particle Kiwi left, 후 "after")."""
    return not term.isascii() and (len(term) == 1 or term in backing)
