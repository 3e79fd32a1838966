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
metadata value of the wrong type) and turns llama.cpp's refusal into one UserError line; the
check and the load live in agent/runtime/adapter.py, which `bitrag ask --lora` uses too.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import MODEL_ARCH_NAMES, GGUFWriter, Keys, get_tensor_name_map

from agent.runtime.adapter import A_SUFFIX, B_SUFFIX, apply_adapter, check_adapter
from agent.runtime.gguf_header import HeaderError, read_header
from eval.lora import LoraConfig, LoraLinear
from retrieval.errors import UserError
from retrieval.hashing import sha256_of

# GGUF architectures whose attn_q/attn_k rows transformers un-permutes on load (and
# convert_hf_to_gguf.py permutes on conversion): the adapter's q/k deltas are permuted back.
PERMUTED_ARCHITECTURES = frozenset({"llama"})


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
    adapter: Path,
    student: Path,
    config: LoraConfig,
    steps: int,
    data_sha256: str,
    train_seconds: float | None = None,
) -> Path:
    """adapter.json beside the adapter: what it was trained from and how (and for how long,
    in training steps' seconds over every resumed run, when known)."""
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
        "train_seconds": None if train_seconds is None else round(train_seconds, 1),
    }
    path = sidecar_path(adapter)
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path


def open_with_adapter(base: Path, adapter: Path, n_ctx: int = 512, scale: float = 1.0, **kwargs):
    """A llama_cpp.Llama on `base` with the adapter applied at `scale` (agent/runtime/adapter.py:
    checked in Python first, then llama.cpp's own load); one UserError line if the file or
    llama.cpp refuses the pair (wrong base model, mismatched shapes). kwargs go to Llama."""
    import llama_cpp

    check_adapter(adapter, base)
    try:
        llm = llama_cpp.Llama(model_path=str(base), n_ctx=n_ctx, verbose=False, **kwargs)
    except ValueError:
        raise UserError(f"llama.cpp cannot load the base model {base}") from None
    try:
        apply_adapter(llm, adapter, scale)
    except UserError:
        llm.close()
        raise
    return llm
