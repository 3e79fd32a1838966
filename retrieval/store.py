"""The on-disk index: manifest, chunks, BM25, embeddings and FAISS, one generation per ingest.

Layout of an index directory:
    CURRENT        name of the live generation, replaced atomically as the last step
    gen-NNNNNN/    manifest.json  format version, embedder id, chunking params, per-document sha256
                   chunks.jsonl   chunk text and metadata      terms.jsonl   BM25 terms per chunk
                   bm25.npz       BM25 matrix                  embeddings.npy / faiss.index
    .lock          held while ingesting, so two writers never interleave
    cache/         embeddings of each finished file (retrieval.embed_cache), written as the
                   ingest goes, reused by the next one, pruned to the live generation's files
A crash or kill mid-ingest leaves CURRENT pointing at the previous complete generation, and
its embedding work in cache/: the next ingest re-embeds only the files left unfinished.

Keep-two-generations rule: after switching CURRENT, an ingest deletes every numbered
generation except the new one and the one CURRENT named before, so a reader that loaded the
previous generation can still read its lazily loaded parts. Names that are not gen-<number>
are ignored. A reader whose generation vanished between reading CURRENT and reading its files
reads CURRENT once more. When CURRENT's generation is corrupt but another one is intact, the
error points at that one instead of advising to delete the index. An ingest first checks that
the folder takes new files, so a read-only folder is one line before any embedding is done.
"""

import errno
import fcntl
import io
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from pickle import UnpicklingError
from typing import Literal
from zipfile import BadZipFile

import numpy as np

from retrieval import chunking, hybrid
from retrieval.atomic import write_bytes, write_json
from retrieval.bm25 import BM25
from retrieval.chunking import Chunk
from retrieval.dense import ExactDense, FaissDense, LanguageCentered
from retrieval.embed_cache import EmbedCache, FileTexts
from retrieval.embedders.embedder import Embedder, embed, resolve_embedder
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
from retrieval.scope import named_language
from retrieval.tokenize import tokenize

FORMAT_VERSION = 4  # 4: outline-aware chunking (chunking.PARAMS version 2)
CHUNKING = chunking.PARAMS
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
    embedded_files: int = 0  # files embedded by this ingest
    reused_files: int = 0  # files read back from cache/ (a killed ingest's work, a moved file)

    def as_dict(self) -> dict:
        return asdict(self)


PARTS = (
    "manifest.json",
    "chunks.jsonl",
    "terms.jsonl",
    "bm25.npz",
    "embeddings.npy",
    "faiss.index",
)
READ_ERRORS = (OSError, ValueError, TypeError, KeyError)
# How numpy, zipfile, pickle and faiss fail on a cut or damaged part file.
PART_ERRORS = (*READ_ERRORS, RuntimeError, EOFError, IndexError, BadZipFile, UnpicklingError)


LOADERS: dict[str, Callable[[Path], object]] = {
    "bm25.npz": BM25.load,
    "embeddings.npy": lambda p: np.load(p, mmap_mode="r"),
    "faiss.index": lambda p: FaissDense.from_bytes(p.read_bytes()),
}


class GenerationReplaced(UserError):
    """The generation being read was deleted because newer ingests replaced it."""


def _generations(directory: Path) -> list[Path]:
    """The numbered generation directories, oldest first; stray names like gen-abc are ignored."""
    found = [(int(p.name[4:]), p) for p in directory.glob("gen-*") if _numbered(p.name)]
    return [p for _, p in sorted(found)]


def _numbered(name: str) -> bool:
    return name.startswith("gen-") and name[4:].isascii() and name[4:].isdigit()


def _current_name(directory: Path) -> str | None:
    """The generation CURRENT names; None without CURRENT, a UserError when it names none."""
    current = directory / "CURRENT"
    if not current.is_file():
        return None
    try:
        raw = current.read_bytes()[:64].strip()
    except OSError as exc:
        raise UserError(f"cannot read {current}: {exc.strerror or exc}") from None
    name = raw.decode("ascii", "replace")
    if not _numbered(name):
        hint = _repair_hint(directory, name)
        raise UserError(
            f"index at {directory} is corrupt (CURRENT holds {raw[:20]!r}, not a generation "
            f"name like gen-000001); {hint}"
        )
    return name


def _rebuild_hint(directory: Path) -> str:
    return f"delete {directory} and run `bitrag ingest PATH --index {directory}` to rebuild it"


def _intact(generation: Path) -> bool:
    """Every part of the generation reads (without _part, whose errors come back here)."""
    if not all((generation / part).is_file() for part in PARTS):
        return False
    try:
        index = Index.read(generation)
        index._read_terms(generation / "terms.jsonl")
        for name, load in LOADERS.items():
            load(generation / name)
    except (UserError, *PART_ERRORS):
        return False
    return True


def _repair_hint(directory: Path, broken: str) -> str:
    """Go back to an intact generation when one is left; only otherwise rebuild."""
    for generation in reversed(_generations(directory)):
        if generation.name != broken and _intact(generation):
            return (
                f"its generation {generation.name} is intact: write `{generation.name}` into "
                f"{directory / 'CURRENT'} to use it, then run `bitrag ingest` again"
            )
    return _rebuild_hint(directory)


