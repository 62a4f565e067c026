"""Layer-to-final similarity: token stats averaged per layer, and S_l for each metric."""

from __future__ import annotations

import polars as pl

from eexit_core.storage.schema import STAT_COLUMNS

# Stats that can serve as the similarity S_l behind EAS, and how each maps into [0, 1].
SIMILARITY_METRICS: tuple[str, ...] = (
    "logit_cos",
    "logit_cos_raw",
    "hidden_cos",
    "top1_match",
    "topk_overlap",
    "kl_to_final",
)
DEFAULT_METRIC = "logit_cos"


def layer_means(token_stats: pl.DataFrame | pl.LazyFrame, n_layers: int) -> pl.DataFrame:
    """Per layer: the mean of every stat over tokens, `n_tokens` and `depth_frac = l/L`.

    Non-finite values are left out of the means and counted in `n_nonfinite`. Only the
    stats present in `token_stats` are averaged (a d-space run has the cosines only).
    """
    lazy = token_stats.lazy() if isinstance(token_stats, pl.DataFrame) else token_stats
    names = lazy.collect_schema().names()
    present = [c for c in STAT_COLUMNS if c in names]
    means = [
        pl.col(c).cast(pl.Float64).filter(pl.col(c).cast(pl.Float64).is_finite()).mean().alias(c)
        for c in present
    ]
    nonfinite = pl.sum_horizontal(
        [~pl.col(c).cast(pl.Float64).is_finite() for c in present if c != "top1_match"]
    ).gt(0).sum().alias("n_nonfinite")
    table = (
        lazy.group_by("layer")
        .agg(pl.len().alias("n_tokens"), nonfinite, *means)
        .with_columns(
            pl.col("layer").cast(pl.Int32),
            (pl.col("layer").cast(pl.Float64) / n_layers).alias("depth_frac"),
            pl.col("n_tokens").cast(pl.Int64),
            pl.col("n_nonfinite").cast(pl.Int64),
        )
        .sort("layer")
        .collect()
    )
    if "router_top_expert" in names:
        table = table.join(router_means(lazy), on="layer", how="left", maintain_order="left")
    return table


def router_means(token_stats: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Per MoE layer: mean routing entropy, the entropy of the expert load (top-1 expert
    histogram over tokens, nats, and normalised by log(experts)), and the fraction of
    tokens whose top expert differs from the previous block's."""
    lazy = token_stats.lazy() if isinstance(token_stats, pl.DataFrame) else token_stats
    token = ["sample", "position"] + (["prompt_id"] if "prompt_id" in lazy.collect_schema().names() else [])
    changes = lazy.with_columns(
        (pl.col("router_top_expert") != pl.col("router_top_expert").shift(1).over(token, order_by="layer"))
        .cast(pl.Float64)
        .alias("_changed")
    )
    load = (
        lazy.filter(pl.col("router_top_expert").is_not_null())
        .group_by("layer", "router_top_expert")
        .agg(pl.len().alias("_count"), pl.col("router_n_experts").first().alias("_experts"))
        .with_columns((pl.col("_count") / pl.col("_count").sum().over("layer")).alias("_share"))
        .group_by("layer")
        .agg(
            (-(pl.col("_share") * pl.col("_share").log()).sum()).alias("router_load_entropy"),
            pl.col("_experts").first().cast(pl.Float64).log().alias("_max_entropy"),
        )
        .with_columns((pl.col("router_load_entropy") / pl.col("_max_entropy")).alias("router_load_balance"))
        .drop("_max_entropy")
    )
    per_layer = changes.group_by("layer").agg(
        pl.col("router_entropy").cast(pl.Float64).mean().alias("router_entropy_mean"),
        pl.col("_changed").mean().alias("router_top_change"),
    )
    return (
        per_layer.join(load, on="layer", how="left")
        .with_columns(pl.col("layer").cast(pl.Int32))
        .sort("layer")
        .collect()
    )


def similarity_curve(layer_stats: pl.DataFrame, metric: str = DEFAULT_METRIC) -> list[float]:
    """S_1..S_L for `metric` from `layer_means` output.

    Cosines and agreement rates are clipped to [0, 1] after averaging over tokens; the
    mean KL maps to a similarity as exp(-KL).
    """
    if metric not in SIMILARITY_METRICS:
        raise ValueError(f"unknown similarity metric {metric!r}; choose from {SIMILARITY_METRICS}")
    column = pl.col(metric).cast(pl.Float64)
    expr = (-column).exp() if metric == "kl_to_final" else column.clip(0.0, 1.0)
    return layer_stats.sort("layer").select(expr).to_series().to_list()
