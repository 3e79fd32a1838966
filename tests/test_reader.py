"""The reader's judge on the embedded model and real retrieval: one grammar-constrained reply
that names a passage shown, or 0, over passages that fit the context window."""

from dataclasses import replace

import pytest

from agent.reader import MAX_PASSAGES, WRITE_TOKENS, Verdict, judge, passage_text, reader_messages
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
    messages = reader_messages(question, list(verdict.hits), "job")
    assert count_messages(llm, messages) < llm.n_ctx


def test_long_chunks_are_cut_and_the_lowest_ranked_dropped_to_fit(model_path, sample_index):
    small = LocalLLM(model_path, n_ctx=768)
    question = "How many mantissa bits does bfloat16 have?"
    hits = Index.load(sample_index).search(question, 5)
    long = [replace(h, chunk=replace(h.chunk, text=h.chunk.text * 20)) for h in hits]
    assert all(passage_text(h).endswith(" ...") for h in long)
    verdict = judge(small, question, long)
    assert 1 <= len(verdict.hits) < len(long)  # five cut passages do not fit 768 tokens
    assert 0 <= verdict.passage <= len(verdict.hits)
    messages = reader_messages(question, list(verdict.hits), "job")
    assert count_messages(small, messages) <= 768 - WRITE_TOKENS


def test_no_passages_is_no_answer_without_asking_the_model():
    assert judge(None, "anything?", []) == Verdict(0, ())  # type: ignore[arg-type]
