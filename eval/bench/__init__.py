"""Benchmark and tuning scripts, each run as `python -m eval.bench.NAME`: answers, llm,
retrieval, latency, reader, threads, mcp, kill, sessions and tune_chunking. They may import
every package and eval's harness modules; nothing but `bitrag bench` (eval.bench.llm) imports
them."""
