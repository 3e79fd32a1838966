"""Builds a ready `Agent` from what the user chose: model, server, index and session store.

Named sessions are checkpointed in $BITRAG_HOME/sessions.sqlite, so `--session
NAME` resumes a conversation after a restart; without a name a conversation
lives in memory for as long as the process (one `chat`, one `ask`). The turns of one
named session run one at a time, across processes (a lock file per session under
$BITRAG_HOME/sessions.locks, waited for up to $BITRAG_SESSION_WAIT seconds), so two at
once both extend the conversation; a store that cannot be used is one line saying why.
"""

import fcntl
import hashlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from langchain_core.tools import BaseTool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from agent.evidence import TermWeights
from agent.graph import Agent
from agent.runtime.adapter import check_adapter
from agent.runtime.llm import load_llm, refuse_server_lora
from agent.runtime.model_file import checked_model
from agent.runtime.models import EMBEDDED_LANGUAGES
from agent.runtime.registry import load_entries, path_of
from agent.state import Context
from agent.tools import local_tools
from retrieval.errors import UserError
from retrieval.paths import bitrag_home
from retrieval.store import Index


def model_languages(model: str | None, llm_url: str | None) -> frozenset[str] | None:
    """What the model reads, from the registry; None when nobody has said."""
    from agent.runtime.model_file import embedded_model_path, resolve_model

    if llm_url:
        return None
    path = resolve_model(model).resolve()
    if path == embedded_model_path().resolve():
        return frozenset(EMBEDDED_LANGUAGES)
    for entry in load_entries():
        if Path(entry["path"]).resolve() == path and entry["languages"]:
            return frozenset(entry["languages"])
    return None


def reader_on(parameters: int | None) -> bool:
    """Whether the model decides which passage answers (agent/reader.py): BITRAG_READER=on or
    off, else (auto) on for a local model of READER_MIN_PARAMETERS weights or more (the count
    in its GGUF header); a server's model (None) is unknown, so off."""
    choice = os.environ.get("BITRAG_READER", "auto").strip().lower() or "auto"
    if choice not in ("on", "off", "auto"):
        raise UserError(f"BITRAG_READER is {choice!r}: use on, off or auto")
    if choice != "auto":
        return choice == "on"
    return parameters is not None and parameters >= READER_MIN_PARAMETERS


# As the reader, on the first 60 test questions (eval.bench.answers), Qwen2.5-Coder-1.5B hit
# the keywords 0.18 more often than quoting the evidence, 0.5B 0.14 less often (it named no
# passage for most answerable questions and never confirmed a draft); SmolLM2-135M's picks
# were no better than chance. Below this size the cut-off decides (dev: see the README).
READER_MIN_PARAMETERS = 1_000_000_000
# The types a checkpoint holds besides plain data; LangGraph only restores listed ones.
STATE_TYPES = [
    ("retrieval.chunking", "Chunk"),
    ("retrieval.store.index", "Hit"),
    ("agent.evidence", "Evidence"),
]
# The pack that answers by default once installed (`make run` installs it): measured above
# quoting the evidence on the test split (eval.bench.answers, paired interval above 0).
DEFAULT_PACK = "qwen2.5-coder-1.5b"
SESSIONS_FILE = "sessions.sqlite"
LOCKS_FOLDER = "sessions.locks"  # one lock file per session name
SQLITE_WAIT_S = 10.0  # for another process's write to the store; each takes milliseconds
TURN_WAIT_ENV = "BITRAG_SESSION_WAIT"
TURN_WAIT_S = 600.0  # for another process's turn in the same session


def _serde() -> JsonPlusSerializer:
    return JsonPlusSerializer(allowed_msgpack_modules=STATE_TYPES)


def session_store(session: str | None) -> BaseCheckpointSaver:
    """In memory without a session name; else the SQLite store under BITRAG_HOME, checked
    now (readable, writable, not held by another program) so that a problem is one line
    before the model loads."""
    if session is None:
        return InMemorySaver(serde=_serde())
    path = bitrag_home() / SESSIONS_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return _opened(path)
    except (sqlite3.Error, OSError) as exc:
        raise store_error(exc, path) from None


def _opened(path: Path) -> BaseCheckpointSaver:
    from langgraph.checkpoint.sqlite import SqliteSaver

    connection = sqlite3.connect(path, check_same_thread=False, timeout=SQLITE_WAIT_S)
    store = SqliteSaver(connection, serde=_serde())
    store.setup()  # creates the tables: fails on a file that is not a database
    connection.commit()
    connection.execute("BEGIN IMMEDIATE")  # fails when read-only or another writer holds it
    connection.rollback()
    return store


