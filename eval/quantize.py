"""The quantization ladder: requantize one GGUF model into several bit-widths with llama.cpp.

`quantize` checks the source, every type name, the output folder and the output names (none may
be a folder) before it writes anything, then runs `llama_cpp.llama_model_quantize` once per type
into a hidden temp file that is renamed into place only on success. Bits per weight are read
from the tensors (types and element counts via the `gguf` package), never guessed from file
sizes. llama.cpp's own chatter is captured, so a user sees only our progress lines and, on
failure, one line naming the type and the reason.
"""

import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from agent.runtime.model_file import GGUFInfo, inspect_gguf
from agent.runtime.native_log import captured_native_output, failure_reason
from retrieval.errors import UserError

if TYPE_CHECKING:
    from eval.imatrix import Imatrix

# The ladder, highest precision first. Measured on the embedded SmolLM2-135M (Q4_1 source,
# llama-cpp-python 0.3.36): bits per weight 16.00, 8.51, 8.12, 6.56, 6.17, 5.35, 5.46, 5.14, so
# Q3_K_M is NOT smaller than Q4_0 there: its 576-column tensors cannot use 256-wide K-quant
# blocks and 180 of 272 tensors fall back to Q4_0/Q5_0.
# IQ types without an importance matrix (each probed in its own process): IQ3_XXS, IQ3_XS,
# IQ3_S, IQ3_M, IQ4_NL and IQ4_XS quantize and load (15-20 s each instead of ~1 s; IQ3_XS,
# IQ3_S and IQ3_M then generate gibberish on the 135M model); IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS,
# IQ2_S, IQ2_M (and Q2_K_S) return an error: "this quantization requires an imatrix".
LADDER: tuple[str, ...] = ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K")
IQ_WITHOUT_IMATRIX: tuple[str, ...] = ("IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M", "IQ4_NL", "IQ4_XS")
NEEDS_IMATRIX: tuple[str, ...] = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "Q2_K_S")
FLOAT_TYPES: frozenset[str] = frozenset({"F32", "F16", "BF16"})
_FTYPE_PREFIXES = ("LLAMA_FTYPE_MOSTLY_", "LLAMA_FTYPE_ALL_")


def _known_file_types() -> dict[str, int]:
    """Type name -> llama_ftype value, from llama_cpp's LLAMA_FTYPE_* constants, by value."""
    import llama_cpp

    found: dict[str, int] = {}
    for attr in dir(llama_cpp):
        for prefix in _FTYPE_PREFIXES:
            if attr.startswith(prefix):
                found[attr.removeprefix(prefix)] = int(getattr(llama_cpp, attr))
    return dict(sorted(found.items(), key=lambda item: item[1]))


def file_type(name: str) -> int:
    """The llama_cpp.LLAMA_FTYPE_* value for a type name such as "q4_k_m" (case-insensitive)."""
    known = _known_file_types()
    key = name.strip().upper()
    if key not in known:
        raise UserError(f"unknown quantization type {name!r}; known: {', '.join(known)}")
    return known[key]


def bits_per_weight(path: Path) -> float:
    """Stored bits per weight over all tensors: sum of tensor bytes * 8 / sum of elements."""
    return inspect_gguf(path).bits_per_weight


def source_type(path: Path) -> str:
    """The GGUF's file type name from general.file_type (e.g. "Q4_1"), "unknown" if absent."""
    return inspect_gguf(path).file_type


def ceiling_note(name: str, type_name: str, bpw: float, quantized: bool) -> str:
    """A plain sentence saying requantizing cannot add precision, or "" for a float source."""
    if not quantized:
        return ""
    return (
        f"The source {name} is already quantized ({type_name}, {bpw:.2f} bits per weight): "
        f"requantizing cannot add precision back, so the ladder's ceiling is the source's "
        f"{type_name} precision and types above it only cost space."
    )


