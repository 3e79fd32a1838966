"""The file index store: one generation per ingest under an index directory. `generations`
is the on-disk format (read, write, publish, lock, recover), `index` the search over a loaded
generation, `ingest` what builds the next one. A second store (a database) is a sibling of
these behind the same `Index.search` -> `Hit` interface. Imports only `retrieval`."""

from retrieval.store.generations import FORMAT_VERSION, IndexRows, write_generation
from retrieval.store.index import RETRIEVERS, Hit, Index, Retriever
from retrieval.store.ingest import IngestReport, ingest, open_index

__all__ = [
    "FORMAT_VERSION",
    "RETRIEVERS",
    "Hit",
    "Index",
    "IndexRows",
    "IngestReport",
    "Retriever",
    "ingest",
    "open_index",
    "write_generation",
]
