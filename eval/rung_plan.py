"""Which rungs `bitrag eval` measures, every input checked before anything is computed or written.

`--types T1,... --imatrix C1,... --prune N1,...` gives, per type T in the order given:

- T itself, unless T needs an importance matrix (eval/quantize.py NEEDS_IMATRIX);
- T calibrated with each C, except a type whose rounding llama.cpp does not weight by a matrix
  (F16, BF16, F32 and Q8_0: the file would be the plain one again, byte for byte, as measured
  for Q8_0 on the embedded model);
- T without N layers for each N, calibrated with C1 when T needs a matrix, else plain; which
  layers, eval/prune_order.py decides (`--prune-rule`: measured on the notes by default).

A calibration is `notes` (eval/calibration.py's sample of all the index's chunks), `notes:en`
or `notes:ko` (that language's chunks only), or a llama.cpp `.dat` file (read when checked). A
prune setting is N layers or P% of the source's layers (rounded half up, at least 1). Each rung
gets a unique label (results.json's `type`: `Q4_0`, `Q4_0+notes`, `Q4_0-pruned2`,
`IQ2_XXS+notes:en-pruned2`) and file name (`MODEL.Q4_0.imatrix-notes.gguf`,
`MODEL.Q4_0-pruned2.gguf`). The top rung, the divergence reference, is the unpruned,
uncalibrated rung with the most bits per weight (a calibrated one only when every type needs a
matrix: a matrix can raise a rung's bits, llama.cpp then keeps some tensors at Q4_1 for Q4_0);
the others follow by falling bits per weight.
"""

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from eval.prune_order import RULES, layers_for
from eval.quantize import FLOAT_TYPES, NEEDS_IMATRIX, check_types, prune_rule
from retrieval.errors import UserError

if TYPE_CHECKING:
    from eval.imatrix import Imatrix

UNWEIGHTED = FLOAT_TYPES | {"Q8_0"}  # llama.cpp quantizes these without reading a matrix
LANGUAGES = ("en", "ko")  # retrieval.chunking's Chunk.lang
EVAL_HINT = "add `--imatrix notes` to compute one from your notes"
SPECS = "notes, notes:en, notes:ko or a llama.cpp .dat file"


@dataclass(frozen=True)
class Calibration:
    spec: str  # "notes", "notes:en", "notes:ko" or "file:<name>"
    lang: str | None = None  # notes:LANG's language
    path: Path | None = None  # the .dat file given
    imatrix: "Imatrix | None" = field(default=None, compare=False, repr=False)  # its matrix

    @property
    def slug(self) -> str:
        """The calibration in a file name: notes, notes-en, file-<the .dat's stem>."""
        if self.path is not None:
            return "file-" + re.sub(r"[^A-Za-z0-9_-]+", "_", self.path.stem)
        return self.spec.replace(":", "-")


@dataclass(frozen=True)
class PlannedRung:
    quant_type: str
    calibration: Calibration | None = None
    prune: int = 0  # how many layers are removed

    @property
    def label(self) -> str:
        calibrated = f"+{self.calibration.spec}" if self.calibration else ""
        pruned = f"-pruned{self.prune}" if self.prune else ""
        return f"{self.quant_type}{calibrated}{pruned}"

    @property
    def tag(self) -> str:
        """What tells the file apart in eval/quantize.py `output_path`."""
        return f".imatrix-{self.calibration.slug}" if self.calibration else ""


def calibrations(specs: list[str] | None) -> list[Calibration]:
    """The checked --imatrix calibrations, duplicates dropped; .dat files read."""
    if specs is None:
        return []
    found: list[Calibration] = []
    for text in (s.strip() for s in specs):
        c = _calibration(text) if text else None
        if c is None or any(c == seen for seen in found):
            continue
        twin = next((seen for seen in found if seen.slug == c.slug), None)
        if twin is not None:
            raise UserError(
                f"--imatrix {twin.path} and {c.path} would share the rung name "
                f"imatrix-{c.slug}: rename one"
            )
        found.append(c)
    if not found:
        raise UserError(f"--imatrix names no calibration: give {SPECS}")
    return found


def _calibration(text: str) -> Calibration:
    from eval.imatrix import read

    if text == "notes":
        return Calibration("notes")
    if text.startswith("notes:"):
        lang = text.removeprefix("notes:").strip().lower()
        if lang not in LANGUAGES:
            raise UserError(f"--imatrix {text}: unknown language {lang!r}; give {SPECS}")
        return Calibration(f"notes:{lang}", lang=lang)
    path = Path(text).expanduser()
    if not path.is_file():
        raise UserError(f"imatrix file {path} not found: give {SPECS}")
    try:
        matrix = read(path)
    except OSError as exc:
        raise UserError(f"imatrix file {path} cannot be read ({exc.strerror})") from None
    return Calibration(f"file:{path.name}", path=path.resolve(), imatrix=matrix)


