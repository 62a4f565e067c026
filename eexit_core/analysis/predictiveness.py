"""What similarity predicts (RQ1) and how far exits can go (RQ3, the paper's Table 1).

* `similarity_accuracy_correlation` -- Spearman's rho between a similarity curve S_l and
  task accuracy when every token exits at l, per model × workload (`model|workload`),
  per model (pooled over its workloads) and pooled over models, with a bootstrap 95 % interval that resamples items.
* `skip_table` -- per model × workload: full-depth accuracy, the max skip ratio within
  the accuracy tolerance, the per-item oracle, the best dynamic policy within the
  tolerance and the token-level oracle speedup bounds.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
from scipy.stats import rankdata

from eexit_core import settings
from eexit_core.analysis.exit_summary import NEVER_EXIT, ORACLE_ITEM, STATIC, max_skip_ratio
from eexit_core.analysis.similarity import similarity_curve

POOLED = "pooled"

CORRELATION_SCHEMA = {
    "scope": pl.String, "metric": pl.String, "spearman": pl.Float64, "ci_low": pl.Float64,
    "ci_high": pl.Float64, "n_points": pl.Int64, "n_workloads": pl.Int64, "n_boot": pl.Int64, "best": pl.Boolean,
}


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of x against each row of y ([B, n]); ties get average ranks.
    NaN where either side is constant."""
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    rx = rankdata(np.asarray(x, dtype=np.float64))
    ry = rankdata(y, axis=1)
    rx = rx - rx.mean()
    ry = ry - ry.mean(axis=1, keepdims=True)
    denom = np.sqrt((rx**2).sum() * (ry**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (ry @ rx) / np.where(denom > 0, denom, 1.0), np.nan)


def _curves(layer_similarity: pl.DataFrame, metric: str) -> dict[tuple[str, str], np.ndarray]:
    out = {}
    for (model_id, workload_id), part in layer_similarity.group_by(["model_id", "workload_id"]):
        if part[metric].null_count() < part.height:
            out[(model_id, workload_id)] = np.asarray(similarity_curve(part.sort("layer"), metric), dtype=np.float64)
    return out


def _correctness(exit_items: pl.DataFrame) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """Per model × workload: the static exit layers and an [items, layers] 0/1 matrix."""
    static = exit_items.filter(pl.col("policy") == STATIC)
    out = {}
    for (model_id, workload_id), part in static.group_by(["model_id", "workload_id"]):
        # items in prompt order, whatever order the rows came in: the bootstrap indexes them
        wide = part.pivot(on="exit_layer", index="prompt_id", values="correct", sort_columns=False).sort("prompt_id")
        layers = sorted(int(c) for c in wide.columns if c != "prompt_id")
        matrix = wide.select([str(l) for l in layers]).to_numpy().astype(np.float64)
        if np.isnan(matrix).any():
            raise ValueError(f"{model_id}|{workload_id}: static exit items do not cover every layer")
        out[(model_id, workload_id)] = (np.asarray(layers), matrix)
    return out


def similarity_accuracy_correlation(layer_similarity: pl.DataFrame, exit_items: pl.DataFrame, metrics: list[str],
                                    *, n_boot: int = 1000, seed: int = 0) -> pl.DataFrame:
    """RQ1: does S_l rank the exit layers the way task accuracy does?

    Points are (model, workload, static exit layer): x = S_l of that model × workload,
    y = accuracy at exit l. A model × workload whose accuracy is the same at every
    evaluated layer (typically 0: a small model that never solves the task) says nothing
    about which layers are better and is left out; `n_workloads` counts those kept. The
    interval resamples items within each model × workload (S_l held fixed) and takes the
    2.5 and 97.5 percentiles.
    """
    correctness = _correctness(exit_items) if not exit_items.is_empty() else {}
    correctness = {k: v for k, v in correctness.items() if np.ptp(v[1].mean(axis=0)) > 0}
    if not correctness:
        return pl.DataFrame(schema=CORRELATION_SCHEMA)
    rng = np.random.default_rng(seed)
    # one set of item resamples per partition, shared by every metric and scope
    # in key order: `correctness` follows group_by, whose order is not fixed
    draws = {key: rng.integers(0, correctness[key][1].shape[0], size=(n_boot, correctness[key][1].shape[0]))
             for key in sorted(correctness)}
    rows = []
    model_ids = sorted({k[0] for k in correctness})
    for metric in metrics:
        curves = _curves(layer_similarity, metric)
        keys = [k for k in sorted(correctness) if k in curves]
        # each model × workload alone, each model over its workloads, and everything pooled;
        # pooling mixes workloads whose accuracy and similarity sit at different levels
        scopes = [*(f"{m}|{w}" for m, w in keys), *model_ids, POOLED]
        for scope in scopes:
            chosen = [k for k in keys if scope in (POOLED, k[0], f"{k[0]}|{k[1]}")]
            if not chosen:
                continue
            xs, ys, boots = [], [], []
            for key in chosen:
                layers, matrix = correctness[key]
                xs.append(curves[key][layers - 1])
                ys.append(matrix.mean(axis=0))
                boots.append(matrix[draws[key]].mean(axis=1))  # [n_boot, layers]
            x, y, yb = np.concatenate(xs), np.concatenate(ys), np.concatenate(boots, axis=1)
            rho = float(spearman_rows(x, y)[0])
            sample = spearman_rows(x, yb)
            sample = sample[np.isfinite(sample)]
            low, high = (np.percentile(sample, [2.5, 97.5]) if sample.size else (np.nan, np.nan))
            rows.append({"scope": scope, "metric": metric, "spearman": rho, "ci_low": float(low), "ci_high": float(high),
                         "n_points": int(x.size), "n_workloads": len(chosen), "n_boot": n_boot})
    table = pl.DataFrame(rows, schema={k: v for k, v in CORRELATION_SCHEMA.items() if k != "best"})
    best = table.filter(pl.col("spearman").is_not_nan()).group_by("scope").agg(
        pl.col("metric").sort_by("spearman", descending=True, maintain_order=True).first().alias("_best"))
    return (table.join(best, on="scope", how="left", maintain_order="left")
            .with_columns((pl.col("metric") == pl.col("_best")).fill_null(False).alias("best")).drop("_best"))


SKIP_SCHEMA = {
    "model_id": pl.String, "workload_id": pl.String, "grader": pl.String, "n_layers": pl.Int32, "n_items": pl.Int64,
    "full_accuracy": pl.Float64, "tolerance": pl.Float64, "max_skip_ratio": pl.Float64, "max_skip_layer": pl.Int32,
    "static_speedup": pl.Float64, "oracle_item_skip_ratio": pl.Float64, "oracle_item_speedup": pl.Float64,
    "best_policy": pl.String, "best_policy_skip_ratio": pl.Float64, "best_policy_relative_accuracy": pl.Float64,
    "best_policy_realised_speedup": pl.Float64, "token_oracle_skip_ratio": pl.Float64,
    "token_oracle_speedup": pl.Float64, "token_oracle_speedup_with_check": pl.Float64,
    "chance_accuracy": pl.Float64, "above_chance_p": pl.Float64, "note": pl.String,
    "max_skip_ci_low": pl.Float64, "max_skip_ci_high": pl.Float64,  # items resampled (analysis/uncertainty.py)
}

SIGNIFICANCE = 0.05


def _chance(exit_items: pl.DataFrame | None, model_id: str, workload_id: str) -> float | None:
    """Accuracy of guessing among the choices (multiple choice only)."""
    if exit_items is None or exit_items.is_empty():
        return None
    lists = exit_items.filter((pl.col("model_id") == model_id) & (pl.col("workload_id") == workload_id)
                              & (pl.col("policy") == STATIC) & pl.col("choice_logprobs").is_not_null())
    if lists.is_empty():
        return None
    per_item = lists.unique("prompt_id")["choice_logprobs"].list.len().to_list()
    # fsum: exactly rounded, so the value does not depend on the order unique() returns
    return math.fsum(1.0 / n for n in per_item) / len(per_item)


def skip_table(exit_accuracy: pl.DataFrame, oracle_exits: pl.DataFrame, tolerance: float = settings.TOLERANCE,
               exit_items: pl.DataFrame | None = None, *, n_boot: int = settings.BOOTSTRAP_SAMPLES,
               seed: int = 0) -> pl.DataFrame:
    """RQ3, the paper's Table 1 per model × workload. For multiple choice, a one-sided
    binomial test says whether full depth beats guessing; if not, the skip ratio only
    measures noise, and the note says so."""
    from scipy.stats import binomtest

    rows = []
    if exit_accuracy.is_empty():
        return pl.DataFrame(schema=SKIP_SCHEMA)
    for (model_id, workload_id), part in exit_accuracy.group_by(["model_id", "workload_id"], maintain_order=True):
        n_layers = int(part["n_layers"][0])
        bound = max_skip_ratio(part, n_layers, tolerance)
        oracle = part.filter(pl.col("policy") == ORACLE_ITEM)
        best = _best_policy(part, tolerance)
        token = oracle_exits.filter((pl.col("model_id") == model_id) & (pl.col("workload_id") == workload_id)
                                    & (pl.col("criterion") == "first")) if not oracle_exits.is_empty() else oracle_exits
        full_items = part.filter((pl.col("policy") == STATIC) & (pl.col("exit_layer") == n_layers))
        chance = _chance(exit_items, model_id, workload_id)
        low, high = _skip_interval(exit_items, model_id, workload_id, n_layers, tolerance, n_boot, seed)
        p_value = None
        note = bound.note
        if chance is not None and full_items.height:
            p_value = float(binomtest(int(full_items["n_correct"][0]), int(full_items["n_items"][0]), chance,
                                      alternative="greater").pvalue)
            if p_value > SIGNIFICANCE:
                note = (f"{note}; " if note else "") + (
                    f"full depth is not above chance {chance:.2f} (p = {p_value:.2f}): the skip ratio measures noise")
        rows.append({
            "model_id": model_id, "workload_id": workload_id, "grader": part["grader"][0] if "grader" in part.columns else None,
            "n_layers": n_layers, "n_items": int(full_items["n_items"][0]) if full_items.height else None,
            "full_accuracy": bound.full_accuracy, "tolerance": tolerance,
            "max_skip_ratio": bound.max_skip_ratio, "max_skip_layer": bound.max_skip_layer,
            "static_speedup": n_layers / bound.max_skip_layer if bound.max_skip_layer else None,
            "oracle_item_skip_ratio": float(oracle["skip_ratio"][0]) if oracle.height else None,
            "oracle_item_speedup": n_layers / float(oracle["mean_layers"][0]) if oracle.height else None,
            **best,
            "token_oracle_skip_ratio": float(token["skip_ratio"][0]) if token.height else None,
            "token_oracle_speedup": float(token["speedup_bound"][0]) if token.height else None,
            "token_oracle_speedup_with_check": (float(token["speedup_bound_with_check"][0])
                                                if token.height and "speedup_bound_with_check" in token.columns else None),
            "chance_accuracy": chance, "above_chance_p": p_value, "note": note,
            "max_skip_ci_low": low, "max_skip_ci_high": high,
        })
    return pl.DataFrame(rows, schema=SKIP_SCHEMA)


def _skip_interval(exit_items: pl.DataFrame | None, model_id: str, workload_id: str, n_layers: int, tolerance: float,
                   n_boot: int, seed: int) -> tuple[float | None, float | None]:
    from eexit_core.analysis.uncertainty import max_skip_interval

    if exit_items is None or exit_items.is_empty():
        return None, None
    part = exit_items.filter((pl.col("model_id") == model_id) & (pl.col("workload_id") == workload_id))
    low, high = max_skip_interval(part, workload_id, n_layers, tolerance, n_boot=n_boot, seed=seed)
    return (None, None) if math.isnan(low) else (low, high)


def _best_policy(part: pl.DataFrame, tolerance: float) -> dict:
    """The dynamic policy that skips most while keeping >= (1 - tolerance) of the
    never-exit accuracy on its items; its realised speedup is measured wall time per token."""
    empty = {"best_policy": None, "best_policy_skip_ratio": None, "best_policy_relative_accuracy": None,
             "best_policy_realised_speedup": None}
    base = part.filter(pl.col("policy") == NEVER_EXIT)
    dynamic = part.filter(pl.col("signal").is_not_null())
    if base.is_empty() or dynamic.is_empty() or not base["accuracy"][0]:
        return empty
    # ties keep the summary's policy order, so the best policy is the same on every rerun
    ok = dynamic.filter(pl.col("relative_accuracy") >= 1 - tolerance - 1e-12).sort("skip_ratio", descending=True, maintain_order=True)
    if ok.is_empty():
        return empty
    top = ok.row(0, named=True)
    base_ms = base["ms_per_token"][0]
    return {"best_policy": top["policy"], "best_policy_skip_ratio": top["skip_ratio"],
            "best_policy_relative_accuracy": top["relative_accuracy"],
            "best_policy_realised_speedup": base_ms / top["ms_per_token"] if base_ms and top["ms_per_token"] else None}
