"""The questions `bitrag eval` asks: any file in the qa.jsonl schema, checked line by line.

The schema is eval/dataset.py's (see data/README.md). A user's own file is checked for
shape only (its sources live in the user's folder, not in data/corpus): every line a JSON
object with the required keys of the right types, known type/lang/split values, unique ids,
and follow-ups that name a question of the same file. The first problem is one UserError
line naming the file and line. `missing_sources` names the sources the index does not hold
(`bitrag eval` warns of each and lists them in report.md).
"""

import json
from collections.abc import Iterable
from pathlib import Path

from eval.dataset import DOC_LANGS, LANGS, OPTIONAL, REQUIRED, SPLITS, TYPES, Question
from eval.scoring import ordered
from retrieval.errors import UserError

_LISTS = ("keywords", "sources")


def _problem(row: object) -> str | None:
    if not isinstance(row, dict):
        return "not a JSON object"
    missing = [k for k in REQUIRED if k not in row]
    if missing:
        return f"missing keys {', '.join(missing)}"
    extra = sorted(set(row) - set(REQUIRED) - set(OPTIONAL))
    if extra:
        return f"unknown keys {', '.join(extra)}"
    for k in REQUIRED:
        if k not in _LISTS and not isinstance(row[k], str):
            return f"{k} must be a string"
    if not row["question"].strip():
        return "empty question"
    if not isinstance(row["sources"], list) or not all(isinstance(s, str) for s in row["sources"]):
        return "sources must be a list of strings"
    groups = row["keywords"]
    if not isinstance(groups, list) or not all(
        isinstance(g, list) and g and all(isinstance(a, str) for a in g) for g in groups
    ):
        return "keywords must be a list of non-empty lists of strings"
    for k, allowed in (
        ("type", TYPES),
        ("lang", LANGS),
        ("doc_lang", DOC_LANGS),
        ("split", SPLITS),
    ):
        if row[k] not in allowed:
            return f"{k} {row[k]!r} is not one of {', '.join(sorted(allowed))}"
    if row["type"] != "unanswerable" and not groups:
        return "an answerable question needs keywords"
    if "follows" in row and not isinstance(row["follows"], str):
        return "follows must be a question id"
    if "group" in row and not isinstance(row["group"], str):
        return "group must be a short name"
    return None


def load(path: Path) -> list[Question]:
    """Every question of the file, or a UserError naming its first problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"dataset {path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"dataset {path} is a folder, not a qa.jsonl file") from None
    except UnicodeDecodeError:
        raise UserError(f"dataset {path} is not UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"dataset {path} cannot be read ({exc.strerror})") from None
    questions: list[Question] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise UserError(f"dataset {path} line {n} is not JSON ({exc.msg})") from None
        if problem := _problem(row):
            raise UserError(f"dataset {path} line {n}: {problem} (see eval/README.md)")
        questions.append(Question(**row))
    if not questions:
        raise UserError(f"dataset {path} holds no questions")
    ids = [q.id for q in questions]
    if dup := sorted({i for i in ids if ids.count(i) > 1}):
        raise UserError(f"dataset {path}: duplicate id {dup[0]}")
    for q in questions:
        if q.follows and q.follows not in ids:
            raise UserError(f"dataset {path}: {q.id} follows unknown question {q.follows}")
    return questions


def select(questions: list[Question], split: str, limit: int | None, path: Path) -> list[Question]:
    """The split's questions, follow-ups right after their parent, the first `limit` of them."""
    chosen = [q for q in questions if split == "all" or q.split == split]
    chosen = ordered(chosen)[: limit or None]
    if not chosen:
        raise UserError(f"dataset {path} has no questions in the {split} split")
    return chosen


def missing_sources(questions: list[Question], indexed: Iterable[str]) -> list[dict]:
    """Each source a question names that no indexed document matches (the match retrieval is
    scored by: the path, its ending, or the file name): [{"id", "source"}], in order."""
    from eval.answers_per_rung import _matches

    documents = set(indexed)
    return [
        {"id": q.id, "source": wanted}
        for q in questions
        for wanted in q.sources
        if not any(_matches(doc, wanted) for doc in documents)
    ]
