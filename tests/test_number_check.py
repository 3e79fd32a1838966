"""The number check on small real texts (real Kiwi, real BM25; no model needed): a number
an answer states must be stated in the evidence, or in a passage the reader read, next to
what it counts and about the thing the answer says it is about."""

from test_evidence_verify import KOREAN, PROSE, TABLE, _weights

from agent.verify import verify


def test_a_number_stated_in_a_passage_the_reader_read_backs_its_answer():
    row = "Type: IQ2_XXS, Bits per weight: 2.06"
    weights = _weights(row, PROSE)
    question = "How many bits per weight does llama.cpp's IQ2_XXS quantization type use?"
    answer = "The IQ2_XXS quantization type uses 2.06 bits per weight."
    assert verify(answer, question, [row], weights).ok  # "uses" is no subject: bits are
    assert verify(answer, question, [row], weights, (row,)).ok
    wrong = "The IQ2_XXS quantization type uses 3.44 bits per weight."
    verdict = verify(wrong, question, [row], weights, (row,))
    assert not verdict.ok and verdict.reason.endswith(": 3.44")


def test_a_number_the_reader_read_about_another_thing_does_not_back_its_answer():
    minilm = "all-MiniLM-L6-v2 is a small embedder with 22.7 million parameters."
    bge = "BGE-M3 embeds 100 languages and reads passages of up to 8192 tokens."
    weights = _weights(minilm, bge, TABLE, PROSE, KOREAN, "Embedders map text to vectors.")
    question = "How many parameters does the BGE-M3 embedding model have?"
    wrong = "The BGE-M3 embedding model has 22.7 million parameters."
    verdict = verify(wrong, question, [bge], weights, (minilm, bge))
    assert not verdict.ok and verdict.reason.endswith(": 22.7M")  # "22.7 million", scale joined
    asked = "How many parameters does all-MiniLM-L6-v2 have?"
    right = "all-MiniLM-L6-v2 has 22.7 million parameters."
    assert verify(right, asked, [bge], weights, (minilm, bge)).ok


def test_a_model_size_is_not_a_count_and_a_scale_word_is_its_letter():
    """ "7B" is the size of a model, never the 7 of "7 layers", even beside "층" in a passage
    the reader read or in the question's own name (Mixtral 8x7B); "175 billion" is "175B"."""
    size = "Mistral 7B 모델은 트랜스포머 층을 32개 쌓고, 7B 모델의 층마다 GQA를 쓴다."
    weights = _weights(size, KOREAN, PROSE, TABLE)
    question = "Mixtral 8x7B 모델은 트랜스포머 층이 몇 개인가?"
    wrong = "Mixtral 8x7B 모델의 트랜스포머 층은 7개입니다."
    verdict = verify(wrong, question, [size], weights, (size,))
    assert not verdict.ok and verdict.reason.endswith(": 7")
    gpt = "GPT-3 has 175B parameters in 96 layers."
    weights = _weights(gpt, PROSE, TABLE)
    asked = "How many parameters does GPT-3 have?"
    assert verify("GPT-3 has 175 billion parameters.", asked, [gpt], weights, (gpt,)).ok
    verdict = verify("GPT-3 has 175 parameters.", asked, [gpt], weights, (gpt,))
    assert not verdict.ok and verdict.reason.endswith(": 175")


def test_a_number_written_before_the_noun_it_counts_counts_that_noun():
    """ "층 하나에 7개 모듈" counts modules, not layers, though 층 stands beside the 7."""
    modules = "LoRA를 층 하나에 7개 모듈 모두에 붙이면 학습할 파라미터가 늘어난다."
    weights = _weights(modules, KOREAN, PROSE, TABLE)
    question = "이 모델은 트랜스포머 층이 몇 개인가?"
    wrong = "이 모델의 트랜스포머 층은 7개입니다."
    verdict = verify(wrong, question, [modules], weights, (modules,))
    assert not verdict.ok and verdict.reason.endswith(": 7")
    asked = "LoRA를 층 하나에 몇 개 모듈에 붙일 수 있어?"
    right = "LoRA는 층 하나에 7개 모듈에 붙일 수 있어."
    assert verify(right, asked, [modules], weights, (modules,)).ok


def test_a_table_row_that_names_the_asked_thing_backs_a_korean_answer():
    row = "정밀도: INT4, 파라미터당 크기: 0.5바이트, 가중치 메모리: 약 3.5GB"
    other = "정밀도: FP16, 파라미터당 크기: 2바이트, 가중치 메모리: 약 14GB"
    weights = _weights(row, other, KOREAN, PROSE, TABLE)
    question = "70억 파라미터 모델을 INT4로 저장하면 대략 몇 GB가 필요해?"
    answer = "70억 파라미터 모델을 INT4로 저장하면 약 3.5GB가 필요합니다."
    assert verify(answer, question, [other], weights, (other, row)).ok
    wrong = "70억 파라미터 모델을 INT4로 저장하면 약 14GB가 필요합니다."
    assert not verify(wrong, question, [other], weights, (other, row)).ok