def prunes(specs: list[str] | None, layers: int) -> list[int]:
    """How many layers each --prune setting removes (N, or P% of `layers`), duplicates
    dropped."""
    if specs is None:
        return []
    found: list[int] = []
    for text in (s.strip() for s in specs if s.strip()):
        removed = _prune(text, layers)
        if removed not in found:
            found.append(removed)
    if not found:
        raise UserError("--prune names no setting: give a number of layers (2) or a percent (10%)")
    return found


def _prune(text: str, layers: int) -> int:
    try:
        number = float(text.removesuffix("%")) if text.endswith("%") else int(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or (text.endswith("%") and not 0 < number <= 100):
        raise UserError(f"--prune {text}: give a number of layers (2) or a percent of them (10%)")
    if layers < 1:
        raise UserError(f"--prune {text}: the source does not say how many layers it has")
    count = max(1, math.floor(number * layers / 100 + 0.5)) if text.endswith("%") else int(number)
    try:
        return len(prune_rule(layers, count))
    except UserError as exc:
        raise UserError(f"--prune {text}: {exc}") from None


def plan(types: list[str], given: list[Calibration], pruned: list[int]) -> list[PlannedRung]:
    """Every rung, in the order of the module docstring."""
    rungs: list[PlannedRung] = []
    for name in check_types(list(types), bool(given), EVAL_HINT):
        needs = name in NEEDS_IMATRIX
        if not needs:
            rungs.append(PlannedRung(name))
        if name not in UNWEIGHTED:
            rungs += [PlannedRung(name, c) for c in given]
        rungs += [PlannedRung(name, given[0] if needs else None, p) for p in pruned]
    if given and not any(r.calibration for r in rungs):
        raise UserError(
            "--imatrix calibrates no rung: llama.cpp rounds F16, BF16, F32 and Q8_0 without "
            "a matrix, so add a lower type to --types (e.g. Q4_K_M)"
        )
    return rungs


def check(opts) -> list[PlannedRung]:
    """The rungs of an eval's Options (types, imatrix, prune; the source's layer count for
    --prune), or one UserError naming the bad value; nothing is written."""
    from agent.runtime.model_file import checked_model

    if opts.prune_rule not in RULES:
        raise UserError(f"--prune-rule {opts.prune_rule}: give {' or '.join(RULES)}")
    check_types(list(opts.types), bool(opts.imatrix), EVAL_HINT)
    given = calibrations(opts.imatrix)
    layers = checked_model(opts.source).layers if opts.prune is not None else 0
    return plan(opts.types, given, prunes(opts.prune, layers))


def build(
    planned: list[PlannedRung],
    source: dict,
    models: Path,
    memo: Path,
    matrices,
    say,
    order: list[int] = (),
):
    """Quantize (cached) and describe every planned rung, ordered top rung first. `matrices`:
    calibration spec -> eval/calibrated.py Matrix; `order`: the layers to prune, the first
    first (eval/prune_order.py)."""
    from eval.rungs import describe, quantized

    rungs = []
    for i, p in enumerate(planned, 1):
        say(f"[{i}/{len(planned)}] quantizing {source['name']} to {p.label}")
        m = matrices[p.calibration.spec] if p.calibration else None
        removed = layers_for(list(order), p.prune) if p.prune else ()
        path = quantized(
            Path(source["path"]),
            source["sha256"],
            p.quant_type,
            models,
            memo,
            (m.imatrix, m.sha256) if m else None,
            removed,
            p.tag,
        )
        rungs.append(
            describe(p.label, path, memo, p.quant_type)
            | {
                "calibration": p.calibration.spec if p.calibration else "none",
                "calibration_description": m.description if m else None,
                "imatrix_sha256": m.sha256 if m else None,
                "pruned_layers": list(removed),
            }
        )
    return ordered(rungs)


def ordered(rungs: list[dict]) -> list[dict]:
    """Top rung first (the plain one with the most bits per weight: unpruned and, when there
    is one, uncalibrated; ties keep the planned order), then the rest by falling bits per
    weight (stable)."""
    by_bits = sorted(rungs, key=lambda r: -r["bits_per_weight"])
    whole = [r for r in by_bits if not r.get("pruned_layers")]
    top = next((r for r in whole if r.get("calibration", "none") == "none"), whole[0])
    return [top] + [r for r in by_bits if r is not top]
