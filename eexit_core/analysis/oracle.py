"""Oracle exits: the earliest layer at which each token already has its final answer.

`first`: the first layer whose top-1 equals the final top-1. `stable`: the first layer
from which every later layer agrees too. Both are upper bounds on what an exit policy
could save under the cost model "cost ∝ blocks run".
"""

from __future__ import annotations

from typing import Literal

import polars as pl

Criterion = Literal["first", "stable"]
CRITERIA: tuple[Criterion, ...] = ("first", "stable")
_TOKEN = ["sample", "position"]


def oracle_exit_layers(stats: pl.DataFrame | pl.LazyFrame, criterion: Criterion = "first") -> pl.DataFrame:
    """Each token's oracle exit layer: columns `sample, position, exit_layer`.

    `stats` needs `sample, position, layer, top1_match` and every layer 1..L per token.
    """
    lazy = stats.lazy() if isinstance(stats, pl.DataFrame) else stats
    match = pl.col("top1_match").cast(pl.Boolean)
    if criterion == "first":
        exit_layer = pl.col("layer").filter(match).min()
    elif criterion == "stable":
        # one past the last disagreeing layer; layer L always agrees with itself
        exit_layer = pl.col("layer").filter(~match).max().fill_null(0) + 1
    else:
        raise ValueError(f"unknown oracle criterion {criterion!r}; choose from {CRITERIA}")
    return (
        lazy.group_by(_TOKEN)
        .agg(exit_layer.cast(pl.Int32).alias("exit_layer"))
        .sort(_TOKEN)
        .collect()
    )


def exit_check_cost(d_model: int, vocab_size: int, params_total: int, n_layers: int, tied: bool) -> float:
    """Cost of one exit check (norm + LM head) relative to one block, by parameter count."""
    embedding = vocab_size * d_model * (1 if tied else 2)
    per_block = max(params_total - embedding, 1) / n_layers
    return d_model * vocab_size / per_block


def summarise(exits: pl.DataFrame, n_layers: int, check_cost: float) -> dict[str, float]:
    """Mean exit layer, skip ratio and speedup bounds (without / with per-layer checks)."""
    mean_exit = float(exits["exit_layer"].cast(pl.Float64).mean())
    return {
        "mean_exit_layer": mean_exit,
        "skip_ratio": (n_layers - mean_exit) / n_layers,
        "speedup_bound": n_layers / mean_exit,
        # full depth runs L blocks and one head; exiting at e runs e blocks and e heads
        "speedup_bound_with_check": (n_layers + check_cost) / (mean_exit * (1.0 + check_cost)),
        "check_cost_frac": check_cost,
        "n_tokens": exits.height,
    }
