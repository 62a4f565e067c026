"""The Early-exit Adaptability Score (EAS) of the paper, SPEC §1.

    w_l = (L - l) / L
    EAS = (1/L) · Σ_{l=1..L} S_l^α · w_l^(1-α)

a weighted geometric mean of how close layer l is to the final answer (S_l) and how
much exiting there would save (w_l).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from eexit_core.analysis.similarity import similarity_curve


def skip_weights(n_layers: int) -> np.ndarray:
    """w_l = (L - l) / L for l = 1..L."""
    if n_layers < 1:
        raise ValueError("a model has at least one layer")
    layers = np.arange(1, n_layers + 1, dtype=np.float64)
    return (n_layers - layers) / n_layers


def eas(similarity_by_layer: Sequence[float], alpha: float = 0.5) -> float:
    """EAS for per-layer similarities S_1..S_L (each in [0, 1]).

    At α = 1 the weights drop out (0^0 = 1); at α = 0 the similarities do.
    """
    s = np.asarray(similarity_by_layer, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError("similarity_by_layer must be a non-empty sequence S_1..S_L")
    if not np.all(np.isfinite(s)) or s.min() < 0.0 or s.max() > 1.0:
        raise ValueError("similarities must be finite and within [0, 1]")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be within [0, 1], got {alpha}")
    w = skip_weights(s.size)
    return float(np.mean(np.power(s, alpha) * np.power(w, 1.0 - alpha)))


def eas_ideal(n_layers: int, alpha: float = 0.5) -> float:
    """EAS of a model whose every layer already matches the final one (S_l = 1)."""
    return eas(np.ones(n_layers), alpha)


# --- the EAS tables (the results store's eas_scores) --------------------------------------


def eas_scores(similarity: pl.DataFrame, *, metrics: Sequence[str], alphas: Sequence[float], reference: str | None,
               fallback_reference: str | None = None) -> pl.DataFrame:
    """EAS per model × workload × metric × alpha from `layer_similarity` rows, the
    per-model 'ALL' rows (mean over workloads), and `eas_relative` to the reference model
    (the fallback when the reference was not run; null when neither was)."""
    rows = []
    for (model_id, workload_id), part in similarity.group_by(["model_id", "workload_id"], maintain_order=True):
        n_layers = part.height
        for metric in [m for m in metrics if part[m].null_count() < part.height]:
            curve = similarity_curve(part, metric)
            for alpha in alphas:
                rows.append({
                    "model_id": model_id, "workload_id": workload_id, "metric": metric, "alpha": alpha,
                    "eas": eas(curve, alpha), "eas_ideal": eas_ideal(n_layers, alpha),
                    "n_layers": n_layers, "n_tokens": int(part["n_tokens"].max()),
                })
    if not rows:
        return pl.DataFrame()
    per_workload = pl.DataFrame(rows)
    per_model = (
        per_workload.group_by(["model_id", "metric", "alpha"], maintain_order=True)
        .agg(pl.col("eas").mean(), pl.col("eas_ideal").first(), pl.col("n_layers").first(), pl.col("n_tokens").sum())
        .with_columns(pl.lit("ALL").alias("workload_id"))
        .select(per_workload.columns)
    )
    scores = pl.concat([per_workload, per_model])
    models = set(scores["model_id"].to_list())
    ref = reference if reference in models else fallback_reference
    if ref not in models:
        ref = None
    if ref is None:
        return scores.with_columns(pl.lit(None, dtype=pl.Float64).alias("eas_relative"), pl.lit(None, dtype=pl.String).alias("relative_to"))
    ref_scores = scores.filter(pl.col("model_id") == ref).select("workload_id", "metric", "alpha", pl.col("eas").alias("_ref"))
    return (
        scores.join(ref_scores, on=["workload_id", "metric", "alpha"], how="left", maintain_order="left")  # stored row order
        .with_columns(
            pl.when(pl.col("_ref") > 0).then(pl.col("eas") / pl.col("_ref")).otherwise(None).alias("eas_relative"),
            pl.lit(ref).alias("relative_to"),
        )
        .drop("_ref")
    )


def eas_table(scores: pl.DataFrame, alpha: float = 0.5) -> pl.DataFrame:
    """EAS at one alpha, one row per model × workload, one column per metric."""
    return (
        scores.filter(pl.col("alpha") == alpha)
        .pivot(on="metric", index=["model_id", "workload_id"], values="eas")
        .join(
            scores.filter((pl.col("alpha") == alpha) & (pl.col("metric") == "logit_cos"))
            .select("model_id", "workload_id", "eas_ideal", "eas_relative", "n_tokens"),
            on=["model_id", "workload_id"], how="left",
        )
        .sort(["model_id", "workload_id"])
    )
