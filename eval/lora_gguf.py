"""A trained LoRA as a llama.cpp adapter GGUF, its sidecar JSON, and a checked load in llama.cpp.

The format is the one llama.cpp's `llama_adapter_lora_init` reads (src/llama-adapter.cpp, as
written by its convert_lora_to_gguf.py): general.type "adapter", general.architecture equal
to the base model's, adapter.type "lora", adapter.lora.alpha (float32; llama.cpp scales by
alpha / rank, rank read from lora_b), and per adapted base tensor a pair
`<base tensor name>.lora_a` with ggml shape [in, rank] (numpy (rank, in), our A) and
`.lora_b` with ggml shape [rank, out] (numpy (out, rank), our B).

llama's GGUF stores attn_q/attn_k rows in a rotary-pair order different from Hugging Face's;
transformers un-permutes them when loading (its LlamaTensorProcessor), so B's rows of q and
k deltas are permuted back here before export. v and the other projections are not permuted.

`open_with_adapter` checks the file in Python first (llama.cpp aborts the process on a
metadata value of the wrong type) and turns llama.cpp's refusal into one UserError line.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import (
    MODEL_ARCH_NAMES,
    GGMLQuantizationType,
    GGUFReader,
    GGUFValueType,
    GGUFWriter,
    Keys,
    get_tensor_name_map,
)

from agent.runtime.gguf_header import HeaderError, read_header
from eval.lora import LoraConfig, LoraLinear
from eval.quantize import captured_native_output, failure_reason
from retrieval.errors import UserError
from retrieval.hashing import sha256_of

# GGUF architectures whose attn_q/attn_k rows transformers un-permutes on load (and
# convert_hf_to_gguf.py permutes on conversion): the adapter's q/k deltas are permuted back.
PERMUTED_ARCHITECTURES = frozenset({"llama"})
FLOAT_TYPES = (GGMLQuantizationType.F32, GGMLQuantizationType.F16)
A_SUFFIX, B_SUFFIX = ".lora_a", ".lora_b"


@dataclass(frozen=True)
class BaseShape:
    """What an adapter's tensor names and q/k permutation depend on, from the base's header."""

    architecture: str
    blocks: int
    heads: int
    kv_heads: int


def base_shape(path: Path) -> BaseShape:
    try:
        meta = read_header(path).metadata
    except (HeaderError, OSError) as exc:
        raise UserError(f"cannot read the base model {path}: {exc}") from None
    arch = str(meta.get("general.architecture", ""))
    heads = int(meta.get(f"{arch}.attention.head_count") or 0)
    kv_heads = int(meta.get(f"{arch}.attention.head_count_kv") or heads)
    return BaseShape(arch, int(meta.get(f"{arch}.block_count") or 0), heads, kv_heads)


def to_gguf_rows(rows: np.ndarray, heads: int) -> np.ndarray:
    """Reorder the output rows of a q/k projection from Hugging Face's rotary layout to llama
    GGUF's: within each head, rows [first half, second half] become interleaved pairs."""
    half = rows.shape[0] // heads // 2
    return rows.reshape(heads, 2, half, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def gguf_tensor_name(hf_module: str, shape: BaseShape) -> str:
    """model.layers.3.self_attn.q_proj -> blk.3.attn_q.weight, via gguf's own name map."""
    arch = next((key for key, name in MODEL_ARCH_NAMES.items() if name == shape.architecture), None)
    if arch is None:
        raise UserError(f"the gguf package does not know the architecture {shape.architecture!r}")
    name = get_tensor_name_map(arch, shape.blocks).get_name(hf_module)
    if name is None:
        raise UserError(f"no GGUF tensor of {shape.architecture} corresponds to {hf_module}")
    return f"{name}.weight"


def adapter_tensors(
    layers: dict[str, LoraLinear], shape: BaseShape
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """GGUF base tensor name -> (A, B) as float32 arrays in llama.cpp's orientation."""
    names = {module: gguf_tensor_name(module, shape) for module in layers}
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for module, layer in layers.items():
        a = layer.lora_a.detach().float().numpy()
        b = layer.lora_b.detach().float().numpy()
        name = names[module]
        if shape.architecture in PERMUTED_ARCHITECTURES and ".attn_q." in name:
            b = to_gguf_rows(b, shape.heads)
        elif shape.architecture in PERMUTED_ARCHITECTURES and ".attn_k." in name:
            b = to_gguf_rows(b, shape.kv_heads)
        pairs[name] = (np.ascontiguousarray(a), np.ascontiguousarray(b))
    return pairs


def write_adapter(
    path: Path,
    architecture: str,
    alpha: float,
    pairs: dict[str, tuple[np.ndarray, np.ndarray]],
) -> Path:
    """Write an adapter GGUF atomically: a temp file in the same folder, renamed on success."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        writer = GGUFWriter(tmp, architecture)
        writer.add_type("adapter")
        writer.add_string(Keys.Adapter.TYPE, "lora")
        writer.add_float32(Keys.Adapter.LORA_ALPHA, float(alpha))
        for name, (a, b) in pairs.items():
            writer.add_tensor(f"{name}{A_SUFFIX}", a.astype(np.float32))
            writer.add_tensor(f"{name}{B_SUFFIX}", b.astype(np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def export_adapter(
    layers: dict[str, LoraLinear], config: LoraConfig, base: Path, out: Path
) -> Path:
    """The trained adapters as `out` (a llama.cpp LoRA GGUF for the GGUF model `base`)."""
    shape = base_shape(base)
    return write_adapter(out, shape.architecture, config.alpha, adapter_tensors(layers, shape))


def sidecar_path(adapter: Path) -> Path:
    return adapter.with_suffix(".json")


def write_sidecar(
    adapter: Path, student: Path, config: LoraConfig, steps: int, data_sha256: str
) -> Path:
    """adapter.json beside the adapter: what it was trained from and how."""
    record = {
        "adapter": adapter.name,
        "adapter_sha256": sha256_of(adapter),
        "student": student.name,
        "student_sha256": sha256_of(student),
        "rank": config.rank,
        "alpha": config.alpha,
        "targets": list(config.targets),
        "seed": config.seed,
        "steps": steps,
        "data_sha256": data_sha256,
    }
    path = sidecar_path(adapter)
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path


def check_adapter(adapter: Path, base: Path) -> int:
    """Refuse, with one line, a file llama.cpp would reject or crash on; the adapted tensors'
    count otherwise. Tensor names and shapes against the base are llama.cpp's to check."""
    if not adapter.is_file():
        raise UserError(f"LoRA adapter not found: {adapter}")
    try:
        header = read_header(adapter)
    except (HeaderError, OSError, ValueError) as exc:
        raise UserError(f"LoRA adapter {adapter} is not a readable GGUF file ({exc})") from None
    size = adapter.stat().st_size
    if size < header.data_end:
        raise UserError(
            f"LoRA adapter {adapter} is truncated: {size} bytes, its tensors need {header.data_end}"
        )
    for key, value in ((Keys.General.TYPE, "adapter"), (Keys.Adapter.TYPE, "lora")):
        if header.metadata.get(key) != value:
            raise UserError(f"{adapter} is not a LoRA adapter GGUF: {key} is not {value!r}")
    arch, wanted = header.metadata.get(Keys.General.ARCHITECTURE), base_shape(base).architecture
    if arch != wanted:
        raise UserError(
            f"LoRA adapter {adapter} is for architecture {arch!r}, the base model {base.name} "
            f"is {wanted!r}"
        )
    reader = GGUFReader(adapter)
    alpha = reader.get_field(Keys.Adapter.LORA_ALPHA)
    if alpha is not None and alpha.types != [GGUFValueType.FLOAT32]:
        raise UserError(f"LoRA adapter {adapter}: {Keys.Adapter.LORA_ALPHA} is not a float32")
    return _check_pairs(adapter, reader)


def _check_pairs(adapter: Path, reader: GGUFReader) -> int:
    parts: dict[str, dict[str, tuple[int, ...]]] = {}
    for tensor in reader.tensors:
        if tensor.tensor_type not in FLOAT_TYPES:
            raise UserError(f"LoRA adapter {adapter}: tensor {tensor.name} is not F32 or F16")
        for suffix in (A_SUFFIX, B_SUFFIX):
            if tensor.name.endswith(suffix):
                base_name = tensor.name.removesuffix(suffix)
                parts.setdefault(base_name, {})[suffix] = tuple(int(n) for n in tensor.shape)
    for name, pair in parts.items():
        if len(pair) != 2:
            raise UserError(f"LoRA adapter {adapter}: {name} lacks its lora_a or lora_b tensor")
        if pair[A_SUFFIX][1] != pair[B_SUFFIX][0]:  # ggml order: A [in, rank], B [rank, out]
            raise UserError(f"LoRA adapter {adapter}: the ranks of {name}'s A and B differ")
    if not parts:
        raise UserError(f"LoRA adapter {adapter} holds no lora_a/lora_b tensors")
    return len(parts)


def open_with_adapter(base: Path, adapter: Path, n_ctx: int = 512, scale: float = 1.0, **kwargs):
    """A llama_cpp.Llama on `base` with the adapter applied at `scale`; one UserError line if
    llama.cpp refuses the pair (wrong base model, mismatched shapes). kwargs go to Llama.

    Not Llama(lora_path=...): llama-cpp-python 0.3.36 tests the adapter pointer with `is None`,
    which a NULL ctypes pointer is not, so a refused adapter is applied anyway and the first
    decode segfaults. The model frees its adapters when it is freed (llama.h)."""
    import ctypes

    import llama_cpp

    check_adapter(adapter, base)
    try:
        llm = llama_cpp.Llama(model_path=str(base), n_ctx=n_ctx, verbose=False, **kwargs)
    except ValueError:
        raise UserError(f"llama.cpp cannot load the base model {base}") from None
    with captured_native_output() as log:
        loaded = llama_cpp.llama_adapter_lora_init(llm.model, str(adapter).encode())
        reason = "" if loaded else failure_reason(log).partition(": ")[2]  # no C function name
    if reason:
        llm.close()
        raise UserError(f"llama.cpp refused the LoRA adapter {adapter}: {reason}")
    adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(loaded)
    if llama_cpp.llama_set_adapters_lora(llm.ctx, adapters, 1, (ctypes.c_float * 1)(scale)):
        llm.close()
        raise UserError(f"llama.cpp could not apply the LoRA adapter {adapter}")
    return llm
