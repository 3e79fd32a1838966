"""LoRA on the embedded model with real torch, gguf and llama.cpp: a few steps lower the loss,
the exported adapter loads on the GGUF base and on a Q8_0 requantization of it and moves
llama.cpp's next-token distribution the way it moved torch's, and broken adapters are refused
with one line."""

import json
import time
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
import numpy as np
import pytest
import torch
from gguf import GGUFReader, GGUFWriter
from gguf.quants import dequantize

from eval.lora import (
    Batch,
    LoraConfig,
    attach_lora,
    data_hash,
    distillation_loss,
    load_student,
    make_batch,
    make_optimizer,
    shifted_logits,
    train_step,
)
from eval.lora_gguf import (
    base_shape,
    export_adapter,
    open_with_adapter,
    to_gguf_rows,
    write_adapter,
    write_sidecar,
)
from eval.quantize import quantize_one
from retrieval.errors import UserError
from retrieval.hashing import sha256_of

EXAMPLES = [
    ("Q: What does LoRA freeze?\nA:", " It freezes the base weights W."),
    ("Q: Which bits does QLoRA use?\nA:", " A 4-bit base with an adapter."),
]
CONFIG = LoraConfig(rank=8, alpha=16.0, targets=("q_proj", "v_proj"), seed=0)
STEPS, LR = 12, 1e-3


@dataclass
class Tuned:
    model: torch.nn.Module
    batch: Batch
    losses: list[float]
    seconds: float
    prompt: list[int]  # the first example's prompt
    target: int  # the first token of its answer
    before: np.ndarray  # torch log-probs of the next token after `prompt`, before training
    after: np.ndarray  # the same after training
    adapter: Path


def tokenize(model_path: Path, text: str) -> list[int]:
    vocab = llama_cpp.Llama(model_path=str(model_path), vocab_only=True, verbose=False)
    try:
        return vocab.tokenize(text.encode(), add_bos=False, special=True)
    finally:
        vocab.close()


def torch_logprobs(model: torch.nn.Module, prompt: list[int]) -> np.ndarray:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt])).logits[0, -1]
    return torch.log_softmax(logits.double(), dim=-1).numpy()


def one_thread() -> dict:
    return {"n_ctx": 128, "n_threads": 1, "n_threads_batch": 1}


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Tuned:
    """The embedded model loaded into torch, LoRA-trained for STEPS steps, exported once."""
    examples = [(tokenize(model_path, q), tokenize(model_path, a)) for q, a in EXAMPLES]
    model = load_student(model_path)
    layers = attach_lora(model, CONFIG)
    batch = make_batch(examples, pad_id=0)
    prompt, target = examples[0][0], examples[0][1][0]
    before = torch_logprobs(model, prompt)
    optimizer = make_optimizer(layers, LR, seed=CONFIG.seed)
    start = time.perf_counter()
    losses = [train_step(model, optimizer, batch).ce for _ in range(STEPS)]
    seconds = time.perf_counter() - start
    after = torch_logprobs(model, prompt)
    adapter = export_adapter(layers, CONFIG, model_path, tmp_path_factory.mktemp("lora") / "a.gguf")
    write_sidecar(adapter, model_path, CONFIG, STEPS, data_hash(examples))
    return Tuned(model, batch, losses, seconds, prompt, target, before, after, adapter)


def refusal(base: Path, adapter: Path) -> str:
    with pytest.raises(UserError) as caught:
        open_with_adapter(base, adapter, **one_thread())
    message = str(caught.value)
    assert "\n" not in message and message.strip() == message
    return message


def test_a_few_lora_steps_lower_the_training_loss(tuned: Tuned):
    losses = tuned.losses
    tokens = tuned.batch.input_ids.numel() * STEPS
    print(
        f"loss {losses[0]:.3f} -> {losses[-1]:.3f}; {STEPS} steps in {tuned.seconds:.1f} s, "
        f"{tokens / tuned.seconds:.0f} tokens/s ({tuned.batch.scored_tokens} scored per step)"
    )
    assert losses[-1] < 0.6 * losses[0], losses
    assert all(later < earlier for earlier, later in zip(losses, losses[1:], strict=False))
    trainable = {name for name, p in tuned.model.named_parameters() if p.requires_grad}
    assert trainable and all(name.endswith(("lora_a", "lora_b")) for name in trainable)
    assert len(trainable) == 2 * 2 * 30  # A and B of q_proj and v_proj in 30 blocks


