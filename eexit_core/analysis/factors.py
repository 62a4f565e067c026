"""Which factors move EAS (RQ2, issue 15): controlled contrasts between zoo variants that
differ in one factor, EAS over training, and the study's published values beside ours.

Contrasts pair a variant with its baseline at each seed (same data order, same token
budget, both measured on the same prompts), so a seed's difference is paired by prompt
too: its bootstrap replicates are the differences of the two models' replicates under the
same prompt draws (`analysis/uncertainty.py`). The interval accounts for both sources:
each replicate also redraws the seeds with replacement (a two-level bootstrap, seeds then
prompts) and averages the drawn seeds' differences. With two seeds the seed level has
three distinct draws, so the interval is wide when the seeds disagree; it is the honest
width for two seeds, and the table says how many there were.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from eexit_core.analysis.uncertainty import interval

CONTRAST_SCHEMA = {"factor": pl.String, "level": pl.String, "baseline": pl.String, "workload_id": pl.String,
                   "metric": pl.String, "alpha": pl.Float64, "delta": pl.Float64, "ci_low": pl.Float64,
                   "ci_high": pl.Float64, "n_pairs": pl.Int64, "seeds": pl.String, "step": pl.Int64,
                   "baseline_step": pl.Int64}
DYNAMICS_SCHEMA = {"variant": pl.String, "seed": pl.Int64, "step": pl.Int64, "metric": pl.String, "alpha": pl.Float64,
                   "arch_class": pl.String, "recipe": pl.String, "tokens": pl.Int64, "eas": pl.Float64,
                   "ci_low": pl.Float64, "ci_high": pl.Float64, "top1_at_half_depth": pl.Float64, "model_id": pl.String}


@dataclass(frozen=True)
class ZooCheckpoint:
    model_id: str
    variant: str  # e.g. zoo-dense-s-base (no seed)
    arch: str  # dense | moe-active | moe-total | ssm | hybrid
    size: str
    recipe: str
    seed: int
    step: int
    tokens: int


@dataclass(frozen=True)
class Contrast:
    factor: str
    level: str  # a variant
    baseline: str  # the variant it differs from in `factor` only
    later: bool = False  # training progress: the level is the baseline's own last checkpoint


def zoo_checkpoints(models) -> list[ZooCheckpoint]:
    """The zoo's checkpoints among registry entries (`ModelEntry` with `zoo` facts)."""
    out = []
    for entry in models:
        if entry.zoo is None:
            continue
        arch = f"moe-{entry.zoo.moe_match}" if entry.zoo.moe_match else entry.arch_class
        out.append(ZooCheckpoint(entry.model_id, entry.zoo.variant, arch, entry.zoo.size, entry.zoo.recipe,
                                 entry.zoo.seed, entry.zoo.step, entry.zoo.training_tokens))
    return out


def zoo_contrasts(checkpoints: Sequence[ZooCheckpoint]) -> list[Contrast]:
    """Every one-factor comparison the measured zoo allows, against the dense base model of
    the smallest size: arch class, size, recipe, and its base's last against its middle
    checkpoint (training progress)."""
    variants = {c.variant: c for c in checkpoints}
    dense_base = sorted((c for c in variants.values() if c.arch == "dense" and c.recipe == "base"),
                        key=lambda c: _size_rank(c.size))
    if not dense_base:
        return []
    base = dense_base[0]
    out = []
    for name, c in sorted(variants.items()):
        if name == base.variant:
            continue
        if c.size == base.size and c.recipe == "base" and c.arch != "dense":
            out.append(Contrast("arch_class", name, base.variant))
        elif c.arch == "dense" and c.recipe == "base" and c.size != base.size:
            out.append(Contrast("size", name, base.variant))
        elif c.arch == "dense" and c.size == base.size and c.recipe != "base":
            out.append(Contrast("recipe", name, base.variant))
    out.append(Contrast("training_progress", base.variant, base.variant, later=True))
    return out


def _size_rank(size: str) -> int:
    from eexit_core.zoo.variants import SIZES

    return list(SIZES).index(size) if size in SIZES else len(SIZES)


