"""The on-disk index: manifest, chunks, BM25, embeddings and FAISS, one generation per ingest.

Layout of an index directory:
    CURRENT        name of the live generation, replaced atomically as the last step
    gen-NNNNNN/    manifest.json  format version, embedder id, chunking params, per-document sha256
                   chunks.jsonl   chunk text and metadata      terms.jsonl   BM25 terms per chunk
                   bm25.npz       BM25 matrix                  embeddings.npy / faiss.index
    .lock          held while ingesting, so two writers never interleave
A crash or kill mid-ingest leaves CURRENT pointing at the previous complete generation.
"""

import fcntl
import io
import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np

from retrieval import chunking, hybrid
from retrieval.atomic import write_bytes, write_json
from retrieval.bm25 import BM25
from retrieval.chunking import Chunk
from retrieval.dense import ExactDense, FaissDense
from retrieval.embedder import Embedder, embed, resolve_embedder
from retrieval.errors import UserError
from retrieval.loaders import DEFAULT_MAX_BYTES, Document, RawFile, iter_candidates, parse, read_raw
from retrieval.tokenize import tokenize

FORMAT_VERSION = 3
CHUNKING = {"max_chars": chunking.MAX_CHARS, "overlap": chunking.OVERLAP}
Retriever = Literal["bm25", "dense", "faiss", "hybrid"]
RETRIEVERS: tuple[Retriever, ...] = ("bm25", "dense", "faiss", "hybrid")
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    chunk: Chunk


@dataclass
class IngestReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    chunks: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _rebuild_hint(directory: Path) -> str:
    return f"delete {directory} and run `bitrag ingest PATH --index {directory}` to rebuild it"


class Index:
    """One loaded generation of an index directory."""

    def __init__(self, generation: Path, manifest: dict, chunks: list[Chunk]) -> None:
        self.generation = generation
        self.manifest = manifest
        self.chunks = chunks

    @property
    def docs(self) -> dict[str, str]:
        return self.manifest["documents"]

    @classmethod
    def load(cls, directory: Path) -> "Index":
        current = directory / "CURRENT"
        if not current.is_file():
            hint = f"run `bitrag ingest PATH --index {directory}`"
            raise UserError(f"no index at {directory}: {hint}")
        generation = directory / current.read_text().strip()
        try:
            manifest = json.loads((generation / "manifest.json").read_text(encoding="utf-8"))
            version = manifest.get("format_version")
            if version != FORMAT_VERSION:
                raise UserError(
                    f"index at {directory} has format {version}, this bitrag reads "
                    f"{FORMAT_VERSION}; {_rebuild_hint(directory)}"
                )
            with (generation / "chunks.jsonl").open(encoding="utf-8") as f:
                chunks = [Chunk(**json.loads(line)) for line in f]
        except (OSError, ValueError, TypeError, KeyError) as exc:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            hint = _rebuild_hint(directory)
            raise UserError(f"index at {directory} is corrupt ({reason}); {hint}") from None
        return cls(generation, manifest, chunks)

    def _part(self, loader: Callable[[Path], object], name: str):
        try:
            return loader(self.generation / name)
        except (OSError, ValueError, RuntimeError) as exc:
            directory = self.generation.parent
            raise UserError(
                f"index at {directory} is corrupt ({name}: {exc}); {_rebuild_hint(directory)}"
            ) from None

    @cached_property
    def bm25(self) -> BM25:
        return self._part(BM25.load, "bm25.npz")

    @cached_property
    def vectors(self) -> np.ndarray:
        return self._part(lambda p: np.load(p, mmap_mode="r"), "embeddings.npy")

    @cached_property
    def faiss(self) -> FaissDense:
        return self._part(lambda p: FaissDense.from_bytes(p.read_bytes()), "faiss.index")

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
                f"embedder is '{current.id}'; use that embedder or {_rebuild_hint(directory)}"
            )
        return current

    def terms(self) -> list[list[str]]:
        with (self.generation / "terms.jsonl").open(encoding="utf-8") as f:
            return [json.loads(line) for line in f]

    def search(self, query: str, k: int = 5, retriever: Retriever = "hybrid") -> list[Hit]:
        if retriever == "bm25":
            ranked = self.bm25.top(tokenize(query), k)
        elif retriever in ("dense", "faiss"):
            ranked = self._dense(query, k, retriever)
        else:
            weight = hybrid.dense_weight(query, self.embedder.languages)
            lexical = self.bm25.top(tokenize(query), hybrid.DEPTH)
            # the embedder (and torch) load only when its ranking can count
            needed = weight > 0 or not lexical
            dense = self._dense(query, hybrid.DEPTH, "faiss") if needed else []
            ranked = hybrid.fuse(lexical, dense, weight, k)
        return [Hit(rank, score, self.chunks[i]) for rank, (i, score) in enumerate(ranked, 1)]

    def _dense(self, query: str, k: int, retriever: Retriever) -> list[tuple[int, float]]:
        if not self.chunks:
            return []
        vector = embed([query], self.embedder)[0]
        dense = ExactDense(self.vectors) if retriever == "dense" else self.faiss
        return dense.top(vector, k)


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another bitrag process is writing the index at {directory}") from None
        yield


