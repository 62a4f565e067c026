"""How sure each EAS is: a bootstrap over prompts within each workload (RQ2, issue 15).

A partition's similarity curve is a token-weighted mean over its prompts, so a bootstrap
replicate is the same mean with each prompt counted as often as it was drawn: from each
prompt's per-layer sums and counts of every stat (`prompt_layer_sums`), a replicate
curve is `W @ sums / W @ counts` for multinomial draw counts W ([n_boot, prompts]). The
curve then maps into [0, 1] as `similarity_curve` does (clip; exp(-KL)) and goes through
EAS. With every prompt drawn once, this is exactly `layer_means` and `eas_scores`.

Draws depend on the seed, the workload and its sorted prompt ids only, so every model
measured on the same prompts is resampled identically: differences between two models
(`factor_contrasts`) are then paired by prompt. A model's 'ALL' replicate is the mean of
its workloads' replicates with the same index (workloads resampled independently).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from eexit_core.analysis.adaptability import skip_weights

INTERVAL = (2.5, 97.5)  # percentile bootstrap, 95 %

INTERVAL_SCHEMA = {"model_id": pl.String, "workload_id": pl.String, "metric": pl.String, "alpha": pl.Float64,
                   "eas": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64, "n_prompts": pl.Int64,
                   "n_boot": pl.Int64, "bootstrap_seed": pl.Int64}


@dataclass(frozen=True)
class PromptCurves:
    """One partition's per-prompt, per-layer sums and counts of one stat ([prompts, layers])."""

    prompt_ids: list[str]
    sums: np.ndarray
    counts: np.ndarray


def prompt_layer_sums(token_stats: pl.DataFrame | pl.LazyFrame, metrics: Sequence[str]) -> pl.DataFrame:
    """Per model, workload, prompt and layer: the sum and count of each stat's finite values
    (the means `layer_means` takes, kept apart by prompt)."""
    lazy = token_stats.lazy() if isinstance(token_stats, pl.DataFrame) else token_stats
    present = [m for m in metrics if m in lazy.collect_schema().names()]
    aggregations = []
    for metric in present:
        value = pl.col(metric).cast(pl.Float64)
        finite = value.is_finite()
        aggregations += [value.filter(finite).sum().alias(f"{metric}__sum"), finite.sum().cast(pl.Int64).alias(f"{metric}__n")]
    return (lazy.group_by("model_id", "workload_id", "prompt_id", "layer").agg(aggregations)
            .sort("model_id", "workload_id", "prompt_id", "layer").collect())


def prompt_curves(sums: pl.DataFrame, metric: str) -> dict[tuple[str, str], PromptCurves]:
    """The [prompts, layers] sums and counts of `metric` per model × workload."""
    out = {}
    for (model_id, workload_id), part in sums.group_by("model_id", "workload_id", maintain_order=True):
        if f"{metric}__sum" not in part.columns or part[f"{metric}__n"].sum() == 0:
            continue
        prompts = sorted(set(part["prompt_id"].to_list()))
        layers = sorted(set(part["layer"].to_list()))
        grid = pl.DataFrame({"prompt_id": prompts}).join(pl.DataFrame({"layer": layers}, schema={"layer": part["layer"].dtype}),
                                                          how="cross")
        full = grid.join(part, on=["prompt_id", "layer"], how="left").sort("prompt_id", "layer")
        shape = (len(prompts), len(layers))
        out[(model_id, workload_id)] = PromptCurves(
            prompts, full[f"{metric}__sum"].fill_null(0.0).to_numpy().reshape(shape),
            full[f"{metric}__n"].fill_null(0).to_numpy().astype(np.float64).reshape(shape))
    return out


def draw_counts(n_prompts: int, n_boot: int, seed: int, workload_id: str, prompt_ids: Sequence[str]) -> np.ndarray:
    """How often each prompt is drawn in each replicate ([n_boot, n_prompts]); the same for
    every model measured on these prompts of this workload."""
    key = zlib.crc32("\x00".join([workload_id, *prompt_ids]).encode())
    rng = np.random.default_rng([seed, key])
    return rng.multinomial(n_prompts, np.full(n_prompts, 1.0 / n_prompts), size=n_boot).astype(np.float64)


