"""An importance matrix (imatrix) from the user's own notes, for llama.cpp's low-bit types.

Per input column of each weight, the mean squared activation reaching it, as `llama-imatrix`
measures it: a ctypes eval callback (`cb_eval`) sums the squares of the F32 rows (tokens) each
GGML_OP_MUL_MAT feeds a 2-D `blk.*`/`output.weight` (not a tied `token_embd.weight`); all
tokens are outputs, so the last FFN sees them all. MUL_MAT_ID (mixture-of-experts) is not
supported (it needs a count per expert). GGMLTensor (ggml.h's struct ggml_tensor) is checked
against libggml-base on every node read. Files: llama.cpp's legacy `.dat` format.
"""

import ctypes
import io
import signal
import struct
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import llama_cpp
import numpy as np
from llama_cpp._ctypes_extensions import load_shared_library

from agent.runtime.model_file import inspect_gguf
from agent.runtime.native_log import captured_native_output, failure_reason
from retrieval.atomic import write_bytes
from retrieval.errors import UserError
from retrieval.threads import threads

GGML_MAX_DIMS, GGML_MAX_OP_PARAMS, GGML_MAX_SRC, GGML_MAX_NAME = 4, 64, 10, 64
F32 = llama_cpp.GGML_TYPE_F32  # enum ggml_type


class GGMLTensor(ctypes.Structure):
    """struct ggml_tensor as in ggml.h; enums are C ints, tensor pointers void *."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * GGML_MAX_DIMS),
        ("nb", ctypes.c_size_t * GGML_MAX_DIMS),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * (GGML_MAX_OP_PARAMS // 4)),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * GGML_MAX_SRC),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * GGML_MAX_NAME),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


@dataclass
class Imatrix:
    sums: dict[str, np.ndarray]  # weight name -> per input column, sum of squared activations
    counts: dict[str, int]  # weight name -> activation rows (tokens) summed
    chunks: int  # windows evaluated
    dataset: str


def _ggml() -> ctypes.CDLL:
    """libggml-base from llama_cpp/lib, with the signatures of the functions used here."""
    lib = load_shared_library("ggml-base", Path(llama_cpp.__file__).parent / "lib")
    ptr, text, size = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
    for name, restype, argtypes in (
        ("ggml_get_name", text, [ptr]),
        ("ggml_get_data", ptr, [ptr]),
        ("ggml_op_desc", text, [ptr]),
        ("ggml_op_name", text, [ctypes.c_int]),
        ("ggml_nbytes", size, [ptr]),
        ("ggml_nelements", ctypes.c_int64, [ptr]),
        ("ggml_backend_buffer_is_host", ctypes.c_bool, [ptr]),
        ("ggml_backend_tensor_get", None, [ptr, ptr, size, size]),
    ):
        getattr(lib, name).restype, getattr(lib, name).argtypes = restype, argtypes
    return lib


def check_layout(lib: ctypes.CDLL, t: GGMLTensor) -> None:
    """The struct's fields read what libggml-base reads (name, data, ne; nb for F32)."""
    address = ctypes.addressof(t)
    pairs = {
        "name": (t.name, lib.ggml_get_name(address)),
        "data": (t.data, lib.ggml_get_data(address)),
        "ne": (int(np.prod(list(t.ne))), lib.ggml_nelements(address)),
    }
    if t.type == F32:  # byte extent from the strides, as ggml_nbytes computes it
        extent = 4 + sum((n - 1) * b for n, b in zip(t.ne, t.nb, strict=True))
        pairs["nb"] = (extent if min(t.ne) > 0 else 0, lib.ggml_nbytes(address))
    for field, (ours, theirs) in pairs.items():
        if ours != theirs:
            raise RuntimeError(f"ggml_tensor layout mismatch ({field}): {ours!r} != {theirs!r}")


def weight_name(raw: bytes) -> str | None:
    """The weight to collect, or None (a backend's copy "CUDA0#blk.0.attn_k.weight#0")."""
    name = (parts := raw.decode("utf-8", "replace").split("#"))[min(1, len(parts) - 1)]
    return name if name.startswith("blk.") or name == "output.weight" else None


def _activations(lib: ctypes.CDLL, x: GGMLTensor) -> np.ndarray:
    """src[1] as a float32 array (ne3, ne2, ne1, ne0) over its byte strides nb."""
    if not x.buffer or not x.data:
        raise RuntimeError(f"activation tensor {x.name!r} has no data")
    address, size = ctypes.addressof(x), lib.ggml_nbytes(ctypes.addressof(x))
    if lib.ggml_backend_buffer_is_host(x.buffer):
        raw = (ctypes.c_char * size).from_address(x.data)
    else:  # device memory: copy it to the host first
        raw = ctypes.create_string_buffer(size)
        lib.ggml_backend_tensor_get(address, raw, 0, size)
    shape, strides = tuple(reversed(list(x.ne))), tuple(reversed(list(x.nb)))
    return np.ndarray(shape, np.float32, buffer=raw, strides=strides)


