"""The prompt bootstrap of EAS: its point estimate is the stored EAS, its interval matches
the closed form of a mean's on normal draws, and models on the same prompts are resampled
identically (so their differences are paired)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from eexit_core.analysis.adaptability import eas_scores
from eexit_core.analysis.similarity import SIMILARITY_METRICS, layer_means
from eexit_core.analysis.uncertainty import bootstrap_eas, eas_intervals, prompt_layer_sums

METRICS = ["logit_cos", "top1_match", "kl_to_final"]


def _token_stats(model_id: str, workload_id: str, n_prompts: int, n_layers: int, seed: int) -> pl.DataFrame:
    """Per token and layer, random stats; prompts of 1-6 tokens, and one NaN KL."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_prompts):
        for position in range(int(rng.integers(1, 7))):
            for layer in range(1, n_layers + 1):
                rows.append({"model_id": model_id, "workload_id": workload_id, "prompt_id": f"{workload_id}-{p}",
                             "sample": p, "position": position, "layer": layer,
                             "logit_cos": float(rng.uniform(-0.2, 1.0)) if layer < n_layers else 1.0,
                             "top1_match": bool(rng.random() < layer / n_layers),
                             "kl_to_final": float(rng.exponential(2.0 / layer)) if layer < n_layers else 0.0})
    frame = pl.DataFrame(rows)
    return frame.with_columns(pl.when((pl.col("sample") == 0) & (pl.col("position") == 0) & (pl.col("layer") == 1))
                              .then(float("nan")).otherwise(pl.col("kl_to_final")).alias("kl_to_final"))


@pytest.fixture(scope="module")
def stats() -> pl.DataFrame:
    return pl.concat([_token_stats(m, w, n, 4, seed) for seed, (m, w, n) in
                      enumerate([("a", "w1", 12), ("a", "w2", 7), ("b", "w1", 12), ("b", "w2", 7)])])


def test_every_prompt_once_gives_the_stored_eas_of_every_partition_metric_and_alpha(stats):
    similarity = pl.concat([layer_means(part, 4).with_columns(pl.lit(m).alias("model_id"), pl.lit(w).alias("workload_id"))
                            for (m, w), part in stats.group_by("model_id", "workload_id", maintain_order=True)])
    stored = eas_scores(similarity, metrics=METRICS, alphas=[0.25, 0.5, 1.0], reference=None)
    boot = bootstrap_eas(prompt_layer_sums(stats, SIMILARITY_METRICS), metrics=METRICS, alphas=[0.25, 0.5, 1.0],
                         n_boot=50, seed=0)
    for row in stored.iter_rows(named=True):
        value, replicates, _ = boot[(row["model_id"], row["workload_id"], row["metric"], row["alpha"])]
        assert value == pytest.approx(row["eas"], abs=1e-12)
        assert replicates.shape == (50,)


def test_the_interval_of_a_mean_of_normal_draws_matches_its_closed_form():
    """Two layers, the last identical to the final one, one token per prompt, alpha 1: EAS
    is (mean of x + 1) / 2, so its 95 % interval is half the mean's: ±1.96 s / sqrt(n)."""
    n, rng = 400, np.random.default_rng(7)
    x = rng.normal(0.5, 0.1, n)
    stats = pl.DataFrame({"model_id": "m", "workload_id": "w", "prompt_id": [f"p{i:03d}" for i in range(n) for _ in (1, 2)],
                          "layer": [layer for _ in range(n) for layer in (1, 2)],
                          "logit_cos": [v for value in x for v in (value, 1.0)]})
    boot = bootstrap_eas(prompt_layer_sums(stats, ["logit_cos"]), metrics=["logit_cos"], alphas=[1.0], n_boot=4000, seed=3)
    table = eas_intervals(boot, n_boot=4000, seed=3).filter(pl.col("workload_id") == "w").row(0, named=True)
    half_width = 0.5 * 1.959964 * x.std(ddof=0) / np.sqrt(n)  # the bootstrap resamples the empirical distribution
    assert table["eas"] == pytest.approx((x.mean() + 1) / 2, abs=1e-12)
    # 4000 replicates estimate a 2.5 % percentile to about 3 % of the half-width
    assert table["ci_high"] - table["eas"] == pytest.approx(half_width, rel=0.1)
    assert table["eas"] - table["ci_low"] == pytest.approx(half_width, rel=0.1)


