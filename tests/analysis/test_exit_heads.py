"""The exit-head comparison tables on hand-made token stats: golden per-layer means, EAS and
its gain against the closed form, the half-agreement layer, the pooled 'ALL' scope keeping
two workloads' tokens apart, and the translator's share of the exit check."""

from __future__ import annotations

import polars as pl
import pytest

from eexit_core.analysis import exit_heads
from eexit_core.analysis.adaptability import eas
from eexit_core.storage.schema import STAT_COLUMNS


def _stats(workload: str, head: str, top1: list[list[bool]], cos: list[list[float]]) -> pl.DataFrame:
    """Tokens (sample 0, positions 1..) × layers 1..L of one head; the other stats filled."""
    rows = []
    for position, (matches, cosines) in enumerate(zip(top1, cos), start=1):
        for layer, (match, c) in enumerate(zip(matches, cosines), start=1):
            rows.append({"model_id": "m", "workload_id": workload, "exit_head": head, "sample": 0, "position": position,
                         "layer": layer, **{s: 0.5 for s in STAT_COLUMNS}, "top1_match": match, "logit_cos": c,
                         "kl_to_final": 0.0 if layer == len(matches) else 1.0})
    return pl.DataFrame(rows)


def test_per_layer_means_eas_and_the_gain_over_the_own_head():
    stats = pl.concat([
        _stats("w", "own", [[False, False, True], [False, True, True]], [[0.1, 0.3, 1.0], [0.3, 0.5, 1.0]]),
        _stats("w", "tuned", [[True, True, True], [False, True, True]], [[0.5, 0.7, 1.0], [0.7, 0.9, 1.0]]),
    ])
    similarity = exit_heads.head_similarity(stats)
    own = similarity.filter(pl.col("exit_head") == "own").sort("layer")
    assert own["logit_cos"].to_list() == pytest.approx([0.2, 0.4, 1.0])
    assert own["top1_match"].to_list() == pytest.approx([0.0, 0.5, 1.0])
    scores = exit_heads.head_eas(similarity, metrics=["logit_cos"], alphas=[0.5])
    by_head = {(r["workload_id"], r["exit_head"]): r for r in scores.iter_rows(named=True)}
    assert by_head[("w", "own")]["eas"] == pytest.approx(eas([0.2, 0.4, 1.0], 0.5))
    assert by_head[("w", "tuned")]["eas_gain"] == pytest.approx(eas([0.6, 0.8, 1.0], 0.5) - eas([0.2, 0.4, 1.0], 0.5))
    assert by_head[("w", "own")]["eas_gain"] == 0.0 and by_head[("ALL", "tuned")]["eas"] == by_head[("w", "tuned")]["eas"]


def test_the_half_agreement_layer_is_the_first_layer_at_one_half():
    layers = pl.DataFrame({"layer": [1, 2, 3], "top1_match": [0.2, 0.5, 1.0]})
    assert exit_heads.half_agreement_layer(layers) == 2
    assert exit_heads.half_agreement_layer(layers.with_columns(pl.lit(0.1).alias("top1_match"))) is None


def test_the_pooled_scope_keeps_each_workloads_tokens_apart():
    # both workloads have a token (sample 0, position 1): pooled, they are two tokens of two prompts
    stats = pl.concat([_stats("a", "own", [[True, True]], [[1.0, 1.0]]), _stats("b", "own", [[False, True]], [[0.0, 1.0]])])
    summary = exit_heads.head_summary(stats, {"m": {"own": 0.1}})
    pooled = summary.filter(pl.col("workload_id") == "ALL").row(0, named=True)
    assert (pooled["n_tokens"], pooled["n_prompts"]) == (2, 2)
    assert pooled["mean_oracle_exit_layer"] == pytest.approx(1.5)
    assert pooled["half_agreement_layer"] == 1 and pooled["mean_kl_below_last"] == pytest.approx(1.0)


def test_a_translated_head_pays_for_its_translator():
    costs = exit_heads.check_costs(d_model=64, vocab_size=1024, params_total=1_000_000, n_layers=4, tied=True)
    assert costs["tuned"] == pytest.approx(costs["own"] * (1 + 64 / 1024)) and costs["control"] == costs["tuned"]


def _held_out(kl: dict[str, list[float]]) -> pl.DataFrame:
    """Held-out rows of each head: token i's KL at layer 1 is kl[head][i]; layer 2 is the last (0)."""
    rows = [{"workload_id": "w", "exit_head": head, "sample": 1, "position": i, "layer": layer,
             "kl_to_final": value if layer == 1 else 0.0}
            for head, values in kl.items() for i, value in enumerate(values) for layer in (1, 2)]
    return pl.DataFrame(rows)


def test_the_held_out_checks_fail_a_worse_tuned_head_and_a_control_that_reads_the_token():
    from eexit_core.analysis import checks

    good = _held_out({"own": [4.0, 5.0, 6.0, 5.0], "tuned": [1.0, 2.0, 1.5, 2.5], "control": [5.0, 5.5, 6.0, 4.5]})
    assert checks.tuned_no_worse_held_out(good).passed
    assert checks.control_gains_nothing(good, constant_kl=5.0).passed
    worse = _held_out({"own": [1.0, 1.1, 0.9, 1.0], "tuned": [2.0, 2.1, 1.9, 2.0], "control": [5.0] * 4})
    assert checks.tuned_no_worse_held_out(worse).metadata["worse_layers"] == [1]
    # within noise: a tuned head a hair worse on average but not beyond two standard errors passes
    noisy = _held_out({"own": [1.0, 3.0, 1.0, 3.0], "tuned": [1.5, 2.6, 1.4, 3.1], "control": [5.0] * 4})
    assert checks.tuned_no_worse_held_out(noisy).passed
    leaky = _held_out({"own": [4.0] * 4, "tuned": [1.0] * 4, "control": [2.0] * 4})  # beats own head and constant
    assert checks.control_gains_nothing(leaky, constant_kl=3.0).metadata["better_layers"] == [1]
