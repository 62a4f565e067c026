"""EAS: golden values on hand-made similarity curves, and its invariants."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eexit_core.analysis.adaptability import eas, eas_ideal, skip_weights


def test_skip_weights():
    assert skip_weights(4).tolist() == [0.75, 0.5, 0.25, 0.0]


@pytest.mark.parametrize(
    ("curve", "alpha", "expected"),
    [
        # ideal curve, L = 4: (sqrt(3/4) + sqrt(1/2) + sqrt(1/4) + 0) / 4
        ([1.0, 1.0, 1.0, 1.0], 0.5, (math.sqrt(0.75) + math.sqrt(0.5) + 0.5) / 4),
        # linear ramp: (sqrt(.25*.75) + sqrt(.5*.5) + sqrt(.75*.25) + 0) / 4
        ([0.25, 0.5, 0.75, 1.0], 0.5, (2 * math.sqrt(0.1875) + 0.5) / 4),
        # only the last layer matches: nothing can be saved
        ([0.0, 0.0, 0.0, 1.0], 0.5, 0.0),
        # alpha = 1 is the mean similarity (0^0 = 1 for the last layer's weight)
        ([0.2, 0.4, 0.6, 1.0], 1.0, 0.55),
        # alpha = 0 is the mean skip ratio, whatever the similarity
        ([0.0, 0.1, 0.2, 1.0], 0.0, (0.75 + 0.5 + 0.25) / 4),
        # alpha = 0.25 on a two-layer model: (0.5^0.25 * 0.5^0.75 + 0) / 2
        ([0.5, 1.0], 0.25, 0.25),
    ],
)
def test_golden_values(curve, alpha, expected):
    assert eas(curve, alpha) == pytest.approx(expected, abs=1e-12)


def test_ideal_tends_to_two_thirds():
    # (1/L) Σ sqrt((L-l)/L) → ∫_0^1 sqrt(1-x) dx = 2/3
    assert eas_ideal(10_000) == pytest.approx(2 / 3, abs=1e-3)
    assert eas_ideal(30) == pytest.approx(np.mean(np.sqrt((30 - np.arange(1, 31)) / 30)))


@pytest.mark.parametrize("bad", [[], [1.2], [-0.1, 1.0], [float("nan"), 1.0]])
def test_rejects_bad_curves(bad):
    with pytest.raises(ValueError):
        eas(bad)


def test_rejects_bad_alpha():
    with pytest.raises(ValueError, match="alpha"):
        eas([0.5, 1.0], alpha=1.5)


curves = st.lists(st.floats(0.0, 1.0), min_size=1, max_size=80)


@settings(max_examples=200, deadline=None)
@given(curves, st.floats(0.0, 1.0))
def test_bounded_by_zero_and_ideal(curve, alpha):
    assert 0.0 <= eas(curve, alpha) <= eas_ideal(len(curve), alpha) + 1e-12


@settings(max_examples=200, deadline=None)
@given(curves, st.floats(0.01, 1.0), st.integers(0, 79), st.floats(0.0, 1.0))
def test_monotone_in_similarity(curve, alpha, index, bump):
    index %= len(curve)
    raised = list(curve)
    raised[index] = max(curve[index], bump)
    assert eas(raised, alpha) >= eas(curve, alpha) - 1e-12


@settings(max_examples=100, deadline=None)
@given(curves)
def test_matches_a_plain_loop(curve):
    n = len(curve)
    expected = sum(s**0.5 * ((n - l) / n) ** 0.5 for l, s in enumerate(curve, start=1)) / n
    assert eas(curve) == pytest.approx(expected, abs=1e-12)


def test_public_api_names_are_the_functions_not_modules():
    """A submodule named like a public function would shadow it once imported."""
    import inspect

    import eexit_core
    import eexit_core.stages  # noqa: F401  (imports every submodule the pipeline uses)

    for name in eexit_core.__all__:
        assert not inspect.ismodule(getattr(eexit_core, name)), name


# --- the EAS tables ------------------------------------------------------------------------


def _similarity_rows() -> pl.DataFrame:
    """Two models × two workloads, L = 2, logit_cos chosen so each EAS has a closed form."""
    curves = {("a", "w1"): [1.0, 1.0], ("a", "w2"): [0.25, 1.0], ("b", "w1"): [0.0, 1.0], ("b", "w2"): [1.0, 1.0]}
    rows = [{"model_id": m, "workload_id": w, "layer": l + 1, "n_tokens": 10, "logit_cos": s, "hidden_cos": 1.5}
            for (m, w), curve in curves.items() for l, s in enumerate(curve)]
    return pl.DataFrame(rows)


def test_eas_scores_closed_forms_all_rows_and_relatives():
    from eexit_core.analysis.adaptability import eas_scores

    scores = eas_scores(_similarity_rows(), metrics=["logit_cos"], alphas=[0.5], reference="a")
    got = {(r["model_id"], r["workload_id"]): r for r in scores.iter_rows(named=True)}
    # L = 2, α = 0.5: only layer 1 has weight, w_1 = 1/2: EAS = (1/2)·sqrt(S_1)·sqrt(1/2)
    unit = 0.5 * math.sqrt(0.5)
    assert got[("a", "w1")]["eas"] == pytest.approx(unit)
    assert got[("a", "w2")]["eas"] == pytest.approx(unit * 0.5)
    assert got[("b", "w1")]["eas"] == pytest.approx(0.0)
    assert got[("a", "ALL")]["eas"] == pytest.approx(unit * 0.75)  # the mean over workloads
    assert got[("b", "ALL")]["n_tokens"] == 20
    assert got[("b", "w2")]["eas_relative"] == pytest.approx(1.0 / 0.5)  # against a's w2
    assert got[("a", "ALL")]["eas_relative"] == pytest.approx(1.0) and got[("a", "w1")]["relative_to"] == "a"
    assert got[("a", "w1")]["eas_ideal"] == pytest.approx(unit)


def test_eas_scores_reference_fallback_and_none():
    from eexit_core.analysis.adaptability import eas_scores

    fallback = eas_scores(_similarity_rows(), metrics=["logit_cos"], alphas=[0.5], reference="llama-2-7b", fallback_reference="b")
    assert set(fallback["relative_to"]) == {"b"}
    none = eas_scores(_similarity_rows(), metrics=["logit_cos"], alphas=[0.5], reference="llama-2-7b")
    assert none["eas_relative"].null_count() == none.height


def test_eas_table_pivots_one_alpha_one_column_per_metric():
    from eexit_core.analysis.adaptability import eas_scores, eas_table

    scores = eas_scores(_similarity_rows(), metrics=["logit_cos", "hidden_cos"], alphas=[0.25, 0.5], reference="a")
    table = eas_table(scores, alpha=0.5)
    assert table.columns[:4] == ["model_id", "workload_id", "logit_cos", "hidden_cos"]
    assert table.height == 6 and table["model_id"].to_list() == sorted(table["model_id"].to_list())
    # hidden_cos 1.5 is clipped to S = 1 at every layer: the ideal
    assert table["hidden_cos"].to_list() == pytest.approx(table["eas_ideal"].to_list())
