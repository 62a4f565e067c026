"""The float32 error model's bounds (tests/tolerance.py) are loose enough for float32 and
tight enough to catch a real error: 1e-4 added to one statistic of one token fails them."""

from __future__ import annotations

import math

import pytest

from eexit_core.lens.engine import STAT_COLUMNS, token_layer_stats
from tests.conftest import TEXTS
from tests.lens.test_engine import _key, brute_force
from tests.tolerance import UNIT_ROUNDOFF_F32, Float32Tolerance, assert_within

PERTURBATION = 1e-4
CONTINUOUS = [s for s in STAT_COLUMNS if s not in ("top1_match", "topk_overlap")]


@pytest.fixture(scope="module")
def measured(request):
    from tests.conftest import build_tokenizer, tiny_llama

    tok = build_tokenizer()
    model = tiny_llama(len(tok))
    rows = list(token_layer_stats(model, tok, TEXTS, batch_size=3).iter_rows(named=True))
    return model, rows, brute_force(model, tok, TEXTS)


def test_the_model_accepts_the_engine(measured):
    model, rows, reference = measured
    assert_within(Float32Tolerance.for_model(model), rows, reference, STAT_COLUMNS, _key)


@pytest.mark.parametrize("stat", CONTINUOUS)
def test_an_error_of_1e_4_in_one_value_fails(measured, stat):
    model, rows, reference = measured
    # one token in the middle of the run, at its first layer (where KL and entropy are largest)
    target = next(i for i, row in enumerate(rows) if row["layer"] == 1 and i >= len(rows) // 2)
    broken = [dict(row) for row in rows]
    broken[target][stat] += PERTURBATION
    with pytest.raises(AssertionError, match=stat):
        assert_within(Float32Tolerance.for_model(model), broken, reference, STAT_COLUMNS, _key)


@pytest.mark.parametrize("stat", ["top1_match", "topk_overlap"])
def test_a_flipped_decision_fails(measured, stat):
    model, rows, reference = measured
    broken = [dict(row) for row in rows]
    broken[len(rows) // 2][stat] += 0.1 if stat == "topk_overlap" else 1.0
    with pytest.raises(AssertionError, match=stat):
        assert_within(Float32Tolerance.for_model(model), broken, reference, STAT_COLUMNS, _key)


def test_bound_follows_the_sizes():
    small = Float32Tolerance(d_model=32, vocab=256, n_layers=4, d_inner=64)
    # by hand: λ u (L sqrt(d_inner) + 2 sqrt(d) + sqrt(V)) = 8 u (32 + 11.31 + 16)
    assert small.relative == pytest.approx(8 * UNIT_ROUNDOFF_F32 * (32 + 2 * math.sqrt(32) + 16))
    assert Float32Tolerance(d_model=32, vocab=256, n_layers=4, d_inner=64, runs=2).relative == pytest.approx(2 * small.relative)
    bigger = Float32Tolerance(d_model=4096, vocab=128_256, n_layers=32, d_inner=14_336)
    assert bigger.relative > 10 * small.relative
    # log-space stats scale with their size, and are absolute below 1 (KL near zero)
    assert small.bound("kl_to_final", 50.0) == pytest.approx(50 * small.relative)
    assert small.bound("kl_to_final", 1e-9) == small.relative
