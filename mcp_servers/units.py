"""Unit arithmetic for model sizes: bits and bytes with SI and binary prefixes, and
parameters x bits per weight -> memory.

Units are case-sensitive where it matters: ``b``/``bit`` is a bit, ``B`` a byte; ``kB MB GB TB``
are powers of 1000, ``KiB MiB GiB TiB`` powers of 1024; ``kbit Mbit Gbit`` (also ``Kb Mb Gb``)
are bits. ``KB`` is read as 1000 bytes, as storage vendors do.
"""

import math
import re
from typing import Any

from mcp_servers.errors import ToolArgumentError

_PREFIX = {"": 1, "k": 1000, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4, "P": 1000**5}
_BINARY = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4, "Pi": 1024**5}
_PARAM_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
MAX_VALUE = 1e30
_PARAMS = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMbBgGtT]?)\s*")


def _units() -> dict[str, int]:
    """Unit name -> size in bits."""
    table: dict[str, int] = {"bit": 1, "bits": 1, "b": 1, "byte": 8, "bytes": 8, "B": 8}
    for prefix, scale in (_PREFIX | _BINARY).items():
        if prefix:
            table[f"{prefix}B"] = 8 * scale
            table[f"{prefix}bit"] = scale
            table[f"{prefix}b"] = scale
    return table


UNITS = _units()


def _unit(name: str) -> int:
    key = name.strip()
    if key in UNITS:
        return UNITS[key]
    known = "b/bit, B/byte, kB MB GB TB, KiB MiB GiB TiB, kbit Mbit Gbit"
    raise ToolArgumentError(f"unknown unit {name!r}; known: {known}")


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value) or abs(value) > MAX_VALUE:
        raise ToolArgumentError(f"{what} must be a finite number up to {MAX_VALUE:g}")
    return value


def convert(value: float, from_unit: str, to_unit: str) -> dict[str, Any]:
    """value from_unit -> to_unit, e.g. 4 GiB -> GB."""
    _finite(value, "value")
    result = value * _unit(from_unit) / _unit(to_unit)
    return {
        "value": value,
        "from_unit": from_unit.strip(),
        "to_unit": to_unit.strip(),
        "result": result,
        "text": f"{value:g} {from_unit.strip()} = {result:.6g} {to_unit.strip()}",
    }


def parse_params(params: str | float) -> float:
    """7e9, 7000000000, '7B', '135M', '1.5b' -> a parameter count."""
    if isinstance(params, int | float):
        count = float(params)
    else:
        match = _PARAMS.fullmatch(params)
        if not match:
            raise ToolArgumentError(f"not a parameter count: {params!r} (e.g. 7e9, '7B', '135M')")
        count = float(match.group(1)) * _PARAM_SUFFIX[match.group(2).lower()]
    if _finite(count, "params") <= 0:
        raise ToolArgumentError("params must be positive")
    return count


def model_memory(params: str | float, bits_per_weight: float) -> dict[str, Any]:
    """Weights memory of a model: params x bits per weight, in bytes, GB and GiB."""
    count = parse_params(params)
    if not 0 < _finite(bits_per_weight, "bits_per_weight") <= 64:
        raise ToolArgumentError("bits_per_weight must be above 0 and at most 64")
    total = count * bits_per_weight / 8
    return {
        "params": count,
        "bits_per_weight": bits_per_weight,
        "bytes": total,
        "MB": total / 1000**2,
        "GB": total / 1000**3,
        "MiB": total / 1024**2,
        "GiB": total / 1024**3,
        "text": (
            f"{count:.4g} params x {bits_per_weight:g} bits = {total / 1000**3:.4g} GB "
            f"({total / 1024**3:.4g} GiB) of weights"
        ),
    }
