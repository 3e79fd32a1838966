"""How an answer is scored: an abstention never counts as a keyword hit, though its text
repeats the question's words."""

from eval.answers_per_rung import score
from eval.dataset import Question
from eval.scoring import answer_hit

GGUF = Question(
    id="t-1",
    question="What are the first four bytes of every GGUF file?",
    answer="The magic GGUF.",
    keywords=[["GGUF"]],
    sources=["gguf.md"],
    lang="en",
    doc_lang="en",
    type="factual",
    split="dev",
)


def _result(answer: str, abstained: bool) -> dict:
    mode = "abstained" if abstained else "quoted"
    return {"answer": answer, "abstained": abstained, "mode": mode, "citations": []}


def test_an_abstention_that_echoes_the_question_is_no_hit():
    echo = _result(f'The notes do not answer this. Searched for "{GGUF.question}"', True)
    assert not answer_hit(echo, GGUF)
    assert score(echo, GGUF)["keyword_hit"] == 0.0


def test_an_answer_with_the_keywords_is_a_hit():
    answer = _result("Every file starts with the magic bytes GGUF [1].", False)
    assert answer_hit(answer, GGUF)
    assert score(answer, GGUF)["keyword_hit"] == 1.0
