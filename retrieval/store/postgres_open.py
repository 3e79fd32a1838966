"""The PostgreSQL store as the commands use it: which store (`--store` or BITRAG_STORE, a
libpq URL `postgresql://USER@HOST/DB?...` or key=value string; the schema from
`--store-schema`, BITRAG_STORE_SCHEMA or `bitrag`), publishing a file index to it, and
opening it for the agent.

`StoreIndex` is what the agent reads from an index (search, docs, manifest, root, and the
BM25 document frequencies of its question-term weights) served by a PgIndex, so that the
agent runs unchanged on either store. Every database problem is one UserError line that
names the server (never the password) and says what to do.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from retrieval.embedders.embedder import Embedder
from retrieval.errors import UserError
from retrieval.store import postgres_schema as pgs
from retrieval.store.index import Hit, Index, Retriever
from retrieval.store.postgres import PgIndex, publish

STORE_ENV = "BITRAG_STORE"
SCHEMA_ENV = "BITRAG_STORE_SCHEMA"
CONNECT_TIMEOUT_S = 10  # an unreachable host is one line after this, not a hang


@dataclass(frozen=True)
class Store:
    """A PostgreSQL index store: connection string, schema, and a printable `where`."""

    dsn: str
    schema: str
    where: str

    def hint(self) -> str:
        """The store options to repeat in a suggested command."""
        named = "" if self.schema == pgs.DEFAULT_SCHEMA else f" --store-schema {self.schema}"
        return f"--store URL{named}"


def store_from(option: str | None, schema: str | None) -> Store | None:
    """The store `--store` names, else BITRAG_STORE; None means the file store."""
    dsn = (option or os.environ.get(STORE_ENV) or "").strip()
    if not dsn:
        if schema:
            raise UserError(f"--store-schema needs a PostgreSQL store: pass --store or {STORE_ENV}")
        return None
    chosen = schema or os.environ.get(SCHEMA_ENV) or pgs.DEFAULT_SCHEMA
    return Store(_normalized(dsn), chosen, _where(dsn))


def _parsed(dsn: str) -> dict:
    try:
        return conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        reason = " ".join(str(exc).split())
        raise UserError(
            f"the store is not a PostgreSQL connection string ({reason}): use "
            "postgresql://USER@HOST/DB or 'host=HOST dbname=DB user=USER'"
        ) from None


def _normalized(dsn: str) -> str:
    """key=value form of the DSN, with a connect timeout unless it sets one."""
    extra = {} if "connect_timeout" in _parsed(dsn) else {"connect_timeout": CONNECT_TIMEOUT_S}
    return make_conninfo(dsn, **extra)


def _where(dsn: str) -> str:
    """'database DB on HOST:PORT' for messages (libpq's defaults left out, no password)."""
    params = _parsed(dsn)
    port = f":{params['port']}" if params.get("port") else ""
    database = f"database {params['dbname']} on " if params.get("dbname") else ""
    return f"{database}{params.get('host') or 'localhost'}{port}"


@contextmanager
def translated(store: Store) -> Iterator[None]:
    """Database errors as one line naming the store and what to do."""
    try:
        yield
    except pgs.NoIndex:
        raise UserError(
            f"no bitrag index in PostgreSQL schema '{store.schema}' of {store.where}: "
            f"run `bitrag ingest PATH {store.hint()}` first"
        ) from None
    except psycopg.OperationalError as exc:
        raise UserError(
            f"cannot use the PostgreSQL store at {store.where}: {_line(exc)}; check --store "
            f"(or {STORE_ENV}) and that the server is running"
        ) from None
    except psycopg.Error as exc:
        raise UserError(f"the PostgreSQL store at {store.where} failed: {_line(exc)}") from None


def _line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def check_writable(store: Store) -> None:
    """Before a long ingest: the server answers and the schema is new or of this layout."""
    with translated(store), psycopg.connect(store.dsn) as conn:
        pgs.write_check(conn, store.schema)


def publish_directory(store: Store, directory: Path) -> int:
    """Publish the current generation of a file index as the store's next generation."""
    index = Index.load(directory)
    try:
        with translated(store):
            return publish(store.dsn, index, store.schema)
    except UserError as exc:
        raise UserError(
            f"the index at {directory} is updated but the PostgreSQL store is not ({exc}); "
            "run the same `bitrag ingest` again to publish it"
        ) from None


def open_store(store: Store) -> "StoreIndex":
    with translated(store):
        return StoreIndex(PgIndex.open(store.dsn, store.schema), store)


class TermStats:
    """The BM25 statistics the agent's question-term weights read (agent.evidence.TermWeights):
    the vocabulary, each term's document frequency and the number of chunks."""

    def __init__(self, vocab: list[str], frequencies: np.ndarray, n_chunks: int) -> None:
        self.vocab = vocab
        self._frequencies = frequencies
        self.n_chunks = n_chunks

    def document_frequencies(self) -> np.ndarray:
        return self._frequencies


class StoreIndex:
    """A PgIndex with what the agent reads from a file Index besides `search`."""

    def __init__(self, pg: PgIndex, store: Store) -> None:
        self.pg = pg
        self.store = store

    @property
    def manifest(self) -> dict:
        return self.pg.manifest

    @property
    def docs(self) -> dict[str, str]:
        return self.pg.docs

    @cached_property
    def root(self) -> Path | None:
        """As Index.root: the deepest folder holding every indexed document."""
        folders = [str(Path(source).parent) for source in self.docs]
        return Path(os.path.commonpath(folders)) if folders else None

    @cached_property
    def bm25(self) -> TermStats:
        with translated(self.store):
            vocab, frequencies = self.pg.document_frequencies()
        return TermStats(vocab, frequencies, self.pg.generation.chunks)

    @property
    def embedder(self) -> Embedder:
        return self.pg.embedder

    def search(self, query: str, k: int = 5, retriever: Retriever = "hybrid") -> list[Hit]:
        with translated(self.store):
            return self.pg.search(query, k, retriever)

    def close(self) -> None:
        self.pg.close()