def test_distillation_mixes_cross_entropy_and_scaled_kl(tuned: Tuned):
    with torch.no_grad():
        logits = shifted_logits(tuned.model, tuned.batch)
    total, ce, kl = distillation_loss(logits, tuned.batch, logits.clone(), 0.5, 2.0)
    assert abs(float(kl)) < 1e-5 and torch.isclose(total, 0.5 * ce, atol=1e-5)
    teacher = logits.roll(1, dims=-1)
    total, ce, kl = distillation_loss(logits, tuned.batch, teacher, 0.25, 2.0)
    assert float(kl) > 0.1
    assert torch.isclose(total, 0.25 * ce + 0.75 * 4.0 * kl)
    with pytest.raises(UserError, match="same positions and vocabulary"):
        distillation_loss(logits, tuned.batch, logits[..., :100], 0.5, 2.0)


def test_q_and_k_rows_are_permuted_back_to_the_gguf_layout(tuned: Tuned, model_path: Path):
    """transformers un-permuted attn_q/attn_k on load; to_gguf_rows restores the file's rows
    exactly (so B's rows of a q/k delta land where llama.cpp applies them); v is untouched."""
    shape = base_shape(model_path)
    raw = {t.name: t for t in GGUFReader(model_path).tensors if t.name.startswith("blk.7.")}
    attention = tuned.model.model.layers[7].self_attn
    for module, key, heads in (("q_proj", "attn_q", 9), ("k_proj", "attn_k", 3)):
        hf = getattr(attention, module)
        weight = (hf.base if hasattr(hf, "base") else hf).weight.detach().numpy()
        stored = raw[f"blk.7.{key}.weight"]
        in_file = dequantize(stored.data, stored.tensor_type).reshape(weight.shape)
        assert not np.array_equal(weight, in_file)
        assert np.array_equal(to_gguf_rows(weight, heads), in_file)
    assert (shape.heads, shape.kv_heads) == (9, 3)
    stored = raw["blk.7.attn_v.weight"]
    v_weight = attention.v_proj.base.weight.detach().numpy()
    assert np.array_equal(
        dequantize(stored.data, stored.tensor_type).reshape(v_weight.shape), v_weight
    )


def test_the_adapter_file_and_its_sidecar(tuned: Tuned, model_path: Path):
    reader = GGUFReader(tuned.adapter)
    assert reader.get_field("general.type").contents() == "adapter"
    assert reader.get_field("general.architecture").contents() == "llama"
    assert reader.get_field("adapter.type").contents() == "lora"
    assert reader.get_field("adapter.lora.alpha").contents() == 16.0
    shapes = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}
    assert len(shapes) == 2 * 2 * 30
    assert shapes["blk.0.attn_q.weight.lora_a"] == (576, 8)  # ggml order: [in, rank]
    assert shapes["blk.0.attn_q.weight.lora_b"] == (8, 576)  # [rank, out]
    assert shapes["blk.29.attn_v.weight.lora_b"] == (8, 192)  # 3 kv heads x 64
    sidecar = json.loads(tuned.adapter.with_suffix(".json").read_text(encoding="utf-8"))
    assert sidecar["student_sha256"] == sha256_of(model_path)
    assert sidecar["adapter_sha256"] == sha256_of(tuned.adapter)
    assert (sidecar["rank"], sidecar["alpha"], sidecar["steps"]) == (8, 16.0, STEPS)
    assert sidecar["targets"] == ["q_proj", "v_proj"]
    assert len(sidecar["data_sha256"]) == 64


