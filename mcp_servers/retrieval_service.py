"""The retrieval server's state: one loaded index, shared by every concurrent call.

The index is loaded once, in a background thread started with the server (built from the
sample corpus first when the default index does not exist yet), so the server answers
``initialize`` at once; a call waits for it, bounded (``mcp_servers.loading``). Its heavy
parts (BM25 matrix, Kiwi, FAISS index, the embedder) load on the first search that needs them,
under a lock, so concurrent first calls do not each load them (16 threads building Kiwi at once
stalled every first call for about 5 s); later searches run in parallel without the lock. When
``bitrag ingest`` (or this server's own ``ingest`` tool) switches the index to a new generation,
the next call notices, at most every ``RECHECK_S`` seconds, and reloads. With a PostgreSQL
store (``store``) the index is the store's newest generation (``mcp_servers.store_reader``),
reloaded the same way when a newer one is published (its ``ingest`` tool is off). The
``ingest`` tool reads only inside its roots: a path whose real path leaves them, or a folder
holding a symlink that does, is refused.
"""

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcp_servers.errors import ToolArgumentError
from mcp_servers.index_build import ensure_index
from mcp_servers.loading import WAIT_S, Loading, Note
from retrieval.chunking import Chunk
from retrieval.embedders.embedder import embed
from retrieval.errors import UserError
from retrieval.store import RETRIEVERS, Index, Retriever, ingest
from retrieval.tokenize import tokenize

if TYPE_CHECKING:
    from mcp_servers.store_reader import SharedStore
    from retrieval.store.postgres_open import Store

RECHECK_S = 2.0  # how often a call may look at CURRENT for a newer generation
MAX_K = 50
MAX_QUERY_CHARS = 2000
MAX_SHOWN = 5  # symlinks named in a refused ingest


def document_id(sha256: str) -> str:
    """A short, URI-safe id for a document: the start of its content hash."""
    return sha256[:16]


@dataclass
class _Loaded:
    index: "Index | SharedStore"
    by_id: dict[str, Chunk]
    by_source: dict[str, list[Chunk]]
    warm: set[str] = field(default_factory=set)  # parts already loaded: "bm25", "dense"


def _loaded(index: "Index | SharedStore", chunks: list[Chunk]) -> _Loaded:
    by_source: dict[str, list[Chunk]] = {}
    for chunk in chunks:
        by_source.setdefault(chunk.source, []).append(chunk)
    return _Loaded(index, {c.chunk_id: c for c in chunks}, by_source)


def hit_row(rank: int, score: float, chunk: Chunk) -> dict[str, Any]:
    """One search result, with the keys of `bitrag search --json` (and a few more)."""
    return {
        "rank": rank,
        "score": score,
        "source": chunk.source,
        "chunk_id": chunk.chunk_id,
        "text": chunk.text,
        "heading": chunk.heading,
        "page": chunk.page,
    }