def final_and_middle(checkpoints: Sequence[ZooCheckpoint]) -> dict[tuple[str, int], tuple[ZooCheckpoint, ZooCheckpoint | None]]:
    """Per (variant, seed): its last checkpoint and the one before it."""
    by_key: dict[tuple[str, int], list[ZooCheckpoint]] = {}
    for c in checkpoints:
        by_key.setdefault((c.variant, c.seed), []).append(c)
    out = {}
    for key, cs in by_key.items():
        cs = sorted(cs, key=lambda c: c.step)
        out[key] = (cs[-1], cs[-2] if len(cs) > 1 else None)
    return out


def factor_contrasts(boot: dict, checkpoints: Sequence[ZooCheckpoint], *, metrics: Sequence[str],
                     alphas: Sequence[float], seed: int) -> pl.DataFrame:
    """The `factor_contrasts` table: level minus baseline EAS per workload (and 'ALL'),
    metric and alpha, over the seeds both were trained at; the interval redraws seeds and
    prompts (see the module's docstring)."""
    ends = final_and_middle(checkpoints)
    workloads = sorted({key[1] for key in boot})
    rows = []
    for index, contrast in enumerate(zoo_contrasts(checkpoints)):
        seeds = sorted(s for (v, s) in ends if v == contrast.level and (contrast.baseline, s) in ends)
        pairs = []
        for s in seeds:
            level_end, level_middle = ends[(contrast.level, s)]
            baseline = level_middle if contrast.later else ends[(contrast.baseline, s)][0]
            if baseline is not None:
                pairs.append((s, level_end, baseline))
        if not pairs:
            continue
        rng = np.random.default_rng([seed, index])
        for metric in metrics:
            for alpha in alphas:
                for workload in workloads:
                    diffs = []
                    for _, level, baseline in pairs:
                        a, b = boot.get((level.model_id, workload, metric, alpha)), boot.get((baseline.model_id, workload, metric, alpha))
                        if a is not None and b is not None:
                            diffs.append((a[0] - b[0], a[1] - b[1]))
                    if len(diffs) < len(pairs):
                        continue
                    points = np.array([d[0] for d in diffs])
                    replicates = np.stack([d[1] for d in diffs])  # [seeds, n_boot]
                    drawn = rng.integers(0, len(diffs), size=(replicates.shape[1], len(diffs)))
                    pooled = replicates[drawn, np.arange(replicates.shape[1])[:, None]].mean(axis=1)
                    low, high = interval(pooled)
                    rows.append({"factor": contrast.factor, "level": contrast.level, "baseline": contrast.baseline,
                                 "workload_id": workload, "metric": metric, "alpha": alpha,
                                 "delta": float(points.mean()), "ci_low": low, "ci_high": high, "n_pairs": len(diffs),
                                 "seeds": ",".join(str(p[0]) for p in pairs), "step": pairs[0][1].step,
                                 "baseline_step": pairs[0][2].step})
    frame = pl.DataFrame(rows, schema=CONTRAST_SCHEMA)
    # the training-progress contrast compares a variant with itself: its level is named by its steps
    return frame.with_columns(
        pl.when(pl.col("factor") == "training_progress")
        .then(pl.format("{}@step-{}", pl.col("level"), pl.col("step"))).otherwise(pl.col("level")).alias("level"),
        pl.when(pl.col("factor") == "training_progress")
        .then(pl.format("{}@step-{}", pl.col("baseline"), pl.col("baseline_step"))).otherwise(pl.col("baseline")).alias("baseline"),
    ).sort("factor", "level", "workload_id", "metric", "alpha")


