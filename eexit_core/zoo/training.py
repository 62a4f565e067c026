"""Training a zoo variant: a short, seeded torch loop that a CPU runs bit for bit the same.

Every variant reads the same token windows in the same order (`data_order`, seeded by the
data seed, not the variant's), so variants differ only in what they are. AdamW with a
linear warm-up and cosine decay. At each checkpoint step (log-spaced fractions of the
budget, step 0 included) the validation loss is measured on fixed windows and the model
is written atomically with its training state; a run started again resumes from the last
checkpoint and ends identical to an uninterrupted one. A non-finite loss stops the variant
with `TrainingDivergedError`, naming it and the step.

The early-exit-aware recipe is LayerSkip's: layer dropout rising linearly with depth to
`max_layer_dropout`, and an early-exit loss through the shared exit head (final norm and
LM head) at every layer, weighted by `ee_scale * l / sum(l)` for layer l < L on top of the
ordinary loss at the last layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from eexit_core.errors import EexitError
from eexit_core.zoo.variants import Variant

CHECKPOINT_FRACTIONS = (0.0, 1 / 64, 1 / 16, 1 / 4, 1 / 2, 1.0)


class TrainingDivergedError(EexitError, FloatingPointError):
    """A variant's loss became NaN or infinite; its training stops, the others go on."""


@dataclass(frozen=True)
class TrainingPlan:
    tokens: int  # the token budget every variant of the zoo trains on
    seq_len: int = 128
    batch_size: int = 8
    learning_rate: float = 3e-3
    warmup_fraction: float = 0.05
    weight_decay: float = 0.01
    adam_betas: tuple[float, float] = (0.9, 0.95)  # the usual LM choice; 0.999 learned slower here
    data_seed: int = 1234
    eval_windows: int = 32
    checkpoint_fractions: tuple[float, ...] = CHECKPOINT_FRACTIONS
    max_layer_dropout: float = 0.2  # early-exit-aware recipe only
    ee_scale: float = 1.0  # early-exit-aware recipe only
    device: str = "cpu"  # bit-identical reruns and resumes are promised on a CPU only

    @property
    def steps(self) -> int:
        return max(1, self.tokens // (self.seq_len * self.batch_size))

    def checkpoint_steps(self) -> list[int]:
        return sorted({round(f * self.steps) for f in self.checkpoint_fractions})

    def learning_rate_at(self, step: int) -> float:
        warmup = max(1, round(self.warmup_fraction * self.steps))
        if step < warmup:
            return self.learning_rate * (step + 1) / warmup
        progress = (step - warmup) / max(1, self.steps - warmup)
        return self.learning_rate * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def windows(ids: Sequence[int], seq_len: int) -> torch.Tensor:
    """Non-overlapping windows of seq_len + 1 tokens (inputs and their next tokens)."""
    n = (len(ids) - 1) // seq_len
    if n < 1:
        raise ValueError(f"{len(ids)} tokens make no window of {seq_len + 1}")
    data = torch.tensor(ids[: n * seq_len + 1], dtype=torch.long)
    return torch.stack([data[i * seq_len: i * seq_len + seq_len + 1] for i in range(n)])


def data_order(n_windows: int, plan: TrainingPlan) -> torch.Tensor:
    """The window index of every (step, row), the same for every variant: seeded
    permutations of all windows, one after another as the budget needs."""
    needed = plan.steps * plan.batch_size
    generator = torch.Generator().manual_seed(plan.data_seed)
    epochs = [torch.randperm(n_windows, generator=generator) for _ in range(math.ceil(needed / n_windows))]
    return torch.cat(epochs)[:needed].view(plan.steps, plan.batch_size)


def language_model_loss(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=batch[:, :-1]).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1))


def early_exit_loss(model: torch.nn.Module, batch: torch.Tensor, ee_scale: float) -> torch.Tensor:
    """The last layer's loss plus `ee_scale` times the depth-weighted mean of every earlier
    layer's loss through the shared exit head (LayerSkip, eq. 4 with its linear scale)."""
    from eexit_core.models.adapters import resolve_exit_head

    head = resolve_exit_head(model)
    out = model(input_ids=batch[:, :-1], output_hidden_states=True)
    targets = batch[:, 1:].reshape(-1)
    final = F.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]).float(), targets)
    n_layers = head.n_layers
    weights = torch.arange(1, n_layers, dtype=torch.float32)
    weights = weights / weights.sum()
    early = torch.zeros((), dtype=torch.float32, device=targets.device)
    for layer in range(1, n_layers):  # hidden_states[l] is the residual stream after block l
        logits = head.logits(out.hidden_states[layer])
        early = early + weights[layer - 1] * F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets)
    return final + ee_scale * early


