"""Embeddings of finished files, kept under the index folder so a killed ingest resumes.

`cache/<key>.npz` holds the passage embeddings of one file's chunks, in chunk order, and a
digest of the chunk texts they were made from. The key is the sha256 of (cache version,
embedder id, chunking params, the file's sha256), so an entry is found only for the same
bytes embedded by the same model and cut the same way; the text digest makes an entry made
from other texts (a loader that reads the same bytes differently) count as missing too, as
does one that does not read back as one float32 row per chunk.

Each entry is written atomically (retrieval.atomic) as soon as every chunk of its file is
embedded, so a kill loses at most the file in progress (or the batch of up to BATCH chunks
it shares). Only an ingest holding the index lock writes or prunes entries; readers of the
index never look here. After a commit, entries of files the new generation does not hold
are deleted, so the cache mirrors the live generation plus an interrupted ingest's work.
"""

import hashlib
import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from zipfile import BadZipFile

import numpy as np

from retrieval import chunking
from retrieval.atomic import write_bytes
from retrieval.embedders.embedder import BATCH, Embedder, embed

CACHE_VERSION = 1
FOLDER = "cache"
ENTRY_ERRORS = (OSError, ValueError, KeyError, EOFError, BadZipFile)


@dataclass(frozen=True)
class FileTexts:
    """The chunk texts of one file, named by the sha256 of its bytes."""

    sha256: str
    texts: list[str]


def _digest(texts: list[str]) -> str:
    return hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode("utf-8")).hexdigest()


class EmbedCache:
    """Per-file embeddings of one index folder for one embedder; counts what it reused."""

    def __init__(self, folder: Path, embedder: Embedder) -> None:
        self.folder = folder
        self.embedder = embedder
        params = {
            "cache": CACHE_VERSION,
            "embedder": embedder.id,
            "chunking": chunking.PARAMS,
        }
        self._salt = json.dumps(params, sort_keys=True)
        self._writable = True
        self.reused = 0  # files whose embeddings were read back
        self.embedded = 0  # files embedded by this ingest

    @classmethod
    def for_index(cls, directory: Path, embedder: Embedder) -> "EmbedCache":
        return cls(directory / FOLDER, embedder)

    def path(self, sha256: str) -> Path:
        """Where the entry of a file with these bytes lives."""
        key = hashlib.sha256(f"{self._salt}\n{sha256}".encode()).hexdigest()
        return self.folder / f"{key}.npz"

    def get(self, item: FileTexts) -> np.ndarray | None:
        """The file's embeddings, or None when there is no usable entry for these texts."""
        try:
            with np.load(self.path(item.sha256), allow_pickle=False) as entry:
                if str(entry["digest"]) != _digest(item.texts):
                    return None
                vectors = entry["vectors"]
        except ENTRY_ERRORS:
            return None
        shaped = vectors.ndim == 2 and len(vectors) == len(item.texts)
        return vectors if shaped and vectors.dtype == np.float32 else None

    def put(self, item: FileTexts, vectors: np.ndarray) -> None:
        """Store a finished file; a folder that stops taking writes only costs resumability."""
        if not self._writable:
            return
        buffer = io.BytesIO()
        np.savez(buffer, vectors=vectors, digest=np.array(_digest(item.texts)))
        try:
            write_bytes(self.path(item.sha256), buffer.getvalue())
        except OSError:
            self._writable = False

    def embed(self, files: list[FileTexts], progress: Callable[[int], None]) -> np.ndarray:
        """One row per text of every file, in order: entries read back, the rest embedded."""
        files = [f for f in files if f.texts]
        found = [self.get(f) for f in files]
        missing = [f for f, vectors in zip(files, found, strict=True) if vectors is None]
        self.reused, self.embedded = len(files) - len(missing), len(missing)
        progress(sum(len(f.texts) for f, v in zip(files, found, strict=True) if v is not None))
        fresh = iter(self._embed_missing(missing, progress))
        return np.vstack([v if v is not None else next(fresh) for v in found])

    def _embed_missing(self, files: list[FileTexts], progress) -> Iterable[np.ndarray]:
        """Embed in batches across files; store each file as soon as its last chunk is done."""
        texts = [t for f in files for t in f.texts]
        pending: list[np.ndarray] = []
        waiting = iter(files)
        current = next(waiting, None)
        for start in range(0, len(texts), BATCH):
            pending.append(embed(texts[start : start + BATCH], self.embedder, progress))
            rows = np.vstack(pending)
            while current is not None and len(current.texts) <= len(rows):
                vectors, rows = rows[: len(current.texts)], rows[len(current.texts) :]
                self.put(current, vectors)
                yield vectors
                current = next(waiting, None)
            pending = [rows]

    def prune(self, held: Iterable[str]) -> None:
        """Delete entries (and temp files a kill left) of files the live generation lacks."""
        keep = {self.path(sha256).name for sha256 in held}
        try:
            leftovers = [p for p in self.folder.iterdir() if p.name not in keep]
        except OSError:
            return
        for path in leftovers:
            try:
                path.unlink()
            except OSError:
                pass
