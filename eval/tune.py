"""`bitrag tune`: LoRA on a GGUF student from teacher-written pairs of the user's own notes.

The run, start to finish: check the options; pick the teacher (given, else the strongest
installed pack, else the student itself for a smoke run); have it write pairs from the
index's chunks outside the eval's source notes (eval/tune_data.py, cached in --out), each
put to the student as the agent would put it (the reader's write job, or the evidence answer
prompt below the reader's size); load the student dequantized into torch with LoRA
adapters (eval/lora.py); train. The loss is cross-entropy on the teacher's answers, mixed
as ALPHA_CE CE + (1 - ALPHA_CE) T^2 KL with the teacher's next-token distributions at
temperature TEMPERATURE when the two models share a vocabulary (eval/tune_tokens.py);
otherwise the teacher's answers are the only signal
(sequence-level distillation), and the run says so. Each step takes BATCH pairs in order,
wrapping around, and prints one progress line. After every step the adapters, the
optimizer state and the step are saved to `<out>/checkpoint.pt`; a later run with the same
student file, LoRA settings, learning rate and loss resumes from it, also when the pairs
grew since (it says so). With --minutes the run keeps to a time budget: new pairs only in
its first PAIRS_SHARE, then steps while the next one (timed as the last) ends in time;
loading and the teacher's distributions are not cut short. The result is
`<out>/adapter.gguf` with its sidecar `adapter.json` (eval/lora_gguf.py), which llama.cpp
applies on top of the quantized student.
"""

import contextlib
import hashlib
import io
import json
import os
import pickle
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from agent.assemble import reader_on
from agent.evidence import TermWeights
from agent.runtime.model_file import GGUFInfo, checked_model, embedded_model_path
from agent.runtime.registry import path_of
from eval.eval_cache import sha256_file
from eval.lora import (
    Batch,
    LoraConfig,
    LoraLinear,
    attach_lora,
    data_hash,
    load_student,
    make_batch,
    make_optimizer,
    train_step,
)
from eval.lora_gguf import export_adapter, write_sidecar
from eval.tune_data import Pair, generate_pairs, practice_messages
from eval.tune_tokens import (
    Example,
    batch_teacher_logits,
    shared_vocabulary,
    student_examples,
    teacher_logits,
)
from retrieval.errors import UserError
from retrieval.store import Index, open_index

TEACHER_PACKS = ("qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b")  # strongest first
ALPHA_CE = 0.5
TEMPERATURE = 2.0
BATCH = 2
PAIRS_SHARE = 0.5  # of --minutes: new pairs stop after it, training has the rest
# ... less this many seconds for what comes before and after the run's clock: starting
# Python with torch, exporting the adapter (a 20-minute 0.5B run took 20:02 without it)
RESERVE_S = 15.0
CHECKPOINT = "checkpoint.pt"
ADAPTER = "adapter.gguf"
Say = Callable[[str], None]


@dataclass(frozen=True)
class TuneOptions:
    index: Path
    out: Path
    student: str | None = None
    teacher: str | None = None
    rank: int = 8
    alpha: float = 16.0
    steps: int = 50
    lr: float = 1e-3
    limit: int | None = None
    corpus: Path | None = None  # indexed into `index` first when that holds no index yet
    minutes: float | None = None  # the whole run ends within it (new pairs, then steps)


@dataclass
class Training:
    """What the checkpoint holds: the adapters, their optimizer, the steps done so far."""

    layers: dict[str, LoraLinear]
    optimizer: torch.optim.Optimizer
    key: str
    step: int = 0
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0  # spent in training steps, over every resumed run
    data: str = ""  # the hash of the pairs trained on (data_hash)


def check_options(options: TuneOptions) -> None:
    """Refuse bad settings before anything loads."""
    for name, value in (("--steps", options.steps), ("--rank", options.rank)):
        if value < 1:
            raise UserError(f"{name} must be at least 1, not {value}")
    if options.limit is not None and options.limit < 1:
        raise UserError(f"--limit must be at least 1, not {options.limit}")
    if options.minutes is not None and not options.minutes > 0:
        raise UserError(f"--minutes must be above 0, not {options.minutes:g}")
    for name, value in (("--lr", options.lr), ("--alpha", options.alpha)):
        if not value > 0:
            raise UserError(f"{name} must be above 0, not {value}")
    if options.out.exists() and not options.out.is_dir():
        raise UserError(f"--out {options.out} is a file: give a folder for the adapter")


def choose_teacher(given: str | None, student: GGUFInfo) -> tuple[GGUFInfo, str]:
    """The teacher's checked file and how it was chosen."""
    if given:
        info = checked_model(given)
        return info, f"teacher: {info.path.name} (given)"
    for name in TEACHER_PACKS:
        found = path_of(name)
        if found and found.is_file():
            return checked_model(str(found)), f"teacher: {name} (the strongest installed)"
    return student, "teacher: the student itself (no other model installed: a smoke run)"


