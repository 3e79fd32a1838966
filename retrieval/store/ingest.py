"""Ingest: scan the given paths, keep unchanged documents' rows, chunk, tokenize and embed
the new and changed ones, and publish the result as a new generation under the writer's lock.
A crash or kill mid-ingest leaves CURRENT at the previous complete generation and its
finished files' embeddings in cache/, so the next ingest re-embeds only the rest. An ingest
first checks that the folder takes new files, so a read-only folder is one line before any
embedding is done. A folder that cannot be listed is reported, and its indexed notes are kept
like unreadable files; a document that yields no chunks is reported, never counted as added."""

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from retrieval import chunking
from retrieval.chunking import Chunk
from retrieval.embed_cache import EmbedCache, FileTexts
from retrieval.embedders.embedder import resolve_embedder
from retrieval.errors import UserError
from retrieval.loaders import (
    DEFAULT_MAX_BYTES,
    Document,
    RawFile,
    Skipped,
    iter_candidates,
    parse,
    read_raw,
    resolved,
)
from retrieval.store.generations import IndexRows, locked, unwritable, write_generation
from retrieval.store.index import Index
from retrieval.tokenize import tokenize

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class IngestReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    chunks: int = 0
    embedded_files: int = 0  # files embedded by this ingest
    reused_files: int = 0  # files read back from cache/ (a killed ingest's work, a moved file)

    def as_dict(self) -> dict:
        return asdict(self)


def _under(source: str, roots: list[Path]) -> bool:
    path = resolved(Path(source))
    return any(path == root or root in path.parents for root in roots)


@dataclass
class _Scan:
    """What one ingest found under its roots: every document it keeps and the ones to parse."""

    old_docs: dict[str, str]
    chunked: set[str]  # old documents that have chunks (an older bitrag indexed some with none)
    report: IngestReport
    docs: dict[str, str] = field(default_factory=dict)  # source -> sha256
    owners: dict[str, str] = field(default_factory=dict)  # sha256 -> source taken first
    fresh: list[tuple[Document, list[Chunk]]] = field(default_factory=list)

    def skip(self, skipped: Skipped) -> None:
        """Report a file; one that is still there but unreadable now keeps its old chunks."""
        previous = self.old_docs.get(skipped.path)
        reason = skipped.reason
        if skipped.unreadable and previous:
            self._take(skipped.path, previous)
            reason = f"kept (unreadable now: {skipped.unreadable})"
        self.report.skipped.append({"path": skipped.path, "reason": reason})

    def add(self, raw: RawFile) -> None:
        source = str(raw.path)
        if raw.sha256 in self.owners:
            reason = f"duplicate of {self.owners[raw.sha256]}"
            self.report.skipped.append({"path": source, "reason": reason})
        elif self.old_docs.get(source) == raw.sha256 and source in self.chunked:
            self.report.unchanged += 1
            self._take(source, raw.sha256)
        else:
            self._parse(raw)

    def _parse(self, raw: RawFile) -> None:
        parsed = parse(raw)
        chunks = chunking.chunk_document(parsed) if isinstance(parsed, Document) else []
        if isinstance(parsed, Skipped):
            self.skip(parsed)
        elif not chunks:  # text that no chunk holds would be lost without a word
            self.skip(Skipped(parsed.source, "no indexable text (it yields no chunks)"))
        else:
            self.report.updated += parsed.source in self.old_docs
            self.report.added += parsed.source not in self.old_docs
            self.fresh.append((parsed, chunks))
            self._take(parsed.source, raw.sha256)

    def _take(self, source: str, sha256: str) -> None:
        self.docs[source] = sha256
        self.owners.setdefault(sha256, source)


def _scan(roots, old: Index | None, max_bytes, report, progress) -> _Scan:
    """Hash every candidate file; parse only the new and changed ones."""
    old_docs = old.docs if old else {}
    files = list(iter_candidates(roots, old_docs))
    scan = _Scan(old_docs, {c.source for c in old.chunks} if old else set(), report)
    for n, path in enumerate(files, 1):
        if progress:
            progress("reading", n, len(files))
        raw = path if isinstance(path, Skipped) else read_raw(path, max_bytes)
        if isinstance(raw, RawFile):
            scan.add(raw)
        else:
            scan.skip(raw)
    return scan


def ingest(
    paths: list[Path],
    directory: Path,
    max_bytes: int = DEFAULT_MAX_BYTES,
    progress: Progress | None = None,
) -> IngestReport:
    """Add, update or remove the documents under `paths`; unchanged ones keep their chunks."""
    for path in paths:
        if not path.exists():
            raise UserError(f"no such file or directory: {path.absolute()}")
    roots = [resolved(p) for p in paths]
    embedder = resolve_embedder()
    with locked(directory):
        old = Index.load(directory) if (directory / "CURRENT").is_file() else None
        if old:
            old.require_embedder(embedder)
        old_docs = old.docs if old else {}
        report = IngestReport()
        scan = _scan(roots, old, max_bytes, report, progress)
        scanned, fresh = scan.docs, scan.fresh
        report.removed = sum(1 for s in old_docs if _under(s, roots) and s not in scanned)
        if old and not fresh and not report.removed:  # nothing changed: keep the generation
            report.chunks = len(old.chunks)
            return report
        keep = {s: h for s, h in old_docs.items() if not _under(s, roots)}
        keep |= {s: h for s, h in scanned.items() if old_docs.get(s) == h}
        rows = _kept_rows(old, keep) if old else IndexRows()
        cache = EmbedCache.for_index(directory, embedder)
        _add_fresh(rows, fresh, cache, scanned, progress)
        report.chunks = len(rows.chunks)
        report.embedded_files, report.reused_files = cache.embedded, cache.reused
        try:
            write_generation(directory, rows, keep | scanned, embedder)
        except OSError as exc:
            raise unwritable(directory, exc) from None
        cache.prune((keep | scanned).values())
        return report


def _kept_rows(old: Index, keep: dict[str, str]) -> IndexRows:
    positions = [i for i, c in enumerate(old.chunks) if c.source in keep]
    terms = old.terms()
    return IndexRows(
        [old.chunks[i] for i in positions],
        [terms[i] for i in positions],
        [np.asarray(old.vectors[positions])] if positions else [],
    )


def _embedded_text(chunk: Chunk) -> str:
    return chunking.indexed_text(chunk)


def _add_fresh(
    rows: IndexRows,
    fresh: list[tuple[Document, list[Chunk]]],
    cache: EmbedCache,
    hashes: dict[str, str],
    progress,
) -> None:
    """Tokenize and embed the new documents' chunks; finished files' embeddings go to cache/."""
    files = [
        FileTexts(hashes[doc.source], [_embedded_text(c) for c in chunks]) for doc, chunks in fresh
    ]
    new = [c for _, chunks in fresh for c in chunks]
    texts = [t for f in files for t in f.texts]
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress("embedding", done, len(new))

    rows.chunks += new
    rows.terms += [tokenize(t) for t in texts]
    if new:
        rows.vectors.append(cache.embed(files, step))


def open_index(directory: Path, default_corpus: Path | None = None) -> Index:
    """Load the index, first building it from `default_corpus` when there is none yet."""
    if default_corpus is not None and not (directory / "CURRENT").is_file():
        ingest([default_corpus], directory)
    return Index.load(directory)