def test_llama_cpp_applies_the_adapter_as_torch_does(
    tuned: Tuned, model_path: Path, adapter_logprobs
):
    """On the GGUF the student was read from, the adapter's change to llama.cpp's next-token
    log-probs matches torch's: same direction over the whole vocabulary, same target gain."""
    base, with_adapter = adapter_logprobs(model_path, tuned.adapter, tuned.prompt)
    llama_delta, torch_delta = with_adapter - base, tuned.after - tuned.before
    correlation = np.corrcoef(llama_delta, torch_delta)[0, 1]
    t = tuned.target
    print(
        f"target log-prob torch {tuned.before[t]:.2f} -> {tuned.after[t]:.2f}, llama.cpp "
        f"{base[t]:.2f} -> {with_adapter[t]:.2f}; max |delta| {np.abs(llama_delta).max():.2f}; "
        f"correlation {correlation:.4f}"
    )
    assert np.abs(llama_delta).max() > 1.0
    assert correlation > 0.98
    assert with_adapter[t] - base[t] > 2.0 and tuned.after[t] - tuned.before[t] > 2.0


def test_the_adapter_loads_on_a_quantized_base(
    tuned: Tuned, model_path: Path, tmp_path: Path, adapter_logprobs
):
    q8 = quantize_one(model_path, "Q8_0", tmp_path)
    base, with_adapter = adapter_logprobs(q8, tuned.adapter, tuned.prompt)
    t = tuned.target
    print(f"Q8_0: target log-prob {base[t]:.2f} -> {with_adapter[t]:.2f}; ", end="")
    print(f"max |delta| {np.abs(with_adapter - base).max():.2f}")
    assert np.abs(with_adapter - base).max() > 1.0
    assert with_adapter[t] - base[t] > 2.0


def test_a_truncated_adapter_is_refused_with_one_line(
    tuned: Tuned, model_path: Path, tmp_path: Path
):
    data = tuned.adapter.read_bytes()
    for size in (len(data) // 2, 100, 3):
        cut = tmp_path / f"cut{size}.gguf"
        cut.write_bytes(data[:size])
        assert str(cut) in refusal(model_path, cut)


def test_an_adapter_for_another_architecture_is_refused(model_path: Path, tmp_path: Path):
    a, b = np.zeros((8, 896), np.float32), np.zeros((896, 8), np.float32)
    other = write_adapter(tmp_path / "qwen.gguf", "qwen2", 16.0, {"blk.0.attn_q.weight": (a, b)})
    assert "architecture 'qwen2'" in refusal(model_path, other)


def test_an_adapter_of_the_wrong_shape_is_refused_by_llama_cpp(model_path: Path, tmp_path: Path):
    a, b = np.zeros((8, 896), np.float32), np.zeros((896, 8), np.float32)
    wrong = write_adapter(tmp_path / "wide.gguf", "llama", 16.0, {"blk.0.attn_q.weight": (a, b)})
    message = refusal(model_path, wrong)
    assert "llama.cpp refused" in message and "incorrect shape" in message
    missing = write_adapter(tmp_path / "none.gguf", "llama", 16.0, {"blk.99.attn_q.weight": (a, b)})
    assert "does not exist in base model" in refusal(model_path, missing)


def test_a_model_file_is_not_an_adapter(model_path: Path):
    assert "is not a LoRA adapter GGUF" in refusal(model_path, model_path)


def test_an_alpha_of_the_wrong_type_is_refused_before_llama_cpp_aborts(
    model_path: Path, tmp_path: Path
):
    """llama.cpp reads adapter.lora.alpha with a type assertion: a float64 aborts the process
    (measured: exit 134), so the Python check must refuse it first."""
    path = tmp_path / "f64.gguf"
    writer = GGUFWriter(path, "llama")
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float64("adapter.lora.alpha", 16.0)
    writer.add_tensor("blk.0.attn_q.weight.lora_a", np.zeros((8, 576), np.float32))
    writer.add_tensor("blk.0.attn_q.weight.lora_b", np.zeros((576, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert "adapter.lora.alpha is not a float32" in refusal(model_path, path)
