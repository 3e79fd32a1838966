"""The llama.cpp side of bitrag: model files and their checks, the registry and opt-in packs,
the LLM clients (in-process and OpenAI-compatible), grammar-constrained replies and the
context budget. It may import `retrieval` (errors, paths, threads, hits) but never the
answering graph in `agent`, so `eval` can load and measure a model without the graph."""