def _read_error(directory: Path, name: str, reason: str) -> UserError:
    """Why generation `name` could not be read: replaced by newer ingests meanwhile, or corrupt."""
    if not (directory / name).is_dir() and _current_name(directory) != name:
        return GenerationReplaced(
            f"the index at {directory} was replaced by newer ingests while it was being read; "
            "run the command again"
        )
    hint = _repair_hint(directory, name)
    return UserError(f"index at {directory} is corrupt ({reason}); {hint}")


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
        """The generation CURRENT names; if an ingest replaced it meanwhile, read CURRENT again."""
        try:
            return cls._load_current(directory)
        except GenerationReplaced:
            return cls._load_current(directory)

    @classmethod
    def _load_current(cls, directory: Path) -> "Index":
        name = _current_name(directory)
        if name is None:
            hint = f"run `bitrag ingest PATH --index {directory}`"
            raise UserError(f"no index at {directory}: {hint}")
        try:
            return cls.read(directory / name)
        except READ_ERRORS as exc:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise _read_error(directory, name, reason) from None

    @classmethod
    def read(cls, generation: Path) -> "Index":
        """One generation's manifest and chunks (its other parts load when first used)."""
        manifest = json.loads((generation / "manifest.json").read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("manifest.json is not a JSON object")
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            directory = generation.parent
            raise UserError(
                f"index at {directory} has format {version}, this bitrag reads "
                f"{FORMAT_VERSION}; {_rebuild_hint(directory)}"
            )
        with (generation / "chunks.jsonl").open(encoding="utf-8") as f:
            chunks = [Chunk(**json.loads(line)) for line in f]
        if len(chunks) != manifest["chunks"]:
            raise ValueError(f"chunks.jsonl holds {len(chunks)} of {manifest['chunks']} chunks")
        return cls(generation, manifest, chunks)

    def _part(self, loader: Callable[[Path], object], name: str):
        try:
            return loader(self.generation / name)
        except PART_ERRORS as exc:
            directory, generation = self.generation.parent, self.generation.name
            raise _read_error(directory, generation, f"{name}: {exc}") from None

    @cached_property
    def bm25(self) -> BM25:
        return self._part(LOADERS["bm25.npz"], "bm25.npz")

    @cached_property
    def vectors(self) -> np.ndarray:
        return self._part(LOADERS["embeddings.npy"], "embeddings.npy")

    @cached_property
    def faiss(self) -> FaissDense:
        return self._part(LOADERS["faiss.index"], "faiss.index")

    @cached_property
    def centered(self) -> LanguageCentered:
        """FAISS candidates per chunk language, centred on that language (hybrid's dense side)."""
        return LanguageCentered(self.faiss, self.vectors, [c.lang for c in self.chunks])

    def verify(self) -> None:
        """Read every part and check that each holds one row per chunk (what doctor runs)."""
        rows = {
            "bm25.npz": lambda: self.bm25.n_chunks,
            "terms.jsonl": lambda: len(self.terms()),
            "embeddings.npy": lambda: len(self.vectors),
            "faiss.index": lambda: self.faiss.index.ntotal,
        }
        for name, count in rows.items():
            if (n := count()) != len(self.chunks):
                reason = f"{name}: {n} rows for {len(self.chunks)} chunks"
                raise _read_error(self.generation.parent, self.generation.name, reason)

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
        return self._part(self._read_terms, "terms.jsonl")

    def _read_terms(self, path: Path) -> list[list[str]]:
        terms = []
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                try:
                    terms.append(json.loads(line))
                except ValueError as exc:
                    raise ValueError(f"line {n}: {exc}") from None
        if len(terms) != len(self.chunks):
            raise ValueError(f"{len(terms)} rows for {len(self.chunks)} chunks")
        return terms

    def search(self, query: str, k: int = 5, retriever: Retriever = "hybrid") -> list[Hit]:
        """The k best chunks for `query`; a query naming its notes' language ("in my Korean
        notes") is searched in chunks of that language only (retrieval.scope)."""
        among = self._scope(query)
        if retriever == "bm25":
            ranked = self._lexical(query, k, among)
        elif retriever in ("dense", "faiss"):
            ranked = self._dense(query, k, retriever, among)
        else:
            weight = hybrid.dense_weight(query, self.embedder.languages)
            lexical = self._lexical(query, hybrid.DEPTH, among)
            # the embedder loads only when its ranking can count
            needed = weight > 0 or not lexical
            dense = self._dense(query, hybrid.DEPTH, "centered", among) if needed else []
            ranked = hybrid.fuse(lexical, dense, weight, k)
        return [Hit(rank, score, self.chunks[i]) for rank, (i, score) in enumerate(ranked, 1)]

    def _scope(self, query: str) -> np.ndarray | None:
        """A mask of the chunks in the language the query names; None when it names none or
        the index holds no chunk in it."""
        named = named_language(query)
        if named is None:
            return None
        mask = np.array([c.lang == named for c in self.chunks], dtype=bool)
        return mask if mask.any() else None

    def _lexical(self, query: str, k: int, among: np.ndarray | None) -> list[tuple[int, float]]:
        if among is None:
            return self.bm25.top(tokenize(query), k)
        ranked = self.bm25.top(tokenize(query), len(self.chunks))
        return [(i, s) for i, s in ranked if among[i]][:k]

    def _dense(
        self,
        query: str,
        k: int,
        retriever: Retriever | Literal["centered"],
        among: np.ndarray | None = None,
    ) -> list[tuple[int, float]]:
        if not self.chunks:
            return []
        vector = embed([query], self.embedder, kind="query")[0]
        if retriever == "centered":
            return self.centered.top(vector, k, among)
        dense = ExactDense(self.vectors) if retriever == "dense" else self.faiss
        return dense.top(vector, k, among)


def _unwritable(directory: Path, exc: OSError) -> UserError:
    """One line for an index folder that cannot be written; nothing in it was changed."""
    cause = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UserError(
            f"the index folder {directory} is read-only ({cause}): make it writable to "
            "ingest into it, or pass --index with a writable folder"
        )
    return UserError(
        f"cannot write the index at {directory} ({cause}); its current generation is kept"
    )


def _open_lock(directory: Path) -> io.TextIOWrapper:
    """The lock file, after checking that the folder takes new files (before any embedding)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
        return (directory / ".lock").open("w")
    except OSError as exc:
        raise _unwritable(directory, exc) from None


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    with _open_lock(directory) as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another bitrag process is writing the index at {directory}") from None
        yield


def _under(source: str, roots: list[Path]) -> bool:
    path = resolved(Path(source))
    return any(path == root or root in path.parents for root in roots)


@dataclass
class IndexRows:
    """The chunks of a generation being built, with their BM25 terms and embeddings."""

    chunks: list[Chunk] = field(default_factory=list)
    terms: list[list[str]] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)


@dataclass
class _Scan:
    """What one ingest found under its roots: every document it keeps and the ones to parse."""

    old_docs: dict[str, str]
    report: IngestReport
    docs: dict[str, str] = field(default_factory=dict)  # source -> sha256
    owners: dict[str, str] = field(default_factory=dict)  # sha256 -> source taken first
    fresh: list[Document] = field(default_factory=list)

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
        elif self.old_docs.get(source) == raw.sha256:
            self.report.unchanged += 1
            self._take(source, raw.sha256)
        else:
            self._parse(raw)

    def _parse(self, raw: RawFile) -> None:
        parsed = parse(raw)
        if isinstance(parsed, Skipped):
            self.skip(parsed)
            return
        self.report.updated += parsed.source in self.old_docs
        self.report.added += parsed.source not in self.old_docs
        self.fresh.append(parsed)
        self._take(parsed.source, raw.sha256)

    def _take(self, source: str, sha256: str) -> None:
        self.docs[source] = sha256
        self.owners.setdefault(sha256, source)


def _scan(roots, old_docs, max_bytes, report, progress) -> _Scan:
    """Hash every candidate file; parse only the new and changed ones."""
    files = list(iter_candidates(roots))
    scan = _Scan(old_docs, report)
    for n, path in enumerate(files, 1):
        if progress:
            progress("reading", n, len(files))
        raw = read_raw(path, max_bytes)
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
    with _locked(directory):
        old = Index.load(directory) if (directory / "CURRENT").is_file() else None
        if old:
            old.require_embedder(embedder)
        old_docs = old.docs if old else {}
        report = IngestReport()
        scan = _scan(roots, old_docs, max_bytes, report, progress)
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
            raise _unwritable(directory, exc) from None
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
    rows: IndexRows, fresh: list[Document], cache: EmbedCache, hashes: dict[str, str], progress
) -> None:
    """Chunk, tokenize and embed the new documents; finished files' embeddings go to cache/."""
    chunked = [chunking.chunk_document(doc) for doc in fresh]
    files = [
        FileTexts(hashes[doc.source], [_embedded_text(c) for c in chunks])
        for doc, chunks in zip(fresh, chunked, strict=True)
    ]
    new = [c for chunks in chunked for c in chunks]
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


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def write_generation(directory: Path, rows: IndexRows, docs: dict, embedder: Embedder) -> None:
    """Write every part of a new generation, point CURRENT at it, keep it and the one before."""
    existing = _generations(directory)
    number = int(existing[-1].name[4:]) + 1 if existing else 1
    gen = directory / f"gen-{number:06d}"
    previous = _current_name(directory)
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
    for old in existing:
        if old.name != previous:  # readers may still be using the previous generation
            shutil.rmtree(old, ignore_errors=True)


def open_index(directory: Path, default_corpus: Path | None = None) -> Index:
    """Load the index, first building it from `default_corpus` when there is none yet."""
    if default_corpus is not None and not (directory / "CURRENT").is_file():
        ingest([default_corpus], directory)
    return Index.load(directory)
