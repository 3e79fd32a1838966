"""The PostgreSQL index store: search a generation published into PostgreSQL + pgvector with
the same `search(query, k, retriever) -> list[Hit]` as the file store's Index, and the same
ranking. The scoring is the file store's own code: BM25 (retrieval.bm25) over the postings
of the query's terms read from the database, hybrid fusion (retrieval.hybrid), language
scope (retrieval.scope) and language centring (retrieval.dense); pgvector's HNSW index
(cosine) finds the dense neighbours, whose inner products are then computed here from the
stored float32 embeddings as the file store computes them.

A PgIndex stays on the generation that was newest when it was opened, whatever is published
later; once two newer ones have been published it is dropped, and a search says to run the
command again. Writing: retrieval.store.postgres_publish; layout: postgres_schema.
"""

from dataclasses import dataclass
from functools import cached_property
from types import TracebackType
from typing import Literal

import numpy as np
import psycopg
from psycopg import Connection, sql
from scipy import sparse

from retrieval import hybrid
from retrieval.bm25 import BM25
from retrieval.chunking import Chunk
from retrieval.dense import HNSW_EF_SEARCH, LanguageCentered
from retrieval.embedders.embedder import Embedder, embed, resolve_embedder
from retrieval.errors import UserError
from retrieval.scope import named_language
from retrieval.store import postgres_schema as pgs
from retrieval.store.generations import GenerationReplaced
from retrieval.store.index import Hit, Retriever
from retrieval.store.postgres_publish import publish
from retrieval.tokenize import tokenize

__all__ = ["PgIndex", "publish"]

MAX_EF_SEARCH = 1000  # pgvector's upper bound for hnsw.ef_search
Ranking = list[tuple[int, float]]


@dataclass(frozen=True)
class Generation:
    """The published generation row a reader is pinned to."""

    id: int
    embedder: str
    dimension: int
    chunks: int
    manifest: dict


class PgDense:
    """Dense neighbours of one generation from pgvector (HNSW, cosine, iterative scan so a
    language filter still yields k rows), scored by float32 inner product like ExactDense."""

    def __init__(self, conn: Connection, table: sql.Identifier, langs: np.ndarray) -> None:
        self.conn = conn
        self.table = table
        self.langs = langs

    def _filter(self, among: np.ndarray | None) -> tuple[sql.Composable, list]:
        """A WHERE clause for a boolean mask over the chunks: by language when the mask is
        exactly some languages' chunks (the only masks search makes), else by position."""
        if among is None or among.all():
            return sql.SQL(""), []
        chosen = sorted(set(self.langs[among].tolist()))
        if np.array_equal(among, np.isin(self.langs, chosen)):
            return sql.SQL("WHERE lang = ANY(%s)"), [chosen]
        return sql.SQL("WHERE pos = ANY(%s)"), [np.flatnonzero(among).tolist()]

    def top(self, query: np.ndarray, k: int, among: np.ndarray | None = None) -> Ranking:
        if k <= 0 or (among is not None and not among.any()):
            return []
        where, params = self._filter(among)
        ef = str(min(max(HNSW_EF_SEARCH, k), MAX_EF_SEARCH))
        statement = sql.SQL(
            "SELECT pos, embedding::text FROM {} {} ORDER BY embedding <=> %s::vector LIMIT %s"
        ).format(self.table, where)
        with self.conn.transaction():
            self.conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", [ef])
            self.conn.execute("SELECT set_config('hnsw.iterative_scan', 'strict_order', true)")
            rows = self.conn.execute(statement, [*params, _vector_text(query), k]).fetchall()
        if not rows:
            return []
        positions = [pos for pos, _ in rows]
        vectors = np.stack([_parse_vector(text) for _, text in rows])
        scores = vectors @ np.asarray(query, dtype=np.float32)
        ranked = sorted(zip(positions, scores.tolist(), strict=True), key=lambda r: (-r[1], r[0]))
        return ranked[:k]