def test_the_section_a_sentence_stands_in_names_what_its_number_is_about():
    line = "query를 32 토큰까지 [MASK]로 padding = query augmentation"
    weights = _weights(line, KOREAN, PROSE, TABLE, "ColBERT는 토큰마다 벡터를 저장한다.")
    question = "ColBERT에서 query를 몇 토큰까지 [MASK]로 채워?"
    answer = "ColBERT에서 query를 32 토큰까지 [MASK]로 채워."
    assert not verify(answer, question, [line], weights).ok  # the line never names ColBERT
    section = {line: "13주차 Reranking과 Late Interaction ## ColBERT: late interaction"}
    assert verify(answer, question, [line], weights, headings=section).ok


def test_a_table_column_named_in_the_answer_binds_its_number():
    """ "Exponent: 8" backs "The exponent bit count is 8" although "count", not "exponent", is
    the question term nearest the 8; another column's number does not."""
    row = (
        "Format: bfloat16, Sign: 1, Exponent: 8, Mantissa: 7, Bias: 127, "
        "Machine epsilon: 2^-7 = 0.0078125"
    )
    question = "What are the sign, exponent and mantissa bit counts of bfloat16?"
    weights = _weights(row, PROSE, TABLE)
    assert verify("The exponent bit count is 8.", question, [row], weights, (row,)).ok
    assert not verify("The exponent bit count is 8.", question, [row], weights).ok  # not read
    for wrong in ("The exponent bit count is 7.", "The mantissa bit count is 8."):
        verdict = verify(wrong, question, [row], weights, (row,))
        assert not verdict.ok and "numbers the evidence does not state" in verdict.reason, wrong


def test_a_number_is_bound_to_the_names_of_its_own_clause():
    """ "6 layers" is about all-MiniLM-L6-v2 ("L6" names it), not about the FAISS index the
    sentence's other clause speaks of; a clause without a name takes the sentence's."""
    layers = '6 transformer layers (the "L6" in the name), hidden size 384'
    memory = "One million 384-dimensional float32 vectors in a flat FAISS index take about 1.5 GB."
    weights = _weights(layers, memory, PROSE, TABLE, "MiniLM is a small embedder.")
    question = (
        "The all-MiniLM-L6-v2 embedding model: how many transformer layers does it have, and "
        "how much memory do one million of its float32 vectors take in a flat FAISS index?"
    )
    answer = (
        "The all-MiniLM-L6-v2 model has 6 transformer layers, and one million of its float32 "
        "vectors take about 1.5 GB in a flat FAISS index."
    )
    assert verify(answer, question, [layers], weights, (layers, memory)).ok
    bge = "BGE-M3 embeds 100 languages."
    minilm = "all-MiniLM-L6-v2 has 22.7 million parameters."
    asked = "How many parameters does BGE-M3 have?"
    verdict = verify("For BGE-M3, the count is 22.7 million.", asked, [bge], weights, (bge, minilm))
    assert not verdict.ok and verdict.reason.endswith(": 22.7M")


def test_a_number_read_in_the_other_language_backs_an_answer_that_shares_a_name_with_it():
    english = "About 800,000 samples curated with DeepSeek-R1 were used to fine-tune six models."
    korean = "이웃 ID를 2 × M개 저장하므로, M = 32면 벡터당 약 256바이트가 추가된다."
    weights = _weights(english, korean, KOREAN, PROSE, TABLE)
    asked = "DeepSeek-R1 증류 모델들은 샘플 몇 개로 미세조정했어?"
    right = "DeepSeek-R1 증류 모델들은 샘플 800,000개로 미세조정했어."
    assert verify(right, asked, [english], weights, (english,)).ok
    wrong = "DeepSeek-R1 증류 모델들은 샘플 900,000개로 미세조정했어."
    assert not verify(wrong, asked, [english], weights, (english,)).ok
    unanchored = "증류 모델들은 샘플 800,000개로 미세조정했어."  # nothing written the same way
    assert not verify(unanchored, asked, [english], weights, (english,)).ok
    question = "How many extra bytes per vector do the graph links cost when M = 32?"
    answer = "When M = 32, the graph links cost about 256 bytes per vector."
    assert verify(answer, question, [korean], weights, (korean,)).ok


def test_a_question_word_is_never_what_a_number_counts():
    line = "TF32는 가수 10비트(부호 포함 19비트)를 쓰는 내부 연산 형식이다."
    weights = _weights(line, KOREAN, PROSE, TABLE)
    question = "행렬 곱에 내부적으로 쓰는 19비트짜리 형식은?"
    answer = "TF32는 19비트짜리 형식입니다."
    assert verify(answer, question, [line], weights, (line,)).ok  # 19 counts 형식, not 쓰


def test_an_identifier_in_the_section_names_what_its_number_is_about():
    line = "M = 32면 벡터당 약 256바이트가 추가된다."
    weights = _weights(line, KOREAN, PROSE, TABLE, "HNSW는 그래프 기반 근사 검색이다.")
    question = "HNSW에서 M = 32면 벡터당 몇 바이트가 추가돼?"
    answer = "HNSW에서 M = 32면 벡터당 약 256바이트가 추가됩니다."
    assert not verify(answer, question, [line], weights, (line,)).ok  # HNSW is never named
    section = {line: "FAISS 정리 > IndexHNSWFlat: 그래프 기반 근사 검색"}
    assert verify(answer, question, [line], weights, (line,), section).ok
