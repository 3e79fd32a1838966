"""LoRA on a GGUF student, in plain torch: load the student dequantized, attach adapters, train.

`load_student` reads a GGUF model into a transformers model in float32 (every quantized tensor
dequantized by the `gguf` package, llama's q/k rows un-permuted by transformers' GGUF
processor). transformers' own `from_pretrained(..., gguf_file=...)` refuses to run without
`accelerate`, which it needs only for device placement; this calls the same GGUF loader
(`load_gguf_checkpoint`) directly on a CPU model, so no new dependency is needed.

`attach_lora` freezes the base and wraps the chosen linear layers: output = W x + (alpha/rank)
B A x, A (rank x in) small and seeded, B (out x rank) zero, so training starts from the base
model exactly. `train_step` is one AdamW step on causal-LM cross-entropy over the answer tokens,
optionally mixed with a KL term to a teacher's next-token distributions: loss = a CE +
(1 - a) T^2 KL(teacher_T || student_T). eval/lora_gguf.py exports the result for llama.cpp.
"""

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from agent.runtime.model_file import inspect_gguf
from retrieval.errors import UserError
from retrieval.threads import threads

IGNORE = -100  # label of a position that is not scored (prompt, padding)


@dataclass(frozen=True)
class LoraConfig:
    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    seed: int = 0

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


@dataclass
class Batch:
    input_ids: torch.Tensor  # [batch, length], right-padded
    attention_mask: torch.Tensor  # [batch, length], 1 on real tokens
    labels: torch.Tensor  # [batch, length], the token ids scored, IGNORE elsewhere

    @property
    def scored_tokens(self) -> int:
        return int((self.labels[:, 1:] != IGNORE).sum())


@dataclass(frozen=True)
class StepLoss:
    total: float
    ce: float
    kl: float  # 0.0 without a teacher


class LoraLinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update (alpha/rank) B A."""

    def __init__(self, base: nn.Linear, config: LoraConfig, generator: torch.Generator) -> None:
        super().__init__()
        self.base = base
        self.scale = config.scale
        bound = 1.0 / math.sqrt(base.in_features)
        a = torch.empty(config.rank, base.in_features).uniform_(-bound, bound, generator=generator)
        self.lora_a = nn.Parameter(a)
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, config.rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * F.linear(F.linear(x, self.lora_a), self.lora_b)


def load_student(path: Path) -> nn.Module:
    """The GGUF model at `path` as a float32 transformers model on the CPU, in eval mode."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    inspect_gguf(path)  # missing, not GGUF or truncated: one line naming the file
    try:
        config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    except (ValueError, KeyError, OSError) as exc:
        raise UserError(f"transformers cannot read the GGUF student {path}: {exc}") from None
    with no_init_weights():  # every weight is overwritten from the file below
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
    missing = model.load_state_dict(tensors, strict=False).missing_keys
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied:
        raise UserError(f"the GGUF student {path} lacks tensors: {', '.join(sorted(missing))}")
    model.tie_weights()
    return model.eval()


def attach_lora(model: nn.Module, config: LoraConfig) -> dict[str, LoraLinear]:
    """Freeze the model, wrap every nn.Linear whose last name part is a target; name -> layer."""
    if config.rank < 1:
        raise UserError(f"LoRA rank must be at least 1, not {config.rank}")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    generator = torch.Generator().manual_seed(config.seed)
    chosen = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in config.targets
    ]
    if not chosen:
        raise UserError(f"no linear layer of the model is named {', '.join(config.targets)}")
    wrapped: dict[str, LoraLinear] = {}
    for name, module in chosen:
        parent_name, _, child = name.rpartition(".")
        wrapped[name] = LoraLinear(module, config, generator)
        setattr(model.get_submodule(parent_name), child, wrapped[name])
    return wrapped


def lora_parameters(layers: dict[str, LoraLinear]) -> list[nn.Parameter]:
    return [p for layer in layers.values() for p in (layer.lora_a, layer.lora_b)]


def make_batch(examples: list[tuple[list[int], list[int]]], pad_id: int) -> Batch:
    """(prompt ids, answer ids) pairs -> one right-padded batch scoring the answer tokens only."""
    length = max(len(prompt) + len(answer) for prompt, answer in examples)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE, dtype=torch.long)
    for row, (prompt, answer) in enumerate(examples):
        n = len(prompt) + len(answer)
        ids[row, :n] = torch.tensor(prompt + answer)
        mask[row, :n] = 1
        labels[row, len(prompt) : n] = torch.tensor(answer)
    return Batch(ids, mask, labels)


def shifted_logits(model: nn.Module, batch: Batch) -> torch.Tensor:
    """The model's logits for positions 0..L-2, which predict the tokens at 1..L-1."""
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]


def distillation_loss(
    logits: torch.Tensor,
    batch: Batch,
    teacher_logits: torch.Tensor | None = None,
    alpha_ce: float = 1.0,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, ce, kl) over the scored positions. `logits` are shifted (see shifted_logits);
    `teacher_logits` are the teacher's logits at the same positions and share the vocabulary."""
    targets = batch.labels[:, 1:]
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
    if teacher_logits is None:
        return ce, ce, torch.zeros(())
    if teacher_logits.shape != logits.shape:
        raise UserError(
            f"teacher logits have shape {tuple(teacher_logits.shape)}, the student's "
            f"{tuple(logits.shape)}: distillation needs the same positions and vocabulary"
        )
    scored = targets != IGNORE
    student = F.log_softmax(logits[scored] / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits[scored].detach() / temperature, dim=-1)
    kl = F.kl_div(student, teacher, log_target=True, reduction="batchmean")
    total = alpha_ce * ce + (1.0 - alpha_ce) * temperature**2 * kl
    return total, ce, kl


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    teacher_logits: torch.Tensor | None = None,
    alpha_ce: float = 1.0,
    temperature: float = 1.0,
) -> StepLoss:
    """One optimizer step on `batch`; the losses are those before the step. Torch gets the
    cores idle now (retrieval/threads.py): on a busy 2-core machine a 2-thread step of the
    135M model took 15 s, a 1-thread one under 1 s."""
    torch.set_num_threads(threads())
    model.train()
    optimizer.zero_grad(set_to_none=True)
    logits = shifted_logits(model, batch)
    total, ce, kl = distillation_loss(logits, batch, teacher_logits, alpha_ce, temperature)
    total.backward()
    optimizer.step()
    model.eval()
    return StepLoss(total.item(), ce.item(), kl.item())


def make_optimizer(layers: dict[str, LoraLinear], lr: float, seed: int = 0) -> torch.optim.AdamW:
    """AdamW over the adapters only; torch's global seed is fixed for anything random later."""
    torch.manual_seed(seed)
    return torch.optim.AdamW(lora_parameters(layers), lr=lr, weight_decay=0.0)


def data_hash(examples: list[tuple[list[int], list[int]]]) -> str:
    """sha256 of the training examples' token ids, for the adapter's sidecar."""
    return hashlib.sha256(json.dumps(examples, separators=(",", ":")).encode()).hexdigest()
