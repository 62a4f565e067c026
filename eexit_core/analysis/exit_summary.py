"""The exit-accuracy tables from per-item results: the summary per exit rule, the per-item
oracle and the max skip ratio under an accuracy tolerance (the paper's Table 1). Plain
Polars, no torch: the analysis and the report use it on stored results."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from eexit_core import settings

STATIC, NEVER_EXIT, ORACLE_ITEM = "static", "never_exit", "oracle_item"

ITEM_SCHEMA = {
    "policy": pl.String, "exit_layer": pl.Int32, "prompt_id": pl.String, "correct": pl.Boolean,
    "mean_layers": pl.Float64, "n_tokens": pl.Int64, "seconds": pl.Float64, "batch_size": pl.Int32,
    "output": pl.String, "choice_logprobs": pl.List(pl.Float64), "kv_fill": pl.String,
}


SUMMARY_SCHEMA = {
    "policy": pl.String, "exit_layer": pl.Int32, "signal": pl.String, "threshold": pl.Float64,
    "accuracy": pl.Float64, "n_correct": pl.Int64, "n_items": pl.Int64, "mean_layers": pl.Float64,
    "skip_ratio": pl.Float64, "baseline_accuracy": pl.Float64, "relative_accuracy": pl.Float64,
    "ms_per_token": pl.Float64, "batch_size": pl.Int32, "n_tokens": pl.Int64, "n_layers": pl.Int32,
}


def summarise(items: pl.DataFrame, n_layers: int) -> pl.DataFrame:
    """One row per exit rule, plus the per-item oracle row. `baseline_accuracy` is full
    depth on the same items (static L for static rows and the oracle; `never_exit` for
    the dynamic policies), `relative_accuracy` = accuracy / baseline."""
    if items.is_empty():
        return pl.DataFrame(schema=SUMMARY_SCHEMA)
    grouped = (
        items.group_by(["policy", "exit_layer"], maintain_order=True)
        .agg(
            pl.col("correct").mean().alias("accuracy"), pl.col("correct").sum().cast(pl.Int64).alias("n_correct"),
            pl.len().cast(pl.Int64).alias("n_items"),
            ((pl.col("mean_layers") * pl.col("n_tokens")).sum() / pl.col("n_tokens").sum()).alias("mean_layers"),
            (pl.col("seconds").sum() * 1000 / pl.col("n_tokens").sum()).alias("ms_per_token"),
            pl.col("batch_size").max().alias("batch_size"), pl.col("n_tokens").sum().cast(pl.Int64).alias("n_tokens"),
        )
    )
    oracle = item_oracle(items, n_layers)
    if oracle is not None:
        grouped = pl.concat([grouped, oracle.select(grouped.columns)], how="vertical_relaxed")
    static_full = _accuracy_of(grouped, STATIC, n_layers)
    dynamic_base = _accuracy_of(grouped, NEVER_EXIT, 0)
    signal, threshold = _parse_policy(grouped["policy"].to_list())
    table = grouped.with_columns(
        pl.Series("signal", signal, dtype=pl.String), pl.Series("threshold", threshold, dtype=pl.Float64),
        ((n_layers - pl.col("mean_layers")) / n_layers).alias("skip_ratio"),
        pl.when(pl.col("policy").is_in([STATIC, ORACLE_ITEM])).then(pl.lit(static_full)).otherwise(pl.lit(dynamic_base))
        .cast(pl.Float64).alias("baseline_accuracy"),
        pl.lit(n_layers, dtype=pl.Int32).alias("n_layers"),
    ).with_columns(
        pl.when(pl.col("baseline_accuracy") > 0).then(pl.col("accuracy") / pl.col("baseline_accuracy"))
        .otherwise(None).alias("relative_accuracy"),
    )
    return table.select([pl.col(c).cast(t) for c, t in SUMMARY_SCHEMA.items()])


def _accuracy_of(table: pl.DataFrame, policy: str, layer: int) -> float | None:
    row = table.filter((pl.col("policy") == policy) & (pl.col("exit_layer") == layer))
    return None if row.is_empty() else float(row["accuracy"][0])


def _parse_policy(names: list[str]) -> tuple[list[str | None], list[float | None]]:
    signals: list[str | None] = []
    thresholds: list[float | None] = []
    for name in names:
        for op in (">=", "<="):
            if op in name:
                s, t = name.split(op, 1)
                signals.append(s)
                thresholds.append(float(t))
                break
        else:
            signals.append(None)
            thresholds.append(None)
    return signals, thresholds


def item_oracle(items: pl.DataFrame, n_layers: int) -> pl.DataFrame | None:
    """Each item right at full depth exits at its earliest evaluated static layer that
    still gets it right; items wrong at full depth stay at full depth (and wrong). So the
    oracle keeps full-depth accuracy and bounds how far a per-item exit could skip."""
    static = items.filter(pl.col("policy") == STATIC)
    if static.is_empty() or static.filter(pl.col("exit_layer") == n_layers).is_empty():
        return None
    per_item = (
        static.group_by("prompt_id", maintain_order=True)
        .agg(
            pl.col("correct").filter(pl.col("exit_layer") == n_layers).any().alias("correct"),
            pl.col("exit_layer").filter(pl.col("correct")).min().alias("first_right"),
            pl.col("n_tokens").filter(pl.col("exit_layer") == n_layers).sum().alias("full_tokens"),
        )
        .with_columns(
            pl.when(pl.col("correct")).then(pl.col("first_right")).otherwise(n_layers).cast(pl.Float64).alias("depth")
        )
    )
    return pl.DataFrame({
        "policy": [ORACLE_ITEM], "exit_layer": [0], "accuracy": [float(per_item["correct"].mean())],
        "n_correct": [int(per_item["correct"].sum())], "n_items": [per_item.height],
        "mean_layers": [float(per_item["depth"].mean())], "ms_per_token": [None],
        "batch_size": [None], "n_tokens": [int(per_item["full_tokens"].sum())],
    }, schema_overrides={"exit_layer": pl.Int32, "ms_per_token": pl.Float64, "batch_size": pl.Int32})


@dataclass(frozen=True)
class SkipBound:
    """The paper's Table 1 entry: the largest skip ratio within the accuracy tolerance."""

    full_accuracy: float | None
    max_skip_ratio: float | None
    max_skip_layer: int | None
    tolerance: float
    note: str = ""


def max_skip_ratio(summary: pl.DataFrame, n_layers: int, tolerance: float = settings.TOLERANCE) -> SkipBound:
    """Largest (L - l)/L over evaluated static layers whose accuracy is >= (1 - tolerance)
    × full-depth accuracy. Undefined (None) when full depth gets nothing right."""
    static = summary.filter(pl.col("policy") == STATIC)
    full = _accuracy_of(static, STATIC, n_layers)
    if full is None:
        return SkipBound(None, None, None, tolerance, f"no full-depth (layer {n_layers}) static row")
    if full == 0:
        return SkipBound(0.0, None, None, tolerance, "full-depth accuracy is 0: no loss bound to keep")
    ok = static.filter(pl.col("accuracy") >= (1 - tolerance) * full - 1e-12)
    layer = int(ok["exit_layer"].min())
    return SkipBound(full, (n_layers - layer) / n_layers, layer, tolerance)

