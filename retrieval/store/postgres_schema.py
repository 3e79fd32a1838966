"""The PostgreSQL layout of the index store: one schema that bitrag creates and versions.

    schema_version       one row: the layout version (SCHEMA_VERSION) the schema holds
    generations          one row per published generation, inserted as the last step of the
                         transaction that loads it: manifest, embedder, dimension, BM25 params
    languages            per generation and chunk language: chunk count and mean embedding
                         (the centring of retrieval.dense.LanguageCentered)
    chunks_NNNNNN        one table per generation: chunk text, metadata, exact offsets, BM25
                         terms and the embedding (pgvector, one HNSW index per chunk
                         language: partial, WHERE lang = ..., cosine), stored
                         inline (STORAGE PLAIN, not TOASTed: an exact scan or the heap
                         fetch after an index scan reads each vector from its row)
    bm25_NNNNNN          one table per generation: per term its document frequency, Okapi idf
                         and postings (chunk positions and saturated term weights)

A table per generation gives each its own HNSW graph and embedding dimension, and lets an
old generation go with one DROP. Writers are serialized by a transaction-level advisory
lock keyed on the schema name.

Layout versions: 1 the first; 2 the embedding column STORAGE PLAIN and one partial HNSW
index per chunk language instead of one over all chunks (a layout-1 schema is read by
nothing newer: drop it and ingest again).
"""

from psycopg import Connection, sql

from retrieval.errors import UserError

SCHEMA_VERSION = 2
DEFAULT_SCHEMA = "bitrag"


class NoIndex(UserError):
    """The schema holds no bitrag index yet (no schema, or no generation published in it)."""


def lock_key(schema: str) -> sql.Composed:
    """The advisory lock that serializes writers of `schema` (and its creation)."""
    return sql.SQL("pg_advisory_xact_lock(hashtext({}))").format(sql.Literal(f"bitrag:{schema}"))


def table(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name)


def chunks_table(schema: str, generation: int) -> sql.Identifier:
    return table(schema, f"chunks_{generation:06d}")


def bm25_table(schema: str, generation: int) -> sql.Identifier:
    return table(schema, f"bm25_{generation:06d}")


_SHARED = [
    "CREATE SCHEMA IF NOT EXISTS {s}",
    "CREATE TABLE IF NOT EXISTS {s}.schema_version (version integer NOT NULL)",
    """CREATE TABLE IF NOT EXISTS {s}.generations (
        id bigint PRIMARY KEY,
        published_at timestamptz NOT NULL DEFAULT now(),
        format_version integer NOT NULL,
        embedder text NOT NULL,
        dimension integer NOT NULL,
        chunks integer NOT NULL,
        bm25 jsonb NOT NULL,
        manifest jsonb NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS {s}.languages (
        generation bigint NOT NULL,
        lang text NOT NULL,
        chunks integer NOT NULL,
        mean real[] NOT NULL,
        PRIMARY KEY (generation, lang))""",
]


def _version(conn: Connection, schema: str) -> int | None:
    """The layout version `schema` holds; None when there is no such schema yet."""
    found = conn.execute(
        "SELECT 1 FROM information_schema.tables WHERE table_schema = %s "
        "AND table_name = 'schema_version'",
        [schema],
    ).fetchone()
    if found is None:
        return None
    row = conn.execute(sql.SQL("SELECT version FROM {}").format(table(schema, "schema_version")))
    versions = [v for (v,) in row.fetchall()]
    return versions[0] if len(versions) == 1 else -1


def check_version(version: int | None, schema: str) -> None:
    """A missing schema has no index yet; a schema of another layout is not read."""
    if version is None:
        raise NoIndex(f"no bitrag index in PostgreSQL schema '{schema}': run `bitrag ingest`")
    if version > SCHEMA_VERSION:
        raise UserError(
            f"PostgreSQL schema '{schema}' has layout {version}, newer than the layout "
            f"{SCHEMA_VERSION} this bitrag reads: upgrade bitrag (do not drop the schema)"
        )
    if version != SCHEMA_VERSION:
        raise UserError(
            f"PostgreSQL schema '{schema}' has layout {version}, this bitrag reads "
            f"{SCHEMA_VERSION}: drop the schema and ingest again"
        )


