"""Follow-up questions ("And what about IQ3_S?", "그럼 AlexNet은?") made searchable.

A follow-up leans on the previous turn for its topic. When a question reads as
one (it opens with a connective, points back with a pronoun, or names too few
terms to search on), the previous turn's query is appended to it, so retrieval
and evidence scoring see both the new focus and the old topic.
"""

import re

from retrieval.tokenize import tokenize

_EN_OPENERS = re.compile(r"^\s*(and|also|then|so|but|what about|how about)\b", re.IGNORECASE)
_EN_POINTERS = re.compile(r"\b(it|its|that one|this one|they|them|their|there)\b", re.IGNORECASE)
_KO_OPENERS = re.compile(
    r"^\s*(그럼|그러면|그렇다면|그리고|그래서|그런데|근데|또|그렇게|그건|그게|그것|이건|이게)"
)
_KO_POINTERS = re.compile(r"(그것|이것|저것|그 |이 |저 |거기|그렇게|그런|그분)")
MIN_TERMS = 3


def is_follow_up(question: str) -> bool:
    if len(set(tokenize(question))) < MIN_TERMS:
        return True
    return any(p.search(question) for p in (_EN_OPENERS, _EN_POINTERS, _KO_OPENERS, _KO_POINTERS))


def resolve(question: str, previous_query: str | None) -> str:
    """The text to search for: the question, plus the previous query for a follow-up."""
    if previous_query and is_follow_up(question):
        return f"{question} {previous_query}"
    return question
