"""eval.bench.batching with real llama.cpp on the embedded model: sequences decoded together
give each the greedy tokens it gets alone, and the report has a row per sequence count."""

from eval.bench.batching import measure


def test_sequences_decoded_together_generate_what_each_generates_alone():
    result = measure(None, [1, 3], prompt=32, gen=6, reps=1)
    assert [row["sequences"] for row in result["rows"]] == [1, 3]
    assert [row["same_tokens"] for row in result["rows"]] == [1, 3]
    assert all(row["gen_tokens_per_s"] > 0 and row["gen_speedup"] > 0 for row in result["rows"])
