"""The tuned lens on a tiny random Llama: translators fitted on half the prompts' residual
streams and judged on the other half.

- at the last layer the fitted translator is the identity's equal (KL ≈ 0, same top-1);
- on held-out tokens the tuned head's KL to the final distribution is no worse than the
  model's own head's at any layer (and better at the first);
- the shuffled control (each token paired with another's final layer) does no better on
  held-out tokens than the best constant prediction: the tuned lens's gain beyond that
  comes from the token;
- the fit is seeded: two fits are bit-identical; translators survive a save and load;
- the translated stats equal the float64 reference lens applied to the translated streams.
"""

from __future__ import annotations

import copy
import random

import polars as pl
import pytest
import torch

from eexit_core.lens import engine
from eexit_core.lens.tuned import ConstantPrediction, Translators, TunedLensSettings, fit_tuned_lens, translated
from eexit_core.models.adapters import resolve_exit_head
from tests.conftest import WORDS

SETTINGS = TunedLensSettings(steps=20)


@pytest.fixture(scope="module")
def split(llama, tokenizer):
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS[:40]) for _ in range(20)) for _ in range(40)]
    train = list(engine.scored_residuals(llama, tokenizer, texts[::2], batch_size=8))
    test = list(engine.scored_residuals(llama, tokenizer, texts[1::2], batch_size=8))
    return torch.cat([p.residuals for p in train], dim=1), test


@pytest.fixture(scope="module")
def fitted(llama, split):
    head = resolve_exit_head(llama)
    return fit_tuned_lens(head, split[0], SETTINGS)


def _per_layer(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.group_by("layer").agg(pl.col("kl_to_final").mean(), pl.col("top1_match").mean()).sort("layer")


def test_the_last_layer_translator_is_the_identitys_equal(llama, split, fitted):
    head = resolve_exit_head(llama)
    translators, fits = fitted
    h_final = split[0][-1]
    own, tuned = head.logits(h_final), head.logits(translators.apply(split[0])[-1])
    assert fits[-1].kl_tuned < 1e-4
    assert torch.equal(own.argmax(-1), tuned.argmax(-1))
    # float32 least squares of h_L on itself: |A - I| within the solve's rounding times the ridge's shrink
    assert (translators.weight[-1] - torch.eye(h_final.shape[1])).abs().max() < 0.05


def test_held_out_kl_is_no_worse_than_the_own_heads_at_any_layer(llama, split, fitted):
    head = resolve_exit_head(llama)
    own = _per_layer(engine.stats_frame(head, split[1]))
    tuned = _per_layer(engine.stats_frame(head, translated(split[1], fitted[0])))
    # layers 1..L-1: the own head's KL is 1.5-6 nats here; the last layer is 0 for both
    assert (tuned["kl_to_final"][:-1] <= own["kl_to_final"][:-1]).all(), (own, tuned)
    assert tuned["kl_to_final"][0] < 0.8 * own["kl_to_final"][0]
    assert tuned["kl_to_final"][-1] < 1e-4


def test_the_shuffled_control_does_no_better_than_a_constant(llama, split, fitted):
    head = resolve_exit_head(llama)
    control, _ = fit_tuned_lens(head, split[0], SETTINGS, shuffle_targets=True)
    constant_kl, constant_top1, n = ConstantPrediction.fit(head, split[0]).scores(head, split[1])
    shuffled = _per_layer(engine.stats_frame(head, translated(split[1], control)))
    tuned = _per_layer(engine.stats_frame(head, translated(split[1], fitted[0])))
    own = _per_layer(engine.stats_frame(head, split[1]))
    # the control cannot read the token beyond what the own head reads: held out, it is at
    # best the better of the own head and the constant (5 % slack for the fit's sampling
    # noise on ~400 tokens); the tuned lens, fitted the same way to the true pairs, beats it
    floor = own["kl_to_final"].clip(upper_bound=constant_kl)
    assert (shuffled["kl_to_final"] >= 0.95 * floor).all(), (shuffled, own, constant_kl)
    assert (tuned["kl_to_final"][:-1] < shuffled["kl_to_final"][:-1]).all(), (tuned, shuffled)
    noise = 3 * (constant_top1 * (1 - constant_top1) / n) ** 0.5
    assert (shuffled["top1_match"] <= own["top1_match"].clip(lower_bound=constant_top1) + noise).all()


def test_validation_prompts_choose_per_layer_and_never_keep_a_worse_head(llama, tokenizer, split):
    head = resolve_exit_head(llama)
    rng = random.Random(1)
    texts = [" ".join(rng.choice(WORDS[:40]) for _ in range(20)) for _ in range(16)]
    validation = torch.cat([p.residuals for p in engine.scored_residuals(llama, tokenizer, texts, batch_size=8)], dim=1)
    # Adam at a learning rate that wrecks the fit: the validation tokens must catch it
    wrecked = TunedLensSettings(steps=20, learning_rate=5.0)
    translators, fits = fit_tuned_lens(head, split[0], wrecked, validation=validation)
    assert all(f.kl_validation <= f.kl_validation_own + 1e-9 for f in fits)
    assert {f.kept for f in fits} <= {"least_squares", "identity"} and fits[-1].kept == "identity"
    own = _per_layer(engine.stats_frame(head, split[1]))
    tuned = _per_layer(engine.stats_frame(head, translated(split[1], translators)))
    assert (tuned["kl_to_final"][:-1] <= own["kl_to_final"][:-1]).all()


def test_the_fit_is_seeded_and_translators_survive_a_round_trip(llama, split, fitted, tmp_path):
    head = resolve_exit_head(llama)
    again, _ = fit_tuned_lens(head, split[0], SETTINGS)
    assert torch.equal(again.weight, fitted[0].weight) and torch.equal(again.bias, fitted[0].bias)
    fitted[0].save(tmp_path / "t.safetensors", {"model_checksum": "abc"})
    loaded, meta = Translators.load(tmp_path / "t.safetensors")
    assert torch.equal(loaded.weight, fitted[0].weight) and meta == {"model_checksum": "abc"}


def test_translated_stats_equal_the_float64_reference(llama, split, fitted):
    from tests.reference import float64_exit_logits, reference_stats

    head = resolve_exit_head(llama)
    norm64, head64 = copy.deepcopy(head.final_norm).double(), copy.deepcopy(head.lm_head).double()
    part = split[1][0]
    rows = engine.stats_frame(head, translated([part], fitted[0]))
    # the translator applied in float64 too: the reference shares nothing with the lens but the weights
    streams = (torch.einsum("lij,lnj->lni", fitted[0].weight.double(), part.residuals.double())
               + fitted[0].bias.double()[:, None, :])
    with torch.no_grad():
        z_final = float64_exit_logits(None, norm64, head64, streams[-1])
        z_layers = [float64_exit_logits(None, norm64, head64, streams[layer - 1]) for layer in (1, 2)]
    for layer, z in zip((1, 2), z_layers):
        for token in (0, 5):
            want = reference_stats(z[token], z_final[token], streams[layer - 1][token], streams[-1][token], k=10)
            got = rows.filter((pl.col("layer") == layer) & (pl.col("sample") == part.samples[token])
                              & (pl.col("position") == part.positions[token])).row(0, named=True)
            # float32 lens against float64: cosines within 1e-5, KL within 1e-4 relative (tests/tolerance.py)
            assert got["logit_cos"] == pytest.approx(want["logit_cos"], abs=1e-5)
            assert got["kl_to_final"] == pytest.approx(want["kl_to_final"], rel=1e-4, abs=1e-5)
