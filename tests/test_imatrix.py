"""The importance matrix with real llama.cpp on the embedded model: what the eval callback
collects (every layer's matmul weights, right widths, counts and values), the .dat round trip,
the array handed to llama_model_quantize, and quantizations it admits and changes."""

import ctypes
import hashlib
import math
import struct
import subprocess
import sys
from pathlib import Path

import llama_cpp
import numpy as np
import pytest
from gguf import GGUFReader
from gguf.quants import dequantize

from eval.imatrix import (
    GGMLTensor,
    Imatrix,
    _ggml,
    check_layout,
    collect,
    quantize_params_imatrix,
    read,
    weight_name,
    write,
)
from eval.quantize import _run_llama_quantize, file_type, quantize, source_type
from retrieval.errors import UserError
from retrieval.paths import SAMPLE_CORPUS

N_CTX = 128  # small windows, so each text is cut into several
MATMULS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Two real chunks of the sample notes (860 tokens together)."""
    names = ("gguf-k-quants.md", "fixed-point-qmn-arithmetic.md")
    return [(SAMPLE_CORPUS / name).read_text(encoding="utf-8")[:1400] for name in names]


@pytest.fixture(scope="module")
def imatrix(model_path: Path, texts: list[str]) -> Imatrix:
    return collect(model_path, texts, n_ctx=N_CTX)


@pytest.fixture(scope="module")
def gguf(model_path: Path) -> GGUFReader:
    return GGUFReader(model_path, "r")


def token_ids(model_path: Path, text: str, add_bos: bool) -> list[int]:
    vocab = llama_cpp.Llama(model_path=str(model_path), vocab_only=True, verbose=False)
    try:
        return vocab.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False)
    finally:
        vocab.close()


def test_every_layer_matmul_weight_has_an_entry_as_wide_as_its_rows(imatrix: Imatrix, gguf):
    n_layer = int(gguf.fields["llama.block_count"].contents())
    weights = {t.name: [int(n) for n in t.shape] for t in gguf.tensors if len(t.shape) == 2}
    expected = {f"blk.{i}.{m}.weight" for i in range(n_layer) for m in MATMULS}
    assert expected <= set(weights)  # the names are the GGUF's own
    # every 2-D blk weight is a matmul here; token_embd (tied output) is not collected
    assert set(imatrix.sums) == expected == {n for n in weights if n.startswith("blk.")}
    for name, sums in imatrix.sums.items():
        assert sums.dtype == np.float32 and sums.shape == (weights[name][0],), name
    assert imatrix.sums["blk.0.ffn_down.weight"].shape == (1536,)  # ne[0] is the input width


def test_counts_are_the_tokens_evaluated(imatrix: Imatrix, model_path: Path, texts: list[str]):
    lengths = [len(token_ids(model_path, text, add_bos=False)) for text in texts]
    bos = len(token_ids(model_path, "a", add_bos=True)) - 1  # 0: SmolLM2 adds no BOS
    windows = [math.ceil(n / (N_CTX - bos)) for n in lengths]  # a BOS opens each window
    assert all(w >= 2 for w in windows)  # the texts really were cut
    assert imatrix.chunks == sum(windows)
    assert set(imatrix.counts.values()) == {sum(lengths) + bos * sum(windows)}
    assert set(imatrix.counts) == set(imatrix.sums)


def test_sums_are_finite_non_negative_and_carry_signal(imatrix: Imatrix):
    for name, sums in imatrix.sums.items():
        assert np.isfinite(sums).all() and (sums >= 0).all(), name
        assert sums.max() > 0 and np.count_nonzero(sums) > 0.9 * sums.size, name
    # q, k and v read the same normed input, as do gate and up; down and output read others
    for i in (0, 29):
        block = {m: imatrix.sums[f"blk.{i}.{m}.weight"] for m in MATMULS}
        assert np.array_equal(block["attn_q"], block["attn_k"])
        assert np.array_equal(block["attn_q"], block["attn_v"])
        assert np.array_equal(block["ffn_gate"], block["ffn_up"])
        assert not np.allclose(block["attn_q"], block["attn_output"])


def test_first_layer_sums_equal_a_numpy_rms_norm_of_the_embeddings(model_path: Path, gguf):
    """blk.0.attn_q's input is rms_norm(token embeddings) * attn_norm: recomputed from the
    GGUF, its per-column sum of squares must match what was read out of llama.cpp."""
    text = (SAMPLE_CORPUS / "gguf-k-quants.md").read_text(encoding="utf-8")[:900]
    got = collect(model_path, [text], n_ctx=512)
    ids = token_ids(model_path, text, add_bos=True)
    assert got.counts["blk.0.attn_q.weight"] == len(ids) and got.chunks == 1
    tensors = {t.name: t for t in gguf.tensors}
    embd = tensors["token_embd.weight"]
    x = dequantize(embd.data, embd.tensor_type)[ids].astype(np.float64)
    eps = float(gguf.fields["llama.attention.layer_norm_rms_epsilon"].contents())
    x = x / np.sqrt((x * x).mean(axis=1, keepdims=True) + eps)
    x *= np.asarray(tensors["blk.0.attn_norm.weight"].data, np.float64)
    expected = (x * x).sum(axis=0)
    np.testing.assert_allclose(got.sums["blk.0.attn_q.weight"], expected, rtol=1e-4)


def test_write_then_read_gives_the_same_matrix(imatrix: Imatrix, tmp_path: Path):
    path = tmp_path / "notes.imatrix.dat"
    write(imatrix, path)
    assert [p.name for p in tmp_path.iterdir() if p.name != "home"] == [path.name]  # no temp
    data = path.read_bytes()
    assert struct.unpack_from("<i", data)[0] == len(imatrix.sums)
    expected_size = 4 + sum(4 + len(n) + 8 + 4 * s.size for n, s in imatrix.sums.items())
    assert len(data) == expected_size + 8 + len(imatrix.dataset.encode())
    back = read(path)
    assert list(back.sums) == sorted(imatrix.sums)
    assert back.counts == imatrix.counts
    assert back.chunks == imatrix.chunks and back.dataset == imatrix.dataset
    for name, sums in imatrix.sums.items():
        assert back.sums[name].dtype == np.float32
        assert np.array_equal(back.sums[name], sums), name


def test_read_refuses_a_truncated_file(imatrix: Imatrix, tmp_path: Path):
    path = tmp_path / "cut.dat"
    write(imatrix, path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(UserError, match="truncated or not a llama.cpp imatrix"):
        read(path)


def test_quantize_params_array_holds_the_means(imatrix: Imatrix):
    array, keepalive = quantize_params_imatrix(imatrix)
    assert len(array) == len(imatrix.sums) + 1
    assert array[len(imatrix.sums)].name is None and not array[len(imatrix.sums)].data
    for entry in array[: len(imatrix.sums)]:
        name = entry.name.decode()
        assert entry.size == imatrix.sums[name].size
        values = np.ctypeslib.as_array(entry.data, shape=(entry.size,))
        np.testing.assert_allclose(values, imatrix.sums[name] / imatrix.counts[name], rtol=1e-6)
    assert keepalive


def test_layout_check_catches_a_wrong_struct():
    """A real tensor made by libggml-base reads right through GGMLTensor; a struct with one
    field too narrow fails the check instead of reading the wrong memory."""

    class InitParams(ctypes.Structure):
        _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p)]
        _fields_ += [("no_alloc", ctypes.c_bool)]

    class Narrow(ctypes.Structure):  # ne as int32: every later field moves
        _fields_ = [(n, ctypes.c_int32 * 4 if n == "ne" else t) for n, t in GGMLTensor._fields_]

    lib = _ggml()
    lib.ggml_init.restype, lib.ggml_init.argtypes = ctypes.c_void_p, [InitParams]
    lib.ggml_new_tensor_2d.restype = ctypes.c_void_p
    lib.ggml_new_tensor_2d.argtypes = [ctypes.c_void_p, ctypes.c_int] + [ctypes.c_int64] * 2
    lib.ggml_set_name.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.ggml_free.argtypes = [ctypes.c_void_p]
    lib.ggml_tensor_overhead.restype = ctypes.c_size_t
    # ggml_tensor_overhead() = sizeof(struct ggml_object), 32 bytes, + sizeof(struct ggml_tensor)
    assert lib.ggml_tensor_overhead() - ctypes.sizeof(GGMLTensor) == 32
    ctx = lib.ggml_init(InitParams(1 << 20, None, False))
    try:
        address = lib.ggml_new_tensor_2d(ctx, llama_cpp.GGML_TYPE_F32, 8, 3)
        lib.ggml_set_name(address, b"blk.7.ffn_up.weight")
        t = GGMLTensor.from_address(address)
        check_layout(lib, t)
        assert (list(t.ne), list(t.nb)) == ([8, 3, 1, 1], [4, 32, 96, 96])
        assert weight_name(t.name) == "blk.7.ffn_up.weight"
        with pytest.raises(RuntimeError, match=r"ggml_tensor layout mismatch \(name\)"):
            check_layout(lib, Narrow.from_address(address))
    finally:
        lib.ggml_free(ctx)
    assert weight_name(b"CUDA0#blk.0.attn_k.weight#0") == "blk.0.attn_k.weight"
    assert weight_name(b"token_embd.weight") is None and weight_name(b"k-0 (view)") is None


def test_q2_k_s_is_refused_without_an_imatrix_and_works_with_one(
    imatrix: Imatrix, model_path: Path, tmp_path: Path
):
    with pytest.raises(UserError, match="Q2_K_S needs an importance matrix"):
        quantize(model_path, ["Q2_K_S"], tmp_path / "plain")
    reason = _run_llama_quantize(model_path, tmp_path / "raw.gguf", file_type("Q2_K_S"))
    assert "requires an imatrix" in reason  # llama.cpp's own refusal
    result = quantize(model_path, ["Q2_K_S"], tmp_path / "weighted", imatrix=imatrix)
    path = Path(result["outputs"][0]["path"])
    assert source_type(path) == "Q2_K_S"
    llm = llama_cpp.Llama(
        model_path=str(path), n_ctx=256, n_threads=1, n_threads_batch=1, verbose=False
    )
    try:
        out = llm.create_completion("The capital of France is", max_tokens=4, temperature=0)
    finally:
        llm.close()
    assert out["usage"]["completion_tokens"] > 0


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def quantized(model_path: Path, type_name: str, out: Path, imatrix: Imatrix | None) -> Path:
    return Path(quantize(model_path, [type_name], out, imatrix=imatrix)["outputs"][0]["path"])


def test_q2_k_with_the_imatrix_rounds_differently(
    imatrix: Imatrix, model_path: Path, tmp_path: Path
):
    plain = quantized(model_path, "Q2_K", tmp_path / "a", None)
    weighted = quantized(model_path, "Q2_K", tmp_path / "b", imatrix)
    write(imatrix, tmp_path / "m.dat")  # the matrix read back quantizes to the same bytes
    again = quantized(model_path, "Q2_K", tmp_path / "c", read(tmp_path / "m.dat"))
    assert sha256(plain) != sha256(weighted) == sha256(again)
    assert plain.stat().st_size == weighted.stat().st_size  # same types, other roundings
    a, b = GGUFReader(plain, "r").tensors, GGUFReader(weighted, "r").tensors
    assert [(t.name, t.tensor_type) for t in a] == [(t.name, t.tensor_type) for t in b]
    changed = {t.name for t, u in zip(a, b, strict=True) if bytes(t.data) != bytes(u.data)}
    assert changed == set(imatrix.sums)  # exactly the weights the imatrix covers


INTERRUPT_SCRIPT = """
import os, signal, sys, threading, time
from pathlib import Path
from eval.imatrix import collect

signal.signal(signal.SIGINT, signal.default_int_handler)
threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
started = time.monotonic()
try:
    collect(Path(sys.argv[1]), [Path(sys.argv[2]).read_text()] * 20, n_ctx=256)
except KeyboardInterrupt:
    print(f"interrupted after {time.monotonic() - started:.1f} s")
    sys.exit(130)
"""


def test_ctrl_c_during_collect_raises_keyboard_interrupt(model_path: Path):
    """SIGINT lands in the Python eval callback: it is kept, the graph stops, and collect
    raises KeyboardInterrupt as soon as llama_decode returns."""
    repo = Path(__file__).resolve().parents[1]
    text = SAMPLE_CORPUS / "gguf-k-quants.md"
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPT_SCRIPT, str(model_path), str(text)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 130, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
