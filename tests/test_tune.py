"""`bitrag tune` with real parts: the embedded model as student and teacher, a tiny index of
notes ingested here, torch, gguf and llama.cpp. Training pairs never come from a note an eval
question is about, and only answers that pass the agent's check are kept; the command trains,
exports an adapter llama.cpp applies, resumes from its checkpoint, and refuses bad input with
one line."""

import json
import re
from dataclasses import replace
from pathlib import Path

import llama_cpp
import numpy as np
import pytest
import torch
from torch import Generator

from agent.evidence import TermWeights, sentences
from agent.prompts import SYSTEM
from agent.reader import CONFIRM_DRAFT, confirm, declined, write_messages
from agent.runtime.llm import LocalLLM
from agent.verify import verify
from eval.dataset import load_questions
from eval.lora import LoraConfig, LoraLinear, make_optimizer
from eval.tune import Training, resume, save_checkpoint
from eval.tune_data import (
    PAIRS_FILE,
    Pair,
    check_answer,
    generate_pairs,
    held_out_sources,
    is_held_out,
    practice_messages,
    select_chunks,
)
from eval.tune_tokens import student_examples
from retrieval.chunking import Chunk
from retrieval.store import Hit, Index, ingest, open_index

# The 135M model answers "What is the purpose of X?" in the note's own words when the note
# says what the purpose is (measured: the lamp's pair is kept, the ferry's is not).
NOTES = {
    "a-lamp.md": (
        "# Reading lamp\n\nThe purpose of the reading lamp is to light the desk at night.\n"
    ),
    "b-ferry.md": (
        "# Harbor ferry\n\nThe purpose of the harbor ferry is to carry bicycles to Gull Island.\n"
    ),
    # An eval question's source note (data/eval/qa.jsonl) stating its keyword (core-004's
    # 4,194,304): never used.
    "lora-qlora.md": "# LoRA\n\nThe purpose of LoRA rank 8 on q and v is 4,194,304 weights.\n",
}
HELD_OUT = "lora-qlora.md"


class Recording:
    """The teacher, with every message list it was shown kept."""

    def __init__(self, llm: LocalLLM) -> None:
        self.llm = llm
        self.shown: list[str] = []

    def chat(self, messages, *args, **kwargs) -> str:
        self.shown.append(json.dumps(messages))
        return self.llm.chat(messages, *args, **kwargs)


def no_teacher():
    raise AssertionError("the teacher was loaded although every pair was cached")


@pytest.fixture(scope="module")
def notes_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("notes")
    for name, text in NOTES.items():
        (folder / name).write_text(text, encoding="utf-8")
    directory = tmp_path_factory.mktemp("tune") / "index"
    ingest([folder], directory)
    return directory


def test_pairs_come_only_from_notes_outside_the_eval_and_pass_the_check(
    notes_index: Path, model_path: Path, tmp_path: Path
):
    index = open_index(notes_index)
    selection = select_chunks(index, load_questions(), None)
    assert (selection.total, selection.held_out, len(selection.chunks)) == (3, 1, 2)
    assert all(Path(c.source).name != HELD_OUT for c in selection.chunks)
    teacher = Recording(LocalLLM(model_path))
    pairs = generate_pairs(index, lambda: teacher, model_path, tmp_path)
    print([(p.question, p.answer, p.reason) for p in pairs])
    assert [Path(p.source).name for p in pairs] == ["a-lamp.md", "b-ferry.md"]
    assert teacher.shown and not any("LoRA" in shown for shown in teacher.shown)
    kept = [p for p in pairs if p.kept]
    assert kept, "the lamp note is written to be quoted: its pair must pass"
    _assert_checked(index, pairs)
    cached = generate_pairs(index, no_teacher, model_path, tmp_path)
    assert cached == pairs
    assert len((tmp_path / PAIRS_FILE).read_text(encoding="utf-8").splitlines()) == 2


