"""Builds a ready `Agent` from what the user chose: model, server, index and session store.

Named sessions are checkpointed in $BITRAG_HOME/sessions.sqlite, so `--session
NAME` resumes a conversation after a restart; without a name a conversation
lives in memory for as long as the process (one `chat`, one `ask`).
"""

import os
import sqlite3
from pathlib import Path

from langchain_core.tools import BaseTool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from agent.evidence import TermWeights
from agent.graph import Agent
from agent.runtime.llm import load_llm
from agent.runtime.model_file import checked_model
from agent.runtime.models import EMBEDDED_LANGUAGES
from agent.runtime.registry import load_entries
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


def reader_on(model: str | None, llm_url: str | None) -> bool:
    """Whether the model decides which passage answers (agent/reader.py): BITRAG_READER=on or
    off, else (auto) on for a local model other than the embedded SmolLM2-135M, whose picks
    were measured no better than chance; a server's model is unknown, so off."""
    from agent.runtime.model_file import embedded_model_path, resolve_model

    choice = os.environ.get("BITRAG_READER", "auto").strip().lower() or "auto"
    if choice not in ("on", "off", "auto"):
        raise UserError(f"BITRAG_READER is {choice!r}: use on, off or auto")
    if choice != "auto":
        return choice == "on"
    return not llm_url and resolve_model(model).resolve() != embedded_model_path().resolve()


# The types a checkpoint holds besides plain data; LangGraph only restores listed ones.
STATE_TYPES = [
    ("retrieval.chunking", "Chunk"),
    ("retrieval.store.index", "Hit"),
    ("agent.evidence", "Evidence"),
]


def session_store(session: str | None) -> BaseCheckpointSaver:
    serde = JsonPlusSerializer(allowed_msgpack_modules=STATE_TYPES)
    if session is None:
        return InMemorySaver(serde=serde)
    from langgraph.checkpoint.sqlite import SqliteSaver

    path = bitrag_home() / "sessions.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteSaver(sqlite3.connect(path, check_same_thread=False), serde=serde)


def make_agent(
    index: Index,
    model: str | None = None,
    llm_url: str | None = None,
    session: str | None = None,
    extra_tools: list[BaseTool] | None = None,
) -> Agent:
    """`extra_tools`: tools beside the local ones, e.g. MCP servers' (mcp_servers.client)."""
    if not llm_url:
        checked_model(model)  # a bad model file is named now, not when first needed
    context = Context(
        index=index,
        load_llm=lambda: load_llm(model, llm_url),
        weights=TermWeights(index.bm25),
        model_languages=model_languages(model, llm_url),
        reader=reader_on(model, llm_url),
        tools=[*local_tools(), *(extra_tools or [])],
    )
    return Agent(context, session_store(session))
