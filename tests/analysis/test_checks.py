"""Each stage's data-quality check passes on good output, fails on each kind of bad value,
and is attached to the asset whose output it checks."""

from __future__ import annotations

import math

import polars as pl
import pytest

from eexit_core.analysis import checks


def _similarity(n_layers: int = 3, **override) -> pl.DataFrame:
    table = pl.DataFrame({
        "layer": list(range(1, n_layers + 1)), "depth_frac": [l / n_layers for l in range(1, n_layers + 1)],
        "top1_match": [0.2, 0.6, 1.0], "topk_overlap": [0.3, 0.7, 1.0], "kl_to_final": [3.0, 0.5, 0.0],
        "logit_cos": [0.1, 0.8, 1.00002], "hidden_cos": [0.3, 0.9, 1.0],
    })
    for column, (row, value) in override.items():
        table = table.with_columns(pl.when(pl.int_range(pl.len()) == row).then(value).otherwise(pl.col(column)).alias(column))
    return table


def test_similarity_check_passes_good_curves_and_cosine_only_runs():
    assert checks.layer_similarity_in_range(_similarity(), 3).passed
    cosine_only = _similarity().with_columns(pl.lit(None, dtype=pl.Float64).alias(c) for c in ("top1_match", "topk_overlap", "kl_to_final"))
    assert checks.layer_similarity_in_range(cosine_only, 3).passed


@pytest.mark.parametrize(("column", "value"), [("top1_match", 1.5), ("kl_to_final", -0.1), ("kl_to_final", math.nan),
                                               ("logit_cos", 1.01), ("hidden_cos", -1.2), ("depth_frac", 0.0)])
def test_similarity_check_fails_a_value_out_of_range(column, value):
    outcome = checks.layer_similarity_in_range(_similarity(**{column: (1, value)}), 3)
    assert not outcome.passed and outcome.metadata["violations"] == 1


def test_similarity_check_fails_a_missing_layer():
    assert not checks.layer_similarity_in_range(_similarity().filter(pl.col("layer") != 2), 3).passed
    assert not checks.layer_similarity_in_range(_similarity(), 4).passed


def test_oracle_check():
    good = pl.DataFrame({"mean_exit_layer": [2.5, 3.0], "n_layers": [4, 4], "speedup_bound": [1.6, 1.33]})
    assert checks.oracle_exits_in_range(good).passed
    assert not checks.oracle_exits_in_range(good.with_columns(pl.Series("mean_exit_layer", [0.5, 3.0]))).passed
    assert not checks.oracle_exits_in_range(good.with_columns(pl.Series("speedup_bound", [math.inf, 1.2]))).passed
    assert not checks.oracle_exits_in_range(good.head(0)).passed


def test_exit_accuracy_check_needs_one_full_depth_row():
    good = pl.DataFrame({"policy": ["static", "static", "max_prob>=0.9"], "exit_layer": [2, 4, 0], "n_layers": [4, 4, 4],
                         "accuracy": [0.2, 0.5, 0.4], "mean_layers": [2.0, 4.0, 3.1], "skip_ratio": [0.5, 0.0, 0.225]})
    assert checks.exit_accuracy_in_range(good).passed
    assert not checks.exit_accuracy_in_range(good.filter(pl.col("exit_layer") != 4)).passed
    assert not checks.exit_accuracy_in_range(good.with_columns(pl.Series("accuracy", [0.2, 1.5, 0.4]))).passed
    assert not checks.exit_accuracy_in_range(good.with_columns(pl.Series("mean_layers", [2.0, 4.0, 4.5]))).passed


def test_eas_check():
    good = pl.DataFrame({"model_id": ["m", "m"], "workload_id": ["w", "ALL"], "eas": [0.4, 0.4], "eas_ideal": [0.66, 0.66]})
    assert checks.eas_in_range(good).passed
    assert not checks.eas_in_range(good.filter(pl.col("workload_id") != "ALL")).passed
    assert not checks.eas_in_range(good.with_columns(pl.Series("eas", [0.7, 0.4]))).passed


def test_each_check_is_attached_to_the_asset_it_checks():
    import dagster as dg

    from pipelines.definitions import defs

    graph = defs.resolve_asset_graph()
    owners = {key.name: key.asset_key.to_user_string() for key in graph.asset_check_keys}
    store_tables = ["models", "workloads", "prompts", "layer_similarity", "oracle_exits", "exit_accuracy", "exit_items",
                    "exit_skip_bounds", "similarity_accuracy_correlation", "zoo_training", "eas_intervals",
                    "factor_contrasts", "variance_share", "training_dynamics", "published_eas", "factor_regression",
                    "oracle_intervals", "self_speculation", "self_speculation_items", "exit_head_similarity",
                    "exit_head_eas", "exit_heads", "tuned_lens_fit"]
    assert owners == {
        "similarities_in_range": "layer_similarity", "exit_layers_in_range": "oracle_exits",
        "exit_accuracy_in_range": "exit_accuracy", "eas_within_bounds": "eas_scores",
        "corpus_ok": "zoo_corpus", "learned_language": "zoo_checkpoints", "every_checkpoint_registered": "zoo_models",
        "lossless": "self_speculation_items", "dump_complete": "layer_activations",
        "no_worse_than_own_head": "tuned_lens", "control_gains_nothing": "tuned_lens",
        **{f"{table}_rows_valid": f"results_store/{table}" for table in store_tables},
    }
    assert isinstance(defs, dg.Definitions)


