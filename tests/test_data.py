"""The sample corpus and question set: counts, schema, and that the checks can fail."""

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from eval.dataset import QA_PATH, document_text, load_questions, validate
from retrieval.paths import SAMPLE_CORPUS
from retrieval.tokenize import has_hangul

DATA = SAMPLE_CORPUS.parent


def _corpus_files() -> list[Path]:
    return sorted(p for p in SAMPLE_CORPUS.iterdir() if p.is_file())


def test_corpus_counts_and_sizes():
    files = _corpus_files()
    suffixes = Counter(p.suffix for p in files)
    assert len(files) >= 40
    assert suffixes[".pdf"] >= 2 and suffixes[".html"] >= 2
    korean = [p for p in files if has_hangul(document_text(p)[:400])]
    assert len(korean) >= 15
    for path in files:
        text = document_text(path)
        assert 300 <= len(text.split()) <= 2000, path.name
        if path.suffix in (".md", ".html"):  # txt titles and pdf bold lines are not marked up
            assert "\n#" in "\n" + text, f"{path.name} has no headings"


def test_question_counts():
    questions = load_questions()
    types = Counter(q.type for q in questions)
    assert len(questions) >= 120
    assert sum(q.lang == "ko" for q in questions) >= 40
    assert types["unanswerable"] >= 20
    assert all(types[t] >= 4 for t in ("factual", "paraphrase", "cross-language", "multi-hop"))
    assert all(types[t] >= 4 for t in ("numeric", "follow-up"))
    assert 60 <= sum(q.split == "dev" for q in questions) <= 100


def test_outline_notes_and_their_question_group():
    outline = {q.id: q for q in load_questions() if q.group == "outline"}
    assert len(outline) >= 30
    assert 0.25 <= sum(q.split == "dev" for q in outline.values()) / len(outline) <= 0.4
    notes = {s for q in outline.values() for s in q.sources}
    assert len(notes) >= 6
    assert sum(has_hangul(document_text(SAMPLE_CORPUS / n)[:400]) for n in notes) >= 4
    for name in notes:  # outline form: most non-blank lines are bullets or headings
        lines = [x.strip() for x in document_text(SAMPLE_CORPUS / name).splitlines() if x.strip()]
        assert sum(x.startswith(("-", "#")) for x in lines) / len(lines) >= 0.8, name


def test_question_file_is_valid():
    assert validate() == []


def _break(tmp_path: Path, line: int, change: dict) -> list[str]:
    rows = [json.loads(x) for x in QA_PATH.read_text(encoding="utf-8").splitlines()]
    rows[line] = {**rows[line], **change}
    broken = tmp_path / "qa.jsonl"
    broken.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return validate(broken)


def test_validation_catches_broken_lines(tmp_path):
    first = load_questions()[0]
    assert any("keyword group" in p for p in _break(tmp_path, 0, {"keywords": [["zzqqxx"]]}))
    assert any("does not exist" in p for p in _break(tmp_path, 0, {"sources": ["nope.md"]}))
    assert any("duplicate id" in p for p in _break(tmp_path, 1, {"id": first.id}))
    assert any("type" in p for p in _break(tmp_path, 0, {"type": "trivia"}))
    assert any("group" in p for p in _break(tmp_path, 0, {"group": "Outline Notes"}))
    assert any("unknown keys" in p for p in _break(tmp_path, 0, {"groups": "outline"}))
    follow_up = next(i for i, q in enumerate(load_questions()) if q.follows)
    assert any("unknown question" in p for p in _break(tmp_path, follow_up, {"follows": "x-999"}))


def test_generator_reproduces_the_pdf_and_html_files(tmp_path):
    copy = tmp_path / "data"
    (copy / "corpus").mkdir(parents=True)
    shutil.copy(DATA / "generate_docs.py", copy)
    shutil.copytree(DATA / "generated_src", copy / "generated_src")
    subprocess.run([sys.executable, str(copy / "generate_docs.py")], check=True, timeout=120)
    generated = sorted((copy / "corpus").iterdir())
    assert len(generated) == 4
    for path in generated:
        assert path.read_bytes() == (SAMPLE_CORPUS / path.name).read_bytes(), path.name
