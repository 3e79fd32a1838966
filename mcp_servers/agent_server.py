"""The ``agent`` MCP server: ``ask`` runs bitrag's whole agent graph and returns what
``bitrag ask --json`` prints (answer, mode, evidence, citations, abstained, route, tool, ...).

One ``AgentService`` per server: the index and the model are loaded once, when the server starts,
and shared by every call. Calls run concurrently in FastMCP's worker threads; the model itself is
used by one call at a time (``agent.runtime.llm`` locks it), so concurrent questions
queue for generation while their retrieval runs in parallel. Until the first call has finished,
calls run one at a time too, so the lazily loaded parts (dense ranker, e5 embedder) load once.

Without ``session`` a call stands alone; with one, the conversation is kept in
$BITRAG_HOME/sessions.sqlite, the same store as ``bitrag ask --session NAME``. The server uses
bitrag's local tools only: it does not load mcp.json (an agent server listed there would start
itself again).
"""

import threading
from pathlib import Path
from typing import Annotated, Any

from fastmcp import FastMCP
from pydantic import Field

from mcp_servers.errors import ErrorMiddleware, ToolArgumentError, guarded

INSTRUCTIONS = (
    "Answers questions about the user's own notes (offline, bitrag). Call `ask` with a "
    "question; the answer cites its evidence as [n], and `citations` name each source and "
    "chunk_id. mode is 'generated', 'quoted' (a verbatim sentence of the notes) or 'abstained' "
    "(the notes do not answer it). Pass `session` to ask follow-up questions."
)
MAX_QUESTION_CHARS = 2000
MAX_SESSION_CHARS = 100
ASK_TIMEOUT_S = 600.0


class AgentService:
    """One loaded agent (index, model, graph) shared by every call of the server."""

    def __init__(
        self,
        directory: Path,
        default_corpus: Path | None = None,
        model: str | None = None,
        llm_url: str | None = None,
    ) -> None:
        from agent.assemble import make_agent
        from agent.graph import Agent
        from retrieval.store import open_index
        from retrieval.tokenize import tokenize

        index = open_index(directory, default_corpus)
        self._sessions = make_agent(index, model, llm_url, session="mcp")  # SQLite store
        self._single = Agent(self._sessions.context, None)  # no store: each call stands alone
        _ = index.bm25, self._sessions.context.llm  # load them now, once
        tokenize("한국어 warm up")
        self._warm_lock = threading.Lock()
        self._warm = False

    @property
    def model_name(self) -> str:
        return self._sessions.context.llm.name

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
        if self._warm:
            return self._run(question, session)
        with self._warm_lock:
            result = self._run(question, session)
            self._warm = True
            return result

    def _run(self, question: str, session: str | None) -> dict[str, Any]:
        if session is None:
            return self._single.ask(question)
        return self._sessions.ask(question, session.strip())


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
