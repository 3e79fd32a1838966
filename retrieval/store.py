"""The on-disk index: a manifest and chunk store, written as a whole new generation per ingest.

Layout of an index directory:
    CURRENT            name of the live generation (replaced atomically, last)
    gen-NNNNNN/        manifest.json (format, chunking, per-document sha256) + chunks.jsonl
    .lock              held while ingesting, so two writers never interleave
A crash mid-ingest leaves CURRENT pointing at the previous, complete generation.
"""

import fcntl
import hashlib
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from retrieval import chunking
from retrieval.atomic import write_bytes, write_json
from retrieval.bm25 import BM25
from retrieval.chunking import Chunk
from retrieval.errors import UserError
from retrieval.loaders import Document, iter_files, load_text
from retrieval.tokenize import tokenize

FORMAT_VERSION = 1
CHUNKING = {"max_chars": chunking.MAX_CHARS, "overlap": chunking.OVERLAP}


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
    """A loaded index generation: its chunks, their BM25 terms and the documents' hashes."""

    def __init__(self, chunks: list[Chunk], terms: list[list[str]], docs: dict[str, str]) -> None:
        self.chunks = chunks
        self.terms = terms
        self.docs = docs
        self._bm25 = BM25(terms)

    @classmethod
    def load(cls, directory: Path) -> "Index":
        current = directory / "CURRENT"
        if not current.is_file():
            hint = f"run `bitrag ingest PATH --index {directory}`"
            raise UserError(f"no index at {directory}: {hint}")
        gen = directory / current.read_text().strip()
        try:
            manifest = json.loads((gen / "manifest.json").read_text(encoding="utf-8"))
            rows = [json.loads(line) for line in (gen / "chunks.jsonl").open(encoding="utf-8")]
        except (OSError, ValueError) as exc:
            raise UserError(
                f"index at {directory} is corrupt ({exc}); {_rebuild_hint(directory)}"
            ) from None
        if manifest.get("format_version") != FORMAT_VERSION:
            raise UserError(
                f"index at {directory} has format {manifest.get('format_version')}, "
                f"this bitrag reads {FORMAT_VERSION}; {_rebuild_hint(directory)}"
            )
        chunks = [Chunk(**{k: v for k, v in row.items() if k != "terms"}) for row in rows]
        return cls(chunks, [row["terms"] for row in rows], manifest["documents"])

    def search(self, query: str, k: int = 5) -> list[Hit]:
        top = self._bm25.top(tokenize(query), k)
        return [Hit(rank, score, self.chunks[i]) for rank, (i, score) in enumerate(top, 1)]


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another bitrag process is writing the index at {directory}") from None
        yield


def _previous(directory: Path) -> Index | None:
    return Index.load(directory) if (directory / "CURRENT").is_file() else None


def _sha256(data: str) -> str:
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def _under(source: str, roots: list[Path]) -> bool:
    path = Path(source)
    return any(path == root or root in path.parents for root in roots)


def ingest(paths: list[Path], directory: Path) -> IngestReport:
    """Add, update or remove the documents under `paths`, keeping chunks of unchanged ones."""
    roots = [p.resolve() for p in paths]
    for root in roots:
        if not root.exists():
            raise UserError(f"no such file or directory: {root}")
    with _locked(directory):
        old = _previous(directory)
        old_docs = old.docs if old else {}
        kept = {s: h for s, h in old_docs.items() if not _under(s, roots)}
        report = IngestReport()
        new_docs: dict[str, str] = {}
        fresh: list[Document] = []
        for path in iter_files(roots):
            loaded = load_text(path)
            if not isinstance(loaded, Document):
                report.skipped.append({"path": loaded.path, "reason": loaded.reason})
                continue
            digest = _sha256(loaded.text)
            new_docs[loaded.source] = digest
            previous = old_docs.get(loaded.source)
            if previous == digest:
                report.unchanged += 1
                continue
            report.updated += previous is not None
            report.added += previous is None
            fresh.append(loaded)
        report.removed = sum(1 for s in old_docs if _under(s, roots) and s not in new_docs)
        unchanged = {s for s, h in new_docs.items() if old_docs.get(s) == h} | set(kept)
        rows = (
            [(c, t) for c, t in zip(old.chunks, old.terms, strict=True) if c.source in unchanged]
            if old
            else []
        )
        for doc in fresh:
            for chunk in chunking.chunk_document(doc.source, doc.text):
                rows.append((chunk, tokenize(f"{chunk.heading}\n{chunk.text}")))
        report.chunks = len(rows)
        _write_generation(directory, rows, kept | new_docs)
        return report


def _write_generation(directory: Path, rows: list[tuple[Chunk, list[str]]], docs: dict) -> None:
    existing = sorted(p.name for p in directory.glob("gen-*"))
    number = int(existing[-1].split("-")[1]) + 1 if existing else 1
    gen = directory / f"gen-{number:06d}"
    lines = (json.dumps({**asdict(c), "terms": t}, ensure_ascii=False) for c, t in rows)
    write_bytes(gen / "chunks.jsonl", "".join(line + "\n" for line in lines).encode("utf-8"))
    manifest = {"format_version": FORMAT_VERSION, "chunking": CHUNKING, "documents": docs}
    write_json(gen / "manifest.json", manifest)
    write_bytes(directory / "CURRENT", gen.name.encode())
    for name in existing:
        shutil.rmtree(directory / name, ignore_errors=True)


def open_index(directory: Path, default_corpus: Path | None = None) -> Index:
    """Load the index, first building it from `default_corpus` when there is none yet."""
    if default_corpus is not None and not (directory / "CURRENT").is_file():
        ingest([default_corpus], directory)
    return Index.load(directory)
