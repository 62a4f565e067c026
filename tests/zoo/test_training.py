"""Training a zoo variant: deterministic on CPU, resumed bit for bit after a kill, the
early-exit loss against a hand-written reference, and a diverging loss named."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from eexit_core.zoo.training import (
    TrainingDivergedError,
    TrainingPlan,
    early_exit_loss,
    train_variant,
    windows,
)
from eexit_core.zoo.variants import Variant, build_model

VOCAB = 64
PLAN = TrainingPlan(tokens=12 * 4 * 16, seq_len=16, batch_size=4, learning_rate=1e-2, eval_windows=4,
                    checkpoint_fractions=(0.0, 0.25, 0.5, 1.0))


def _ids(n: int, seed: int) -> list[int]:
    """A learnable stream: runs of counting upward mod the vocabulary, with seeded starts."""
    generator = torch.Generator().manual_seed(seed)
    ids: list[int] = []
    while len(ids) < n:
        start = int(torch.randint(2, VOCAB, (1,), generator=generator))
        ids += [2 + (start + k) % (VOCAB - 2) for k in range(8)]
    return ids[:n]


TRAIN, VALIDATION = _ids(1200, 0), _ids(400, 1)


def _train(tmp_path, variant: Variant, **kw):
    return train_variant(variant, VOCAB, TRAIN, VALIDATION, PLAN, tmp_path, log=lambda _: None, **kw)


def _final_state(folder) -> dict:
    return torch.load(folder / f"step-{PLAN.steps:06d}" / "training_state.pt", weights_only=False)["model"]


@pytest.mark.parametrize("variant", [Variant("dense"), Variant("dense", recipe="ee_aware")], ids=lambda v: v.recipe)
def test_training_is_deterministic_learns_and_resumes_bit_for_bit(tmp_path, variant):
    rows = _train(tmp_path / "a", variant)
    assert [r["step"] for r in rows] == PLAN.checkpoint_steps() == [0, 3, 6, 12]
    assert rows[-1]["val_loss"] < rows[0]["val_loss"] - 0.5  # it learned the counting
    again = _train(tmp_path / "b", variant)
    assert [(r["train_loss"], r["val_loss"]) for r in again] == [(r["train_loss"], r["val_loss"]) for r in rows]
    final = _final_state(tmp_path / "a")
    assert all(torch.equal(final[k], v) for k, v in _final_state(tmp_path / "b").items())

    class Killed(Exception):
        pass

    def die_at_step_6(model, step, folder):
        if step == 6:
            raise Killed  # mid-write: the step-6 checkpoint is never committed
    with pytest.raises(Killed):
        _train(tmp_path / "c", variant, save=die_at_step_6)
    assert sorted(p.name for p in (tmp_path / "c").iterdir() if not p.name.startswith(".")) == ["step-000000", "step-000003"]
    resumed = _train(tmp_path / "c", variant)
    assert [(r["step"], r["val_loss"]) for r in resumed] == [(r["step"], r["val_loss"]) for r in rows]
    assert all(torch.equal(final[k], v) for k, v in _final_state(tmp_path / "c").items())


def test_the_early_exit_loss_against_a_hand_written_reference():
    model = build_model(Variant("dense"), VOCAB).double()
    batch = windows(TRAIN, 16)[:3]
    inner = model.model
    captured = []
    hooks = [layer.register_forward_hook(lambda m, a, out: captured.append(out[0] if isinstance(out, tuple) else out))
             for layer in inner.layers]
    with torch.no_grad():
        logits = model(input_ids=batch[:, :-1]).logits
    for hook in hooks:
        hook.remove()
    targets = batch[:, 1:].reshape(-1)
    per_layer = [F.cross_entropy(model.lm_head(inner.norm(h)).reshape(-1, VOCAB), targets) for h in captured[:-1]]
    reference = F.cross_entropy(logits.reshape(-1, VOCAB), targets) + 0.5 * sum(
        (l + 1) / 6 * loss for l, loss in enumerate(per_layer))  # layers 1..3 of 4, weights 1/6, 2/6, 3/6
    with torch.no_grad():
        assert early_exit_loss(model, batch, 0.5).item() == pytest.approx(reference.item(), rel=1e-6)


def test_a_non_finite_loss_stops_the_variant_naming_it_and_the_step(tmp_path, monkeypatch):
    from eexit_core.zoo import training

    calls = []

    def poisoned(model, batch):
        calls.append(1)
        loss = F.cross_entropy(model(input_ids=batch[:, :-1]).logits.reshape(-1, VOCAB), batch[:, 1:].reshape(-1))
        return loss * float("nan") if len(calls) > 4 else loss

    monkeypatch.setattr(training, "language_model_loss", poisoned)
    monkeypatch.setattr(training, "validation_loss", lambda model, evaluation: 0.0)
    with pytest.raises(TrainingDivergedError, match=r"zoo-dense-s-base-seed0: the loss is nan at step 4"):
        _train(tmp_path, Variant("dense"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the GPU scale trains here")
def test_the_gpu_scale_without_cuda_is_a_clear_error_naming_the_cpu_scale():
    from eexit_core.errors import EexitError
    from eexit_core.zoo.training import training_device

    with pytest.raises(EexitError, match="EEXIT_ZOO=cpu"):
        training_device(TrainingPlan(tokens=1024, device="cuda"))
    assert training_device(TrainingPlan(tokens=1024)).type == "cpu"
