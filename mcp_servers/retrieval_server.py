"""The ``retrieval`` MCP server: search the user's indexed notes, read chunks and documents.

Tools: ``search``, ``get_chunk``, ``list_sources`` and ``ingest`` (refused unless the server was
started with ``--allow-ingest ROOT``). Resources: every indexed document as
``bitrag://document/<id>``. Prompt: ``answer_with_citations``, which puts the top chunks of a
question into a prompt that asks for an answer citing them as [n].
"""

from typing import Annotated, Any, Literal

from fastmcp import FastMCP
from pydantic import Field

from mcp_servers.documents import DocumentProvider
from mcp_servers.errors import ErrorMiddleware, guarded
from mcp_servers.retrieval_service import MAX_K, RetrievalService

INSTRUCTIONS = (
    "Searches the user's own notes indexed by bitrag (offline). Call `search` with a question "
    "or keywords; cite results by their `source` and `chunk_id`. `get_chunk` returns one chunk "
    "in full; `list_sources` lists the indexed documents. On a first start the index is built "
    "in the background: a call that says so succeeds when retried a little later."
)
RetrieverName = Literal["hybrid", "bm25", "dense", "faiss"]
READ_ONLY = {"readOnlyHint": True, "openWorldHint": False}
TIMEOUT_S = 60.0

CITATION_PROMPT = """Answer the question using only the numbered notes below.
Cite every statement with the note's number in square brackets, e.g. [1].
If the notes do not contain the answer, say that the notes do not say, and do not guess.

Question: {question}

Notes:
{notes}
"""


def build_retrieval_server(service: RetrievalService) -> FastMCP:
    """A FastMCP server over one loaded index."""
    server = FastMCP(
        "bitrag-retrieval",
        instructions=INSTRUCTIONS,
        middleware=[ErrorMiddleware()],
        providers=[DocumentProvider(service)],
        mask_error_details=False,
    )

    @server.tool(annotations=READ_ONLY, timeout=TIMEOUT_S)
    @guarded
    def search(
        query: Annotated[str, Field(description="A question or keywords.")],
        k: Annotated[int, Field(ge=1, le=MAX_K, description="How many chunks.")] = 5,
        retriever: Annotated[RetrieverName, Field(description="Ranking method.")] = "hybrid",
    ) -> dict[str, Any]:
        """Find the chunks of the user's notes that best match the query.

        Each result has rank, score, source (file path), chunk_id and text.
        """
        return service.search(query, k, retriever)

    @server.tool(annotations=READ_ONLY)
    @guarded
    def get_chunk(
        chunk_id: Annotated[str, Field(description="A chunk_id from search results.")],
    ) -> dict[str, Any]:
        """Return one chunk in full, with its source, heading, page and offsets."""
        return service.get_chunk(chunk_id)

    @server.tool(annotations=READ_ONLY)
    @guarded
    def list_sources() -> dict[str, Any]:
        """List the indexed documents with their chunk counts and resource URIs."""
        return service.list_sources()

    @server.tool(annotations={"readOnlyHint": False, "openWorldHint": False}, timeout=600.0)
    @guarded
    def ingest(
        path: Annotated[str, Field(description="A file or folder inside an allowed root.")],
    ) -> dict[str, Any]:
        """Add or update the documents under a path (only inside the server's allowed roots).

        Off unless the server was started with --allow-ingest ROOT.
        """
        return service.ingest(path)

    @server.prompt
    def answer_with_citations(question: str, k: int = 5) -> str:
        """A prompt holding the top chunks for a question, asking for an answer citing them."""
        rows = service.search(question, min(max(k, 1), MAX_K))["results"]
        notes = "\n\n".join(
            f"[{n}] ({row['chunk_id']})\n{row['text']}" for n, row in enumerate(rows, 1)
        )
        return CITATION_PROMPT.format(question=question, notes=notes or "(no matching notes)")

    return server