def _assert_checked(index: Index, pairs) -> None:
    """Kept answers pass the agent's own check against their chunk; others say why not."""
    chunks = {c.chunk_id: c for c in index.chunks}
    weights = TermWeights(index.bm25)
    for pair in pairs:
        if not pair.kept:
            assert pair.reason
            continue
        evidence = sentences(chunks[pair.chunk_id].text)
        assert verify(pair.answer, pair.question, evidence, weights).ok, pair
        assert not declined(pair.answer) and pair.question.endswith("?")
        assert pair.question in pair.messages[-1]["content"]  # the agent's write job


def test_the_check_drops_unsupported_answers_abstentions_and_eval_questions(
    notes_index: Path, model_path: Path, tmp_path: Path
):
    index = open_index(notes_index)
    lamp = next(c for c in index.chunks if c.source.endswith("a-lamp.md"))
    weights = TermWeights(index.bm25)
    question = "What is the purpose of the reading lamp?"
    for answer in ("The lamp runs on solar power from Mars.", "The passage does not state it."):
        assert check_answer(answer, question, lamp, weights)[1], answer
    teacher = LocalLLM(model_path)
    pairs = generate_pairs(index, lambda: teacher, model_path, tmp_path, limit=1)
    assert len(pairs) == 1 and pairs[0].kept
    said: list[str] = []
    late = generate_pairs(index, no_teacher, model_path, tmp_path, say=said.append, until=0.0)
    assert [p.chunk_id for p in late] == [pairs[0].chunk_id]  # past --minutes: the cache only
    assert said[-1].startswith("time: 1 chunk(s) left unread"), said
    asked = replace(load_questions()[0], question=f"  {pairs[0].question.upper()} ")
    again = generate_pairs(index, no_teacher, model_path, tmp_path, 1, questions=[asked])
    assert again[0].reason == "equals an eval question"


def test_a_teacher_that_reads_is_checked_as_the_agents_reader_and_confirms_its_answer(
    notes_index: Path, model_path: Path
):
    index = open_index(notes_index)
    lamp = next(c for c in index.chunks if c.source.endswith("a-lamp.md"))
    weights = TermWeights(index.bm25)
    question = "What is the purpose of the reading lamp?"
    answer = "The reading lamp typically lights the desk at night."
    _, held_to_every_word = check_answer(answer, question, lamp, weights)
    assert (
        held_to_every_word == "failed the agent's check: words the evidence does not use: typically"
    )
    teacher = LocalLLM(model_path)
    shown, reason = check_answer(answer, question, lamp, weights, teacher)
    yes = confirm(teacher, question, [Hit(1, 0.0, lamp)], shown)
    assert 0.0 < yes < 1.0
    assert reason == ("" if yes >= CONFIRM_DRAFT else f"not confirmed (yes {yes:.2f})")
    wrong = "The reading lamp lights the desk for 8 hours at night."
    assert check_answer(wrong, question, lamp, weights, teacher)[1].startswith("failed the agent's")


