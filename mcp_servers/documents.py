"""Indexed documents as MCP resources: ``bitrag://document/<id>``, listed from the live index.

A provider (rather than resources registered once) so that documents added by an ingest show
up in ``resources/list`` without restarting the server. While the index is still being built,
the list is empty (after waiting up to ``LIST_WAIT_S``, in a worker thread).
"""

from collections.abc import Sequence
from pathlib import Path

import anyio
from fastmcp.resources import Resource, ResourceTemplate
from fastmcp.server.providers import Provider
from fastmcp.utilities.components import FastMCPComponent

from mcp_servers.loading import StillLoading
from mcp_servers.retrieval_service import RetrievalService

URI_PREFIX = "bitrag://document/"
LIST_WAIT_S = 10.0  # hosts list resources right after initialize: do not hold them long


class DocumentProvider(Provider):
    """One text resource per indexed document, plus a template for reading any of them by id."""

    def __init__(self, service: RetrievalService) -> None:
        super().__init__()
        self.service = service

    def _resource(self, doc_id: str, source: str) -> Resource:
        def read() -> str:
            return self.service.document_text(doc_id)

        return Resource.from_function(
            read,
            uri=URI_PREFIX + doc_id,
            name=Path(source).name,
            description=f"Indexed text of {source}, chunk by chunk with chunk ids.",
            mime_type="text/markdown",
        )

    async def get_tasks(self) -> Sequence[FastMCPComponent]:
        """None: documents are no background tasks (and the server asks for these as it starts,
        before the index is loaded)."""
        return []

    async def _list_resources(self) -> Sequence[Resource]:
        try:
            documents = await anyio.to_thread.run_sync(self.service.documents, LIST_WAIT_S)
        except StillLoading:
            return []
        return [self._resource(doc_id, source) for doc_id, source in documents]

    async def _list_resource_templates(self) -> Sequence[ResourceTemplate]:
        def read_document(doc_id: str) -> str:
            return self.service.document_text(doc_id)

        template = ResourceTemplate.from_function(
            read_document,
            uri_template=URI_PREFIX + "{doc_id}",
            name="document",
            description="An indexed document by id (see list_sources).",
            mime_type="text/markdown",
        )
        return [template]
