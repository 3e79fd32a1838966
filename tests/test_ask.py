"""`bitrag ask` end to end on the embedded model and the sample corpus."""

from pathlib import Path

from retrieval.paths import SAMPLE_CORPUS


def test_ask_answers_with_a_citation_from_the_corpus(run_json, home_with_sample_index):
    result = run_json("ask", "How many mantissa bits does bfloat16 have?")
    assert result["abstained"] is False
    assert result["answer"].strip()
    assert result["citations"], result
    for citation in result["citations"]:
        assert Path(citation["source"]).parent == SAMPLE_CORPUS
        assert citation["chunk_id"].startswith(citation["source"])
        assert citation["n"] >= 1
    cited = {Path(c["source"]).name for c in result["citations"]}
    assert cited == {"number-formats-floating-point.md"}
    assert set(result["timings"]) >= {"retrieve_s", "generate_s"}


def test_ask_abstains_when_nothing_matches(run_json, home_with_sample_index):
    result = run_json("ask", "zyxwv qwertz plugh?")
    assert result["abstained"] is True
    assert result["citations"] == []


def test_ask_human_output_lists_sources(run, home):
    result = run("ask", "What is the magic number at the start of a GGUF file?")
    assert result.exit_code == 0, result.output
    assert "gguf-k-quants.md" in result.stdout
    assert (home / "index" / "CURRENT").is_file()  # the sample corpus, indexed on first use
