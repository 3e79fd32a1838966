"""The question set in data/eval/qa.jsonl: loading it and checking every line against the corpus.

Schema (one JSON object per line): id, question, answer, keywords (groups of
acceptable alternatives), sources (paths relative to data/corpus), lang,
doc_lang, type, split, `follows` on follow-up questions, and an optional `group`
(a lowercase name such as "outline") that benchmarks report as its own row. See
data/README.md.
"""

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from retrieval.loaders import Document, RawFile, parse, read_raw
from retrieval.paths import SAMPLE_CORPUS

QA_PATH = SAMPLE_CORPUS.parent / "eval" / "qa.jsonl"
TYPES = frozenset(
    {"factual", "paraphrase", "cross-language", "multi-hop", "numeric", "follow-up", "unanswerable"}
)
LANGS = frozenset({"en", "ko"})
DOC_LANGS = frozenset({"en", "ko", "mixed", "none"})
SPLITS = frozenset({"dev", "test"})
REQUIRED = ("id", "question", "answer", "keywords", "sources", "lang", "doc_lang", "type", "split")
OPTIONAL = ("follows", "group")
GROUP = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answer: str
    keywords: list[list[str]]
    sources: list[str]
    lang: str
    doc_lang: str
    type: str
    split: str
    follows: str | None = None
    group: str | None = None

    @property
    def answerable(self) -> bool:
        return self.type != "unanswerable"


def load_questions(path: Path = QA_PATH) -> list[Question]:
    with path.open(encoding="utf-8") as f:
        return [Question(**json.loads(line)) for line in f if line.strip()]


@cache
def document_text(path: Path) -> str:
    """The text bitrag indexes for a corpus file (pdf and html go through the loaders)."""
    raw = read_raw(path)
    doc = parse(raw) if isinstance(raw, RawFile) else raw
    return "\n".join(p.text for p in doc.pages) if isinstance(doc, Document) else ""


def _line_problems(row: dict, corpus: Path) -> list[str]:
    missing = [key for key in REQUIRED if key not in row]
    if missing:
        return [f"missing keys {missing}"]
    extra = set(row) - set(REQUIRED) - set(OPTIONAL)
    problems = [f"unknown keys {sorted(extra)}"] if extra else []
    for key, allowed in (("type", TYPES), ("lang", LANGS), ("doc_lang", DOC_LANGS)):
        if row[key] not in allowed:
            problems.append(f"{key} {row[key]!r} not one of {sorted(allowed)}")
    if row["split"] not in SPLITS:
        problems.append(f"split {row['split']!r} not one of {sorted(SPLITS)}")
    if "group" in row and not (isinstance(row["group"], str) and GROUP.match(row["group"])):
        problems.append(f"group {row['group']!r} is not a short lowercase name like 'outline'")
    if not str(row["question"]).strip():
        problems.append("empty question")
    if (row["type"] == "follow-up") != ("follows" in row):
        problems.append("`follows` is required on follow-up questions and only there")
    if row["type"] == "unanswerable":
        if row["sources"] or row["keywords"] or row["doc_lang"] != "none":
            problems.append("unanswerable questions have no sources/keywords and doc_lang none")
        return problems
    if not row["sources"] or not row["keywords"]:
        return problems + ["answerable questions need sources and keywords"]
    texts = []
    for source in row["sources"]:
        path = corpus / source
        if not path.is_file():
            problems.append(f"source {source} does not exist")
        else:
            texts.append(document_text(path).lower())
    for group in row["keywords"]:
        if not any(alt.lower() in text for alt in group for text in texts):
            problems.append(f"no alternative of keyword group {group} occurs in its sources")
    return problems


def validate(path: Path = QA_PATH, corpus: Path = SAMPLE_CORPUS) -> list[str]:
    """Every problem in the file, as 'line N (id): what'; empty when the file is valid."""
    problems: list[str] = []
    rows: list[dict] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
        except ValueError as exc:
            problems.append(f"line {n}: not JSON ({exc})")
            continue
        rows.append(row)
        problems += [f"line {n} ({row.get('id')}): {p}" for p in _line_problems(row, corpus)]
    ids = [row.get("id") for row in rows]
    problems += [f"duplicate id {i}" for i in sorted({i for i in ids if ids.count(i) > 1})]
    by_id = {row.get("id"): row for row in rows}
    for row in rows:
        parent = by_id.get(row.get("follows")) if "follows" in row else None
        if "follows" in row and parent is None:
            problems.append(f"{row['id']} follows unknown question {row['follows']}")
        elif parent and parent.get("split") != row.get("split"):
            problems.append(f"{row['id']} is not in the split of {row['follows']}")
    return problems
