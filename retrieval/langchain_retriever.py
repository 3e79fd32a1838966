"""Each bitrag retriever as a LangChain `BaseRetriever`, for chains and LangGraph nodes."""

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from retrieval.store import Index, Retriever


class BitragRetriever(BaseRetriever):
    """Top-k chunks of a loaded index; metadata carries source, chunk_id, page, heading, score."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: Index
    retriever: Retriever = "hybrid"
    k: int = 5

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return [
            Document(
                page_content=hit.chunk.text,
                metadata={
                    "source": hit.chunk.source,
                    "chunk_id": hit.chunk.chunk_id,
                    "page": hit.chunk.page,
                    "heading": hit.chunk.heading,
                    "rank": hit.rank,
                    "score": hit.score,
                },
            )
            for hit in self.index.search(query, self.k, self.retriever)
        ]