class RetrievalService:
    """Search, chunks, documents and (optionally) ingest over one index directory."""

    def __init__(
        self,
        directory: Path,
        default_corpus: Path | None = None,
        ingest_roots: list[Path] | None = None,
        store: "Store | None" = None,
    ) -> None:
        self.directory = directory
        self.store = store
        self.ingest_roots = [r.expanduser().resolve() for r in ingest_roots or []]
        self._lock = threading.Lock()
        self._state: _Loaded
        self._generation = ""
        self._checked = time.monotonic()
        self._loading = Loading("the index", lambda note: self._first_load(default_corpus, note))

    # -- loading -------------------------------------------------------------------------

    def _first_load(self, default_corpus: Path | None, note: Note) -> None:
        if self.store is None:
            ensure_index(self.directory, default_corpus, note)
        note("loading it")
        self._reload()
        self._checked = time.monotonic()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the index is loaded (None: however long it takes)."""
        self._loading.get(timeout)

    @property
    def index(self) -> "Index | SharedStore":
        return self._current().index

    def _current(self, wait: float = WAIT_S) -> _Loaded:
        self._loading.get(wait)
        now = time.monotonic()
        if now - self._checked >= RECHECK_S:
            self._checked = now
            name = self._current_name()
            if name and name != self._generation:
                self._reload()
        return self._state

    def _current_name(self) -> str | None:
        if self.store is not None:
            from mcp_servers.store_reader import newest_generation

            newest = newest_generation(self.store)
            return None if newest is None else str(newest)
        try:
            return (self.directory / "CURRENT").read_text(encoding="ascii").strip()
        except (OSError, ValueError):
            return None

    def _reload(self) -> None:
        with self._lock:
            if self.store is not None:
                from mcp_servers.store_reader import SharedStore

                shared = SharedStore.open(self.store)
                state, name = _loaded(shared, shared.all_chunks()), str(shared.generation)
            else:
                index = Index.load(self.directory)
                state, name = _loaded(index, index.chunks), index.generation.name
            self._state, self._generation = state, name

    def _warm(self, state: _Loaded, retriever: str) -> None:
        """Load the parts this retriever needs once, under the lock."""
        needed = {"bm25"} if retriever == "bm25" else {"bm25", "dense"}
        if needed <= state.warm:
            return
        with self._lock:
            index = state.index
            files = isinstance(index, Index)  # a store's parts are in the database
            if "bm25" not in state.warm:
                if files:
                    _ = index.bm25
                tokenize("한국어 warm up")  # loads Kiwi once, not once per concurrent thread
                state.warm.add("bm25")
            if "dense" in needed and "dense" not in state.warm:
                if files:
                    _ = index.faiss, index.vectors
                embed(["warm up"], index.embedder, kind="query")
                state.warm.add("dense")

    # -- tools ---------------------------------------------------------------------------

    def search(self, query: str, k: int = 5, retriever: str = "hybrid") -> dict[str, Any]:
        if not query.strip():
            raise ToolArgumentError("the query is empty")
        if len(query) > MAX_QUERY_CHARS:
            raise ToolArgumentError(f"the query is too long (at most {MAX_QUERY_CHARS} characters)")
        if retriever not in RETRIEVERS:
            raise ToolArgumentError(f"retriever must be one of {', '.join(RETRIEVERS)}")
        if not 1 <= k <= MAX_K:
            raise ToolArgumentError(f"k must be between 1 and {MAX_K}")
        state = self._current()
        chosen: Retriever = retriever  # type: ignore[assignment]
        self._warm(state, chosen)
        hits = state.index.search(query, k, chosen)
        return {"results": [hit_row(h.rank, h.score, h.chunk) for h in hits]}

    def get_chunk(self, chunk_id: str) -> dict[str, Any]:
        chunk = self._current().by_id.get(chunk_id)
        if chunk is None:
            raise ToolArgumentError(
                f"no chunk {chunk_id!r} in the index; chunk ids come from search results"
            )
        return {
            "chunk_id": chunk.chunk_id,
            "source": chunk.source,
            "heading": chunk.heading,
            "page": chunk.page,
            "start": chunk.start,
            "end": chunk.end,
            "lang": chunk.lang,
            "text": chunk.text,
        }

    def list_sources(self) -> dict[str, Any]:
        state = self._current()
        rows = [
            {
                "source": source,
                "name": Path(source).name,
                "sha256": sha256,
                "chunks": len(state.by_source.get(source, [])),
                "uri": f"bitrag://document/{document_id(sha256)}",
            }
            for source, sha256 in sorted(state.index.docs.items())
        ]
        return {"sources": rows, "documents": len(rows), "chunks": len(state.by_id)}

    def documents(self, wait: float = WAIT_S) -> list[tuple[str, str]]:
        """(document id, source) for every indexed document (waiting up to `wait` s for it)."""
        docs = self._current(wait).index.docs
        return [(document_id(sha), source) for source, sha in sorted(docs.items())]

    def document_text(self, doc_id: str) -> str:
        """A document as indexed: each chunk under its id, in order."""
        state = self._current()
        for source, sha256 in state.index.docs.items():
            if document_id(sha256) == doc_id:
                parts = [f"# {source}"]
                for chunk in state.by_source.get(source, []):
                    title = f" ({chunk.heading})" if chunk.heading else ""
                    parts.append(f"[{chunk.chunk_id}]{title}\n{chunk.text}")
                return "\n\n".join(parts) + "\n"
        raise ToolArgumentError(f"no document {doc_id!r}; list_sources shows the documents")

    def ingest(self, path: str) -> dict[str, Any]:
        real = self._ingest_target(path)
        self._loading.get()
        try:
            report = ingest([real], self.directory).as_dict()
        except UserError as exc:
            raise ToolArgumentError(str(exc)) from None
        self._reload()
        return report

    def _ingest_target(self, path: str) -> Path:
        """The real path to ingest: inside a root, and with no file under it linking out."""
        if not self.ingest_roots:
            raise ToolArgumentError(
                "ingest is off on this server: start it with --allow-ingest ROOT to allow it"
            )
        target = Path(path).expanduser()
        if not target.is_absolute():
            target = self.ingest_roots[0] / target
        real = target.resolve()
        allowed = ", ".join(str(r) for r in self.ingest_roots)
        if not _inside(real, self.ingest_roots):
            raise ToolArgumentError(f"{path} is outside the folders ingest may read ({allowed})")
        if not real.exists():
            raise ToolArgumentError(f"no such file or directory: {real}")
        if links := _links_out(real, self.ingest_roots):
            shown = ", ".join(links[:MAX_SHOWN]) + (" ..." if len(links) > MAX_SHOWN else "")
            raise ToolArgumentError(
                f"{path} holds {len(links)} symlink(s) leading outside the folders ingest may "
                f"read ({allowed}): {shown}; remove them, or ingest a folder without them"
            )
        return real


def _inside(real: Path, roots: list[Path]) -> bool:
    return any(real == root or root in real.parents for root in roots)


def _links_out(folder: Path, roots: list[Path]) -> list[str]:
    """The files ingest would read under `folder` (it skips hidden names and does not enter
    linked folders) whose real path leaves every root, relative to `folder`."""
    if not folder.is_dir():
        return []
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = Path(parent, name)
            if not name.startswith(".") and not _inside(Path(os.path.realpath(path)), roots):
                found.append(str(path.relative_to(folder)))
    return sorted(found)