class _Collector:
    """The eval callback and its float64 sums (llama-imatrix adds up in float)."""

    def __init__(self) -> None:
        self.lib = _ggml()
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, int] = {}
        self.error: BaseException | None = None
        self.callback = llama_cpp.ggml_backend_sched_eval_callback(self._on_node)

    def _on_node(self, address: int, ask: bool, _user_data: int | None) -> bool:
        """ask: is the node wanted? Else it is computed (False stops the graph). Errors wait."""
        if self.error is not None:
            return False
        try:
            t = GGMLTensor.from_address(address)
            name = self._wanted(t)
            if not ask and name is not None:
                self._add(name, GGMLTensor.from_address(t.src[1]))
            return name is not None or not ask
        except BaseException as exc:
            self.error = exc
            return False

    def interrupt(self, *_: object) -> None:
        self.error = self.error or KeyboardInterrupt()

    def _wanted(self, t: GGMLTensor) -> str | None:
        if self.lib.ggml_op_desc(ctypes.addressof(t)) != b"MUL_MAT":
            return None
        check_layout(self.lib, t)
        if self.lib.ggml_op_name(t.op) != b"MUL_MAT":
            raise RuntimeError(f"struct ggml_tensor's op field reads {t.op}, not MUL_MAT")
        w, x = GGMLTensor.from_address(t.src[0]), GGMLTensor.from_address(t.src[1])
        check_layout(self.lib, w)
        check_layout(self.lib, x)
        name = weight_name(w.name)
        if name is None or x.type != F32 or w.ne[2] * w.ne[3] != 1:
            return None  # not a weight, activations not F32, or a stack of matrices
        return name

    def _add(self, name: str, x: GGMLTensor) -> None:
        rows = _activations(self.lib, x).reshape(-1, x.ne[0])
        squares = np.square(rows, dtype=np.float64).sum(axis=0)
        self.sums[name] = self.sums[name] + squares if name in self.sums else squares
        self.counts[name] = self.counts.get(name, 0) + rows.shape[0]

    def result(self, chunks: int, dataset: str) -> Imatrix:
        bad = sorted(name for name, s in self.sums.items() if not np.isfinite(s).all())
        if bad or not self.sums:
            raise RuntimeError(f"no weight activations collected, or non-finite ones in {bad}")
        sums = {name: s.astype(np.float32) for name, s in sorted(self.sums.items())}
        return Imatrix(sums, dict(sorted(self.counts.items())), chunks, dataset)


def windows(vocab: llama_cpp.llama_vocab_p, texts: list[str], n_ctx: int) -> list[list[int]]:
    """Each text's tokens cut into windows of <= n_ctx, opening with BOS if the model adds it."""
    bos = [llama_cpp.llama_vocab_bos(vocab)] if llama_cpp.llama_vocab_get_add_bos(vocab) else []
    step, out = n_ctx - len(bos), []
    for data in (text.encode("utf-8") for text in texts):
        buffer = (llama_cpp.llama_token * (len(data) + 8))()  # a token holds at least a byte
        n = llama_cpp.llama_tokenize(vocab, data, len(data), buffer, len(buffer), False, False)
        assert n >= 0, f"a text of {len(data)} bytes needs {-n} tokens"
        out += [bos + buffer[i : min(i + step, n)] for i in range(0, n, step)]
    return out


def _decode(ctx: llama_cpp.llama_context_p, batch: llama_cpp.llama_batch, window: list[int]) -> int:
    """One window from an empty cache, with an output for every token; llama_decode's code."""
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    batch.n_tokens = len(window)
    for i, token in enumerate(window):
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, i, 1
        batch.seq_id[i][0], batch.logits[i] = 0, 1
    return llama_cpp.llama_decode(ctx, batch)


def _require(ok: object, what: str, log: IO[str]) -> None:
    if not ok:
        raise UserError(f"llama.cpp cannot {what}: {failure_reason(log)}")


def _keep_ctrl_c(stack: ExitStack, collector: _Collector) -> None:
    """ctypes prints and drops a Ctrl-C raised inside the callback: on the main thread, under
    Python's default handler, record it instead; the graph stops and collect raises it."""
    main = threading.current_thread() is threading.main_thread()
    if main and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, collector.interrupt)
        stack.callback(signal.signal, signal.SIGINT, signal.default_int_handler)


