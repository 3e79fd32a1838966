"""A LoRA adapter GGUF on top of a base model in llama.cpp: checked first, then applied.

`check_adapter` reads the file in Python before llama.cpp does, because llama.cpp aborts the
whole process on some bad files (a metadata value of the wrong type: adapter.lora.alpha as a
float64 exits with status 134) and a truncated one reads past its end. `apply_adapter` then
goes through llama.cpp's own `llama_adapter_lora_init`, whose refusal (wrong base model,
mismatched shapes) it turns into one UserError line. It does not use `Llama(lora_path=...)`:
llama-cpp-python 0.3.36 tests the adapter pointer with `is None`, which a NULL ctypes pointer
is not, so a refused adapter is applied anyway and the first decode segfaults. The model
frees its adapters when it is freed (llama.h).
"""

from pathlib import Path
from typing import Any

from agent.runtime.gguf_header import HeaderError, read_header
from agent.runtime.native_log import captured_native_output, failure_reason
from retrieval.errors import UserError

A_SUFFIX, B_SUFFIX = ".lora_a", ".lora_b"


def base_architecture(base: Path) -> str:
    """general.architecture of the base model's GGUF header."""
    try:
        return str(read_header(base).metadata.get("general.architecture", ""))
    except (HeaderError, OSError) as exc:
        raise UserError(f"cannot read the base model {base}: {exc}") from None


def check_adapter(adapter: Path, base: Path) -> int:
    """Refuse, with one line, a file llama.cpp would reject or crash on; the adapted tensors'
    count otherwise. Tensor names and shapes against the base are llama.cpp's to check."""
    from gguf import GGUFReader, GGUFValueType, Keys

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
    arch, wanted = header.metadata.get(Keys.General.ARCHITECTURE), base_architecture(base)
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


def _check_pairs(adapter: Path, reader: Any) -> int:
    """Every lora_a has its lora_b, of F32 or F16 and the same rank; their count."""
    from gguf import GGMLQuantizationType

    float_types = (GGMLQuantizationType.F32, GGMLQuantizationType.F16)
    parts: dict[str, dict[str, tuple[int, ...]]] = {}
    for tensor in reader.tensors:
        if tensor.tensor_type not in float_types:
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


def apply_adapter(llm: Any, adapter: Path, scale: float = 1.0) -> None:
    """Load `adapter` (already checked) onto an open llama_cpp.Llama and apply it at `scale`;
    one UserError line when llama.cpp refuses it. The caller closes `llm` on refusal."""
    import ctypes

    import llama_cpp

    with captured_native_output() as log:
        loaded = llama_cpp.llama_adapter_lora_init(llm.model, str(adapter).encode())
        reason = "" if loaded else failure_reason(log).partition(": ")[2]  # no C function name
    if not loaded:
        raise UserError(
            f"llama.cpp refused the LoRA adapter {adapter}: {reason or 'no reason given'}"
        )
    adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(loaded)
    if llama_cpp.llama_set_adapters_lora(llm.ctx, adapters, 1, (ctypes.c_float * 1)(scale)):
        raise UserError(f"llama.cpp could not apply the LoRA adapter {adapter}")
