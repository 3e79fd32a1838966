"""The user's model registry, $BITRAG_HOME/models.json: GGUF files known by a short name."""

import json
from pathlib import Path

from retrieval.atomic import write_json
from retrieval.errors import UserError
from retrieval.paths import bitrag_home


def registry_path() -> Path:
    return bitrag_home() / "models.json"


def load_entries() -> list[dict]:
    """[{"name", "path", "sha256", "languages", "origin"}], empty when nothing is registered."""
    path = registry_path()
    if not path.is_file():
        return []
    try:
        return json.loads(path.read_text(encoding="utf-8"))["models"]
    except (ValueError, KeyError) as exc:
        raise UserError(f"model registry {path} is corrupt ({exc}); delete it, add again") from None


def save_entry(entry: dict) -> None:
    """Add or replace (by name) one entry."""
    entries = [e for e in load_entries() if e["name"] != entry["name"]] + [entry]
    path = registry_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {"models": entries})
    except OSError as exc:
        raise UserError(
            f"cannot register models in {path.parent}, which is not writable ({exc.strerror}): "
            "make it writable, set BITRAG_HOME to a folder you can write, or pass the file's "
            "path to --model instead of a name"
        ) from None


def path_of(name: str) -> Path | None:
    return next((Path(e["path"]) for e in load_entries() if e["name"] == name), None)


def entry_for(path: Path) -> dict | None:
    """The registered entry for this file (its sha256 as it was added), if any."""
    real = path.resolve()
    return next((e for e in load_entries() if Path(e["path"]).resolve() == real), None)
