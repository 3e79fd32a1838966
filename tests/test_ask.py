"""`bitrag ask` end to end on the embedded model and the sample corpus."""

import signal
import subprocess
import sys
import time
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


def test_a_draft_sentence_the_notes_do_not_back_is_never_shown(
    run, run_json, home_with_sample_index
):
    """The embedded model's first sentence on the bfloat16 table states a count the table
    does not give it: the user reads the quote and why, not a wrong answer taken back."""
    question = "What are the sign, exponent and mantissa bit counts of bfloat16?"
    result = run_json("ask", question)
    assert result["mode"] == "quoted" and result["draft"], result
    # the table row, cut to what it is about and the columns asked for; the evidence is whole
    assert result["answer"] == "Format: bfloat16, Sign: 1, Exponent: 8, Mantissa: 7 [1]"
    assert "Bias: 127" in result["evidence"][0]["quote"]
    shown = run("ask", question)
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    quote = lines.index(f"{result['answer']}")
    assert lines[quote + 1 :] == ["(quoted from your notes)", f"note: {result['note']}"]
    assert all(line.startswith(("[", "    ")) for line in lines[:quote]), "only evidence before"
    assert "not supported by the notes" not in shown.stdout


def test_ctrl_c_ends_a_cold_ask_by_the_signal_itself(home_with_sample_index):
    """Not swallowed by a library, not deferred to the end of a native call: the process
    dies of SIGINT (its latency is in the session note: under 0.03 s at any point)."""
    question = "What are the sign, exponent and mantissa bit counts of bfloat16?"
    ask = subprocess.Popen(
        [sys.executable, "-m", "agent", "ask", question],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(1.5)  # inside imports and model loading
        ask.send_signal(signal.SIGINT)
        assert ask.wait(timeout=60) == -signal.SIGINT
        assert b"Traceback" not in ask.stderr.read()
    finally:
        ask.kill()
        ask.wait()


def test_evidence_lines_name_each_source_once_relative_to_the_notes(tmp_path, run, run_json):
    notes, index = tmp_path / "notes", tmp_path / "idx"
    (notes / "formats").mkdir(parents=True)
    (notes / "formats" / "bf16.md").write_text(
        "# bfloat16\n\nbfloat16 has 1 sign bit, 8 exponent bits and 7 mantissa bits.\n"
    )
    (notes / "gguf.md").write_text("# GGUF\n\nA GGUF file starts with the magic number GGUF.\n")
    run_json("ingest", str(notes), "--index", str(index))
    result = run("ask", "How many mantissa bits does bfloat16 have?", "--index", str(index))
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.stdout.splitlines() if line.startswith("    ")]
    assert lines and all(line.startswith("formats/bf16.md#") for line in lines), result.stdout
    assert str(notes) not in result.stdout
    answer = run_json("ask", "How many mantissa bits does bfloat16 have?", "--index", str(index))
    assert {e["where"] for e in answer["evidence"]} <= {"formats/bf16.md#0", "formats/bf16.md#1"}
    assert answer["evidence"][0]["source"] == str((notes / "formats" / "bf16.md").resolve())


def test_a_source_outside_the_indexed_root_is_shown_under_home(tmp_path, monkeypatch):
    from agent.render import where

    monkeypatch.setenv("HOME", str(tmp_path))
    source = str(tmp_path / "notes" / "a.md")
    assert where(source + "#3", source, None) == "~/notes/a.md#3"
    assert where(source + "#3", source, tmp_path / "notes") == "a.md#3"
    assert where("/srv/x.md#0", "/srv/x.md", Path("/")) == "/srv/x.md#0"


def _passage(quote: str, where: str) -> dict[str, str]:
    return {"quote": quote, "chunk_id": where, "where": where}


def _shown(steps: list[list[dict[str, str]] | str], result: dict) -> list[str]:
    """What `answer_live` prints for a turn that offers evidence (a list) and streams
    tokens (a string) in the order of `steps`, then ends with `result`."""
    from agent.render import answer_live

    said: list[str] = []

    def ask(on_token, on_evidence):
        for step in steps:
            (on_token if isinstance(step, str) else on_evidence)(step)
        return result

    answer_live(ask, said.append, said.append)
    return said


ABSTAINED = {"mode": "abstained", "answer": "The notes do not answer this.", "note": ""}


def test_a_streamed_draft_that_ends_in_abstention_is_taken_back_as_such():
    evidence = [_passage("LoRA trains A and B.", "a.md#0")]
    said = _shown([evidence, "It trains C."], {**ABSTAINED, "evidence": []})
    assert said == [
        '[1] "LoRA trains A and B."',
        "    a.md#0",
        "It trains C.",
        "\n",
        "(that answer was not supported by the notes, so bitrag does not answer)",
        "The notes do not answer this.",
    ]


def test_a_refused_draft_before_a_deeper_read_is_taken_back_before_the_next_one():
    from agent.render import ELSEWHERE, READ_ON

    first = [_passage("LoRA trains A and B.", "a.md#0")]
    deeper = [_passage("QLoRA adds NF4.", "q.md#2")]
    # the check refuses "It trains C.": the model reads on
    steps = [first, "It trains C.", deeper, "QLoRA adds NF4. [1]"]
    said = _shown(steps, {"mode": "generated", "answer": "", "note": "", "evidence": deeper})
    assert said == [
        '[1] "LoRA trains A and B."',
        "    a.md#0",
        "It trains C.",
        "\n",
        READ_ON,
        ELSEWHERE,
        '[1] "QLoRA adds NF4."',
        "    q.md#2",
        "QLoRA adds NF4. [1]",
        "\n",
    ]


def test_evidence_offered_twice_is_shown_once_and_an_abstention_under_it_says_why():
    from agent.render import NOT_STATED

    evidence = [_passage("Trains leave at 22:10.", "t.md#0")]
    # offered before the model reads, and again as it would write from it
    said = _shown([evidence, evidence], {**ABSTAINED, "evidence": []})
    assert said[:3] == ['[1] "Trains leave at 22:10."', "    t.md#0", NOT_STATED]
    assert said[3:] == ["The notes do not answer this."]


def test_evidence_the_model_replaces_after_reading_is_shown_under_a_line_saying_so():
    from agent.render import ELSEWHERE

    first = [_passage("Trains leave at 22:10.", "t.md#0")]
    picked = [_passage("Buses leave at 23:05.", "b.md#0")]  # it picked another passage
    steps = [first, picked, "Buses leave at 23:05. [1]"]
    said = _shown(steps, {"mode": "generated", "answer": "", "note": "", "evidence": picked})
    assert said == [
        '[1] "Trains leave at 22:10."',
        "    t.md#0",
        ELSEWHERE,
        '[1] "Buses leave at 23:05."',
        "    b.md#0",
        "Buses leave at 23:05. [1]",
        "\n",
    ]
