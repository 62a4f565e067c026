"""How much of EAS is the model and how much the workload (RQ2's variance share, issue 15).

The observations are per-prompt EAS (each prompt's own similarity curve through EAS), so
a model × workload cell has replicates and the interaction separates from the residual.
The decomposition is the sequential (type I) two-way ANOVA, model first, computed as
differences of least-squares residual sums: mean only, + model, + workload, cell means.
On a balanced table it is the textbook decomposition (`tests/analysis/test_variance.py`
checks it against the closed-form sums of squares); on an unbalanced one it is the
sequential one, and the order (model before workload) is recorded in the table.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from eexit_core.analysis.uncertainty import PromptCurves, eas_rows, prompt_curves, to_similarity

COMPONENTS = ("model", "workload", "interaction", "residual")
VARIANCE_SCHEMA = {"scope": pl.String, "metric": pl.String, "alpha": pl.Float64, "component": pl.String, "df": pl.Int64,
                   "ss": pl.Float64, "share": pl.Float64, "n_models": pl.Int64, "n_workloads": pl.Int64,
                   "n_obs": pl.Int64, "note": pl.String}


def per_prompt_eas(curves_by_partition: dict[tuple[str, str], PromptCurves], metric: str, alpha: float) -> pl.DataFrame:
    """EAS of each prompt's own curve (`prompt_curves` of `metric`): (model_id, workload_id,
    prompt_id, eas)."""
    frames = []
    for (model_id, workload_id), curves in curves_by_partition.items():
        with np.errstate(invalid="ignore", divide="ignore"):
            values = eas_rows(to_similarity(curves.sums / curves.counts, metric), alpha)
        frames.append(pl.DataFrame({"model_id": model_id, "workload_id": workload_id, "prompt_id": curves.prompt_ids,
                                    "eas": values}))
    frame = pl.concat(frames) if frames else pl.DataFrame(schema={"model_id": pl.String, "workload_id": pl.String,
                                                                   "prompt_id": pl.String, "eas": pl.Float64})
    return frame.filter(pl.col("eas").is_finite())


def _residual(design: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """Residual sum of squares of the least-squares fit and the design's rank."""
    beta, _, rank, _ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ beta
    return float(residual @ residual), int(rank)


def _dummies(codes: np.ndarray) -> np.ndarray:
    return (codes[:, None] == np.arange(codes.max() + 1)[None, :]).astype(np.float64)


def two_way_shares(frame: pl.DataFrame, value: str = "eas", first: str = "model_id",
                   second: str = "workload_id") -> list[dict]:
    """Sequential sums of squares of `first`, `second`, their interaction and the residual,
    with degrees of freedom and shares of the total."""
    y = frame[value].to_numpy().astype(np.float64)
    a = np.unique(frame[first].to_numpy(), return_inverse=True)[1]
    b = np.unique(frame[second].to_numpy(), return_inverse=True)[1]
    cells = np.unique(a * (b.max() + 1) + b, return_inverse=True)[1]
    ones = np.ones((y.size, 1))
    fits = [_residual(ones, y), _residual(np.hstack([ones, _dummies(a)]), y),
            _residual(np.hstack([ones, _dummies(a), _dummies(b)]), y), _residual(_dummies(cells), y)]
    total = fits[0][0]
    rows = []
    for component, (before, after) in zip(COMPONENTS[:3], zip(fits, fits[1:], strict=False), strict=True):
        ss = max(0.0, before[0] - after[0])
        rows.append({"component": component, "df": after[1] - before[1], "ss": ss})
    rows.append({"component": "residual", "df": y.size - fits[3][1], "ss": fits[3][0]})
    for row in rows:
        row["share"] = row["ss"] / total if total > 0 else float("nan")
    return rows


def variance_share(sums: pl.DataFrame, scopes: dict[str, Sequence[str]], *, metrics: Sequence[str],
                   alphas: Sequence[float]) -> pl.DataFrame:
    """The `variance_share` table: per scope (a named set of models), metric and alpha, the
    share of per-prompt EAS variance due to the model, the workload, their interaction and
    the prompts within a cell; 'not estimable' with fewer than two models or workloads."""
    rows = []
    for scope, model_ids in scopes.items():
        chosen = sums.filter(pl.col("model_id").is_in(list(model_ids)))
        for metric in metrics:
            curves = prompt_curves(chosen, metric)
            for alpha in alphas:
                frame = per_prompt_eas(curves, metric, alpha)
                n_models, n_workloads = frame["model_id"].n_unique(), frame["workload_id"].n_unique()
                shared = {"scope": scope, "metric": metric, "alpha": alpha, "n_models": n_models,
                          "n_workloads": n_workloads, "n_obs": frame.height}
                if n_models < 2 or n_workloads < 2:
                    rows += [{**shared, "component": c, "df": None, "ss": None, "share": None,
                              "note": f"not estimable: {n_models} model(s), {n_workloads} workload(s)"} for c in COMPONENTS]
                    continue
                rows += [{**shared, **r, "note": "sequential sums of squares, model first"} for r in two_way_shares(frame)]
    return pl.DataFrame(rows, schema=VARIANCE_SCHEMA)
