"""The reader's judge on the embedded model and real retrieval: one grammar-constrained reply
that names a passage shown, or 0, over passages that fit the context window."""

from dataclasses import replace

import pytest

from agent.reader import (
    AGAIN_NONE_SHARE,
    MAX_PASSAGES,
    NONE_SHARE,
    OVER_FIRST,
    WRITE_TOKENS,
    Verdict,
    confirm,
    decide,
    declined,
    excerpt,
    judge,
    passage_text,
    reader_messages,
    write_messages,
)
from agent.runtime.context import count_messages
from agent.runtime.llm import LocalLLM
from retrieval.store import Index


@pytest.fixture(scope="module")
def llm(model_path):
    return LocalLLM(model_path)


@pytest.mark.parametrize(
    "question",
    [
        "How many mantissa bits does bfloat16 have?",
        "LoRA는 어떤 행렬을 학습하나요?",
        "What is the capital of Australia?",
    ],
)
def test_the_judge_names_a_shown_passage_or_none(llm, sample_index, question):
    hits = Index.load(sample_index).search(question, 8)
    verdict = judge(llm, question, hits)
    assert 1 <= len(verdict.hits) <= MAX_PASSAGES
    assert list(verdict.hits) == hits[: len(verdict.hits)]  # in rank order, none invented
    assert 0 <= verdict.passage <= len(verdict.hits)
    assert verdict.picked == (hits[verdict.passage - 1] if verdict.passage else None)
    assert len(verdict.likelihood) == len(verdict.hits) + 1  # how likely 0, 1, ... were
    assert abs(sum(verdict.likelihood) - 1) < 1e-6 and verdict.passage == decide(
        list(verdict.likelihood)
    )
    messages = reader_messages(question, list(verdict.hits), "job")
    assert count_messages(llm, messages) < llm.n_ctx


def test_long_chunks_are_cut_and_the_lowest_ranked_dropped_to_fit(model_path, sample_index):
    small = LocalLLM(model_path, n_ctx=512)
    question = "How many mantissa bits does bfloat16 have?"
    hits = Index.load(sample_index).search(question, 5)
    long = [replace(h, chunk=replace(h.chunk, text=h.chunk.text * 20)) for h in hits]
    assert all(passage_text(h).endswith(" ...") for h in long)
    verdict = judge(small, question, long)
    assert 1 <= len(verdict.hits) < MAX_PASSAGES  # the cut passages do not all fit 512 tokens
    assert 0 <= verdict.passage <= len(verdict.hits)
    messages = reader_messages(question, list(verdict.hits), "job")
    assert count_messages(small, messages) <= 512 - WRITE_TOKENS


def test_the_verdict_weighs_none_and_the_first_passage():
    assert decide([NONE_SHARE, 1 - NONE_SHARE, 0.0]) == 0
    low = NONE_SHARE / 2
    first = (1 - low) / (1 + OVER_FIRST * 0.9)
    assert decide([low, first, 1 - low - first]) == 1  # not OVER_FIRST times likelier
    assert decide([low, 0.1, 1 - low - 0.1]) == 2
    # on the second search a passage must be named clearly
    assert decide([AGAIN_NONE_SHARE, 1 - AGAIN_NONE_SHARE]) == 1
    assert decide([AGAIN_NONE_SHARE, 1 - AGAIN_NONE_SHARE], AGAIN_NONE_SHARE) == 0
    assert decide([AGAIN_NONE_SHARE - 0.01, 1.01 - AGAIN_NONE_SHARE], AGAIN_NONE_SHARE) == 1


def test_no_passages_is_no_answer_without_asking_the_model():
    assert judge(None, "anything?", []) == Verdict(0, ())  # type: ignore[arg-type]


def test_a_long_chunk_is_shown_by_its_sentences_nearest_the_question():
    filler = " ".join(f"Paragraph {n} is about codebooks and lattices." for n in range(12))
    table = "| Type | Bits per weight |\n| --- | --- |\n| IQ2_XXS | 2.06 |\n| IQ3_S | 3.44 |\n"
    text = f"{filler}\n\n{table}"
    shown = excerpt(text, "How many bits per weight does IQ2_XXS use?", 200)
    assert "Type: IQ2_XXS, Bits per weight: 2.06" in shown
    assert " ... " in shown and len(shown) <= 200 + 16  # a gap, marked
    assert excerpt(text, "IQ3_S?", 200).count("3.44") == 1


def test_a_draft_that_declines_is_told_from_one_that_answers():
    assert declined("not stated")
    assert declined("The passages do not mention the memory bandwidth.")
    assert declined("노트에는 층 수가 명시되어 있지 않습니다.")
    assert not declined("LoRA는 업데이트 행렬 BA를 학습합니다.")
    assert not declined("논문에서 언급된 값은 65504입니다.")  # mentioning is not declining


def test_the_write_job_reads_only_its_own_tokens_after_the_judge(llm, sample_index):
    """The passages come first, so llama.cpp's prompt cache keeps them from the judge's
    prompt to the write job's: the write job evaluates its last turn, not the passages."""
    question = "How many mantissa bits does bfloat16 have?"
    hits = Index.load(sample_index).search(question, 8)
    before = llm.evaluated()
    verdict = judge(llm, question, hits)
    judged = llm.evaluated()
    messages = write_messages(question, list(verdict.hits), verdict.passage or 1, "en")
    llm.chat(messages, 8)
    written = llm.evaluated()
    read, rest = judged[0] - before[0], written[0] - judged[0]
    assert read > 100 and 0 < rest < read / 3, (read, rest)


def test_the_confirm_job_reads_the_draft_after_the_cached_passages(llm, sample_index):
    """The model is asked whether the passages it read state its draft: how likely "yes" is,
    over the prefix the judge read; the passages are not evaluated again."""
    question = "How many mantissa bits does bfloat16 have?"
    hits = Index.load(sample_index).search(question, 8)
    verdict = judge(llm, question, hits)
    judged = llm.evaluated()
    yes = confirm(llm, question, list(verdict.hits), "Bfloat16 has 7 mantissa bits.")
    again = confirm(llm, question, list(verdict.hits), "Bfloat16   has 7\nmantissa bits.")
    other = confirm(llm, question, list(verdict.hits), "Bfloat16 has 23 mantissa bits.")
    assert 0.0 < yes < 1.0 and yes == pytest.approx(again)  # whitespace is not read
    assert 0.0 < other < 1.0 and other != pytest.approx(yes)  # the draft is read
    quoted = confirm(llm, question, list(verdict.hits), "Bfloat16 has 7 mantissa bits.", True)
    assert 0.0 < quoted < 1.0 and quoted != pytest.approx(yes)  # another job, asked anew
    read = llm.evaluated()[0] - judged[0]
    whole = count_messages(llm, reader_messages(question, list(verdict.hits), "job"))
    assert 0 < read < whole, (read, whole)