def store_error(exc: sqlite3.Error | OSError, path: Path) -> UserError:
    """The one line for a session store that cannot be used, saying what to do."""
    code = getattr(exc, "sqlite_errorname", "")
    if isinstance(exc, OSError) or code.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")):
        why = exc.strerror if isinstance(exc, OSError) else str(exc)
        return UserError(
            f"cannot keep sessions in {path.parent}, which is not writable ({why}): make it "
            f"(and {path.name} in it) writable, set BITRAG_HOME to a folder you can write, or "
            "ask without --session"
        )
    if code in ("SQLITE_BUSY", "SQLITE_LOCKED"):
        return UserError(
            f"the session store {path} is locked by another program, most likely another "
            f"bitrag (waited {SQLITE_WAIT_S:.0f} s): let it finish, or stop it, then ask again"
        )
    if code in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
        return UserError(
            f"the session store {path} is damaged ({exc}): move it aside "
            f"(mv {path} {path}.broken) and --session starts a new store"
        )
    return UserError(f"the session store {path} cannot be used ({exc})")


def _turn_wait() -> float:
    try:
        return float(os.environ.get(TURN_WAIT_ENV) or TURN_WAIT_S)
    except ValueError:
        raise UserError(f"{TURN_WAIT_ENV} must be a number of seconds") from None


@contextmanager
def turn_lock(session: str) -> Iterator[None]:
    """Holds the lock of a named session for one turn, so that turns of one session, in any
    process, run one after the other and each extends the checkpoint the last one wrote."""
    folder = bitrag_home() / LOCKS_FOLDER
    name = hashlib.sha256(session.encode("utf-8")).hexdigest()[:32]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = (folder / f"{name}.lock").open("a")
    except OSError as exc:
        raise store_error(exc, folder.parent / SESSIONS_FILE) from None
    with lock:
        wait = _turn_wait()
        deadline = time.monotonic() + wait
        while not _locked(lock):
            if time.monotonic() >= deadline:
                raise UserError(
                    f"session {session!r} is busy: another bitrag has been answering in it for "
                    f"over {wait:.0f} s; ask again when it is done, or use another --session "
                    f"(or wait longer: {TURN_WAIT_ENV}=SECONDS)"
                )
            time.sleep(0.05)
        yield  # closing the file releases the lock, as does the end of the process


def _locked(lock: IO[str]) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class SessionAgent(Agent):
    """An agent over the SQLite store: one turn of a session at a time (`turn_lock`), and a
    store that fails mid-turn is one line (`store_error`)."""

    def ask(
        self,
        question: str,
        session: str = "default",
        on_token: Callable[[str], None] | None = None,
        on_evidence: Callable[[list[dict]], None] | None = None,
    ) -> dict:
        with turn_lock(session):
            try:
                return super().ask(question, session, on_token, on_evidence)
            except sqlite3.Error as exc:
                raise store_error(exc, bitrag_home() / SESSIONS_FILE) from None


def session_history(session: str) -> list[dict]:
    """The turns (question, query, answer) the store keeps for a named session."""
    saved = session_store(session).get_tuple({"configurable": {"thread_id": session}})
    return list(saved.checkpoint["channel_values"].get("history", [])) if saved else []


def default_model(llm_url: str | None, lora: str | None) -> str | None:
    """The model `ask`, `chat` and the MCP agent answer with when none is named (no --model,
    BITRAG_MODEL, server URL or adapter): DEFAULT_PACK when it is installed, since on the test
    split it beat quoting the evidence with a paired interval above 0 (README); else None,
    the embedded model. An adapter keeps the embedded model, the student it is trained on by
    default."""
    if llm_url or lora or os.environ.get("BITRAG_MODEL") or os.environ.get("BITRAG_LLM_URL"):
        return None
    path = path_of(DEFAULT_PACK)
    return DEFAULT_PACK if path is not None and path.is_file() else None


def make_agent(
    index: Index,
    model: str | None = None,
    llm_url: str | None = None,
    session: str | None = None,
    extra_tools: list[BaseTool] | None = None,
    lora: str | None = None,
) -> Agent:
    """`extra_tools`: tools beside the local ones, e.g. MCP servers' (mcp_servers.client);
    `lora`: a LoRA adapter GGUF applied to the local model. Without a model named, the
    default is `default_model`'s."""
    refuse_server_lora(llm_url or os.environ.get("BITRAG_LLM_URL"), lora)
    model = model or default_model(llm_url, lora)
    parameters = None
    if not llm_url:
        info = checked_model(model)
        parameters = info.parameters  # a bad model file is named now, not when first needed
        if lora:
            check_adapter(Path(lora).expanduser(), info.path)  # and so is a bad adapter
    context = Context(
        index=index,
        load_llm=lambda: load_llm(model, llm_url, lora),
        weights=TermWeights(index.bm25),
        model_languages=model_languages(model, llm_url),
        reader=reader_on(parameters),
        tools=[*local_tools(), *(extra_tools or [])],
    )
    if session is None:
        return Agent(context, session_store(None))
    return SessionAgent(context, session_store(session))
