"""Measuring bitrag: the quantization ladder, datasets, metrics, benchmarks and reports."""
