"""A question that names the language of the notes it is about is searched in those notes.

"In my Korean FAISS notes, how many bytes ...?" asks about the Korean notes: searching
every note lets an English note that shares the question's words outrank the Korean one
that answers it. `named_language` reads such a phrase ("Korean ... notes", "English
notes", "한국어 노트", "영어 자료") and returns the language code the chunks carry
(retrieval.chunking: "ko" or "en"); the search then keeps chunks of that language only.
A question naming no language, or a language the index holds no chunk in, is unscoped.
"""

import re

# "Korean FAISS notes", "Korean RAG pipeline notes"; not "Korean text in the notes"
_WORDS_BETWEEN = r"(?:(?!(?:in|on|of|about|for|from|the|my|your)\b)[\w.+-]+\s+){0,3}"
_ENGLISH_NAMES = {"korean": "ko", "english": "en"}
_KOREAN_NAMES = {"한국어": "ko", "한글": "ko", "영어": "en", "영문": "en"}
_NAMED = re.compile(
    rf"\b(korean|english)\s+{_WORDS_BETWEEN}(?:notes?|documents?|files?)\b"
    rf"|(한국어|한글|영어|영문)\s*(?:\S+\s+){{0,2}}\S*(?:노트|문서|자료|필기)",
    re.IGNORECASE,
)


def named_language(query: str) -> str | None:
    """The language code of the notes `query` names ("ko", "en"), or None."""
    found = _NAMED.search(query)
    if found is None:
        return None
    english, korean = found.groups()
    return _ENGLISH_NAMES[english.lower()] if english else _KOREAN_NAMES[korean]
