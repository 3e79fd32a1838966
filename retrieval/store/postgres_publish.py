"""Writing an index generation into PostgreSQL: one transaction per load.

`publish` takes a generation the file store already built (retrieval.store.Index) and copies
its chunks, BM25 postings, embeddings and per-language means into new tables of the schema
(retrieval.store.postgres_schema). The generation row is inserted last, in the same
transaction, so a reader sees either the previous generation or the whole new one. Two
writers are serialized by the schema's advisory lock, held until the transaction ends. After
publishing, every generation but the new one and the one before is dropped (the file store's
keep-two rule), so a reader that opened the previous generation can still search it.
"""

import numpy as np
import psycopg
from psycopg import Connection, sql
from psycopg.types.json import Jsonb

from retrieval import bm25 as bm25_module
from retrieval.bm25 import BM25
from retrieval.dense import ExactDense, LanguageCentered
from retrieval.store import postgres_schema as pgs
from retrieval.store.index import Index

CHUNK_COLUMNS = (
    "pos",
    "chunk_id",
    "source",
    "heading",
    "page",
    "text",
    "start_char",
    "end_char",
    "lang",
    "terms",
    "embedding",
)


def vector_text(row: np.ndarray) -> str:
    """pgvector's text form of one float32 row; each value reads back as the same float32."""
    return "[" + ",".join(repr(v) for v in row.tolist()) + "]"


def _copy(conn: Connection, target: sql.Identifier, columns: tuple[str, ...], rows) -> None:
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        target, sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def _chunk_rows(index: Index):
    terms = index.terms()
    for pos, chunk in enumerate(index.chunks):
        yield (
            pos,
            chunk.chunk_id,
            chunk.source,
            chunk.heading,
            chunk.page,
            chunk.text,
            chunk.start,
            chunk.end,
            chunk.lang,
            terms[pos],
            vector_text(np.asarray(index.vectors[pos], dtype=np.float32)),
        )


def postings(bm25: BM25):
    """(term, df, idf, chunk positions, saturated weights) per vocabulary term: the columns of
    the BM25 chunk-by-term matrix, exactly as retrieval.bm25 scores them."""
    matrix = bm25.saturation
    indptr = matrix.indptr
    for column, term in enumerate(bm25.vocab):
        lo, hi = int(indptr[column]), int(indptr[column + 1])
        yield (
            term,
            hi - lo,
            float(bm25.idf[column]),
            matrix.indices[lo:hi].tolist(),
            matrix.data[lo:hi].tolist(),
        )


def language_means(index: Index) -> dict[str, tuple[int, list[float]]]:
    """Per chunk language: its chunk count and mean embedding, computed as the file store's
    hybrid search computes them."""
    if not index.chunks:
        return {}
    langs = [c.lang for c in index.chunks]
    centered = LanguageCentered(ExactDense(index.vectors), index.vectors, langs)
    return {
        lang: (int(mask.sum()), centered.means[lang].tolist())
        for lang, mask in centered.masks.items()
    }


def _latest(conn: Connection, schema: str) -> int | None:
    row = conn.execute(sql.SQL("SELECT max(id) FROM {}").format(pgs.table(schema, "generations")))
    found = row.fetchone()
    return None if found is None else found[0]


def _write_generation(conn: Connection, schema: str, generation: int, index: Index) -> None:
    dim = int(index.vectors.shape[1])
    pgs.create_generation_tables(conn, schema, generation, dim)
    _copy(conn, pgs.chunks_table(schema, generation), CHUNK_COLUMNS, _chunk_rows(index))
    columns = ("term", "df", "idf", "chunks", "weights")
    _copy(conn, pgs.bm25_table(schema, generation), columns, postings(index.bm25))
    pgs.index_generation(conn, schema, generation)
    languages = [
        (generation, lang, count, mean) for lang, (count, mean) in language_means(index).items()
    ]
    _copy(conn, pgs.table(schema, "languages"), ("generation", "lang", "chunks", "mean"), languages)


def _insert_generation_row(conn: Connection, schema: str, generation: int, index: Index) -> None:
    """The publishing step: readers find the newest generation by this row."""
    params = {"k1": bm25_module.K1, "b": bm25_module.B, "epsilon": bm25_module.EPSILON}
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (id, format_version, embedder, dimension, chunks, bm25, manifest) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)"
        ).format(pgs.table(schema, "generations")),
        [
            generation,
            index.manifest["format_version"],
            index.manifest["embedder"],
            int(index.vectors.shape[1]),
            len(index.chunks),
            Jsonb(params),
            Jsonb(index.manifest),
        ],
    )


def _prune(conn: Connection, schema: str, keep: set[int]) -> None:
    rows = conn.execute(sql.SQL("SELECT id FROM {}").format(pgs.table(schema, "generations")))
    for (generation,) in rows.fetchall():
        if generation not in keep:
            pgs.drop_generation(conn, schema, generation)


def publish(dsn: str, index: Index, schema: str = pgs.DEFAULT_SCHEMA) -> int:
    """Load a file generation into `schema` as its next generation; returns its number."""
    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute(sql.SQL("SELECT {}").format(pgs.lock_key(schema)))
        pgs.ensure_schema(conn, schema)
        previous = _latest(conn, schema)
        generation = (previous or 0) + 1
        _write_generation(conn, schema, generation, index)
        _insert_generation_row(conn, schema, generation, index)
        _prune(conn, schema, {generation} | ({previous} if previous else set()))
    return generation
