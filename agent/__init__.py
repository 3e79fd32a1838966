"""The answering side of bitrag: llama.cpp model runtime, question answering pipeline, CLI."""
