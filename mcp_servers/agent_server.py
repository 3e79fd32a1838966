"""The ``agent`` MCP server: ``ask`` runs bitrag's whole agent graph and returns what
``bitrag ask --json`` prints (answer, mode, evidence, citations, abstained, route, tool, ...).

One ``AgentService`` per server: the index and the model are loaded once, in a background thread
started with the server (``mcp_servers.loading``: ``initialize`` is answered at once, a call
waits for them, bounded), and shared by every call. Calls run concurrently in FastMCP's worker
threads; the model itself is used by one call at a time (``agent.runtime.llm`` locks it), so
concurrent questions queue for generation while their retrieval runs in parallel. Until the
first call has finished, calls run one at a time too, so the lazily loaded parts (dense ranker,
e5 embedder) load once.

Without ``session`` a call stands alone; with one, the conversation is kept in
$BITRAG_HOME/sessions.sqlite, the same store as ``bitrag ask --session NAME``. The server uses
bitrag's local tools only: it does not load mcp.json (an agent server listed there would start
itself again). With a PostgreSQL store (``store``) the agent reads the store's newest
generation, as ``bitrag ask --store`` does, each search on a pooled connection of its own.
"""

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastmcp import FastMCP
from pydantic import Field

from mcp_servers.errors import ErrorMiddleware, ToolArgumentError, guarded
from mcp_servers.index_build import ensure_index
from mcp_servers.loading import Loading, Note

if TYPE_CHECKING:
    from retrieval.store.postgres_open import Store

INSTRUCTIONS = (
    "Answers questions about the user's own notes (offline, bitrag). Call `ask` with a "
    "question; the answer cites its evidence as [n], and `citations` name each source and "
    "chunk_id. mode is 'generated', 'quoted' (a verbatim sentence of the notes) or 'abstained' "
    "(the notes do not answer it). Pass `session` to ask follow-up questions."
)
MAX_QUESTION_CHARS = 2000
MAX_SESSION_CHARS = 100
ASK_TIMEOUT_S = 600.0


class _Loaded:
    """The index (built from the sample corpus first when absent), the model and the graph."""

    def __init__(
        self,
        directory: Path,
        default_corpus: Path | None,
        model: str | None,
        llm_url: str | None,
        note: Note,
        store: "Store | None" = None,
    ) -> None:
        from agent.assemble import make_agent
        from agent.graph import Agent
        from mcp_servers.store_reader import SharedStore
        from retrieval.store import Index
        from retrieval.tokenize import tokenize

        if store is None:
            ensure_index(directory, default_corpus, note)
        note("loading the index")
        index = Index.load(directory) if store is None else SharedStore.open(store)
        note("loading the model")
        self.sessions = make_agent(index, model, llm_url, session="mcp")  # SQLite store
        self.single = Agent(self.sessions.context, None)  # no store: each call stands alone
        _ = index.bm25, self.sessions.context.llm  # load them now, once
        tokenize("한국어 warm up")


class AgentService:
    """One loaded agent (index, model, graph) shared by every call of the server."""

    def __init__(
        self,
        directory: Path,
        default_corpus: Path | None = None,
        model: str | None = None,
        llm_url: str | None = None,
        store: "Store | None" = None,
    ) -> None:
        self._loading = Loading(
            "the agent",
            lambda note: _Loaded(directory, default_corpus, model, llm_url, note, store),
        )
        self._warm_lock = threading.Lock()
        self._warm = False

    @property
    def model_name(self) -> str:
        return self._loading.get().sessions.context.llm.name

    def ask(self, question: str, session: str | None = None) -> dict[str, Any]:
        question = question.strip()
        if not question:
            raise ToolArgumentError("the question is empty")
        if len(question) > MAX_QUESTION_CHARS:
            raise ToolArgumentError(
                f"the question is too long (at most {MAX_QUESTION_CHARS} characters)"
            )
        if session is not None and not (0 < len(session.strip()) <= MAX_SESSION_CHARS):
            raise ToolArgumentError(f"session must be 1 to {MAX_SESSION_CHARS} characters")
        loaded = self._loading.get()
        if self._warm:
            return _run(loaded, question, session)
        with self._warm_lock:
            result = _run(loaded, question, session)
            self._warm = True
            return result


def _run(loaded: _Loaded, question: str, session: str | None) -> dict[str, Any]:
    if session is None:
        return loaded.single.ask(question)
    return loaded.sessions.ask(question, session.strip())


def build_agent_server(service: AgentService) -> FastMCP:
    """A FastMCP server over one loaded agent."""
    server = FastMCP(
        "bitrag-agent",
        instructions=INSTRUCTIONS,
        middleware=[ErrorMiddleware()],
        mask_error_details=False,
    )

    @server.tool(annotations={"readOnlyHint": True, "openWorldHint": False}, timeout=ASK_TIMEOUT_S)
    @guarded
    def ask(
        question: Annotated[str, Field(description="A question about the user's notes.")],
        session: Annotated[
            str | None,
            Field(description="Conversation name: follow-ups resolve against earlier turns."),
        ] = None,
    ) -> dict[str, Any]:
        """Answer a question from the user's notes, quoting and citing them.

        Returns answer, mode (generated | quoted | abstained), evidence [{quote, source,
        chunk_id}], citations [{n, source, chunk_id}], abstained, route, tool and timings.
        """
        return service.ask(question, session)

    return server
