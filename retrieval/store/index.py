"""A loaded index generation and the search over it: BM25, exact dense, FAISS and hybrid,
scoped to the language a query names. Its parts load lazily, on first use; a part that
fails to read becomes the one-line hint of retrieval.store.generations."""

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np

from retrieval import hybrid
from retrieval.bm25 import BM25
from retrieval.chunking import Chunk
from retrieval.dense import ExactDense, FaissDense, LanguageCentered
from retrieval.embedders.embedder import Embedder, embed, resolve_embedder
from retrieval.errors import UserError
from retrieval.scope import named_language
from retrieval.store import generations as gens
from retrieval.store.generations import LOADERS, PART_ERRORS, READ_ERRORS, GenerationReplaced
from retrieval.tokenize import tokenize

Retriever = Literal["bm25", "dense", "faiss", "hybrid"]
RETRIEVERS: tuple[Retriever, ...] = ("bm25", "dense", "faiss", "hybrid")


@dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    chunk: Chunk


class Index:
    """One loaded generation of an index directory."""

    def __init__(self, generation: Path, manifest: dict, chunks: list[Chunk]) -> None:
        self.generation = generation
        self.manifest = manifest
        self.chunks = chunks

    @property
    def docs(self) -> dict[str, str]:
        return self.manifest["documents"]

    @cached_property
    def root(self) -> Path | None:
        """The deepest folder holding every indexed document (None for an empty index)."""
        folders = [str(Path(source).parent) for source in self.docs]
        return Path(os.path.commonpath(folders)) if folders else None

    @classmethod
    def load(cls, directory: Path) -> "Index":
        """The generation CURRENT names; if an ingest replaced it meanwhile, read CURRENT again."""
        try:
            return cls._load_current(directory)
        except GenerationReplaced:
            return cls._load_current(directory)

    @classmethod
    def _load_current(cls, directory: Path) -> "Index":
        name = gens.current_name(directory)
        if name is None:
            hint = f"run `bitrag ingest PATH --index {directory}`"
            raise UserError(f"no index at {directory}: {hint}")
        try:
            return cls.read(directory / name)
        except READ_ERRORS as exc:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise gens.read_error(directory, name, reason) from None

    @classmethod
    def read(cls, generation: Path) -> "Index":
        """One generation's manifest and chunks (its other parts load when first used)."""
        return cls(generation, *gens.read_manifest_and_chunks(generation))

    def _part(self, loader: Callable[[Path], object], name: str):
        try:
            return loader(self.generation / name)
        except PART_ERRORS as exc:
            directory, generation = self.generation.parent, self.generation.name
            raise gens.read_error(directory, generation, f"{name}: {exc}") from None

    @cached_property
    def bm25(self) -> BM25:
        return self._part(LOADERS["bm25.npz"], "bm25.npz")

    @cached_property
    def vectors(self) -> np.ndarray:
        return self._part(LOADERS["embeddings.npy"], "embeddings.npy")

    @cached_property
    def faiss(self) -> FaissDense:
        return self._part(LOADERS["faiss.index"], "faiss.index")

    @cached_property
    def centered(self) -> LanguageCentered:
        """FAISS candidates per chunk language, centred on that language (hybrid's dense side)."""
        return LanguageCentered(self.faiss, self.vectors, [c.lang for c in self.chunks])

    def verify(self) -> None:
        """Read every part and check that each holds one row per chunk (what doctor runs)."""
        rows = {
            "bm25.npz": lambda: self.bm25.n_chunks,
            "terms.jsonl": lambda: len(self.terms()),
            "embeddings.npy": lambda: len(self.vectors),
            "faiss.index": lambda: self.faiss.index.ntotal,
        }
        for name, count in rows.items():
            if (n := count()) != len(self.chunks):
                reason = f"{name}: {n} rows for {len(self.chunks)} chunks"
                raise gens.read_error(self.generation.parent, self.generation.name, reason)

    @cached_property
    def embedder(self) -> Embedder:
        """The current embedder, which must be the one the index was built with."""
        return self.require_embedder(resolve_embedder())

    def require_embedder(self, current: Embedder) -> Embedder:
        built = self.manifest["embedder"]
        if current.id != built:
            directory = self.generation.parent
            raise UserError(
                f"index at {directory} was built with embedder '{built}' but the current "
                f"embedder is '{current.id}'; use that embedder or {gens.rebuild_hint(directory)}"
            )
        return current

    def terms(self) -> list[list[str]]:
        return self._part(lambda path: gens.read_terms(path, len(self.chunks)), "terms.jsonl")

    def search(self, query: str, k: int = 5, retriever: Retriever = "hybrid") -> list[Hit]:
        """The k best chunks for `query`; a query naming its notes' language ("in my Korean
        notes") is searched in chunks of that language only (retrieval.scope)."""
        among = self._scope(query)
        if retriever == "bm25":
            ranked = self._lexical(query, k, among)
        elif retriever in ("dense", "faiss"):
            ranked = self._dense(query, k, retriever, among)
        else:
            weight = hybrid.dense_weight(query, self.embedder.languages)
            lexical = self._lexical(query, hybrid.DEPTH, among)
            # the embedder loads only when its ranking can count
            needed = weight > 0 or not lexical
            dense = self._dense(query, hybrid.DEPTH, "centered", among) if needed else []
            ranked = hybrid.fuse(lexical, dense, weight, k)
        return [Hit(rank, score, self.chunks[i]) for rank, (i, score) in enumerate(ranked, 1)]

    def _scope(self, query: str) -> np.ndarray | None:
        """A mask of the chunks in the language the query names; None when it names none or
        the index holds no chunk in it."""
        named = named_language(query)
        if named is None:
            return None
        mask = np.array([c.lang == named for c in self.chunks], dtype=bool)
        return mask if mask.any() else None

    def _lexical(self, query: str, k: int, among: np.ndarray | None) -> list[tuple[int, float]]:
        if among is None:
            return self.bm25.top(tokenize(query), k)
        ranked = self.bm25.top(tokenize(query), len(self.chunks))
        return [(i, s) for i, s in ranked if among[i]][:k]

    def _dense(
        self,
        query: str,
        k: int,
        retriever: Retriever | Literal["centered"],
        among: np.ndarray | None = None,
    ) -> list[tuple[int, float]]:
        if not self.chunks:
            return []
        vector = embed([query], self.embedder, kind="query")[0]
        if retriever == "centered":
            return self.centered.top(vector, k, among)
        dense = ExactDense(self.vectors) if retriever == "dense" else self.faiss
        return dense.top(vector, k, among)
