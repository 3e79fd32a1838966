"""`bitrag models`: the GGUF models bitrag knows (embedded, registered, installed packs)."""

import re
from collections.abc import Callable
from pathlib import Path

from agent.runtime import packs
from agent.runtime.model_file import embedded_model_path, inspect_gguf, sha256_of
from agent.runtime.registry import load_entries, save_entry
from retrieval.errors import UserError

EMBEDDED_NAME = "smollm2-135m-instruct"
# A registered name can never be mistaken for a file path (see model_file.resolve_model).
NAME = re.compile(r"(?!.*\.gguf$)[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.IGNORECASE)
# SmolLM2's tokenizer spends ~2 tokens per Korean character and the model does not read it.
EMBEDDED_LANGUAGES = ["en"]


def _describe(name: str, path: Path, languages: list[str], origin: str) -> dict:
    row = {"name": name, "path": str(path), "origin": origin, "languages": languages}
    try:
        info = inspect_gguf(path)
    except UserError as exc:
        return row | {"ok": False, "error": str(exc)}
    return row | {
        "ok": True,
        "bytes": info.size,
        "quant_type": info.file_type,
        "bits_per_weight": round(info.bits_per_weight, 4),
    }


def list_models() -> list[dict]:
    rows = [_describe(EMBEDDED_NAME, embedded_model_path(), EMBEDDED_LANGUAGES, "embedded")]
    for entry in load_entries():
        rows.append(
            _describe(entry["name"], Path(entry["path"]), entry["languages"], entry["origin"])
        )
    return rows


def add_model(
    path: Path,
    name: str | None = None,
    languages: list[str] | None = None,
    origin: str = "registered",
) -> dict:
    """Register a GGUF after the same checks a model gets before loading."""
    info = inspect_gguf(path.expanduser().absolute())
    name = name or info.path.stem
    if not NAME.fullmatch(name):
        raise UserError(
            f"model name {name!r} is not a simple name: use letters, digits, '.', '_' and '-' "
            "(not a path, not ending in .gguf), e.g. --name my-model"
        )
    entry = {
        "name": name,
        "path": str(info.path),
        "sha256": sha256_of(info.path),
        "languages": languages or [],
        "origin": origin,
    }
    if entry["name"] == EMBEDDED_NAME:
        raise UserError(f"'{EMBEDDED_NAME}' is the embedded model's name; pick another --name")
    save_entry(entry)
    return _describe(entry["name"], info.path, entry["languages"], origin)


def install_pack(name: str, progress: Callable[[str], None]) -> dict:
    pack = packs.get_pack(name)
    path = packs.install(name, progress)
    return add_model(path, pack.name, list(pack.languages), origin="pack")
