"""Measuring bitrag: the `bitrag eval` harness (quantization ladder, datasets, divergence,
answers per rung, intervals, reports) and, in `eval.bench`, the benchmark and tuning
scripts. It may import `retrieval` and `agent` (the runtime for models, the graph for
answers); the harness never imports `eval.bench`."""
