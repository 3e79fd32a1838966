"""BM25 terms for Korean and English text.

Text with Hangul goes through Kiwi (kiwipiepy) and keeps content morphemes;
other text is lower-cased, split on word characters, stripped of stop words and
lightly stemmed. Latin words and numbers inside Korean text get the English
treatment, so "QAT" or "q4_k_m" in a Korean note match the same terms in an
English question.
"""

import re
import threading
from functools import lru_cache

from kiwipiepy import Kiwi

_HANGUL = re.compile(r"[\uac00-\ud7a3]")
_WORD = re.compile(r"[a-z0-9]+(?:[_.][a-z0-9]+)*")
# Kiwi tags kept as content: nouns, numerals, verb/adjective stems, roots,
# general adverbs and hanja. Latin words and numbers are taken by english_terms.
_KIWI_CONTENT = ("NNG", "NNP", "NR", "VV", "VA", "XR", "MAG", "SH")
_STOP_WORDS = frozenset(
    """a an and are as at be been but by can could did do does for from had has have how
    i if in into is it its me my no not of on or our so such that the their them then
    there these they this those to was we were what when where which who whom why will
    with would you your""".split()
)


_KIWI_LOCK = threading.Lock()


def kiwi() -> Kiwi:
    """The process's one Kiwi analyzer, built once even when threads ask for it together."""
    with _KIWI_LOCK:
        return _build_kiwi()


@lru_cache(maxsize=1)
def _build_kiwi() -> Kiwi:
    """Without the multi-word dictionary Kiwi loads in 1.4 s instead of 2.6 s (the cost of
    every cold Korean question) and gave the same terms for all 921 Korean lines of the
    sample corpus and questions."""
    return Kiwi(load_multi_dict=False)


def preload_kiwi() -> None:
    """Build Kiwi on a background thread, while a cold start imports everything else."""
    threading.Thread(target=kiwi, name="kiwi-preload", daemon=True).start()


def has_hangul(text: str) -> bool:
    return _HANGUL.search(text) is not None


def language(text: str) -> str:
    """ "ko" for text with Hangul, else "en": the split every language-aware choice here uses."""
    return "ko" if has_hangul(text) else "en"


def stem(word: str) -> str:
    """Light English stemming: plural endings only, so terms stay readable."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith("sses"):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def english_terms(text: str) -> list[str]:
    words = _WORD.findall(text.lower())
    return [stem(w) for w in words if w not in _STOP_WORDS]


def korean_terms(text: str) -> list[str]:
    """Kiwi content morphemes of the Hangul part, plus the English terms of the Latin part."""
    morphemes = [t.form for t in kiwi().tokenize(text) if t.tag.startswith(_KIWI_CONTENT)]
    return morphemes + english_terms(text)


def tokenize(text: str) -> list[str]:
    """Terms for BM25, choosing the Korean or English path by whether the text has Hangul."""
    return korean_terms(text) if has_hangul(text) else english_terms(text)
