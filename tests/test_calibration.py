"""Calibration on the user's notes: which chunks the sample takes (every note in turn, never a
held-out chunk, one language on request, up to a budget), and `bitrag quantize --imatrix`
through the CLI with real llama.cpp on the embedded model over a small real index."""

import json
from pathlib import Path

from click.testing import CliRunner

from agent.cli import cli
from eval.calibration import describe, sample
from eval.imatrix import read
from eval.quantize import source_type
from retrieval.store import open_index

DOCS = ["flashattention-강의노트.md", "lora-qlora.md", "activation-checkpointing-lecture-notes.md"]


def chunks(small_index: Path):
    return open_index(small_index).chunks


def test_every_note_gives_its_first_chunk_before_any_gives_a_second(small_index: Path):
    taken = sample(chunks(small_index), chars=1)  # the budget is reached after one chunk
    assert len(taken) == 1
    first_round = sample(chunks(small_index), chars=10**9)[: len(DOCS)]
    assert len({c.source for c in first_round}) == len(DOCS)


def test_held_out_chunks_are_never_taken_and_the_budget_bounds_the_sample(small_index: Path):
    every = chunks(small_index)
    held = {c.chunk_id for c in every[::2]}
    taken = sample(every, held_out=held, chars=10**9)
    assert taken and not {c.chunk_id for c in taken} & held
    assert len(taken) == len(every) - len(held)
    small = sample(every, chars=2000)
    assert sum(len(c.text) for c in small[:-1]) < 2000 <= sum(len(c.text) for c in small)


def test_one_language_only_on_request(small_index: Path):
    every = chunks(small_index)
    korean = sample(every, lang="ko", chars=10**9)
    assert korean and all(c.lang == "ko" for c in korean)
    assert len(korean) == sum(1 for c in every if c.lang == "ko") < len(every)
    assert describe(korean) != describe(sample(every, lang="en", chars=10**9))


def test_quantize_with_an_imatrix_from_the_notes(model_path: Path, small_index: Path, tmp_path):
    out = tmp_path / "out"
    args = [str(model_path), "--types", "Q2_K_S", "--out", str(out), "--index", str(small_index)]
    result = CliRunner().invoke(cli, ["quantize", *args, "--imatrix", "notes"])
    assert result.exit_code == 0, result.output
    saved = out / f"{model_path.stem}.imatrix.dat"
    assert f"importance matrix saved: {saved}" in result.stderr
    assert source_type(out / f"{model_path.stem}.Q2_K_S.gguf") == "Q2_K_S"
    imatrix = read(saved)
    assert imatrix.dataset == describe(sample(chunks(small_index)))
    assert len(imatrix.sums) > 100 and min(imatrix.counts.values()) > 0


def test_a_missing_imatrix_file_is_one_line_and_nothing_is_written(model_path: Path, tmp_path):
    out = tmp_path / "out"
    missing = tmp_path / "nope.dat"
    args = [str(model_path), "--types", "Q2_K_S", "--out", str(out), "--imatrix", str(missing)]
    result = CliRunner().invoke(cli, ["quantize", *args])
    assert result.exit_code != 0
    assert result.stderr.strip().splitlines() == [
        f"Error: imatrix file {missing} not found: give a llama.cpp .dat file or 'notes'"
    ]
    assert not out.exists() or not any(out.iterdir())


def test_a_pruned_output_has_fewer_layers_and_still_generates(model_path: Path, tmp_path: Path):
    from llama_cpp import Llama

    from agent.runtime.model_file import inspect_gguf
    from eval.quantize import prune_rule

    source = inspect_gguf(model_path)
    assert prune_rule(source.layers, 2) == (source.layers - 3, source.layers - 2)
    out = tmp_path / "out"
    args = [str(model_path), "--types", "Q8_0", "--out", str(out), "--prune", "2", "--json"]
    result = CliRunner().invoke(cli, ["quantize", *args, "--prune-rule", "before-last"])
    assert result.exit_code == 0, result.output
    removed = json.loads(result.stdout)["outputs"][0]["pruned_layers"]
    assert removed == [source.layers - 3, source.layers - 2]
    path = out / f"{model_path.stem}.Q8_0-pruned2.gguf"
    pruned = inspect_gguf(path)
    assert pruned.layers == source.layers - 2
    per_layer = (source.tensors - pruned.tensors) / 2
    assert per_layer == int(per_layer) >= 7  # every tensor of the two blocks went
    llm = Llama(model_path=str(path), n_ctx=128, n_threads=1, verbose=False)
    try:
        assert llm.create_completion("Quantization is", max_tokens=4, temperature=0)["choices"]
    finally:
        llm.close()


def test_measured_pruning_removes_the_blocks_that_change_the_model_least_on_the_notes(
    model_path: Path, small_index: Path, tmp_path: Path
):
    from agent.runtime.model_file import inspect_gguf

    out = tmp_path / "out"
    args = [str(model_path), "--types", "Q8_0", "--out", str(out), "--prune", "1"]
    result = CliRunner().invoke(cli, ["quantize", *args, "--index", str(small_index)])
    assert result.exit_code == 0, result.output
    layers = inspect_gguf(model_path).layers
    assert f"ranking layers: [{layers - 1}/{layers - 1}]" in result.stderr  # every block but one
    (ranked,) = out.glob(".prune-order-*.json")
    effects = json.loads(ranked.read_text())["effects"]
    cheapest = min(effects, key=lambda e: (e["kld"], e["layer"]))["layer"]
    assert cheapest != layers - 2  # not the before-last rule's pick (measured: 1.00 nats)
    pruned = inspect_gguf(out / f"{model_path.stem}.Q8_0-pruned1.gguf")
    assert pruned.layers == layers - 1
    assert not list(out.glob(".prune-rank-*"))  # the per-layer files are gone


def test_pruning_every_layer_is_refused_before_anything_is_written(model_path: Path, tmp_path):
    from agent.runtime.model_file import inspect_gguf

    layers = inspect_gguf(model_path).layers
    out = tmp_path / "out"
    args = [str(model_path), "--types", "Q8_0", "--out", str(out), "--prune", str(layers)]
    result = CliRunner().invoke(cli, ["quantize", *args])
    assert result.exit_code != 0
    assert result.stderr.strip().splitlines() == [
        f"Error: cannot remove {layers} of {layers} layers: give 1 to {layers - 2}"
    ]
    assert not out.exists()