# --- the results store's tables -------------------------------------------------------------

_MODELS = pl.DataFrame({"model_id": ["a", "b"], "available": [True, False], "checksum": ["abc", None],
                        "unavailable_reason": [None, "pip install llm-b"]})
_WORKLOADS = pl.DataFrame({"workload_id": ["w", "v"], "available": [True, False], "n_prompts": [4, None],
                           "unavailable_reason": [None, "pip install --no-deps v"]})
_ITEMS = pl.DataFrame({"model_id": ["m"] * 3, "workload_id": ["w"] * 3, "policy": ["static", "static", "max_prob>=0.9"],
                       "exit_layer": [1, 2, 0], "prompt_id": ["p"] * 3, "correct": [False, True, True],
                       "mean_layers": [1.0, 2.0, 1.5]})
_BOUNDS = pl.DataFrame({"full_accuracy": [0.5], "max_skip_ratio": [0.25], "oracle_item_skip_ratio": [0.4], "chance_accuracy": [0.25],
                        "above_chance_p": [0.01], "static_speedup": [1.3], "oracle_item_speedup": [1.6], "token_oracle_speedup": [1.2]})
_CORRELATION = pl.DataFrame({"scope": ["POOLED", "POOLED"], "metric": ["logit_cos", "kl_to_final"], "spearman": [0.8, math.nan],
                             "ci_low": [0.6, math.nan], "ci_high": [0.9, math.nan], "best": [True, False]})


_ZOO = pl.DataFrame({"variant": ["zoo-dense-s-base"] * 2, "seed": [0, 0], "step": [0, 8], "tokens": [0, 8192],
                     "train_loss": [None, 6.0], "val_loss": [8.3, 6.1], "unigram_entropy": [6.5, 6.5],
                     "tokens_per_s": [0.0, 9000.0]})


_INTERVALS = pl.DataFrame({"model_id": ["m", "m"], "workload_id": ["w", "ALL"], "metric": ["logit_cos"] * 2,
                           "alpha": [0.5] * 2, "eas": [0.40, 0.40], "ci_low": [0.35, 0.36], "ci_high": [0.44, 0.43],
                           "n_prompts": [8, 8]})
_CONTRASTS = pl.DataFrame({"factor": ["recipe"], "level": ["zoo-dense-s-ee_aware"], "baseline": ["zoo-dense-s-base"],
                           "delta": [0.02], "ci_low": [0.01], "ci_high": [0.03], "n_pairs": [2]})
_VARIANCE = pl.DataFrame({"scope": ["registered"] * 4, "metric": ["logit_cos"] * 4, "alpha": [0.5] * 4,
                          "component": ["model", "workload", "interaction", "residual"], "share": [0.6, 0.05, 0.1, 0.25]})
_DYNAMICS = pl.DataFrame({"variant": ["v"] * 2, "seed": [0, 0], "step": [0, 8], "metric": ["logit_cos"] * 2,
                          "tokens": [0, 8192], "eas": [0.1, 0.3], "ci_low": [0.08, 0.25], "ci_high": [0.12, 0.33],
                          "top1_at_half_depth": [0.0, 0.2]})
_ORACLE = pl.DataFrame({"speedup_bound": [1.6], "ci_low": [1.5], "ci_high": [1.7], "skip_ratio": [0.375],
                        "skip_ci_low": [0.33], "skip_ci_high": [0.41]})
_REGRESSION = pl.DataFrame({"factor": ["n_layers", "arch_class"], "term": ["slope", "levels"], "estimate": [0.01, None],
                            "ci_low": [-0.02, None], "ci_high": [0.03, None], "n_models": [6, 2],
                            "note": ["observational (confounded)", "not estimable: 1 level(s) measured"]})
_PUBLISHED = pl.DataFrame({"model_name": list("abcdef"), "eas": [0.5] * 6, "source": ["study"] * 6,
                           "measured_eas": [0.4] + [None] * 5})


