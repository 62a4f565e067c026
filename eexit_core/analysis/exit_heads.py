"""Exit heads compared on the same held-out tokens (issue 25): the model's own head (the
logit lens), the tuned lens (a learned affine translator per layer in front of it) and the
shuffled control. Per model × workload × head: the similarity curve, EAS and its gain over
the own head, the first layer whose top-1 agrees with the final layer on half the tokens,
and the token oracle's mean exit and speedup bound, where a translated head's check costs
its d × d translator too. 'ALL' rows: EAS averaged over workloads (as `eas_scores`), the
rest over the model's pooled held-out tokens.

Torch-free: reads the `tuned_lens` partitions' token stats (column `exit_head`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from eexit_core.analysis import oracle
from eexit_core.analysis.adaptability import eas, eas_ideal
from eexit_core.analysis.similarity import layer_means, similarity_curve
from eexit_core.storage.schema import STAT_COLUMNS

EXIT_HEADS = ("own", "tuned", "control")
HALF = 0.5  # the agreement level the half-agreement layer asks for

SIMILARITY_SCHEMA = {"model_id": pl.String, "workload_id": pl.String, "exit_head": pl.String, "layer": pl.Int32,
                     "depth_frac": pl.Float64, "n_tokens": pl.Int64, **{c: pl.Float64 for c in STAT_COLUMNS}}
EAS_SCHEMA = {"model_id": pl.String, "workload_id": pl.String, "exit_head": pl.String, "metric": pl.String,
              "alpha": pl.Float64, "eas": pl.Float64, "eas_own": pl.Float64, "eas_gain": pl.Float64,
              "eas_ideal": pl.Float64, "n_layers": pl.Int64}
HEADS_SCHEMA = {"model_id": pl.String, "workload_id": pl.String, "exit_head": pl.String, "n_layers": pl.Int64,
                "n_prompts": pl.Int64, "n_tokens": pl.Int64, "half_agreement_layer": pl.Int64,
                "mean_kl_below_last": pl.Float64, "mean_oracle_exit_layer": pl.Float64, "speedup_bound": pl.Float64,
                "speedup_bound_with_check": pl.Float64, "check_cost_frac": pl.Float64}
FIT_SCHEMA = {"model_id": pl.String, "exit_head": pl.String, "layer": pl.Int64, "kl_own": pl.Float64,
              "kl_start": pl.Float64, "kl_fit": pl.Float64, "kept": pl.String, "kl_validation_own": pl.Float64,
              "kl_validation": pl.Float64, "n_train_tokens": pl.Int64}


def head_similarity(stats: pl.DataFrame) -> pl.DataFrame:
    """Per model × workload × exit head × layer: the mean of every stat over held-out tokens."""
    frames = []
    for (model_id, workload_id, head), part in stats.group_by(["model_id", "workload_id", "exit_head"],
                                                              maintain_order=True):
        means = layer_means(part, int(part["layer"].max()))
        frames.append(means.with_columns(pl.lit(model_id).alias("model_id"), pl.lit(workload_id).alias("workload_id"),
                                         pl.lit(head).alias("exit_head")))
    if not frames:
        return pl.DataFrame(schema=SIMILARITY_SCHEMA)
    table = pl.concat(frames, how="diagonal_relaxed")
    table = table.with_columns(pl.lit(None, dtype=pl.Float64).alias(c) for c in STAT_COLUMNS if c not in table.columns)
    return table.select([pl.col(c).cast(t) for c, t in SIMILARITY_SCHEMA.items()]).sort("model_id", "workload_id",
                                                                                       "exit_head", "layer")


def head_eas(similarity: pl.DataFrame, *, metrics: Sequence[str], alphas: Sequence[float]) -> pl.DataFrame:
    """EAS per model × workload × head × metric × α, beside the own head's on the same
    tokens (`eas_gain` = eas − eas_own); 'ALL': the mean over workloads."""
    rows = []
    for (model_id, workload_id, head), part in similarity.group_by(["model_id", "workload_id", "exit_head"],
                                                                   maintain_order=True):
        for metric in [m for m in metrics if part[m].null_count() < part.height]:
            curve = similarity_curve(part, metric)
            rows += [{"model_id": model_id, "workload_id": workload_id, "exit_head": head, "metric": metric,
                      "alpha": alpha, "eas": eas(curve, alpha), "eas_ideal": eas_ideal(part.height, alpha),
                      "n_layers": part.height} for alpha in alphas]
    if not rows:
        return pl.DataFrame(schema=EAS_SCHEMA)
    per_workload = pl.DataFrame(rows)
    per_model = (per_workload.group_by(["model_id", "exit_head", "metric", "alpha"], maintain_order=True)
                 .agg(pl.col("eas").mean(), pl.col("eas_ideal").first(), pl.col("n_layers").first())
                 .with_columns(pl.lit("ALL").alias("workload_id")).select(per_workload.columns))
    scores = pl.concat([per_workload, per_model])
    own = scores.filter(pl.col("exit_head") == "own").select("model_id", "workload_id", "metric", "alpha",
                                                             pl.col("eas").alias("eas_own"))
    scores = scores.join(own, on=["model_id", "workload_id", "metric", "alpha"], how="left", maintain_order="left")
    return scores.with_columns((pl.col("eas") - pl.col("eas_own")).alias("eas_gain")).select(
        [pl.col(c).cast(t) for c, t in EAS_SCHEMA.items()])


def half_agreement_layer(layer_top1: pl.DataFrame) -> int | None:
    """The first layer whose mean top-1 agreement with the final layer is at least one half."""
    reached = layer_top1.filter(pl.col("top1_match") >= HALF).sort("layer")
    return int(reached["layer"][0]) if reached.height else None


def head_summary(stats: pl.DataFrame, check_costs: Mapping[str, Mapping[str, float]]) -> pl.DataFrame:
    """Per model × workload × head (and 'ALL': the model's pooled held-out tokens): the
    half-agreement layer, the mean KL to the final layer below the last, and the token
    oracle's mean exit ("first" criterion) and speedup bound, without and with a check at
    every layer (`oracle_exits`' definitions)."""
    rows = []
    scopes = [(keys, part) for keys, part in stats.group_by(["model_id", "workload_id", "exit_head"], maintain_order=True)]
    scopes += [((m, "ALL", h), part.with_columns(pl.struct("workload_id", "sample").rank("dense").alias("sample")))
               for (m, h), part in stats.group_by(["model_id", "exit_head"], maintain_order=True)]
    for (model_id, workload_id, head), part in scopes:
        n_layers = int(part["layer"].max())
        per_layer = part.group_by("layer").agg(pl.col("top1_match").cast(pl.Float64).mean(),
                                               pl.col("kl_to_final").cast(pl.Float64).mean())
        check = check_costs[model_id][head]
        bound = oracle.summarise(oracle.oracle_exit_layers(part, "first"), n_layers, check)
        rows.append({
            "model_id": model_id, "workload_id": workload_id, "exit_head": head, "n_layers": n_layers,
            "n_prompts": part.select(pl.struct("workload_id", "sample").n_unique()).item(),
            "n_tokens": part.filter(pl.col("layer") == 1).height,
            "half_agreement_layer": half_agreement_layer(per_layer),
            "mean_kl_below_last": float(per_layer.filter(pl.col("layer") < n_layers)["kl_to_final"].mean() or 0.0),
            "mean_oracle_exit_layer": bound["mean_exit_layer"], "speedup_bound": bound["speedup_bound"],
            "speedup_bound_with_check": bound["speedup_bound_with_check"], "check_cost_frac": check,
        })
    return pl.DataFrame(rows, schema=HEADS_SCHEMA) if rows else pl.DataFrame(schema=HEADS_SCHEMA)


def check_costs(d_model: int, vocab_size: int, params_total: int, n_layers: int, tied: bool) -> dict[str, float]:
    """One exit check relative to one block: the norm and LM head, and for a translated
    head also its d × d translator (the control's is as large)."""
    own = oracle.exit_check_cost(d_model, vocab_size, params_total, n_layers, tied)
    translator = own * d_model / vocab_size  # d² against d·V, over the same block cost
    return {"own": own, "tuned": own + translator, "control": own + translator}
