"""Exit-accuracy summaries on hand-made outcomes (golden values), the sweep on a tiny
model, and RQ1 / RQ3 tables."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import spearmanr

from eexit_core.analysis.predictiveness import similarity_accuracy_correlation, skip_table, spearman_rows
from eexit_core.evaluation.exit_accuracy import (
    ITEM_SCHEMA,
    ExitSweepSettings,
    evaluate_exits,
    item_oracle,
    max_skip_ratio,
    strided_layers,
    summarise,
)
from eexit_core.evaluation.grading import GradedItem

L = 4


def _items(outcomes: dict[int, list[bool]], extra: list[dict] | None = None) -> pl.DataFrame:
    """Static rows: outcomes[layer][item] -> correct, one token each, 1 s each."""
    rows = []
    for layer, correct in outcomes.items():
        for i, ok in enumerate(correct):
            rows.append({"policy": "static", "exit_layer": layer, "prompt_id": f"p{i}", "correct": ok,
                         "mean_layers": float(layer), "n_tokens": 2, "seconds": 0.01 * layer, "batch_size": 4,
                         "output": None, "choice_logprobs": None, "kv_fill": "none"})
    return pl.DataFrame(rows + (extra or []), schema=ITEM_SCHEMA)


OUTCOMES = {
    1: [False, False, True, False],
    2: [True, False, True, False],
    3: [True, True, False, False],
    4: [True, True, True, False],
}


def test_item_oracle_golden():
    oracle = item_oracle(_items(OUTCOMES), L).row(0, named=True)
    # p0 right at 4, first right at 2; p1 first right at 3; p2 first right at 1; p3 wrong at 4 -> stays at 4
    assert oracle["accuracy"] == pytest.approx(0.75)
    assert oracle["mean_layers"] == pytest.approx((2 + 3 + 1 + 4) / 4)


def test_summary_and_max_skip_ratio_golden():
    summary = summarise(_items(OUTCOMES), L)
    static = {r["exit_layer"]: r for r in summary.filter(pl.col("policy") == "static").iter_rows(named=True)}
    assert static[2]["accuracy"] == 0.5 and static[2]["skip_ratio"] == 0.5
    assert static[3]["relative_accuracy"] == pytest.approx(0.5 / 0.75)
    assert static[1]["ms_per_token"] == pytest.approx(1000 * 0.04 / 8)
    bound = max_skip_ratio(summary, L, 0.05)
    assert (bound.full_accuracy, bound.max_skip_layer, bound.max_skip_ratio) == (0.75, 4, 0.0)
    loose = max_skip_ratio(summary, L, 1 / 3)  # 0.5 >= (2/3) * 0.75
    assert (loose.max_skip_layer, loose.max_skip_ratio) == (2, 0.5)


def test_max_skip_ratio_is_undefined_when_full_depth_gets_nothing_right():
    summary = summarise(_items({1: [False, True], 4: [False, False]}), L)
    bound = max_skip_ratio(summary, L)
    assert bound.max_skip_ratio is None and "accuracy is 0" in bound.note


def test_dynamic_rows_are_relative_to_never_exit():
    dyn = [
        {"policy": p, "exit_layer": 0, "prompt_id": f"p{i}", "correct": ok, "mean_layers": m, "n_tokens": 4,
         "seconds": s, "batch_size": 1, "output": None, "choice_logprobs": None, "kv_fill": "attention_only"}
        for p, m, s, oks in (("never_exit", 4.0, 0.4, [True, True]), ("max_prob>=0.9", 2.0, 0.2, [True, False]))
        for i, ok in enumerate(oks)
    ]
    summary = summarise(_items(OUTCOMES, dyn), L)
    row = summary.filter(pl.col("policy") == "max_prob>=0.9").row(0, named=True)
    assert (row["signal"], row["threshold"]) == ("max_prob", 0.9)
    assert row["baseline_accuracy"] == 1.0 and row["relative_accuracy"] == 0.5
    assert row["skip_ratio"] == 0.5 and row["ms_per_token"] == pytest.approx(50.0)


@given(st.integers(1, 80), st.one_of(st.none(), st.integers(1, 100)))
def test_strided_layers_end_at_full_depth(n_layers, points):
    layers = strided_layers(n_layers, points)
    assert layers[-1] == n_layers and layers == sorted(set(layers))
    assert 1 <= layers[0] and len(layers) == (n_layers if points is None or points >= n_layers else len(layers))
    assert points is None or len(layers) <= points


# --- the sweep on a tiny model --------------------------------------------------------


def test_sweep_on_a_tiny_model_covers_every_rule(tokenizer):
    from tests.conftest import tiny_llama

    model = tiny_llama(len(tokenizer), layers=4, tied=False, seed=1)
    math_items = [GradedItem(f"m{i}", "numeric_exact", f"question : how many ships ? answer : {i}", "3") for i in range(3)]
    choice_items = [GradedItem(f"c{i}", "multiple_choice_loglik", "question : is the sea love ? answer :", ref, ("yes", "no"))
                    for i, ref in enumerate(["yes", "no", "yes"])]
    settings = ExitSweepSettings(static_points=2, max_new_tokens=4, n_dynamic_generate=2, n_dynamic_choice=3)
    items, summary = evaluate_exits(model, tokenizer, math_items, settings, progress=lambda _: None)
    assert sorted(summary.filter(pl.col("policy") == "static")["exit_layer"].to_list()) == [2, 4]
    policies = set(summary["policy"].to_list())
    assert {"never_exit", "oracle_item", "max_prob>=0.9", "saturation>=0.97"} <= policies
    assert items.filter(pl.col("policy") == "never_exit").height == 2
    items, summary = evaluate_exits(model, tokenizer, choice_items, settings, progress=lambda _: None)
    static = summary.filter(pl.col("policy") == "static")
    assert static.height == 4  # choices are scored at every layer
    assert set(static["n_items"].to_list()) == {3}
    assert len(settings.exit_policies(4, generative=False)) == 8


# --- RQ1 and RQ3 -----------------------------------------------------------------------


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=3, max_size=30))
def test_spearman_matches_scipy_with_ties(pairs):
    x, y = np.array(pairs, dtype=float).T
    ours = spearman_rows(x, y)[0]
    theirs = spearmanr(x, y).statistic if np.ptp(x) and np.ptp(y) else math.nan
    assert (math.isnan(ours) and math.isnan(theirs)) or ours == pytest.approx(theirs, abs=1e-12)


def test_spearman_without_ties_matches_the_textbook_formula():
    rng = np.random.default_rng(0)
    x, y = rng.permutation(12).astype(float), rng.permutation(12).astype(float)
    d = x - y
    assert spearman_rows(x, y)[0] == pytest.approx(1 - 6 * (d**2).sum() / (12 * (12**2 - 1)))


def _similarity(model_id: str, workload_id: str, values: list[float]) -> pl.DataFrame:
    n = len(values)
    return pl.DataFrame({"model_id": model_id, "workload_id": workload_id, "layer": list(range(1, n + 1)),
                         "depth_frac": [l / n for l in range(1, n + 1)], "logit_cos": values,
                         "hidden_cos": list(reversed(values))})


def test_correlation_is_one_when_similarity_orders_layers_like_accuracy():
    similarity = pl.concat([_similarity("m", "w", [0.1, 0.4, 0.7, 1.0]), _similarity("m", "flat", [0.9, 0.1, 0.5, 1.0])])
    items = pl.concat([
        _items(OUTCOMES | {1: [False] * 4, 2: [True, False, False, False]}).with_columns(
            pl.lit("m").alias("model_id"), pl.lit("w").alias("workload_id")),
        # never right at any layer: no information on which layer is better, left out
        _items({l: [False] * 4 for l in range(1, 5)}).with_columns(pl.lit("m").alias("model_id"), pl.lit("flat").alias("workload_id")),
    ])
    table = similarity_accuracy_correlation(similarity, items, ["logit_cos", "hidden_cos"], n_boot=200)
    row = table.filter((pl.col("scope") == "m") & (pl.col("metric") == "logit_cos")).row(0, named=True)
    assert row["spearman"] == pytest.approx(1.0)
    assert row["ci_low"] <= row["spearman"] <= row["ci_high"] + 1e-12
    assert row["best"] and row["n_workloads"] == 1 and row["n_points"] == 4
    alone = table.filter((pl.col("scope") == "m|w") & (pl.col("metric") == "logit_cos")).row(0, named=True)
    assert alone["spearman"] == pytest.approx(1.0) and alone["n_points"] == 4
    assert table.filter(pl.col("scope") == "m|flat").is_empty()
    reverse = table.filter((pl.col("scope") == "pooled") & (pl.col("metric") == "hidden_cos")).row(0, named=True)
    assert reverse["spearman"] == pytest.approx(-1.0) and not reverse["best"]


def test_correlation_intervals_do_not_depend_on_row_order():
    """The bootstrap's draws go to partitions and items by key, not by the order group_by
    or the stored files hand them over: shuffled inputs give the identical table."""
    workloads = {"w": [0.1, 0.4, 0.7, 1.0], "v": [0.3, 0.2, 0.8, 1.0], "u": [0.5, 0.6, 0.4, 1.0]}
    similarity = pl.concat([_similarity("m", w, values) for w, values in workloads.items()])
    noisy = {1: [True, False, True, False], 2: [False, True, True, False], 3: [True, True, False, True], 4: [True, True, True, False]}
    items = pl.concat([_items(OUTCOMES if w == "w" else noisy).with_columns(pl.lit("m").alias("model_id"), pl.lit(w).alias("workload_id"))
                       for w in workloads])
    want = similarity_accuracy_correlation(similarity, items, ["logit_cos"], n_boot=300, seed=3)
    assert want.filter(pl.col("ci_low") < pl.col("ci_high")).height > 0  # the intervals are not degenerate
    for shuffle_seed in range(5):
        got = similarity_accuracy_correlation(similarity.sample(fraction=1.0, shuffle=True, seed=shuffle_seed),
                                              items.sample(fraction=1.0, shuffle=True, seed=shuffle_seed),
                                              ["logit_cos"], n_boot=300, seed=3)
        assert got.sort("scope", "metric").equals(want.sort("scope", "metric"))


def test_chance_level_does_not_depend_on_row_order():
    """Chance is the mean of 1/n_choices over items, summed exactly: any row order gives the
    same float (a plain mean of 3-, 5- and 7-choice items differs in its last bit)."""
    from eexit_core.analysis.predictiveness import _chance

    sizes = [3, 5, 7, 3, 5, 7, 11, 3, 13, 5, 7, 3] * 3
    items = pl.DataFrame({"model_id": "m", "workload_id": "w", "policy": "static", "prompt_id": [f"p{i}" for i in range(len(sizes))],
                          "choice_logprobs": [[0.0] * n for n in sizes]})
    want = _chance(items, "m", "w")
    assert want == pytest.approx(sum(1 / n for n in sizes) / len(sizes), rel=1e-15)
    assert {_chance(items.sample(fraction=1.0, shuffle=True, seed=k), "m", "w") for k in range(20)} == {want}


def test_skip_table_joins_the_token_oracle():
    summary = summarise(_items(OUTCOMES), L).with_columns(
        pl.lit("m").alias("model_id"), pl.lit("w").alias("workload_id"), pl.lit("numeric_exact").alias("grader"))
    oracle = pl.DataFrame({"model_id": ["m"], "workload_id": ["w"], "criterion": ["first"], "skip_ratio": [0.4],
                           "speedup_bound": [1.8], "speedup_bound_with_check": [1.2]})
    row = skip_table(summary, oracle, 1 / 3).row(0, named=True)
    assert row["max_skip_ratio"] == 0.5 and row["static_speedup"] == 2.0
    assert row["token_oracle_speedup"] == 1.8 and row["oracle_item_speedup"] == pytest.approx(4 / 2.5)
    assert row["n_items"] == 4 and row["full_accuracy"] == 0.75


def test_skip_table_flags_accuracy_at_chance():
    choice = [{"policy": "static", "exit_layer": l, "prompt_id": f"p{i}", "correct": i % 2 == 0, "mean_layers": float(l),
               "n_tokens": 1, "seconds": 0.1, "batch_size": 1, "output": None, "choice_logprobs": [-1.0, -2.0],
               "kv_fill": "none"} for l in (1, 4) for i in range(10)]
    items = pl.DataFrame(choice, schema=ITEM_SCHEMA).with_columns(pl.lit("m").alias("model_id"), pl.lit("w").alias("workload_id"))
    summary = summarise(items.drop("model_id", "workload_id"), L).with_columns(
        pl.lit("m").alias("model_id"), pl.lit("w").alias("workload_id"), pl.lit("multiple_choice_loglik").alias("grader"))
    row = skip_table(summary, pl.DataFrame(), 0.05, items).row(0, named=True)
    assert row["chance_accuracy"] == 0.5 and row["full_accuracy"] == 0.5
    assert row["above_chance_p"] > 0.05 and "not above chance" in row["note"]


# --- items longer than the model's context -----------------------------------------------

def test_items_over_the_context_fail_by_id_are_cut_from_the_left_or_left_out(tokenizer):
    from eexit_core.evaluation.exit_accuracy import fit_to_context
    from eexit_core.lens.engine import PromptTooLongError

    long_prompt = " ".join(["the king was at sea ."] * 12)  # 1 + 72 tokens
    items = [GradedItem("w/short", "numeric_exact", "how many ships ?", "3"),
             GradedItem("w/long", "numeric_exact", long_prompt, "3"),
             GradedItem("w/choice", "multiple_choice_loglik", long_prompt, "yes", ("yes", "no no no"))]
    assert fit_to_context(items, tokenizer, None, "fail", 8).items == items  # no known context: all kept
    with pytest.raises(PromptTooLongError, match=r"w/long: its prompt has 73 tokens and its answer up to 8, but the "
                                                 r"model's context is 64; set the workload's over_context"):
        fit_to_context(items, tokenizer, 64, "fail", 8)
    skipped = fit_to_context(items, tokenizer, 64, "skip", 8)
    assert [i.prompt_id for i in skipped.items] == ["w/short"] and skipped.over_context == ["w/long", "w/choice"]
    cut = fit_to_context(items, tokenizer, 64, "truncate_left", 8)
    assert [i.prompt_id for i in cut.items] == ["w/short", "w/long", "w/choice"]
    lengths = [len(tokenizer(i.prompt)["input_ids"]) for i in cut.items]
    assert lengths == [5, 64 - 8, 64 - 3]  # room left for 8 generated tokens, or the longest choice (3 words)
    assert cut.items[1].prompt.endswith("at sea .") and cut.items[0] == items[0]
    with pytest.raises(PromptTooLongError, match="every item is longer"):
        fit_to_context(items[1:], tokenizer, 64, "skip", 8)