def test_the_prompt_is_the_students_chat_template_and_the_answer_ends_it(model_path: Path):
    messages = [
        {"role": "system", "content": "passages"},
        {"role": "user", "content": "Question: why?"},
    ]
    [(prompt, answer)] = student_examples(model_path, [(messages, "Because.")])
    vocab = llama_cpp.Llama(model_path=str(model_path), vocab_only=True, verbose=False)
    try:
        text = vocab.detokenize(prompt, special=True).decode()
        assert answer[-1] == vocab.token_eos()
        assert vocab.detokenize(answer[:-1]).decode().strip() == "Because."
    finally:
        vocab.close()
    expected = (
        "<|im_start|>system\npassages<|im_end|>\n<|im_start|>user\nQuestion: why?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert text == expected


def test_the_student_practises_the_prompt_the_agent_gives_it(notes_index: Path):
    """A reader (1e9 weights or more) practises the write job the teacher answered; a
    smaller student the evidence answer prompt the agent's cut-off path gives it."""
    index = Index.load(notes_index)
    chunk = next(c for c in index.chunks if "reading lamp" in c.text)
    question = "What is the purpose of the reading lamp?"
    written = write_messages(question, [Hit(1, 0.0, chunk)], 1, "en")
    pair = Pair("k", chunk.chunk_id, chunk.source, question, "To light the desk.", written, "")
    weights = TermWeights(index.bm25)
    assert practice_messages(pair, chunk, True, weights) == written
    system, user = practice_messages(pair, chunk, False, weights)
    assert system["content"] == SYSTEM.format(language="English")
    assert "[1] The purpose of the reading lamp is to light the desk at night." in user["content"]
    assert user["content"].endswith(f"Question: {question}")


def _steps(stderr: str) -> list[tuple[int, float, float]]:
    """(step, loss, kl) of every progress line."""
    found = re.findall(r"^step (\d+)/\d+ loss ([\d.]+) \(ce [\d.]+, kl ([\d.]+)\)", stderr, re.M)
    return [(int(s), float(loss), float(kl)) for s, loss, kl in found]


def test_tune_trains_exports_an_adapter_llama_cpp_applies_and_resumes(
    run, notes_index: Path, model_path: Path, tmp_path: Path, adapter_logprobs
):
    out = tmp_path / "out"
    args = ["tune", "--index", str(notes_index), "--out", str(out), "--limit", "2"]
    first = run(*args, "--steps", "3")
    assert first.exit_code == 0, first.output
    print(first.stderr, first.stdout)
    assert "teacher: the student itself" in first.stderr
    assert "distillation: CE on the teacher's answers + KL" in first.stderr
    assert "practice: an answer from numbered evidence" in first.stderr  # 135M: no reader
    steps = _steps(first.stderr)
    assert [s for s, _, _ in steps] == [1, 2, 3]
    assert steps[0][2] < 0.05  # the same model in torch and llama.cpp, at the same positions
    assert f"loss {steps[0][1]:.4f} -> {steps[-1][1]:.4f}" in first.stdout
    adapter = out / "adapter.gguf"
    sidecar = json.loads((out / "adapter.json").read_text(encoding="utf-8"))
    assert (sidecar["steps"], sidecar["rank"], sidecar["alpha"]) == (3, 8, 16.0)
    assert sidecar["train_seconds"] > 0
    plain, adapted = adapter_logprobs(model_path, adapter, "The purpose of the reading lamp is")
    assert np.abs(adapted - plain).max() > 1e-3  # the adapter changes the student

    second = run(*args, "--steps", "5", "--json")
    assert second.exit_code == 0, second.output
    summary = json.loads(second.stdout)
    assert f"resumed from checkpoint {out / 'checkpoint.pt'} at step 3" in second.stderr
    assert "pair 1/" not in second.stderr  # the pairs came from the cache
    assert [s for s, _, _ in _steps(second.stderr)] == [4, 5]
    assert (summary["steps"], summary["resumed_from"]) == (5, 3)
    assert summary["loss_first"] == pytest.approx(steps[0][1], abs=1e-4)
    assert summary["adapter_bytes"] == adapter.stat().st_size
    resumed = json.loads((out / "adapter.json").read_text(encoding="utf-8"))
    assert resumed["steps"] == 5
    assert resumed["train_seconds"] > sidecar["train_seconds"]  # counted over both runs

    late = run(*args, "--steps", "9", "--minutes", "0.001")  # over once a step is timed
    assert late.exit_code == 0, late.output
    assert [s for s, _, _ in _steps(late.stderr)] == [6]
    assert "time: stopped at step 6 of 9 to end within --minutes" in late.stderr


def test_a_checkpoint_resumes_only_the_same_run(tmp_path: Path):
    def training(key: str, data: str = "pairs-1") -> Training:
        layers = {"proj": LoraLinear(torch.nn.Linear(4, 4), LoraConfig(rank=2), Generator())}
        return Training(layers, make_optimizer(layers, 1e-3), key, data=data)

    saved = training("run-a")
    with torch.no_grad():
        saved.layers["proj"].lora_b.fill_(0.5)
    saved.step, saved.losses = 7, [2.0, 1.5]
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, saved)
    said: list[str] = []
    same = training("run-a")
    resume(path, same, said.append)
    assert (same.step, same.losses) == (7, [2.0, 1.5])
    assert torch.equal(same.layers["proj"].lora_b, saved.layers["proj"].lora_b)
    assert len(said) == 1  # the same pairs: nothing more to say
    grown = training("run-a", data="pairs-2")  # a --minutes run read more chunks since
    resume(path, grown, said.append)
    assert grown.step == 7 and torch.equal(grown.layers["proj"].lora_b, saved.layers["proj"].lora_b)
    assert (
        said[2]
        == "the pairs changed since that step: training goes on over the pairs as they are now"
    )
    other = training("run-b")
    resume(path, other, said.append)
    assert other.step == 0 and not other.layers["proj"].lora_b.any()
    path.write_bytes(path.read_bytes()[:100])
    resume(path, training("run-a"), said.append)
    assert "starting over" in said[3] and "unreadable" in said[4], said


