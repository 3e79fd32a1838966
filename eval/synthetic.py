"""A deterministic synthetic corpus for scale benchmarks: English and Korean sections with a
Zipf-like vocabulary, so BM25 postings and dense vectors look like those of real notes."""

import random
from pathlib import Path

_EN = """quantization retrieval vector index model weight bits layer token cache memory speed
accuracy chunk query score rank fusion teacher student pruning sparse dense adapter matrix
gradient optimizer scale zero point block group channel outlier calibration perplexity
divergence embedding cosine neighbour graph cluster probe latency throughput batch context
attention head kernel precision float integer format exponent mantissa overflow rounding
agent tool server client transport schema grammar router grader citation source note""".split()
_KO = """양자화 검색 벡터 색인 모델 가중치 비트 계층 토큰 캐시 메모리 속도 정확도 청크 질의
점수 순위 융합 교사 학생 가지치기 희소 밀집 어댑터 행렬 기울기 스케일 보정 발산 임베딩
유사도 그래프 지연 처리량 문맥 정밀도 형식 지수 가수 반올림 에이전트 도구 서버""".split()
_PARTICLES = ["은", "는", "이", "가", "을", "를", "에서", "으로", "의", "와"]


def _word(rng: random.Random, words: list[str]) -> str:
    """Mostly common words, with a long tail of rare made-up terms (as in real notes)."""
    if rng.random() < 0.15:
        return f"{rng.choice(words)}{int(rng.paretovariate(0.6))}"
    return words[min(int(rng.expovariate(0.08)), len(words) - 1)]


def section(rng: random.Random, korean: bool, words: int = 60) -> str:
    if korean:
        return " ".join(_word(rng, _KO) + rng.choice(_PARTICLES) for _ in range(words // 2)) + "."
    return " ".join(_word(rng, _EN) for _ in range(words)) + "."


def sections(count: int, seed: int = 0, korean_share: float = 0.3) -> list[str]:
    rng = random.Random(seed)
    return [section(rng, rng.random() < korean_share) for _ in range(count)]


def write_corpus(folder: Path, texts: list[str], per_file: int) -> int:
    """Markdown files of `per_file` headed sections each (one chunk per section); file count."""
    folder.mkdir(parents=True, exist_ok=True)
    files = 0
    for start in range(0, len(texts), per_file):
        body = "".join(
            f"## Section {start + i}\n\n{text}\n\n"
            for i, text in enumerate(texts[start : start + per_file])
        )
        (folder / f"doc-{files:06d}.md").write_text(f"# Document {files}\n\n{body}")
        files += 1
    return files


def queries(texts: list[str], count: int, seed: int = 1) -> list[str]:
    """Short queries made of a few words from random sections."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        words = rng.choice(texts).rstrip(".").split()
        start = rng.randrange(max(1, len(words) - 4))
        out.append(" ".join(words[start : start + rng.randint(2, 4)]))
    return out
