"""Outline-aware chunking: no fragments, the heading path in the indexed text, exact offsets."""

from retrieval import chunking
from retrieval.chunking import MIN_CHARS, chunk_document, indexed_text
from retrieval.loaders import Document, Page
from retrieval.paths import SAMPLE_CORPUS
from retrieval.tokenize import tokenize

OUTLINE = """# 7주차 Quantization 실습

교수님: 오늘은 weight-only 양자화만

## 왜 양자화?

- 메모리 ↓ (7B fp16 = 14GB, INT4면 3.5GB)
- decode는 memory-bound → weight 읽는 양이 줄면 그만큼 빨라짐
- 노트북 CPU에서도 7B 모델을 돌릴 수 있게 됨
- 대신 정확도 손실 → 얼마나 잃는지 perplexity로 측정

## 방법들

### RTN

- round-to-nearest, calibration 없음

### GPTQ

- layer마다 Hessian 써서 오차 보정
  - calibration 문장 128개

### AWQ

- activation 큰 channel의 weight 보호
- salient weight 1%만 지켜도 효과 큼

## 실습 결과

- INT4 g128: perplexity +0.3
- INT3: 급격히 나빠짐
- group size 작을수록 정확 (g32 > g128) 대신 scale 저장 공간 ↑
- llama.cpp Q4_K_M이랑 비교하면 GPTQ INT4와 거의 비슷
- calibration data를 한국어로 바꾸면 한국어 perplexity 조금 좋아짐
- 속도: INT4 decode가 fp16보다 약 2.5배 빠름 (RTX 4090 기준)

## 과제

- 다음 주까지 제출
"""


def _chunks(text: str, kind: str = "markdown", number: int | None = None):
    doc = Document("notes/outline.md", kind, [Page(text, number)])
    return chunk_document(doc)


def test_outline_note_has_no_fragments_and_exact_offsets(monkeypatch):
    assert len(_chunks(OUTLINE)) == 1  # 675 characters: one chunk, not nine fragments
    monkeypatch.setattr(chunking, "MAX_CHARS", 300)  # a longer note, in effect
    chunks = _chunks(OUTLINE)
    assert len(chunks) >= 2
    assert all(len(c.text) <= chunking.MAX_CHARS + MIN_CHARS for c in chunks)
    for chunk in chunks:
        assert len(chunk.text) >= MIN_CHARS, chunk
        assert OUTLINE[chunk.start : chunk.end] == chunk.text
        assert chunk.page is None and chunk.chunk_id.startswith("notes/outline.md#")
    # spans follow the note in order, and every bullet is in some chunk
    assert [c.start for c in chunks] == sorted(c.start for c in chunks)
    covered = "".join(c.text for c in chunks)
    for line in OUTLINE.splitlines():
        if line.strip().startswith("-"):
            assert line.strip() in covered, line


def test_heading_path_is_in_the_indexed_text(monkeypatch):
    monkeypatch.setattr(chunking, "MAX_CHARS", 300)
    chunks = _chunks(OUTLINE)
    gptq = next(c for c in chunks if "Hessian" in c.text)
    # the packed sub-sections keep their titles: in the heading path or in the text itself
    assert gptq.heading.startswith("7주차 Quantization 실습")
    assert "GPTQ" in gptq.heading + gptq.text
    indexed = indexed_text(gptq)
    assert indexed.startswith(gptq.heading + "\n") and indexed.endswith(gptq.text)
    assert "gptq" in tokenize(indexed)
    assert "quantization" in tokenize(indexed)  # from the title, not the chunk's own bullets


def test_one_section_chunk_keeps_its_full_path_and_body_only():
    long_body = "\n".join(f"- bullet {i}: " + "x" * 60 for i in range(8))
    text = f"# Course\n\n## Part A\n\n### Topic\n\n{long_body}\n\n## Part B\n\n{long_body}\n"
    chunks = _chunks(text)
    assert [c.heading for c in chunks] == ["Course > Part A > Topic", "Course > Part B"]
    for chunk in chunks:
        assert text[chunk.start : chunk.end] == chunk.text and chunk.text.startswith("- bullet 0")


def test_short_document_is_one_chunk_and_pages_stay_apart():
    assert [c.text for c in _chunks("# T\n\n- one\n")] == ["- one"]
    doc = Document("a.pdf", "pdf", [Page("# A\n\n- a\n", 1), Page("# B\n\n- b\n", 2)])
    chunks = chunk_document(doc)
    assert [(c.page, c.heading, c.text) for c in chunks] == [(1, "A", "- a"), (2, "B", "- b")]


def test_long_section_cut_with_overlap_and_no_short_tail():
    sentences = " ".join(f"Sentence {i} says something about quantization." for i in range(60))
    text = f"# Long\n\n{sentences}\n\n## Tail\n\n- short\n"
    chunks = _chunks(text)
    assert len(chunks) >= 3
    assert all(len(c.text) >= MIN_CHARS for c in chunks)
    assert all(len(c.text) <= chunking.MAX_CHARS + MIN_CHARS for c in chunks)
    assert all(text[c.start : c.end] == c.text for c in chunks)
    assert "- short" in chunks[-1].text  # the lone short section joined its neighbour


def test_sample_outline_notes_have_no_fragments():
    from eval.dataset import document_text

    for path in sorted(SAMPLE_CORPUS.glob("*강의노트*.md")) + sorted(
        SAMPLE_CORPUS.glob("*lecture-notes.md")
    ):
        text = document_text(path)
        chunks = _chunks(text)
        assert all(len(c.text) >= MIN_CHARS for c in chunks), path.name
        assert all(text[c.start : c.end] == c.text for c in chunks), path.name


def test_index_terms_include_the_heading_path(tmp_path, monkeypatch):
    from retrieval.store import Index, ingest

    monkeypatch.delenv("BITRAG_EMBEDDER", raising=False)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "outline.md").write_text(OUTLINE, encoding="utf-8")
    ingest([notes], tmp_path / "index")
    index = Index.load(tmp_path / "index")
    assert index.manifest["chunking"] == chunking.PARAMS
    (chunk,) = index.chunks
    assert "Quantization" not in chunk.text and "quantization" in index.terms()[0]
    assert index.search("Quantization 실습 과제", 1, "bm25")[0].chunk == chunk