class LayerDropout:
    """Skips block l (its output replaced by its input) with probability p_max * l / (L - 1)
    while training, drawn from the given generator so that a resumed run draws the same."""

    def __init__(self, model: torch.nn.Module, p_max: float, generator: torch.Generator) -> None:
        from eexit_core.models.adapters import resolve_exit_head

        blocks = list(resolve_exit_head(model).blocks)
        last = max(1, len(blocks) - 1)
        self.rates = [p_max * index / last for index in range(len(blocks))]
        self.generator, self.model = generator, model
        self.handles = [block.register_forward_hook(self._hook(i)) for i, block in enumerate(blocks)]

    def _hook(self, index: int) -> Callable:
        def skip(_module, args, output):
            if not self.model.training or self.rates[index] == 0:
                return output
            if torch.rand((), generator=self.generator).item() >= self.rates[index]:
                return output
            hidden = args[0]
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
        return skip


def validation_loss(model: torch.nn.Module, evaluation: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        losses = [language_model_loss(model, evaluation[i:i + 8]).item() * len(evaluation[i:i + 8])
                  for i in range(0, len(evaluation), 8)]
    model.train()
    return sum(losses) / len(evaluation)


def training_device(plan: TrainingPlan) -> torch.device:
    """The plan's device, or a clear error where torch cannot use it."""
    device = torch.device(plan.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EexitError(f"this zoo scale trains on {plan.device} and torch sees no CUDA device here; "
                         "train the CPU scale (EEXIT_ZOO=cpu) or run on a GPU machine")
    return device


def _state_path(out_dir: Path, step: int) -> Path:
    return out_dir / f"step-{step:06d}" / "training_state.pt"


def train_variant(variant: Variant, vocab_size: int, train_ids: Sequence[int], validation_ids: Sequence[int],
                  plan: TrainingPlan, out_dir: Path, *, save: Callable[[torch.nn.Module, int, Path], None] | None = None,
                  log: Callable[[str], None] = print, initial_weights: dict | None = None) -> list[dict]:
    """Train `variant` on the plan's budget; one row per checkpoint step (step, tokens,
    train_loss of the step before it, None at step 0; val_loss; tokens_per_s). Checkpoints go to `out_dir/step-NNNNNN/`, each
    written atomically by `save(model, step, folder)` (plus the training state); a
    checkpoint already there is resumed from, not recomputed. `initial_weights` (a state
    dict) replaces the seeded initialisation: training continues from them."""
    import time

    from eexit_core.storage.artifacts import atomic_dir
    from eexit_core.zoo.variants import build_model

    device = training_device(plan)
    model = build_model(variant, vocab_size)
    if initial_weights is not None:  # continued training (the instruct recipe starts from its base twin)
        model.load_state_dict(initial_weights)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=plan.learning_rate, weight_decay=plan.weight_decay,
                                  betas=plan.adam_betas)
    generator = torch.Generator().manual_seed(variant.seed)
    dropout = LayerDropout(model, plan.max_layer_dropout, generator) if variant.recipe == "ee_aware" else None
    train_windows = windows(train_ids, plan.seq_len).to(device)
    evaluation = windows(validation_ids, plan.seq_len)[:plan.eval_windows].to(device)
    order = data_order(len(train_windows), plan).to(device)
    checkpoints = plan.checkpoint_steps()
    rows: list[dict] = []
    start = 0
    for step in reversed(checkpoints):  # resume from the last checkpoint written whole
        state = _state_path(out_dir, step)
        if state.is_file():
            saved = torch.load(state, weights_only=False, map_location=device)
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            generator.set_state(saved["generator"].cpu())  # the dropout draws stay on the CPU
            rows, start = saved["rows"], step
            log(f"{variant.model_id}: resumed at step {step}")
            break
    train_loss: float | None = None  # no step taken yet: step 0 has a validation loss only
    started = time.perf_counter()
    for step in range(start, plan.steps + 1):
        if step in checkpoints and not (rows and rows[-1]["step"] == step):
            val = validation_loss(model, evaluation)
            elapsed = time.perf_counter() - started
            tokens = step * plan.batch_size * plan.seq_len
            rows.append({"step": step, "tokens": tokens, "train_loss": train_loss, "val_loss": val,
                         "tokens_per_s": (tokens - start * plan.batch_size * plan.seq_len) / elapsed if elapsed else 0.0})
            with atomic_dir(out_dir / f"step-{step:06d}") as folder:
                if save is not None:
                    save(model, step, folder)
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "generator": generator.get_state(), "rows": rows, "plan": asdict(plan)},
                           folder / "training_state.pt")
            trained = "" if train_loss is None else f", train loss {train_loss:.3f}"
            log(f"{variant.model_id}: step {step}/{plan.steps}{trained}, validation loss {val:.3f}")
        if step == plan.steps:
            break
        for group in optimizer.param_groups:
            group["lr"] = plan.learning_rate_at(step)
        batch = train_windows[order[step]]
        loss = (early_exit_loss(model, batch, plan.ee_scale) if variant.recipe == "ee_aware"
                else language_model_loss(model, batch))
        if not torch.isfinite(loss):
            raise TrainingDivergedError(f"{variant.model_id}: the loss is {loss.item()} at step {step}; "
                                        "lower the learning rate or check the data")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        train_loss = loss.item()
    if dropout is not None:
        for handle in dropout.handles:
            handle.remove()
    return rows