@pytest.mark.parametrize(("table", "good", "column", "bad_value"), [
    ("models", _MODELS, "checksum", None),  # available without a checksum
    ("models", _MODELS.reverse(), "unavailable_reason", None),  # unavailable without a reason
    ("workloads", _WORKLOADS, "n_prompts", 0),
    ("workloads", _WORKLOADS.reverse(), "unavailable_reason", None),
    ("prompts", pl.DataFrame({"workload_id": ["w"], "prompt_id": ["p"], "text": ["hello"]}), "text", ""),
    ("exit_items", _ITEMS, "correct", None),
    ("exit_items", _ITEMS, "mean_layers", 3.0),  # a static row at layer 1 that used 3 layers
    ("exit_skip_bounds", _BOUNDS, "max_skip_ratio", 1.5),
    ("exit_skip_bounds", _BOUNDS, "token_oracle_speedup", 0.5),
    ("similarity_accuracy_correlation", _CORRELATION, "spearman", 1.5),
    ("similarity_accuracy_correlation", _CORRELATION, "ci_low", 0.95),  # interval upside down
    ("zoo_training", _ZOO, "val_loss", float("nan")),
    ("zoo_training", _ZOO, "tokens", 1024),  # tokens at step 0
    ("zoo_training", _ZOO, "unigram_entropy", 0.0),
    ("eas_intervals", _INTERVALS, "ci_low", 0.45),  # the point outside its interval
    ("eas_intervals", _INTERVALS, "eas", 1.2),
    ("factor_contrasts", _CONTRASTS, "delta", -1.5),
    ("factor_contrasts", _CONTRASTS, "ci_low", 0.05),  # interval upside down
    ("factor_contrasts", _CONTRASTS, "n_pairs", 0),
    ("variance_share", _VARIANCE, "share", 0.7),  # shares no longer add up to 1
    ("training_dynamics", _DYNAMICS, "tokens", 9000),  # tokens that fall as the step grows
    ("training_dynamics", _DYNAMICS, "top1_at_half_depth", 1.5),
    ("published_eas", _PUBLISHED, "source", None),
    ("published_eas", _PUBLISHED, "measured_eas", 2.0),
    ("oracle_intervals", _ORACLE, "speedup_bound", 0.9),
    ("oracle_intervals", _ORACLE, "skip_ci_high", 0.3),
    ("factor_regression", _REGRESSION, "n_models", 2),  # a number over too few models
    ("factor_regression", _REGRESSION.reverse(), "note", "fine"),  # a missing estimate that does not say why
])
def test_each_store_table_check_passes_good_rows_and_fails_a_bad_one(table, good, column, bad_value):
    check = checks.STORE_TABLE_CHECKS[table]
    assert check(good).passed
    broken = good.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.lit(bad_value)).otherwise(pl.col(column)).alias(column))
    assert not check(broken).passed


def test_store_checks_of_per_partition_tables_and_the_best_metric():
    similarity = _similarity().with_columns(model_id=pl.lit("m"), workload_id=pl.lit("w"))
    assert checks.STORE_TABLE_CHECKS["layer_similarity"](similarity).passed
    assert not checks.STORE_TABLE_CHECKS["layer_similarity"](similarity.filter(pl.col("layer") != 2)).passed
    two_best = _CORRELATION.with_columns(best=pl.lit(True))
    assert not checks.STORE_TABLE_CHECKS["similarity_accuracy_correlation"](two_best).passed
    assert checks.STORE_TABLE_CHECKS["oracle_exits"](pl.DataFrame()).passed  # a cosine-only run has none


def test_every_published_table_has_a_check():
    from eexit_core.storage.store import TABLE_KEYS

    assert set(checks.STORE_TABLE_CHECKS) == set(TABLE_KEYS)


def test_a_base_model_has_learned_language_one_and_a_half_nats_below_unigram():
    learned = checks.learned_language({"val_loss": 4.9, "unigram_entropy": 6.5}, "base")
    assert learned.passed and learned.metadata["shortfall"] == 0.0
    short = checks.learned_language({"val_loss": 5.2, "unigram_entropy": 6.5}, "base")
    assert not short.passed and short.metadata["shortfall"] == pytest.approx(0.2)
    # post-training and early-exit-aware training are reported, not held to the bar
    assert checks.learned_language({"val_loss": 7.4, "unigram_entropy": 6.5}, "instruct").passed


def test_the_zoo_corpus_check_needs_both_splits_and_a_unigram_entropy_within_log_v():
    manifest = {"documents": {"train": 9, "validation": 1}, "tokens": {"train": 900, "validation": 100},
                "unigram_entropy": 6.0, "vocab_size": 512}
    assert checks.zoo_corpus_ok(manifest).passed
    assert not checks.zoo_corpus_ok({**manifest, "documents": {"train": 10, "validation": 0}}).passed
    assert not checks.zoo_corpus_ok({**manifest, "unigram_entropy": math.log(512) + 0.01}).passed