def _describe_source(info: GGUFInfo) -> dict:
    """Path, type, bits per weight, bytes and the ceiling note of the checked source."""
    type_name, bpw = info.file_type, info.bits_per_weight
    quantized = type_name not in FLOAT_TYPES if type_name != "unknown" else bpw < 15.9
    path = info.path
    return {
        "path": str(path),
        "type": type_name,
        "bits_per_weight": round(bpw, 4),
        "bytes": path.stat().st_size,
        "ceiling_note": ceiling_note(path.name, type_name, bpw, quantized),
    }


IMATRIX_HINT = "`bitrag quantize --imatrix notes` makes one"


def check_types(types: list[str], has_imatrix: bool = False, hint: str = IMATRIX_HINT) -> list[str]:
    """Canonical upper-case names, duplicates dropped; unknown types refused, and imatrix-only
    types unless an importance matrix is given (the refusal says how: `hint`)."""
    if not types:
        raise UserError("no quantization types given, e.g. Q8_0,Q4_K_M")
    names: list[str] = []
    for name in types:
        file_type(name)
        key = name.strip().upper()
        if key in NEEDS_IMATRIX and not has_imatrix:
            raise UserError(
                f"quantization type {key} needs an importance matrix ({hint}); IQ types that "
                "work without one: "
                f"{', '.join(IQ_WITHOUT_IMATRIX)}"
            )
        if key not in names:
            names.append(key)
    return names


