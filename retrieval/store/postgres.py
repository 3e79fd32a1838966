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
    """Dense neighbours of one generation from pgvector, scored by float32 inner product
    like ExactDense. Each chunk language has its own HNSW index (cosine, a partial index,
    postgres_schema.index_generation), so a search is one index scan per language of the
    mask, merged by score: the k best of a union of languages are among each language's
    k best. (One index over all chunks with a language filter had to walk past 14k chunks
    of the other language for a query near English ones: 130 ms at 100k chunks.)

    One round trip a search: the neighbours of every mask and language come back from one
    statement (a UNION ALL of ORDER BY ... LIMIT), the vectors in pgvector's binary form;
    the HNSW settings are set on the connection (autocommit, as PgIndex.open makes it) once,
    not in a transaction per query."""

    def __init__(self, conn: Connection, table: sql.Identifier, langs: np.ndarray) -> None:
        self.conn = conn
        self.table = table
        self.langs = langs
        # languages as small integers: which languages a mask is exactly takes two bincounts
        names, codes = np.unique(langs.astype(str), return_inverse=True)
        self.names, self.codes = names.tolist(), codes.reshape(-1)
        self.sizes = np.bincount(self.codes, minlength=len(self.names))
        self._ef: str | None = None  # hnsw.ef_search as last set on the connection

    def _filters(self, among: np.ndarray | None, name: str) -> list[tuple[sql.Composable, dict]]:
        """WHERE clauses whose rows together are a boolean mask over the chunks: one per
        language when the mask is exactly some languages' chunks (the only masks search
        makes), else one by position."""
        if among is None:
            among = np.ones(len(self.codes), dtype=bool)
        counts = np.bincount(self.codes[among], minlength=len(self.names))
        if np.array_equal(counts[counts > 0], self.sizes[counts > 0]):
            return [
                (sql.SQL("WHERE lang = {}").format(sql.Placeholder(f"{name}_{code}")),
                 {f"{name}_{code}": self.names[code]})
                for code in np.flatnonzero(counts)
            ]  # fmt: skip
        where = sql.SQL("WHERE pos = ANY({})").format(sql.Placeholder(name))
        return [(where, {name: np.flatnonzero(among).tolist()})]

    def _settings(self, k: int) -> None:
        ef = str(min(max(HNSW_EF_SEARCH, k), MAX_EF_SEARCH))
        if ef != self._ef:
            self.conn.execute(
                "SELECT set_config('hnsw.ef_search', %s, false), "
                "set_config('hnsw.iterative_scan', 'strict_order', false)",
                [ef],
            )
            self._ef = ef

    def top(self, query: np.ndarray, k: int, among: np.ndarray | None = None) -> Ranking:
        return self.top_each(query, k, [among])[0]

    def top_each(self, query: np.ndarray, k: int, masks: list[np.ndarray | None]) -> list[Ranking]:
        """`top(query, k, mask)` for each mask, in one statement."""
        wanted = [n for n, m in enumerate(masks) if k > 0 and (m is None or m.any())]
        found: list[Ranking] = [[] for _ in masks]
        if not wanted:
            return found
        parts, params = [], {"query": _vector_text(query), "k": k}
        for n in wanted:
            for where, values in self._filters(masks[n], f"among{n}"):
                params.update(values)
                parts.append(
                    sql.SQL(
                        "(SELECT {} AS part, pos, vector_send(embedding) FROM {} {} "
                        "ORDER BY embedding <=> %(query)s::vector LIMIT %(k)s)"
                    ).format(sql.Literal(n), self.table, where)
                )
        self._settings(k)
        statement = sql.SQL(" UNION ALL ").join(parts)
        # prepare=False: a prepared statement may switch to a generic plan, planned without
        # the query vector and language, that uses no HNSW index
        rows = self.conn.execute(statement, params, prepare=False, binary=True).fetchall()
        query32 = np.asarray(query, dtype=np.float32)
        for n in wanted:
            mine = [(pos, data) for part, pos, data in rows if part == n]
            if not mine:
                continue
            vectors = np.stack([_binary_vector(data) for _, data in mine])
            scores = vectors @ query32
            ranked = zip([pos for pos, _ in mine], scores.tolist(), strict=True)
            found[n] = sorted(ranked, key=lambda r: (-r[1], r[0]))[:k]
        return found


class StoredCentered(LanguageCentered):
    """LanguageCentered with the per-language means read from the database (as published)
    instead of recomputed from every embedding; its `top` is the file store's, with every
    language's neighbours fetched in one statement."""

    def __init__(self, dense: PgDense, langs: np.ndarray, means: dict[str, np.ndarray]) -> None:
        self.dense = dense  # type: ignore[assignment]
        self.masks = {lang: langs == lang for lang in sorted(means)}
        self.means = means

    def top(self, query: np.ndarray, k: int, among: np.ndarray | None = None) -> Ranking:
        """As LanguageCentered.top: each language's own k best, scored by cosine minus the
        query's mean cosine over that language, then the k best of all."""
        allowed = [mask if among is None else mask & among for mask in self.masks.values()]
        dense: PgDense = self.dense  # type: ignore[assignment]
        found = []
        for lang, ranked in zip(self.masks, dense.top_each(query, k, allowed), strict=True):
            offset = float(query @ self.means[lang])
            found += [(i, s - offset) for i, s in ranked]
        return sorted(found, key=lambda item: (-item[1], item[0]))[:k]


def _vector_text(vector: np.ndarray) -> str:
    return "[" + ",".join(repr(v) for v in np.asarray(vector, dtype=np.float32).tolist()) + "]"


def _binary_array(data: bytes, element: str) -> np.ndarray:
    """A one-dimensional array without NULLs in PostgreSQL's binary form (array_send): a
    header (dimensions, NULL flag, element type, then length and lower bound per
    dimension), then each element as its byte length and its big-endian value."""
    if int.from_bytes(data[:4], "big") == 0:  # no dimensions: an empty array
        return np.empty(0, dtype=element)
    items = np.frombuffer(data, dtype=[("length", ">i4"), ("value", element)], offset=20)
    return items["value"]


def _binary_vector(data: bytes) -> np.ndarray:
    """pgvector's binary form (vector_send): int16 dimension, int16 unused, then the values
    as big-endian float32; the same float32 values as the stored ones."""
    return np.frombuffer(data, dtype=">f4", offset=4).astype(np.float32)


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
        """BM25 restricted to the query's terms: their postings and idf, as stored. The
        postings arrays come in PostgreSQL's binary form (array_send), read by numpy: at
        100k chunks a query's terms hold tens of thousands of postings, and turning each
        into a Python number cost more than the rest of the search."""
        rows = self.conn.execute(
            sql.SQL(
                "SELECT term, idf, array_send(chunks), array_send(weights) FROM {} "
                "WHERE term = ANY(%s)"
            ).format(self.bm25_table),
            [sorted(set(query_terms))],
            binary=True,
        ).fetchall()
        chunks = [_binary_array(data, ">i4") for _, _, data, _ in rows]
        weights = [_binary_array(data, ">f8") for _, _, _, data in rows]
        indptr = np.concatenate([[0], np.cumsum([len(c) for c in chunks], dtype=np.int64)])
        indices = np.concatenate([np.empty(0, np.int32), *chunks]).astype(np.int32)
        data = np.concatenate([np.empty(0, np.float64), *weights]).astype(np.float64)
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