def kept_pairs(
    index: Index,
    weights: TermWeights,
    options: TuneOptions,
    teacher: GGUFInfo,
    say: Say,
    until: float | None = None,
) -> list[Pair]:
    """The teacher's pairs that pass the check; new ones are written only before `until`."""
    from agent.runtime.llm import LocalLLM

    reads = reader_on(teacher.parameters)
    say(
        "check: the agent's check of a reader's draft, and the teacher confirms it"
        if reads
        else "check: the agent's check of an answer from evidence (the teacher does not read)"
    )
    pairs = generate_pairs(
        index,
        lambda: LocalLLM(teacher.path),
        teacher.path,
        options.out,
        options.limit,
        say,
        weights=weights,
        reads=reads,
        until=until,
    )
    kept = [p for p in pairs if p.kept]
    if not kept and until is not None and time.perf_counter() >= until:
        raise UserError(
            f"--minutes {options.minutes:g} ran out before the teacher wrote a pair that passes "
            "the agent's check: give more minutes (the pairs written are kept for the next run)"
        )
    if not pairs:
        raise UserError(
            f"no chunk of {options.index} may be used: every chunk it holds could answer an "
            "eval question (data/eval/qa.jsonl), held out so the eval stays fair; index your "
            "own notes with `bitrag ingest FOLDER --index DIR` and pass --index DIR"
        )
    say(f"pairs: {len(kept)} kept of {len(pairs)} chunk(s) the teacher read")
    if not kept:
        raise UserError(
            f"the teacher wrote no pair that passes the agent's check from {len(pairs)} chunk(s) "
            f"of {options.index}: index more notes, raise --limit or use a stronger --teacher"
        )
    return kept