def check_out_dir(out_dir: Path) -> None:
    """Create the folder if needed and prove a file can be written in it."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UserError(f"output folder {out_dir} is not writable ({reason})") from None


def _run_llama_quantize(
    src: Path, dst: Path, ftype: int, imatrix: "Imatrix | None" = None, prune: tuple[int, ...] = ()
) -> str:
    """One quiet llama_model_quantize call: "" on success, else llama.cpp's reason. With an
    imatrix, llama.cpp weighs each tensor's rounding error by its columns' mean squared
    activation (eval/imatrix.py)."""
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    params.nthread = os.cpu_count() or 1
    buffers = None  # the imatrix array and the arrays it points to: alive until the call returns
    if imatrix is not None:
        from eval.imatrix import quantize_params_imatrix

        buffers = quantize_params_imatrix(imatrix)
        params.imatrix = ctypes.cast(buffers[0], ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    # llama.cpp reads the pruned layer indices up to a -1 (src/llama-quant.cpp), ascending
    layers = (ctypes.c_int32 * (len(prune) + 1))(*sorted(prune), -1)
    if prune:
        params.prune_layers = ctypes.cast(layers, ctypes.POINTER(ctypes.c_int32))
    with captured_native_output() as log:
        code = llama_cpp.llama_model_quantize(
            str(src).encode(), str(dst).encode(), ctypes.byref(params)
        )
        return "" if code == 0 else failure_reason(log)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def output_path(
    src: Path, type_name: str, out_dir: Path, prune: tuple[int, ...] = (), tag: str = ""
) -> Path:
    """out_dir/<src stem>.<TYPE><tag>[-prunedN].gguf; `tag` tells variants apart (the eval's
    ".imatrix-notes")."""
    pruned = f"-pruned{len(prune)}" if prune else ""
    return out_dir / f"{src.stem}.{type_name}{tag}{pruned}.gguf"


def prune_rule(layers: int, count: int) -> tuple[int, ...]:
    """The layers to remove: the `count` blocks just before the last one (the last block maps
    to the output and is kept), refused when nothing would be left. Simple, not best: on the
    embedded 135M, block 28 of 30 alone costs 1.00 nats of KLD and block 17 0.12, so
    `bitrag eval --prune` and `bitrag quantize --prune` rank blocks by measurement unless
    told --prune-rule before-last (eval/prune_order.py)."""
    if count < 1 or count >= layers - 1:
        raise UserError(f"cannot remove {count} of {layers} layers: give 1 to {layers - 2}")
    return tuple(range(layers - 1 - count, layers - 1))


def _check_outputs(
    src: Path, names: list[str], out_dir: Path, prune: tuple[int, ...], tag: str = ""
) -> None:
    """Every output name is free or a file to replace, not a folder (or other non-file)."""
    for name in names:
        final = output_path(src, name, out_dir, prune, tag)
        if final.exists() and not final.is_file():
            kind = "a folder" if final.is_dir() else "not a regular file"
            raise UserError(
                f"cannot write the {name} output: {final} is {kind}; move it away or pass "
                "another --out"
            )


def quantize_one(
    src: Path,
    type_name: str,
    out_dir: Path,
    imatrix: "Imatrix | None" = None,
    prune: tuple[int, ...] = (),
    tag: str = "",
) -> Path:
    """Quantize into a hidden temp file in out_dir, rename it into place only on success."""
    final = output_path(src, type_name, out_dir, prune, tag)
    # llama.cpp creates the temp file itself, so it gets the usual umask-based permissions.
    tmp = out_dir / f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        reason = _run_llama_quantize(src, tmp, file_type(type_name), imatrix, prune)
        if reason:
            raise UserError(f"llama.cpp could not quantize {src.name} to {type_name}: {reason}")
        _fsync(tmp)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def _describe(path: Path, type_name: str) -> dict:
    return {
        "type": type_name,
        "path": str(path),
        "bytes": path.stat().st_size,
        "bits_per_weight": round(bits_per_weight(path), 4),
    }


def _pruned(layers: int, prune: int | tuple[int, ...]) -> tuple[int, ...]:
    """The layers to remove: `prune_rule` for a count, else the given layers, checked."""
    if isinstance(prune, int):
        return prune_rule(layers, prune) if prune else ()
    chosen = tuple(sorted(set(prune)))
    if any(not 0 <= i < layers - 1 for i in chosen) or len(chosen) > layers - 2:
        raise UserError(
            f"cannot remove layers {', '.join(map(str, chosen))} of {layers}: keep the last "
            "and at least two in all"
        )
    return chosen


def check(
    src: Path,
    types: list[str],
    out_dir: Path,
    has_imatrix: bool = False,
    prune: int | tuple[int, ...] = 0,
    tag: str = "",
) -> tuple[GGUFInfo, list[str], tuple[int, ...]]:
    """The checked source, canonical type names and the layers to remove (a count:
    `prune_rule`; or the layers themselves); refuses (one UserError) a bad source, type,
    layer count, output folder or output name before anything is computed or written."""
    info = inspect_gguf(Path(src))
    names = check_types(list(types), has_imatrix)
    layers = _pruned(info.layers, prune)
    check_out_dir(Path(out_dir))
    _check_outputs(info.path, names, Path(out_dir), layers, tag)
    return info, names, layers


def quantize(
    src: Path,
    types: list[str],
    out_dir: Path,
    progress: Callable[[str], None] | None = None,
    imatrix: "Imatrix | None" = None,
    prune: int | tuple[int, ...] = 0,
    tag: str = "",
) -> dict:
    """Requantize src into each type under out_dir; returns source, outputs and ceiling note.
    An importance matrix (eval/imatrix.py) is used for every type and admits NEEDS_IMATRIX;
    `prune` removes that many whole layers (`prune_rule`), or the layers it lists, from every
    output; `tag` goes into the output names (`output_path`)."""
    info, names, layers = check(src, types, out_dir, imatrix is not None, prune, tag)
    out_dir = Path(out_dir)
    source = _describe_source(info)
    note = source.pop("ceiling_note")
    outputs = []
    for i, name in enumerate(names, start=1):
        if progress:
            cut = f" without layers {', '.join(map(str, layers))}" if layers else ""
            progress(f"[{i}/{len(names)}] quantizing {info.path.name} to {name}{cut}")
        path = quantize_one(info.path, name, out_dir, imatrix, layers, tag)
        outputs.append(_describe(path, name) | {"pruned_layers": list(layers)})
    return {"source": source, "outputs": outputs, "ceiling_note": note}