class StoredCentered(LanguageCentered):
    """LanguageCentered with the per-language means read from the database (as published)
    instead of recomputed from every embedding; its `top` is the file store's."""

    def __init__(self, dense: PgDense, langs: np.ndarray, means: dict[str, np.ndarray]) -> None:
        self.dense = dense  # type: ignore[assignment]
        self.masks = {lang: langs == lang for lang in sorted(means)}
        self.means = means


def _vector_text(vector: np.ndarray) -> str:
    return "[" + ",".join(repr(v) for v in np.asarray(vector, dtype=np.float32).tolist()) + "]"


def _parse_vector(text: str) -> np.ndarray:
    return np.array(text[1:-1].split(","), dtype=np.float32)


class PgIndex:
    """One published generation of a PostgreSQL index schema, searched like Index."""

    def __init__(self, conn: Connection, schema: str, generation: Generation) -> None:
        self.conn = conn
        self.schema = schema
        self.generation = generation
        self.chunks_table = pgs.chunks_table(schema, generation.id)
        self.bm25_table = pgs.bm25_table(schema, generation.id)

    @classmethod
    def open(cls, dsn: str, schema: str = pgs.DEFAULT_SCHEMA) -> "PgIndex":
        """The newest published generation of `schema` (reads its small parts now)."""
        conn = psycopg.connect(dsn, autocommit=True)
        try:
            pgs.read_version(conn, schema)
            index = cls(conn, schema, _newest(conn, schema))
            index._guarded(lambda: (index.langs, index.means))
            return index
        except BaseException:
            conn.close()
            raise

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "PgIndex":
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def manifest(self) -> dict:
        return self.generation.manifest

    @property
    def docs(self) -> dict[str, str]:
        return self.manifest["documents"]

    @cached_property
    def langs(self) -> np.ndarray:
        """Each chunk's language, by position."""
        rows = self.conn.execute(
            sql.SQL("SELECT lang FROM {} ORDER BY pos").format(self.chunks_table)
        )
        return np.array([lang for (lang,) in rows.fetchall()], dtype=object)

    @cached_property
    def means(self) -> dict[str, np.ndarray]:
        rows = self.conn.execute(
            sql.SQL("SELECT lang, mean FROM {} WHERE generation = %s").format(
                pgs.table(self.schema, "languages")
            ),
            [self.generation.id],
        ).fetchall()
        return {lang: np.array(mean, dtype=np.float32) for lang, mean in rows}

    @cached_property
    def dense(self) -> PgDense:
        return PgDense(self.conn, self.chunks_table, self.langs)

    @cached_property
    def centered(self) -> StoredCentered:
        return StoredCentered(self.dense, self.langs, self.means)

    @cached_property
    def embedder(self) -> Embedder:
        """The current embedder, which must be the one the generation was built with."""
        current = resolve_embedder()
        if current.id != self.generation.embedder:
            raise UserError(
                f"PostgreSQL index '{self.schema}' was built with embedder "
                f"'{self.generation.embedder}' but the current embedder is '{current.id}'; "
                "use that embedder or ingest again"
            )
        return current

    def bm25(self, query_terms: list[str]) -> BM25:
        """BM25 restricted to the query's terms: their postings and idf, as stored."""
        rows = self.conn.execute(
            sql.SQL("SELECT term, idf, chunks, weights FROM {} WHERE term = ANY(%s)").format(
                self.bm25_table
            ),
            [sorted(set(query_terms))],
        ).fetchall()
        lengths = [len(chunks) for _, _, chunks, _ in rows]
        indptr = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        indices = np.array([p for _, _, chunks, _ in rows for p in chunks], dtype=np.int32)
        data = np.array([w for _, _, _, weights in rows for w in weights], dtype=np.float64)
        shape = (self.generation.chunks, len(rows))
        matrix = sparse.csc_matrix((data, indices, indptr), shape=shape)
        idf = np.array([idf for _, idf, _, _ in rows], dtype=np.float64)
        return BM25([term for term, *_ in rows], matrix, idf)

    def search(self, query: str, k: int = 5, retriever: Retriever = "hybrid") -> list[Hit]:
        """The k best chunks for `query`, ranked as retrieval.store.Index ranks them."""
        ranked = self._guarded(lambda: self._rank(query, k, retriever))
        chunks = self._guarded(lambda: self.fetch([i for i, _ in ranked]))
        return [Hit(rank, score, chunks[i]) for rank, (i, score) in enumerate(ranked, 1)]

    def _rank(self, query: str, k: int, retriever: Retriever) -> Ranking:
        among = self._scope(query)
        if retriever == "bm25":
            return self._lexical(query, k, among)
        if retriever in ("dense", "faiss"):
            return self._dense(query, k, "dense", among)
        weight = hybrid.dense_weight(query, self.embedder.languages)
        lexical = self._lexical(query, hybrid.DEPTH, among)
        needed = weight > 0 or not lexical  # the embedder loads only when its ranking can count
        dense = self._dense(query, hybrid.DEPTH, "centered", among) if needed else []
        return hybrid.fuse(lexical, dense, weight, k)

    def _scope(self, query: str) -> np.ndarray | None:
        """As Index._scope: a mask of the chunks in the language the query names, if any."""
        named = named_language(query)
        if named is None:
            return None
        mask = self.langs == named
        return mask if mask.any() else None

    def _lexical(self, query: str, k: int, among: np.ndarray | None) -> Ranking:
        terms = tokenize(query)
        bm25 = self.bm25(terms)
        if among is None:
            return bm25.top(terms, k)
        ranked = bm25.top(terms, self.generation.chunks)
        return [(i, s) for i, s in ranked if among[i]][:k]

    def _dense(
        self, query: str, k: int, kind: Literal["dense", "centered"], among: np.ndarray | None
    ) -> Ranking:
        if not self.generation.chunks:
            return []
        vector = embed([query], self.embedder, kind="query")[0]
        if kind == "centered":
            return self.centered.top(vector, k, among)
        return self.dense.top(vector, k, among)

    def fetch(self, positions: list[int]) -> dict[int, Chunk]:
        """The chunks at these positions, with their metadata and exact offsets."""
        rows = self.conn.execute(
            sql.SQL(
                "SELECT pos, chunk_id, source, heading, page, text, start_char, end_char, lang "
                "FROM {} WHERE pos = ANY(%s)"
            ).format(self.chunks_table),
            [positions],
        ).fetchall()
        return {pos: Chunk(*fields) for pos, *fields in rows}

    def document_frequencies(self) -> tuple[list[str], np.ndarray]:
        """Every term of the generation and how many chunks hold it, in term order."""
        statement = sql.SQL("SELECT term, df FROM {} ORDER BY term").format(self.bm25_table)
        rows = self._guarded(lambda: self.conn.execute(statement).fetchall())
        return [term for term, _ in rows], np.array([df for _, df in rows], dtype=np.int64)

    def _guarded(self, read):
        """Run a read; a generation dropped by newer publishes becomes one line."""
        try:
            return read()
        except psycopg.errors.UndefinedTable:
            raise GenerationReplaced(
                f"the PostgreSQL index '{self.schema}' was replaced by newer ingests while it "
                "was being read; run the command again"
            ) from None


def _newest(conn: Connection, schema: str) -> Generation:
    row = conn.execute(
        sql.SQL(
            "SELECT id, embedder, dimension, chunks, manifest FROM {} ORDER BY id DESC LIMIT 1"
        ).format(pgs.table(schema, "generations"))
    ).fetchone()
    if row is None:
        raise pgs.NoIndex(f"no generation published in PostgreSQL schema '{schema}'")
    return Generation(*row)
