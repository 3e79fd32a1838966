"""How an answer is scored: an abstention never counts as a keyword hit, though its text
repeats the question's words."""

from dataclasses import replace

from eval.answers_per_rung import decisions, named, score
from eval.dataset import Question
from eval.scoring import answer_hit, keyword_hit

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


def _confirmed(draft: str, mode: str, answerable: bool = True) -> tuple[dict, Question]:
    record = _result("quoted or kept", mode == "abstained") | {
        "mode": mode,
        "draft": draft,
        "reader": {"read": ["gguf.md#0"], "picked": "gguf.md#0", "confirmed": {"draft": 0.5}},
    }
    return record, GGUF if answerable else replace(GGUF, type="unanswerable")


def test_the_confirm_is_right_when_it_keeps_a_right_draft_or_refuses_a_wrong_one():
    right, wrong = "The magic GGUF [1].", "The magic is 0xDEADBEEF [1]."
    cases = [
        (right, "generated", True, 1.0),
        (right, "quoted", True, 0.0),  # a right draft refused
        (wrong, "quoted", True, 1.0),
        (wrong, "generated", True, 0.0),  # a wrong draft kept
        (right, "generated", False, 0.0),  # any draft kept for an unanswerable question
        (right, "abstained", False, 1.0),
    ]
    for draft, mode, answerable, expected in cases:
        record, question = _confirmed(draft, mode, answerable)
        assert score(record, question)["confirm_right"] == expected, (draft, mode, answerable)
    unchecked = _result("quote", False) | {"draft": right, "reader": {"confirmed": {}}}
    assert score(unchecked, GGUF)["confirm_right"] is None  # the check refused it first


def test_a_number_keyword_is_not_part_of_a_longer_number():
    margin = replace(GGUF, keywords=[["2 points", "±2"]])
    assert not keyword_hit("About 32 points.", margin)
    assert not keyword_hit("About ±2.5.", margin)
    assert keyword_hit("About 2 points (4.0 halved).", margin)
    assert keyword_hit("The margin is ±2.", margin)
    size = replace(GGUF, keywords=[["120"], ["3.5GB", "3.5 GB"]])
    assert keyword_hit("120,000 bytes per sequence, and 약 3.5GB.", size)
    assert not keyword_hit("1120 bytes, and 13.5 GB.", size)


def test_the_judge_is_scored_on_the_passage_it_named_not_on_what_the_check_kept():
    # the judge named the GGUF passage; the check then refused the draft and the quote
    reader = {"read": ["gguf.md#0", "other.md#1"], "named": "gguf.md#0", "picked": None}
    record = _result("The notes do not answer this.", True) | {"reader": reader, "draft": "x"}
    texts = {"gguf.md#0": "Every GGUF file starts with the magic GGUF.", "other.md#1": "..."}
    record["picked_text"] = texts[named(reader)]
    answerable = decisions(record, GGUF)
    assert answerable["judge_answerable"] == 1.0 and answerable["pick_right"] == 1.0
    unanswerable = decisions(record, replace(GGUF, keywords=[], type="unanswerable"))
    assert unanswerable["judge_unanswerable"] == 0.0  # it named a passage: wrong, though refused
    old = {"read": reader["read"], "picked": None}  # kept before "named" was: what it answered
    assert named(old) is None and named(reader | {"named": None}) is None