def read_version(conn: Connection, schema: str) -> None:
    """Check, for a reader, that `schema` holds an index in this bitrag's layout."""
    check_version(_version(conn, schema), schema)


def write_check(conn: Connection, schema: str) -> None:
    """Check, before a long ingest, that a publish could write `schema`: new, or this layout."""
    version = _version(conn, schema)
    if version is not None:
        check_version(version, schema)


def ensure_schema(conn: Connection, schema: str) -> None:
    """Inside the writer's transaction, after its lock: create the shared tables when the
    schema is new, else check its layout version."""
    version = _version(conn, schema)
    if version is not None:
        check_version(version, schema)
        return
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    for statement in _SHARED:
        conn.execute(sql.SQL(statement).format(s=sql.Identifier(schema)))
    conn.execute(
        sql.SQL("INSERT INTO {} (version) VALUES (%s)").format(table(schema, "schema_version")),
        [SCHEMA_VERSION],
    )


def create_generation_tables(conn: Connection, schema: str, generation: int, dim: int) -> None:
    """The chunk and BM25 tables of one generation (their indexes come after the rows)."""
    conn.execute(
        sql.SQL(
            """CREATE TABLE {} (
            pos integer PRIMARY KEY,
            chunk_id text NOT NULL,
            source text NOT NULL,
            heading text NOT NULL,
            page integer,
            text text NOT NULL,
            start_char integer NOT NULL,
            end_char integer NOT NULL,
            lang text NOT NULL,
            terms text[] NOT NULL,
            embedding vector({}) NOT NULL)"""
        ).format(chunks_table(schema, generation), sql.Literal(dim))
    )
    # Out of line (the default for a row over 2 kB), each vector read costs a TOAST lookup:
    # 35 of 36 buffer reads of an exact scan at 10k chunks; the planner, seeing a small
    # heap, also prefers that scan to the HNSW index.
    conn.execute(
        sql.SQL("ALTER TABLE {} ALTER COLUMN embedding SET STORAGE PLAIN").format(
            chunks_table(schema, generation)
        )
    )
    conn.execute(
        sql.SQL(
            """CREATE TABLE {} (
            term text PRIMARY KEY,
            df integer NOT NULL,
            idf double precision NOT NULL,
            chunks integer[] NOT NULL,
            weights double precision[] NOT NULL)"""
        ).format(bm25_table(schema, generation))
    )


HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200


def index_generation(conn: Connection, schema: str, generation: int) -> None:
    """The HNSW indexes (cosine) over the embeddings, one per chunk language (a partial
    index: a language-scoped search walks only that language's graph), and the language
    index of a loaded table."""
    chunks = chunks_table(schema, generation)
    rows = conn.execute(sql.SQL("SELECT DISTINCT lang FROM {} ORDER BY lang").format(chunks))
    for (lang,) in rows.fetchall():
        conn.execute(
            sql.SQL(
                "CREATE INDEX ON {} USING hnsw (embedding vector_cosine_ops) "
                "WITH (m = {}, ef_construction = {}) WHERE lang = {}"
            ).format(
                chunks, sql.Literal(HNSW_M), sql.Literal(HNSW_EF_CONSTRUCTION), sql.Literal(lang)
            )
        )
    conn.execute(sql.SQL("CREATE INDEX ON {} (lang)").format(chunks))
    conn.execute(sql.SQL("ANALYZE {}").format(chunks))


def drop_generation(conn: Connection, schema: str, generation: int) -> None:
    for name in (chunks_table(schema, generation), bm25_table(schema, generation)):
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
    for shared in ("languages", "generations"):
        column = "generation" if shared == "languages" else "id"
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE {} = %s").format(
                table(schema, shared), sql.Identifier(column)
            ),
            [generation],
        )