def training_dynamics(intervals: pl.DataFrame, similarity: pl.DataFrame, checkpoints: Sequence[ZooCheckpoint],
                      alpha: float = 0.5) -> pl.DataFrame:
    """The `training_dynamics` table: per zoo checkpoint and metric, EAS over its workloads
    ('ALL', with its interval) at `alpha`, the tokens it had read, and how often layer L/2
    already predicts the final top-1 token (mean over the workloads)."""
    if not checkpoints:
        return pl.DataFrame(schema=DYNAMICS_SCHEMA)
    zoo = pl.DataFrame([{"model_id": c.model_id, "variant": c.variant, "seed": c.seed, "step": c.step, "tokens": c.tokens,
                         "arch_class": c.arch, "recipe": c.recipe} for c in checkpoints])
    half = (similarity.filter(pl.col("model_id").is_in(zoo["model_id"].implode()))
            .with_columns(pl.col("layer").max().over("model_id", "workload_id").alias("_layers"))
            .filter(pl.col("layer") == (pl.col("_layers") + 1) // 2)
            .group_by("model_id").agg(pl.col("top1_match").mean().alias("top1_at_half_depth")))
    eas = intervals.filter((pl.col("workload_id") == "ALL") & (pl.col("alpha") == alpha)).select(
        "model_id", "metric", "alpha", "eas", "ci_low", "ci_high")
    return (zoo.join(eas, on="model_id", how="inner").join(half, on="model_id", how="left")
            .select(list(DYNAMICS_SCHEMA)).cast(DYNAMICS_SCHEMA).sort("variant", "seed", "step", "metric"))


# The study's reported EAS (absolute, alpha 0.5), as SPEC §1 quotes them, and our registry's ids.
PUBLISHED = (("Llama2-7B", "llama-2-7b", 0.52, "2023-07-18"), ("Llama3-8B", "llama-3-8b", 0.46, "2024-04-18"),
             ("Qwen2-7B", "qwen2-7b", 0.36, "2024-06-06"), ("Qwen3-8B", "qwen3-8b", 0.51, "2025-04-29"),
             ("GPT-OSS-20B", "gpt-oss-20b", 0.59, "2025-08-05"), ("LayerSkip-Llama3-8B", "layerskip-llama3-8b", 0.54, "2024-08-01"))
PUBLISHED_REFERENCE = "Llama2-7B"
PUBLISHED_SOURCE = "the study behind eexit (SPEC §1): absolute EAS at alpha 0.5, averaged over its workloads"
PUBLISHED_NOTE = "the similarity metric behind these values is not published; ours is logit_cos unless a row says otherwise"
PUBLISHED_SCHEMA = {"model_name": pl.String, "model_id": pl.String, "eas": pl.Float64, "eas_relative": pl.Float64,
                    "release_date": pl.String, "source": pl.String, "note": pl.String, "measured_eas": pl.Float64,
                    "measured_ci_low": pl.Float64, "measured_ci_high": pl.Float64, "measured_eas_relative": pl.Float64,
                    "measured_metric": pl.String}


def published_eas(scores: pl.DataFrame, intervals: pl.DataFrame, metric: str = "logit_cos",
                  alpha: float = 0.5) -> pl.DataFrame:
    """The `published_eas` table: the study's values and their ratio to its reference,
    beside ours (per-model 'ALL', `metric`, `alpha`) where we measured the same model."""
    reference = dict((name, value) for name, _, value, _ in PUBLISHED)[PUBLISHED_REFERENCE]
    ours = (scores.filter((pl.col("workload_id") == "ALL") & (pl.col("metric") == metric) & (pl.col("alpha") == alpha))
            .select("model_id", pl.col("eas").alias("measured_eas"), pl.col("eas_relative").alias("measured_eas_relative"))
            if scores.height else pl.DataFrame(schema={"model_id": pl.String, "measured_eas": pl.Float64,
                                                      "measured_eas_relative": pl.Float64}))
    bounds = (intervals.filter((pl.col("workload_id") == "ALL") & (pl.col("metric") == metric) & (pl.col("alpha") == alpha))
              .select("model_id", pl.col("ci_low").alias("measured_ci_low"), pl.col("ci_high").alias("measured_ci_high")))
    table = pl.DataFrame([{"model_name": name, "model_id": model_id, "eas": value, "eas_relative": value / reference,
                           "release_date": date, "source": PUBLISHED_SOURCE, "note": PUBLISHED_NOTE}
                          for name, model_id, value, date in PUBLISHED])
    return (table.join(ours, on="model_id", how="left").join(bounds, on="model_id", how="left")
            .with_columns(pl.when(pl.col("measured_eas").is_not_null()).then(pl.lit(metric)).alias("measured_metric"))
            .select(list(PUBLISHED_SCHEMA)).cast(PUBLISHED_SCHEMA))


# --- observational: EAS against the registry's factors over every measured model ----------

REGRESSION_SCHEMA = {"factor": pl.String, "term": pl.String, "estimate": pl.Float64, "ci_low": pl.Float64,
                     "ci_high": pl.Float64, "n_models": pl.Int64, "note": pl.String}
NUMERIC_FACTORS = {  # factor -> how a model's registry row gives its predictor
    "log10_params_total": pl.col("params_total").cast(pl.Float64).log10(),
    "log10_params_active": pl.col("params_active").cast(pl.Float64).log10(),
    "n_layers": pl.col("n_layers").cast(pl.Float64),
    "log10_vocab_size": pl.col("vocab_size").cast(pl.Float64).log10(),
    "release_year": pl.col("release_date").cast(pl.Date).dt.year().cast(pl.Float64)
    + pl.col("release_date").cast(pl.Date).dt.ordinal_day().cast(pl.Float64) / 365.25,
}
CATEGORICAL_FACTORS = ("arch_class", "training")
CONFOUNDED = "observational: models differ in many factors at once (confounded)"


def _ols(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    design = np.column_stack([np.ones(len(y)), x])
    return np.linalg.lstsq(design, y, rcond=None)[0]


def factor_regression(scores: pl.DataFrame, models: pl.DataFrame, *, n_boot: int, seed: int,
                      metric: str = "logit_cos", alpha: float = 0.5) -> pl.DataFrame:
    """The `factor_regression` table: EAS (all workloads) of every measured registered model
    regressed on one registry factor at a time (slope per unit, or a level's difference
    from the most common level), with a bootstrap interval that resamples models; 'not
    estimable' with fewer than four models or a factor that does not vary."""
    eas = scores.filter((pl.col("workload_id") == "ALL") & (pl.col("metric") == metric) & (pl.col("alpha") == alpha)) \
        if scores.height else pl.DataFrame(schema={"model_id": pl.String, "eas": pl.Float64})
    registered = models.filter(pl.col("zoo_variant").is_null()) if "zoo_variant" in models.columns else models
    data = eas.select("model_id", "eas").join(registered, on="model_id", how="inner") if models.height else eas.clear()
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, max(1, data.height), size=(n_boot, data.height))
    rows = []
    y = data["eas"].to_numpy().astype(np.float64) if data.height else np.zeros(0)
    for factor, expr in NUMERIC_FACTORS.items():
        x = data.select(expr.alias("x"))["x"].to_numpy().astype(np.float64) if data.height else np.zeros(0)
        rows.append(_fit(factor, "slope", x, y, draws))
    for factor in CATEGORICAL_FACTORS:
        levels = data[factor].value_counts(sort=True)[factor].to_list() if data.height else []
        if len(levels) < 2:
            rows.append(_not_estimable(factor, "levels", data.height, f"{len(levels)} level(s) measured"))
            continue
        for level in levels[1:]:  # each level against the most common one
            x = (data[factor] == level).cast(pl.Float64).to_numpy()
            rows.append(_fit(factor, f"{level} − {levels[0]}", x, y, draws))
    return pl.DataFrame(rows, schema=REGRESSION_SCHEMA)


def _not_estimable(factor: str, term: str, n: int, why: str) -> dict:
    return {"factor": factor, "term": term, "estimate": None, "ci_low": None, "ci_high": None, "n_models": n,
            "note": f"not estimable: {why}"}


def _fit(factor: str, term: str, x: np.ndarray, y: np.ndarray, draws: np.ndarray) -> dict:
    finite = np.isfinite(x)
    n = int(finite.sum())
    if n < 4:
        return _not_estimable(factor, term, n, f"{n} model(s) with this factor measured; 4 or more are needed")
    if np.ptp(x[finite]) == 0:
        return _not_estimable(factor, term, n, "it does not vary among the measured models")
    estimate = float(_ols(x[finite], y[finite])[1])
    slopes = []
    for draw in draws:
        xb, yb = x[draw], y[draw]
        keep = np.isfinite(xb)
        if keep.sum() >= 3 and np.ptp(xb[keep]) > 0:
            slopes.append(_ols(xb[keep], yb[keep])[1])
    low, high = (np.percentile(slopes, [2.5, 97.5]) if slopes else (np.nan, np.nan))
    return {"factor": factor, "term": term, "estimate": estimate, "ci_low": float(low), "ci_high": float(high),
            "n_models": n, "note": CONFOUNDED}