def to_similarity(means: np.ndarray, metric: str) -> np.ndarray:
    """Layer means mapped into [0, 1] as `similarity_curve` maps them."""
    return np.exp(-means) if metric == "kl_to_final" else np.clip(means, 0.0, 1.0)


def eas_rows(similarity: np.ndarray, alpha: float) -> np.ndarray:
    """EAS of each row of S ([n, layers]): `adaptability.eas` for many curves at once."""
    weights = skip_weights(similarity.shape[-1])
    return np.mean(np.power(similarity, alpha) * np.power(weights, 1.0 - alpha), axis=-1)


def eas_replicates(curves: PromptCurves, metric: str, alphas: Sequence[float], counts: np.ndarray) -> dict[float, np.ndarray]:
    """Per alpha, the EAS of every replicate the draw counts describe ([n_boot])."""
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (counts @ curves.sums) / (counts @ curves.counts)
    similarity = to_similarity(means, metric)
    return {alpha: eas_rows(similarity, alpha) for alpha in alphas}


def point_eas(curves: PromptCurves, metric: str, alpha: float) -> float:
    """EAS with every prompt counted once (what `eas_scores` stores)."""
    ones = np.ones((1, len(curves.prompt_ids)))
    return float(eas_replicates(curves, metric, [alpha], ones)[alpha][0])


def bootstrap_eas(sums: pl.DataFrame, *, metrics: Sequence[str], alphas: Sequence[float], n_boot: int,
                  seed: int) -> dict[tuple[str, str, str, float], tuple[float, np.ndarray, int]]:
    """(model, workload or 'ALL', metric, alpha) -> (EAS, its replicates, prompts)."""
    out: dict[tuple[str, str, str, float], tuple[float, np.ndarray, int]] = {}
    for metric in metrics:
        per_model: dict[str, list[tuple[str, float]]] = {}
        for (model_id, workload_id), curves in prompt_curves(sums, metric).items():
            counts = draw_counts(len(curves.prompt_ids), n_boot, seed, workload_id, curves.prompt_ids)
            replicates = eas_replicates(curves, metric, alphas, counts)
            for alpha in alphas:
                out[(model_id, workload_id, metric, alpha)] = (point_eas(curves, metric, alpha), replicates[alpha],
                                                               len(curves.prompt_ids))
            per_model.setdefault(model_id, []).append(workload_id)
        for model_id, workloads in per_model.items():
            for alpha in alphas:
                parts = [out[(model_id, w, metric, alpha)] for w in workloads]
                out[(model_id, "ALL", metric, alpha)] = (float(np.mean([p[0] for p in parts])),
                                                         np.mean([p[1] for p in parts], axis=0), sum(p[2] for p in parts))
    return out


def interval(replicates: np.ndarray) -> tuple[float, float]:
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(finite, INTERVAL)
    return float(low), float(high)


def eas_intervals(boot: dict[tuple[str, str, str, float], tuple[float, np.ndarray, int]], *, n_boot: int,
                  seed: int) -> pl.DataFrame:
    """The `eas_intervals` table: EAS with its bootstrap 95 % interval per model ×
    workload (and 'ALL') × metric × alpha."""
    rows = []
    for (model_id, workload_id, metric, alpha), (value, replicates, n_prompts) in boot.items():
        low, high = interval(replicates)
        rows.append({"model_id": model_id, "workload_id": workload_id, "metric": metric, "alpha": alpha, "eas": value,
                     "ci_low": low, "ci_high": high, "n_prompts": n_prompts, "n_boot": n_boot, "bootstrap_seed": seed})
    return pl.DataFrame(rows, schema=INTERVAL_SCHEMA).sort("model_id", "workload_id", "metric", "alpha")


# --- the oracle's speedup bounds, resampled the same way ----------------------------------

ORACLE_INTERVAL_SCHEMA = {"model_id": pl.String, "workload_id": pl.String, "criterion": pl.String,
                          "mean_exit_layer": pl.Float64, "speedup_bound": pl.Float64, "ci_low": pl.Float64,
                          "ci_high": pl.Float64, "skip_ratio": pl.Float64, "skip_ci_low": pl.Float64,
                          "skip_ci_high": pl.Float64, "n_prompts": pl.Int64, "n_boot": pl.Int64, "bootstrap_seed": pl.Int64}


