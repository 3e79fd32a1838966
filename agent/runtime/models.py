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
    force: bool = False,
) -> dict:
    """Register a GGUF after the same checks a model gets before loading. A name that already
    names another file is refused unless `force`; then the row's "replaced" is that file."""
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
    replaced = _other_file(name, info.path)
    if replaced and not force:
        raise UserError(
            f"model name {name!r} already names {replaced}: pick another --name, or pass "
            f"--force to point it at {info.path}"
        )
    save_entry(entry)
    row = _describe(entry["name"], info.path, entry["languages"], origin)
    return (row | {"replaced": str(replaced)}) if replaced else row


def _other_file(name: str, path: Path) -> Path | None:
    """The file `name` is registered for, when that is not `path`."""
    for entry in load_entries():
        if entry["name"] == name and Path(entry["path"]).resolve() != path.resolve():
            return Path(entry["path"])
    return None


def install_pack(name: str, progress: Callable[[str], None]) -> dict:
    """Install a pack and register it under its own name (re-pointed if it named a file)."""
    pack = packs.get_pack(name)
    path = packs.install(name, progress)
    return add_model(path, pack.name, list(pack.languages), origin="pack", force=True)