def test_only_the_chunks_that_could_answer_an_eval_question_are_held_out():
    held = held_out_sources(load_questions())

    def chunk(source: str, text: str) -> Chunk:
        return Chunk(f"{source}#0", source, "LoRA", None, text, 0, len(text), "en")

    assert is_held_out(chunk("corpus/lora-qlora.md", "Rank 8 trains 4,194,304 weights."), held)
    assert not is_held_out(chunk("corpus/lora-qlora.md", "LoRA freezes W."), held)
    assert not is_held_out(chunk("mine/lamp.md", "It trains 4,194,304 weights."), held)


def test_an_index_of_eval_answers_only_is_refused_with_one_line(run, tmp_path: Path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / HELD_OUT).write_text(NOTES[HELD_OUT], encoding="utf-8")
    ingest([tmp_path / "notes"], tmp_path / "index")
    result = run("tune", "--index", str(tmp_path / "index"), "--out", str(tmp_path / "out"))
    assert result.exit_code != 0
    assert "every chunk it holds could answer an eval question" in result.stderr
    assert not (tmp_path / "out" / "adapter.gguf").exists()


def test_in_a_new_home_tune_indexes_the_sample_notes_first_as_ask_does(run, home, tmp_path):
    """The 135M, teacher of itself, may write no pair that passes the check from one chunk:
    then that is the one line; either way the notes were indexed and read, not refused."""
    result = run("tune", "--limit", "1", "--steps", "1", "--out", str(tmp_path / "out"))
    assert (home / "index" / "CURRENT").is_file()
    assert "1 chunk(s) chosen of " in result.stderr and "pair 1/1: " in result.stderr
    written = (tmp_path / "out" / "adapter.gguf").is_file()
    assert (result.exit_code == 0) == written, result.output
    assert written or result.stderr.splitlines()[-1].startswith("Error: the teacher wrote no pair")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--student", "/no/such/student.gguf"], "model file not found: /no/such/student.gguf"),
        (["--steps", "0"], "--steps must be at least 1, not 0"),
        (["--rank", "0"], "--rank must be at least 1, not 0"),
        (["--minutes", "0"], "--minutes must be above 0, not 0"),
        (["--out", "FILE"], "is a file: give a folder for the adapter"),
        (["--index", "EMPTY"], "no index at"),
    ],
)
def test_bad_input_is_one_line_and_a_failing_exit(run, tmp_path: Path, extra, expected):
    (tmp_path / "FILE").write_text("not a folder\n", encoding="utf-8")
    (tmp_path / "EMPTY").mkdir()
    given = [str(tmp_path / a) if a in ("FILE", "EMPTY") else a for a in extra]
    if "--out" not in given:
        given += ["--out", str(tmp_path / "out")]
    result = run("tune", *given)
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