def oracle_intervals(token_stats: pl.DataFrame | pl.LazyFrame, *, n_boot: int, seed: int) -> pl.DataFrame:
    """The `oracle_intervals` table: each partition's token-oracle speedup bound L / mean
    exit layer and skip ratio (both criteria of `analysis/oracle.py`) with bootstrap 95 %
    intervals, prompts resampled with the same draws as the EAS intervals."""
    from eexit_core.analysis.oracle import CRITERIA

    lazy = token_stats.lazy() if isinstance(token_stats, pl.DataFrame) else token_stats
    if "top1_match" not in lazy.collect_schema().names():
        return pl.DataFrame(schema=ORACLE_INTERVAL_SCHEMA)
    match = pl.col("top1_match").cast(pl.Boolean)
    token = ["model_id", "workload_id", "prompt_id", "sample", "position"]
    exits = (lazy.group_by(token).agg(pl.col("layer").filter(match).min().alias("first"),
                                      (pl.col("layer").filter(~match).max().fill_null(0) + 1).alias("stable"),
                                      pl.col("layer").max().alias("n_layers"))
             .group_by("model_id", "workload_id", "prompt_id")
             .agg(pl.col("first").cast(pl.Float64).sum(), pl.col("stable").cast(pl.Float64).sum(),
                  pl.len().alias("tokens"), pl.col("n_layers").max())
             .sort("model_id", "workload_id", "prompt_id").collect())
    rows = []
    for (model_id, workload_id), part in exits.group_by("model_id", "workload_id", maintain_order=True):
        prompts = part["prompt_id"].to_list()
        counts = draw_counts(len(prompts), n_boot, seed, workload_id, prompts)
        tokens, n_layers = part["tokens"].to_numpy().astype(np.float64), float(part["n_layers"].max())
        for criterion in CRITERIA:
            sums = part[criterion].to_numpy()
            mean_exit = sums.sum() / tokens.sum()
            replicates = (counts @ sums) / (counts @ tokens)
            low, high = interval(n_layers / replicates)
            skip_low, skip_high = interval((n_layers - replicates) / n_layers)
            rows.append({"model_id": model_id, "workload_id": workload_id, "criterion": criterion,
                         "mean_exit_layer": mean_exit, "speedup_bound": n_layers / mean_exit, "ci_low": low,
                         "ci_high": high, "skip_ratio": (n_layers - mean_exit) / n_layers, "skip_ci_low": skip_low,
                         "skip_ci_high": skip_high, "n_prompts": len(prompts), "n_boot": n_boot,
                         "bootstrap_seed": seed})
    return pl.DataFrame(rows, schema=ORACLE_INTERVAL_SCHEMA)


def max_skip_interval(items: pl.DataFrame, workload_id: str, n_layers: int, tolerance: float, *, n_boot: int,
                      seed: int) -> tuple[float, float]:
    """A bootstrap 95 % interval of the max skip ratio (`exit_summary.max_skip_ratio`): the
    static-exit items resampled, each replicate's largest (L - l) / L whose accuracy stays
    within the tolerance of its own full-depth accuracy (NaN where full depth gets none)."""
    static = items.filter(pl.col("policy") == "static") if items.height else items
    if static.height == 0:
        return float("nan"), float("nan")
    table = static.pivot(on="exit_layer", index="prompt_id", values="correct", aggregate_function="first").sort("prompt_id")
    layers = sorted(int(c) for c in table.columns if c != "prompt_id")
    if n_layers not in layers:
        return float("nan"), float("nan")
    correct = table.select([str(layer) for layer in layers]).fill_null(False).cast(pl.Float64).to_numpy()
    prompts = table["prompt_id"].to_list()
    counts = draw_counts(len(prompts), n_boot, seed, workload_id, prompts)
    accuracy = counts @ correct / len(prompts)  # [n_boot, layers]
    full = accuracy[:, layers.index(n_layers)]
    within = accuracy >= (1 - tolerance) * full[:, None] - 1e-12
    first = np.array(layers)[np.argmax(within, axis=1)]  # the full-depth layer always qualifies
    skips = np.where(full > 0, (n_layers - first) / n_layers, np.nan)
    return interval(skips)
