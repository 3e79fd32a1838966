"""Which text calibrates an importance matrix: a fixed, documented sample of the indexed notes.

The sample takes the notes' chunks document by document in turn (every document's first
chunk, then every second chunk, ...; a document's chunks ordered by start offset, then chunk
id) until CALIBRATION_CHARS characters,
so each note contributes and a long one cannot crowd the others out. Chunks named in
`held_out` (the text a divergence is measured on) are never taken, so calibration and
evaluation text do not overlap; `lang` keeps one language's chunks ("ko" or "en"), for a
matrix calibrated on the other language than the notes asked about.
"""

import hashlib
from collections.abc import Iterable
from itertools import zip_longest
from pathlib import Path

from retrieval.chunking import Chunk
from retrieval.errors import UserError
from retrieval.store import Index

CALIBRATION_CHARS = 40_000  # about 10,000 tokens of English, two minutes on the 135M model


def sample(
    chunks: Iterable[Chunk],
    held_out: Iterable[str] = (),
    lang: str | None = None,
    chars: int = CALIBRATION_CHARS,
) -> list[Chunk]:
    """The calibration chunks, in the order they are evaluated (see the module docstring)."""
    excluded = set(held_out)
    by_source: dict[str, list[Chunk]] = {}
    for chunk in sorted(chunks, key=lambda c: (c.source, c.start, c.chunk_id)):
        if chunk.chunk_id not in excluded and (lang is None or chunk.lang == lang):
            by_source.setdefault(chunk.source, []).append(chunk)
    taken: list[Chunk] = []
    size = 0
    for row in zip_longest(*by_source.values()):
        for chunk in (c for c in row if c is not None):
            if size >= chars:
                return taken
            taken.append(chunk)
            size += len(chunk.text)
    return taken


def describe(chunks: list[Chunk]) -> str:
    """The dataset name an imatrix file records: size and a hash of the sampled text."""
    digest = hashlib.sha256("\n\n".join(c.text for c in chunks).encode("utf-8")).hexdigest()
    chars = sum(len(c.text) for c in chunks)
    return f"notes: {len(chunks)} chunks, {chars} chars, sha256 {digest[:16]}"


def notes_imatrix(src: Path, index: Index, out_dir: Path, progress=None) -> Path:
    """Compute the imatrix of the GGUF at `src` over the sample of `index`'s notes and save it
    as `out_dir/<src stem>.imatrix.dat` (llama.cpp's format, so llama-quantize reads it too)."""
    chunks = sample(index.chunks)
    if not chunks:
        raise UserError(f"the index at {index.generation.parent} holds no text to calibrate on")
    return from_chunks(src, chunks, Path(out_dir) / f"{Path(src).stem}.imatrix.dat", progress)


def from_chunks(src: Path, chunks: list[Chunk], path: Path, progress=None) -> Path:
    """Compute the imatrix of the GGUF at `src` over `chunks` (a `sample`) and write it to
    `path`, its dataset named by `describe`."""
    from eval.imatrix import collect, write

    dataset = describe(chunks)
    if progress:
        progress(f"computing an importance matrix from your notes ({dataset})")
    write(collect(src, [c.text for c in chunks], dataset=dataset), Path(path))
    return Path(path)