def _under(source: str, roots: list[Path]) -> bool:
    path = Path(source)
    return any(path == root or root in path.parents for root in roots)


@dataclass
class IndexRows:
    """The chunks of a generation being built, with their BM25 terms and embeddings."""

    chunks: list[Chunk] = field(default_factory=list)
    terms: list[list[str]] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)


def _scan(roots, old_docs, max_bytes, report, progress) -> tuple[dict[str, str], list[Document]]:
    """Hash every candidate file; parse only the new and changed ones."""
    files = list(iter_candidates(roots))
    docs: dict[str, str] = {}
    fresh: list[Document] = []
    for n, path in enumerate(files, 1):
        if progress:
            progress("reading", n, len(files))
        raw = read_raw(path.absolute(), max_bytes)
        if not isinstance(raw, RawFile):
            report.skipped.append({"path": raw.path, "reason": raw.reason})
            continue
        source = str(raw.path)
        if old_docs.get(source) == raw.sha256:
            docs[source] = raw.sha256
            report.unchanged += 1
            continue
        parsed = parse(raw)
        if not isinstance(parsed, Document):
            report.skipped.append({"path": parsed.path, "reason": parsed.reason})
            continue
        docs[source] = raw.sha256
        report.updated += source in old_docs
        report.added += source not in old_docs
        fresh.append(parsed)
    return docs, fresh


def ingest(
    paths: list[Path],
    directory: Path,
    max_bytes: int = DEFAULT_MAX_BYTES,
    progress: Progress | None = None,
) -> IngestReport:
    """Add, update or remove the documents under `paths`; unchanged ones keep their chunks."""
    roots = [p.absolute() for p in paths]
    for root in roots:
        if not root.exists():
            raise UserError(f"no such file or directory: {root}")
    embedder = resolve_embedder()
    with _locked(directory):
        old = Index.load(directory) if (directory / "CURRENT").is_file() else None
        if old:
            old.require_embedder(embedder)
        old_docs = old.docs if old else {}
        report = IngestReport()
        scanned, fresh = _scan(roots, old_docs, max_bytes, report, progress)
        report.removed = sum(1 for s in old_docs if _under(s, roots) and s not in scanned)
        if old and not fresh and not report.removed:  # nothing changed: keep the generation
            report.chunks = len(old.chunks)
            return report
        keep = {s: h for s, h in old_docs.items() if not _under(s, roots)}
        keep |= {s: h for s, h in scanned.items() if old_docs.get(s) == h}
        rows = _kept_rows(old, keep) if old else IndexRows()
        _add_fresh(rows, fresh, embedder, progress)
        report.chunks = len(rows.chunks)
        write_generation(directory, rows, keep | scanned, embedder)
        return report


def _kept_rows(old: Index, keep: dict[str, str]) -> IndexRows:
    positions = [i for i, c in enumerate(old.chunks) if c.source in keep]
    terms = old.terms()
    return IndexRows(
        [old.chunks[i] for i in positions],
        [terms[i] for i in positions],
        [np.asarray(old.vectors[positions])] if positions else [],
    )


def _add_fresh(rows: IndexRows, fresh: list[Document], embedder: Embedder, progress) -> None:
    new = [c for doc in fresh for c in chunking.chunk_document(doc)]
    texts = [f"{c.heading}\n{c.text}" if c.heading else c.text for c in new]
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress("embedding", done, len(new))

    rows.chunks += new
    rows.terms += [tokenize(t) for t in texts]
    if new:
        rows.vectors.append(embed(texts, embedder, step))


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def write_generation(directory: Path, rows: IndexRows, docs: dict, embedder: Embedder) -> None:
    """Write every part of a new generation, then point CURRENT at it and drop older ones."""
    existing = sorted(p.name for p in directory.glob("gen-*"))
    number = int(existing[-1].split("-")[1]) + 1 if existing else 1
    gen = directory / f"gen-{number:06d}"
    vectors = np.vstack(rows.vectors) if rows.vectors else embed([], embedder)

    def jsonl(items) -> bytes:
        return "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items).encode("utf-8")

    write_bytes(gen / "chunks.jsonl", jsonl(asdict(c) for c in rows.chunks))
    write_bytes(gen / "terms.jsonl", jsonl(rows.terms))
    BM25.build(rows.terms).save(gen / "bm25.npz")
    write_bytes(gen / "embeddings.npy", _npy_bytes(vectors))
    write_bytes(gen / "faiss.index", FaissDense.build(vectors).to_bytes())
    manifest = {
        "format_version": FORMAT_VERSION,
        "embedder": embedder.id,
        "chunking": CHUNKING,
        "chunks": len(rows.chunks),
        "documents": docs,
    }
    write_json(gen / "manifest.json", manifest)
    write_bytes(directory / "CURRENT", gen.name.encode())
    for name in existing:
        shutil.rmtree(directory / name, ignore_errors=True)


def open_index(directory: Path, default_corpus: Path | None = None) -> Index:
    """Load the index, first building it from `default_corpus` when there is none yet."""
    if default_corpus is not None and not (directory / "CURRENT").is_file():
        ingest([default_corpus], directory)
    return Index.load(directory)