def run_key(student_sha: str, config: LoraConfig, lr: float, kl: bool) -> str:
    """What a checkpoint must match to be resumed (the pairs may have grown since)."""
    parts = {"student": student_sha, "lora": asdict(config), "lr": lr, "kl": kl}
    parts |= {"alpha_ce": ALPHA_CE, "temperature": TEMPERATURE, "batch": BATCH}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def save_checkpoint(path: Path, training: Training) -> None:
    state = {
        "key": training.key,
        "step": training.step,
        "losses": training.losses,
        "seconds": training.seconds,
        "data": training.data,
        "lora": {n: (m.lora_a.detach(), m.lora_b.detach()) for n, m in training.layers.items()},
        "optimizer": training.optimizer.state_dict(),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def resume(path: Path, training: Training, say: Say) -> None:
    """Continue from the checkpoint when it was made by the same run settings, also when
    the pairs changed since (a --minutes run read more chunks): the adapters go on over the
    pairs as they are now."""
    if not path.is_file():
        return
    try:
        state = torch.load(path, weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        say(f"checkpoint {path} is unreadable ({type(exc).__name__}): starting over")
        return
    if state.get("key") != training.key:
        say(f"checkpoint {path} is for another student or settings: starting over")
        return
    with torch.no_grad():
        for name, (a, b) in state["lora"].items():
            training.layers[name].lora_a.copy_(a)
            training.layers[name].lora_b.copy_(b)
    training.optimizer.load_state_dict(state["optimizer"])
    training.step, training.losses = state["step"], list(state["losses"])
    training.seconds = float(state.get("seconds", 0.0))
    say(f"resumed from checkpoint {path} at step {training.step}")
    if state.get("data") != training.data:
        say("the pairs changed since that step: training goes on over the pairs as they are now")


def batch_at(
    step: int, examples: list[Example], rows: list[torch.Tensor] | None
) -> tuple[Batch, torch.Tensor | None]:
    """The BATCH examples step `step` (from 1) trains on, in order, wrapping around."""
    chosen = [((step - 1) * BATCH + j) % len(examples) for j in range(BATCH)]
    chosen = list(dict.fromkeys(chosen))  # fewer examples than BATCH: each once
    picked = [examples[i] for i in chosen]
    batch = make_batch(picked, pad_id=0)
    if rows is None:
        return batch, None
    teacher = batch_teacher_logits([rows[i] for i in chosen], picked, batch.input_ids.shape[1])
    return batch, teacher


def train(
    model: torch.nn.Module,
    training: Training,
    examples: list[Example],
    rows: list[torch.Tensor] | None,
    steps: int,
    checkpoint: Path,
    say: Say,
    until: float | None = None,
) -> tuple[int, float]:
    """Train up to step `steps`, or while the next step (as long as the last one, batching
    and checkpoint included) ends before `until`; (tokens read, seconds) of this run's
    steps. A run makes one step at least."""
    tokens, seconds, lap = 0, 0.0, 0.0
    alpha_ce = ALPHA_CE if rows is not None else 1.0
    while training.step < steps:
        if until is not None and lap and time.perf_counter() + lap > until:
            say(f"time: stopped at step {training.step} of {steps} to end within --minutes")
            break
        began = time.perf_counter()
        batch, teacher = batch_at(training.step + 1, examples, rows)
        start = time.perf_counter()
        loss = train_step(model, training.optimizer, batch, teacher, alpha_ce, TEMPERATURE)
        took = time.perf_counter() - start
        training.step += 1
        training.losses.append(loss.total)
        training.seconds += took
        save_checkpoint(checkpoint, training)
        read = int(batch.attention_mask.sum())
        tokens, seconds = tokens + read, seconds + took
        say(
            f"step {training.step}/{steps} loss {loss.total:.4f} (ce {loss.ce:.4f}, "
            f"kl {loss.kl:.4f}) {read / took:.0f} tokens/s"
        )
        lap = time.perf_counter() - began
    return tokens, seconds


def quiet_student(path: Path) -> torch.nn.Module:
    """load_student without transformers' per-tensor tqdm bar among the progress lines (it
    writes to sys.stderr; failures arrive as exceptions, not there)."""
    with contextlib.redirect_stderr(io.StringIO()):
        return load_student(path)


def tune(options: TuneOptions, say: Say) -> dict:
    """The whole run; the summary printed at the end."""
    started = time.perf_counter()
    check_options(options)
    budget = options.minutes * 60 if options.minutes else None
    info = checked_model(options.student or str(embedded_model_path()))
    student = info.path
    teacher_info, chosen = choose_teacher(options.teacher, info)
    teacher = teacher_info.path
    index = open_index(options.index, options.corpus)  # none: one line saying how to build it
    say(f"student: {student.name}; {chosen}")
    options.out.mkdir(parents=True, exist_ok=True)
    weights = TermWeights(index.bm25)
    pairs_until = started + PAIRS_SHARE * budget if budget else None
    pairs = kept_pairs(index, weights, options, teacher_info, say, pairs_until)
    reads = reader_on(info.parameters)
    say(
        "practice: the reader's write job over the passage, as the agent asks this student"
        if reads
        else "practice: an answer from numbered evidence, as the agent asks this student "
        "(below the reader's size)"
    )
    chunks = {c.chunk_id: c for c in index.chunks}
    practice = [(practice_messages(p, chunks[p.chunk_id], reads, weights), p.answer) for p in pairs]
    examples = student_examples(student, practice)
    kl = shared_vocabulary(student, teacher)
    say(
        f"distillation: CE on the teacher's answers + KL to its next-token distributions "
        f"(a = {ALPHA_CE}, T = {TEMPERATURE})"
        if kl
        else "distillation: sequence-level only (the teacher's vocabulary differs from the "
        "student's, so no KL to its next-token distributions)"
    )
    rows = teacher_logits(teacher, examples) if kl else None
    config = LoraConfig(rank=options.rank, alpha=options.alpha)
    data = data_hash(examples)
    say(f"loading {student.name} into torch, dequantized")
    model = quiet_student(student)
    layers = attach_lora(model, config)
    student_sha = sha256_file(student, options.out / ".hashes.json")
    training = Training(
        layers,
        make_optimizer(layers, options.lr, config.seed),
        run_key(student_sha, config, options.lr, kl),
        data=data,
    )
    checkpoint = options.out / CHECKPOINT
    resume(checkpoint, training, say)
    resumed = training.step
    if resumed >= options.steps:
        say(f"the checkpoint is at step {resumed}, --steps is {options.steps}: nothing to train")
    until = started + budget - RESERVE_S if budget else None
    tokens, seconds = train(model, training, examples, rows, options.steps, checkpoint, say, until)
    adapter = export_adapter(layers, config, student, options.out / ADAPTER)
    write_sidecar(adapter, student, config, training.step, data, training.seconds)
    losses = training.losses
    return {
        "student": str(student),
        "teacher": str(teacher),
        "teacher_choice": chosen,
        "distillation": "ce+kl" if kl else "sequence-level",
        "practice": "reader-write" if reads else "evidence-answer",
        "pairs": len(pairs),
        "rank": config.rank,
        "alpha": config.alpha,
        "targets": list(config.targets),
        "steps": training.step,
        "resumed_from": resumed,
        "train_seconds": seconds,
        "tokens_per_s": tokens / seconds if seconds else None,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "adapter": str(adapter),
        "adapter_bytes": adapter.stat().st_size,
        "seconds": time.perf_counter() - started,
    }