def test_models_on_the_same_prompts_are_resampled_alike_and_all_averages_the_workloads(stats):
    twin = stats.filter(pl.col("model_id") == "a").with_columns(pl.lit("a2").alias("model_id"))
    boot = bootstrap_eas(prompt_layer_sums(pl.concat([stats, twin]), METRICS), metrics=METRICS, alphas=[0.5],
                         n_boot=200, seed=1)
    for workload in ("w1", "w2", "ALL"):
        assert np.array_equal(boot[("a", workload, "logit_cos", 0.5)][1], boot[("a2", workload, "logit_cos", 0.5)][1])
    per_workload = [boot[("a", w, "logit_cos", 0.5)] for w in ("w1", "w2")]
    assert np.allclose(boot[("a", "ALL", "logit_cos", 0.5)][1], (per_workload[0][1] + per_workload[1][1]) / 2)
    # another seed draws other prompts
    other = bootstrap_eas(prompt_layer_sums(stats, METRICS), metrics=METRICS, alphas=[0.5], n_boot=200, seed=2)
    assert not np.array_equal(other[("a", "w1", "logit_cos", 0.5)][1], boot[("a", "w1", "logit_cos", 0.5)][1])


def test_the_oracle_bounds_every_prompt_once_are_the_stored_ones_inside_their_intervals(stats):
    from eexit_core.analysis.oracle import oracle_exit_layers, summarise
    from eexit_core.analysis.uncertainty import oracle_intervals

    table = oracle_intervals(stats, n_boot=300, seed=0)
    assert table.height == 4 * 2
    for row in table.iter_rows(named=True):
        part = stats.filter((pl.col("model_id") == row["model_id"]) & (pl.col("workload_id") == row["workload_id"]))
        want = summarise(oracle_exit_layers(part, row["criterion"]), 4, check_cost=0.0)
        assert row["speedup_bound"] == pytest.approx(want["speedup_bound"], rel=1e-12)
        assert row["skip_ratio"] == pytest.approx(want["skip_ratio"], rel=1e-12)
        assert row["ci_low"] <= row["speedup_bound"] <= row["ci_high"]
        assert row["skip_ci_low"] <= row["skip_ratio"] <= row["skip_ci_high"]


def _static_items(correct_at: dict[int, list[bool]]) -> pl.DataFrame:
    return pl.DataFrame([{"policy": "static", "exit_layer": layer, "prompt_id": f"p{i:02d}", "correct": c}
                         for layer, outcomes in correct_at.items() for i, c in enumerate(outcomes)])


def test_the_max_skip_interval_is_a_point_where_every_replicate_agrees_and_spans_a_borderline_layer():
    from eexit_core.analysis.uncertainty import max_skip_interval

    n = 20
    settled = _static_items({1: [i % 2 == 0 for i in range(n)], 2: [True] * n, 3: [True] * n, 4: [True] * n})
    assert max_skip_interval(settled, "w", 4, 0.05, n_boot=500, seed=0) == (0.5, 0.5)  # layer 1 at 50 % never qualifies
    # layer 1 at 19/20 sits on the 5 % tolerance: replicates with the one miss drawn twice or more lose it
    borderline = _static_items({1: [i != 0 for i in range(n)], 2: [True] * n, 3: [True] * n, 4: [True] * n})
    assert max_skip_interval(borderline, "w", 4, 0.05, n_boot=500, seed=0) == (0.5, 0.75)
    nothing = _static_items({1: [False] * n, 4: [False] * n})
    low, high = max_skip_interval(nothing, "w", 4, 0.05, n_boot=50, seed=0)
    assert np.isnan(low) and np.isnan(high)  # full depth gets nothing right: no bound to keep
