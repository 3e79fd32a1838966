"""One index generation on disk: its parts, reading them back, writing and publishing a new
one, the writer's lock, and the hints that recover from a corrupt or replaced generation.

Layout of an index directory:
    CURRENT        name of the live generation, replaced atomically as the last step
    gen-NNNNNN/    manifest.json  format version, embedder id, chunking params, per-document sha256
                   chunks.jsonl   chunk text and metadata      terms.jsonl   BM25 terms per chunk
                   bm25.npz       BM25 matrix                  embeddings.npy / faiss.index
    .lock          held while ingesting, so two writers never interleave
    cache/         embeddings of each finished file (retrieval.embed_cache), written as the
                   ingest goes, reused by the next one, pruned to the live generation's files

Keep-two-generations rule: after switching CURRENT, an ingest deletes every numbered
generation except the new one and the one CURRENT named before, so a reader that loaded the
previous generation can still read its lazily loaded parts. Names that are not gen-<number>
are ignored. When CURRENT's generation is corrupt but another one is intact, the error
points at that one instead of advising to delete the index.
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
from pathlib import Path
from pickle import UnpicklingError
from zipfile import BadZipFile

import numpy as np

from retrieval import chunking
from retrieval.atomic import write_bytes, write_json
from retrieval.bm25 import BM25
from retrieval.chunking import Chunk
from retrieval.dense import FaissDense
from retrieval.embedders.embedder import Embedder, embed
from retrieval.errors import UserError

FORMAT_VERSION = 4  # 4: outline-aware chunking (chunking.PARAMS version 2)
CHUNKING = chunking.PARAMS
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


def current_name(directory: Path) -> str | None:
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


def rebuild_hint(directory: Path) -> str:
    return f"delete {directory} and run `bitrag ingest PATH --index {directory}` to rebuild it"


class NewerFormat(UserError):
    """The index was written by a newer bitrag: healthy, but not readable by this one."""


def _check_format(version: object, directory: Path) -> None:
    """An older format is rebuilt; a newer one (a newer bitrag wrote it) is kept for it."""
    if version == FORMAT_VERSION:
        return
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise NewerFormat(
            f"index at {directory} has format {version}, newer than the format {FORMAT_VERSION} "
            "this bitrag reads: a newer bitrag wrote it, so upgrade bitrag to use it "
            "(do not delete or rebuild it)"
        )
    raise UserError(
        f"index at {directory} has format {version}, this bitrag reads "
        f"{FORMAT_VERSION}; {rebuild_hint(directory)}"
    )


def read_manifest_and_chunks(generation: Path) -> tuple[dict, list[Chunk]]:
    """One generation's manifest and chunks (its other parts load when first used)."""
    manifest = json.loads((generation / "manifest.json").read_text(encoding="utf-8"))
    if not isinstance(manifest, dict):
        raise ValueError("manifest.json is not a JSON object")
    _check_format(manifest.get("format_version"), generation.parent)
    with (generation / "chunks.jsonl").open(encoding="utf-8") as f:
        chunks = [Chunk(**json.loads(line)) for line in f]
    if len(chunks) != manifest["chunks"]:
        raise ValueError(f"chunks.jsonl holds {len(chunks)} of {manifest['chunks']} chunks")
    return manifest, chunks


def read_terms(path: Path, n_chunks: int) -> list[list[str]]:
    """terms.jsonl: one row of BM25 terms per chunk."""
    terms = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                terms.append(json.loads(line))
            except ValueError as exc:
                raise ValueError(f"line {n}: {exc}") from None
    if len(terms) != n_chunks:
        raise ValueError(f"{len(terms)} rows for {n_chunks} chunks")
    return terms


def _intact(generation: Path) -> bool:
    """Every part of the generation reads."""
    if not all((generation / part).is_file() for part in PARTS):
        return False
    try:
        _, chunks = read_manifest_and_chunks(generation)
        read_terms(generation / "terms.jsonl", len(chunks))
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
    return rebuild_hint(directory)


def read_error(directory: Path, name: str, reason: str) -> UserError:
    """Why generation `name` could not be read: replaced by newer ingests meanwhile, or corrupt."""
    if not (directory / name).is_dir() and current_name(directory) != name:
        return GenerationReplaced(
            f"the index at {directory} was replaced by newer ingests while it was being read; "
            "run the command again"
        )
    hint = _repair_hint(directory, name)
    return UserError(f"index at {directory} is corrupt ({reason}); {hint}")


def unwritable(directory: Path, exc: OSError) -> UserError:
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
        raise unwritable(directory, exc) from None


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    with _open_lock(directory) as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another bitrag process is writing the index at {directory}") from None
        yield


@dataclass
class IndexRows:
    """The chunks of a generation being built, with their BM25 terms and embeddings."""

    chunks: list[Chunk] = field(default_factory=list)
    terms: list[list[str]] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def write_generation(directory: Path, rows: IndexRows, docs: dict, embedder: Embedder) -> None:
    """Write every part of a new generation, point CURRENT at it, keep it and the one before."""
    existing = _generations(directory)
    number = int(existing[-1].name[4:]) + 1 if existing else 1
    gen = directory / f"gen-{number:06d}"
    previous = current_name(directory)
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