def collect(
    model_path: Path, texts: list[str], n_ctx: int = 512, dataset: str | None = None
) -> Imatrix:
    """The imatrix of the GGUF at model_path over texts, each cut into n_ctx-token windows."""
    if n_ctx < 16:
        raise ValueError(f"n_ctx must be at least 16 tokens, not {n_ctx}")
    path, collector, stack = inspect_gguf(Path(model_path)).path, _Collector(), ExitStack()
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = params.n_batch = params.n_ubatch = n_ctx
    params.n_seq_max, params.no_perf = 1, True
    params.n_threads = params.n_threads_batch = threads()
    params.cb_eval, params.cb_eval_user_data = collector.callback, None
    with captured_native_output() as log, stack:
        _keep_ctrl_c(stack, collector)
        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), model_params)
        _require(model, f"load {path}", log)
        stack.callback(llama_cpp.llama_model_free, model)
        ctx = llama_cpp.llama_init_from_model(model, params)
        _require(ctx, f"make a context for {path}", log)
        stack.callback(llama_cpp.llama_free, ctx)
        todo = windows(llama_cpp.llama_model_get_vocab(model), texts, n_ctx)
        if not todo:
            raise UserError("no text to compute an importance matrix from")
        batch = llama_cpp.llama_batch_init(n_ctx, 0, 1)
        stack.callback(llama_cpp.llama_batch_free, batch)
        for window in todo:
            code = _decode(ctx, batch, window)
            if collector.error is not None:
                raise collector.error
            _require(code == 0, "evaluate a window", log)
    return collector.result(len(todo), dataset or f"{len(texts)} texts, {len(todo)} windows")


# The legacy .dat, per ggml-org/llama.cpp tools/imatrix/imatrix.cpp (save_imatrix_legacy),
# common/imatrix-loader.cpp, tools/quantize/quantize.cpp (load_imatrix): little-endian int32
# entries; per entry int32 name length, name, int32 ncall, int32 nval, nval float32; int32
# chunks, int32 length + dataset (optional on read). A value is the mean squared activation
# times ncall, which quantize divides by. llama-imatrix counts ncall in n_ctx chunks, we in
# tokens: a value is the plain sum, counts round-trip, llama-quantize gets the same means.


def write(imatrix: Imatrix, path: Path) -> None:
    """Write atomically (a temp file beside path, fsynced, renamed over it)."""
    path, parts = Path(path), [struct.pack("<i", len(imatrix.sums))]
    for name, sums in sorted(imatrix.sums.items()):
        count, raw = imatrix.counts[name], name.encode("utf-8")  # struct.pack refuses > int32
        values = np.ascontiguousarray(sums, dtype="<f4")
        parts += [struct.pack("<i", len(raw)), raw, struct.pack("<ii", count, values.size)]
        parts.append(values.tobytes())
    parts += [struct.pack("<ii", imatrix.chunks, len(ds := imatrix.dataset.encode())), ds]
    write_bytes(path, b"".join(parts))


def read(path: Path) -> Imatrix:
    """An imatrix from a .dat file, ours or llama-imatrix's (its counts are in chunks)."""
    f, sums, counts = io.BytesIO(Path(path).read_bytes()), {}, {}

    def take(n: int) -> bytes:
        if n < 0 or len(chunk := f.read(n)) != n:
            raise UserError(f"{path} is truncated or not a llama.cpp imatrix .dat file")
        return chunk

    def int32() -> int:
        return struct.unpack("<i", take(4))[0]

    if (n_entries := int32()) < 1:
        raise UserError(f"{path} holds no imatrix entries")
    for _ in range(n_entries):
        name = take(int32()).decode("utf-8", "replace")
        counts[name], nval = int32(), int32()
        sums[name] = np.frombuffer(take(4 * nval if nval > 0 else -1), "<f4").astype(np.float32)
    if f.tell() == len(f.getbuffer()):  # no chunk count and dataset name
        return Imatrix(sums, counts, 0, "")
    return Imatrix(sums, counts, int32(), take(int32()).decode("utf-8", "replace"))


def quantize_params_imatrix(imatrix: Imatrix) -> tuple[ctypes.Array, list]:
    """llama_model_quantize_params.imatrix: a NULL-name-terminated llama_model_imatrix_data
    array of per-column means (float32 sum / count, as quantize.cpp loads them), sized ne[0]
    (times experts) as src/llama-quant.cpp reads them, and its buffers (keep both alive)."""
    names = sorted(name for name in imatrix.sums if imatrix.counts.get(name, 0) > 0)
    array = (llama_cpp.llama_model_imatrix_data * (len(names) + 1))()  # zeroed terminator
    keepalive: list = []
    for entry, name in zip(array, names, strict=False):
        values = np.asarray(imatrix.sums[name], np.float32) / np.float32(imatrix.counts[name])
        keepalive += [raw := name.encode("utf-8"), values]
        entry.name, entry.size = raw, values.size
        entry.data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    return array, keepalive
