"""Data-quality checks of each stage's output, as plain Polars predicates: the assets run
them on the partition they just wrote and report them as that asset's checks."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

# cosines are computed in float32: allow their rounding just past ±1
COSINE_SLACK = 1e-4


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    metadata: dict[str, int]


def _violations(frame: pl.DataFrame, ok: pl.Expr) -> int:
    """Rows for which `ok` is false or null (a NaN compares false, a null stays null)."""
    return frame.height - frame.filter(ok.fill_null(False)).height


def _in(column: str, low: float, high: float) -> pl.Expr:
    return pl.col(column).is_between(low, high)


def layer_similarity_in_range(table: pl.DataFrame, n_layers: int) -> CheckOutcome:
    """Means of every stat in range, depth fractions in (0, 1], and one row per layer 1..L.
    A cosine-only run leaves the other stats null: only the computed ones are checked."""
    bounds = {"top1_match": (0, 1), "topk_overlap": (0, 1), "kl_to_final": (0, float("inf")),
              "logit_cos": (-1 - COSINE_SLACK, 1 + COSINE_SLACK), "hidden_cos": (-1 - COSINE_SLACK, 1 + COSINE_SLACK)}
    checked = [name for name in bounds if name in table.columns and table[name].null_count() < table.height]
    ok = pl.col("depth_frac").gt(0) & pl.col("depth_frac").le(1)
    for name in checked:
        ok = ok & _in(name, *bounds[name]) & pl.col(name).is_finite()
    bad = _violations(table, ok)
    layers_ok = sorted(table["layer"].to_list()) == list(range(1, n_layers + 1))
    return CheckOutcome(bad == 0 and layers_ok, {"violations": bad, "rows": table.height, "expected_rows": n_layers})


def oracle_exits_in_range(table: pl.DataFrame) -> CheckOutcome:
    """Mean exit layers within 1..L and finite speedup bounds of at least 1."""
    ok = (pl.col("mean_exit_layer").ge(1) & pl.col("mean_exit_layer").le(pl.col("n_layers"))
          & pl.col("speedup_bound").ge(1) & pl.col("speedup_bound").is_finite())
    bad = _violations(table, ok)
    return CheckOutcome(bad == 0 and table.height > 0, {"violations": bad, "rows": table.height})


def exit_accuracy_in_range(summary: pl.DataFrame) -> CheckOutcome:
    """Accuracy and skip ratio in [0, 1], layers used within 1..L, and exactly one
    full-depth static row (the baseline every relative accuracy divides by)."""
    ok = _in("accuracy", 0, 1) & pl.col("mean_layers").ge(1) & pl.col("mean_layers").le(pl.col("n_layers")) & _in("skip_ratio", 0, 1)
    bad = _violations(summary, ok)
    full_depth = summary.filter((pl.col("policy") == "static") & (pl.col("exit_layer") == pl.col("n_layers"))).height
    return CheckOutcome(bad == 0 and full_depth == 1, {"violations": bad, "full_depth_rows": full_depth})


def eas_in_range(scores: pl.DataFrame) -> CheckOutcome:
    """EAS finite and within [0, eas_ideal], and an ALL row for every scored model."""
    bad = _violations(scores, pl.col("eas").is_finite() & pl.col("eas").ge(0) & pl.col("eas").le(pl.col("eas_ideal") + 1e-9))
    models = set(scores["model_id"])
    with_all = set(scores.filter(pl.col("workload_id") == "ALL")["model_id"])
    return CheckOutcome(bad == 0 and models == with_all, {"violations": bad, "models_without_ALL": len(models - with_all)})
