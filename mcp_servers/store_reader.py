"""The PostgreSQL store (`bitrag mcp serve ... --store URL`) as the MCP servers read it.

A server's tool calls run concurrently in worker threads, and one database connection cannot
serve two searches at once, so `SharedStore` gives each search a connection of its own from a
small pool, every one pinned to the same published generation; everything else (docs,
manifest, root, embedder, BM25 term statistics) is the first reader's. The retrieval server
also needs every chunk by id (get_chunk, documents): `all_chunks` reads them once.
"""

import queue
from typing import Any

import psycopg
from psycopg import sql

from retrieval.chunking import Chunk
from retrieval.store import postgres_schema as pgs
from retrieval.store.index import Hit, Retriever
from retrieval.store.postgres import PgIndex
from retrieval.store.postgres_open import Store, StoreIndex, open_store, translated


class SharedStore:
    """A StoreIndex that concurrent calls share: each search borrows a pooled connection."""

    def __init__(self, first: StoreIndex) -> None:
        self.first = first
        self.store = first.store
        self._idle: queue.SimpleQueue[StoreIndex] = queue.SimpleQueue()
        self._idle.put(first)
        self._opened = [first]

    @classmethod
    def open(cls, store: Store) -> "SharedStore":
        return cls(open_store(store))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.first, name)

    @property
    def generation(self) -> int:
        return self.first.pg.generation.id

    def search(self, query: str, k: int = 5, retriever: Retriever = "hybrid") -> list[Hit]:
        try:
            reader = self._idle.get_nowait()
        except queue.Empty:
            reader = self._another()
        try:
            return reader.search(query, k, retriever)
        finally:
            self._idle.put(reader)

    def _another(self) -> StoreIndex:
        """One more reader of the first one's generation, on its own connection."""
        pg = self.first.pg
        with translated(self.store):
            conn = psycopg.connect(self.store.dsn, autocommit=True)
        reader = StoreIndex(PgIndex(conn, pg.schema, pg.generation), self.store)
        self._opened.append(reader)
        return reader

    def all_chunks(self) -> list[Chunk]:
        """Every chunk of the generation, in index order."""
        reader = self._idle.get()
        try:
            with translated(self.store):
                found = reader.pg.fetch(list(range(reader.pg.generation.chunks)))
        finally:
            self._idle.put(reader)
        return [found[pos] for pos in sorted(found)]

    def close(self) -> None:
        for reader in self._opened:
            reader.close()


def newest_generation(store: Store) -> int | None:
    """The newest generation published in the store (None when it cannot be read now)."""
    statement = sql.SQL("SELECT max(id) FROM {}").format(pgs.table(store.schema, "generations"))
    try:
        with psycopg.connect(store.dsn, autocommit=True) as conn:
            row = conn.execute(statement).fetchone()
    except psycopg.Error:
        return None
    return None if row is None else row[0]
