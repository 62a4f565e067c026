"""Data-quality checks of each stage's output, as plain Polars predicates: the assets run
them on the partition they just wrote and report them as that asset's checks."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from eexit_core import settings

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


# --- the results store: one check per published table ------------------------------------


def _per_partition(table: pl.DataFrame, check) -> CheckOutcome:
    """`check` on each model × workload of a store table; passes when every one does."""
    if table.is_empty():
        return CheckOutcome(True, {"rows": 0, "failing_partitions": 0})
    failing = sum(not check(part).passed for _, part in table.group_by(["model_id", "workload_id"], maintain_order=True))
    return CheckOutcome(failing == 0, {"rows": table.height, "failing_partitions": failing})


def zoo_training_ok(table: pl.DataFrame) -> CheckOutcome:
    """Finite positive losses, a positive unigram baseline, tokens that grow with the step
    (none at step 0); no rows before the zoo has trained."""
    if table.height == 0:
        return CheckOutcome(True, {"rows": 0})
    ok = (pl.col("val_loss").is_finite() & (pl.col("val_loss") > 0) & (pl.col("unigram_entropy") > 0)
          & ((pl.col("step") == 0) == (pl.col("tokens") == 0))
          & (pl.col("train_loss").is_null() | pl.col("train_loss").is_finite()))
    bad = _violations(table, ok)
    return CheckOutcome(bad == 0, {"violations": bad, "rows": table.height})


def zoo_corpus_ok(manifest: dict) -> CheckOutcome:
    """Both splits hold documents and tokens, and the unigram entropy lies in (0, log V]."""
    import math

    docs, tokens = manifest["documents"], manifest["tokens"]
    entropy = manifest["unigram_entropy"]
    ok = (min(docs["train"], docs["validation"], tokens["train"], tokens["validation"]) > 0
          and 0 < entropy <= math.log(manifest["vocab_size"]) + 1e-9)
    return CheckOutcome(ok, {"documents": docs, "tokens": tokens, "unigram_entropy": entropy})


def learned_language(final: dict, recipe: str, bar: float = settings.LEARNED_LANGUAGE_NATS) -> CheckOutcome:
    """A base model's last checkpoint is `bar` nats below the corpus's unigram entropy
    (a post-trained or early-exit-aware model is reported, not held to it)."""
    below = final["unigram_entropy"] - final["val_loss"]
    metadata = {"val_loss": final["val_loss"], "unigram_entropy": final["unigram_entropy"],
                "below_unigram": below, "bar": bar, "shortfall": max(0.0, bar - below), "recipe": recipe}
    return CheckOutcome(recipe != "base" or below >= bar, metadata)


def models_table_ok(models: pl.DataFrame) -> CheckOutcome:
    """Every registered model says whether it ran: an available one carries its checkpoint
    checksum, an unavailable one the reason (which names what to install or set)."""
    ok = (pl.col("available").is_not_null()
          & pl.when(pl.col("available")).then(pl.col("checksum").is_not_null())
          .otherwise(pl.col("unavailable_reason").is_not_null()))
    bad = _violations(models, ok)
    return CheckOutcome(bad == 0 and models.height > 0, {"violations": bad, "rows": models.height})


def workloads_table_ok(workloads: pl.DataFrame) -> CheckOutcome:
    """An available workload has prompts; an unavailable one says why."""
    ok = pl.when(pl.col("available")).then(pl.col("n_prompts").gt(0)).otherwise(pl.col("unavailable_reason").is_not_null())
    bad = _violations(workloads, ok)
    return CheckOutcome(bad == 0 and workloads.height > 0, {"violations": bad, "rows": workloads.height})


def prompts_table_ok(prompts: pl.DataFrame) -> CheckOutcome:
    """Every prompt has text."""
    bad = _violations(prompts, pl.col("text").str.len_chars().gt(0))
    return CheckOutcome(bad == 0 and prompts.height > 0, {"violations": bad, "rows": prompts.height})


def layer_similarity_table_ok(table: pl.DataFrame) -> CheckOutcome:
    """`layer_similarity_in_range` on every model × workload of the store table."""
    return _per_partition(table, lambda part: layer_similarity_in_range(part, int(part["layer"].max())))


def exit_accuracy_table_ok(table: pl.DataFrame) -> CheckOutcome:
    """`exit_accuracy_in_range` on every model × workload of the store table."""
    return _per_partition(table, exit_accuracy_in_range)


def exit_items_table_ok(items: pl.DataFrame) -> CheckOutcome:
    """Every item row is graded, and its layers used lie within 1..L of its model (static
    rows at their exit layer exactly)."""
    if items.is_empty():
        return CheckOutcome(True, {"violations": 0, "rows": 0})
    ok = pl.col("correct").is_not_null() & (
        pl.col("mean_layers").is_nan() | pl.col("mean_layers").ge(1)) & (
        pl.col("policy").ne("static") | pl.col("mean_layers").eq(pl.col("exit_layer").cast(pl.Float64)))
    bad = _violations(items, ok)
    return CheckOutcome(bad == 0, {"violations": bad, "rows": items.height})


def exit_skip_bounds_ok(bounds: pl.DataFrame) -> CheckOutcome:
    """Accuracies, skip ratios and p-values in [0, 1] where defined, speedups at least 1."""
    ok = pl.lit(True)
    for column in ("full_accuracy", "max_skip_ratio", "oracle_item_skip_ratio", "chance_accuracy", "above_chance_p"):
        ok = ok & (pl.col(column).is_null() | _in(column, 0, 1))
    for column in ("static_speedup", "oracle_item_speedup", "token_oracle_speedup"):
        ok = ok & (pl.col(column).is_null() | pl.col(column).ge(1 - 1e-9))
    bad = _violations(bounds, ok)
    return CheckOutcome(bad == 0, {"violations": bad, "rows": bounds.height})


def correlation_table_ok(table: pl.DataFrame) -> CheckOutcome:
    """Spearman coefficients in [-1, 1] inside their bootstrap interval (NaN where a scope
    has no variation), and one best metric per scope."""
    rho = pl.col("spearman")
    ok = rho.is_nan() | (rho.is_between(-1 - 1e-9, 1 + 1e-9)
                         & (pl.col("ci_low").is_nan() | pl.col("ci_low").le(pl.col("ci_high"))))
    bad = _violations(table, ok)
    best = table.group_by("scope").agg(pl.col("best").sum().alias("n_best"))
    several = best.filter(pl.col("n_best") > 1).height
    return CheckOutcome(bad == 0 and several == 0, {"violations": bad, "scopes_with_several_best": several})


def _ordered_interval(value: str) -> pl.Expr:
    """ci_low <= value <= ci_high where the interval exists (a tiny slack for float32 sums)."""
    return (pl.col("ci_low").is_null() | pl.col("ci_low").is_nan()
            | ((pl.col("ci_low") <= pl.col(value) + 1e-9) & (pl.col(value) <= pl.col("ci_high") + 1e-9)))


def eas_intervals_ok(table: pl.DataFrame) -> CheckOutcome:
    """EAS within [0, 1] and inside its own interval (a percentile interval holds its point
    estimate unless the replicates are badly skewed: then this flags it for a look)."""
    ok = _in("eas", 0.0, 1.0) & _ordered_interval("eas") & (pl.col("n_prompts") > 0)
    bad = _violations(table, ok)
    return CheckOutcome(bad == 0, {"violations": bad, "rows": table.height})


def oracle_intervals_ok(table: pl.DataFrame) -> CheckOutcome:
    """Speedup bounds of at least 1 inside their intervals, skip ratios in [0, 1) inside theirs."""
    ok = ((pl.col("speedup_bound") >= 1.0 - 1e-9) & _ordered_interval("speedup_bound")
          & _in("skip_ratio", 0.0, 1.0) & (pl.col("skip_ci_low") <= pl.col("skip_ratio") + 1e-9)
          & (pl.col("skip_ratio") <= pl.col("skip_ci_high") + 1e-9))
    bad = _violations(table, ok)
    return CheckOutcome(bad == 0, {"violations": bad, "rows": table.height})


def factor_contrasts_ok(table: pl.DataFrame) -> CheckOutcome:
    """Differences of two EAS lie in [-1, 1], with ordered intervals and at least one pair."""
    ok = (_in("delta", -1.0, 1.0) & (pl.col("ci_low").is_nan() | (pl.col("ci_low") <= pl.col("ci_high")))
          & (pl.col("n_pairs") >= 1))
    bad = _violations(table, ok)
    return CheckOutcome(bad == 0, {"violations": bad, "rows": table.height})


def variance_share_ok(table: pl.DataFrame) -> CheckOutcome:
    """Each estimable decomposition's shares are in [0, 1] and add up to 1."""
    estimable = table.filter(pl.col("share").is_not_null())
    sums = estimable.group_by("scope", "metric", "alpha").agg(pl.col("share").sum().alias("total"))
    bad = _violations(estimable, _in("share", 0.0, 1.0)) + _violations(sums, _in("total", 1 - 1e-6, 1 + 1e-6))
    return CheckOutcome(bad == 0, {"violations": bad, "rows": table.height})


def training_dynamics_ok(table: pl.DataFrame) -> CheckOutcome:
    """EAS in [0, 1] within its interval, tokens that grow with the step, agreement a rate."""
    ok = (_in("eas", 0.0, 1.0) & _ordered_interval("eas")
          & (pl.col("top1_at_half_depth").is_null() | _in("top1_at_half_depth", 0.0, 1.0)))
    order = table.sort("step").group_by("variant", "seed", "metric").agg(pl.col("tokens").diff().min().alias("step_up"))
    bad = _violations(table, ok) + _violations(order, pl.col("step_up").is_null() | (pl.col("step_up") > 0))
    return CheckOutcome(bad == 0, {"violations": bad, "rows": table.height})


def published_eas_ok(table: pl.DataFrame) -> CheckOutcome:
    """The study's six values, each with its source; ours beside them only where measured."""
    ok = _in("eas", 0.0, 1.0) & pl.col("source").is_not_null() & (pl.col("measured_eas").is_null() | _in("measured_eas", 0.0, 1.0))
    bad = _violations(table, ok)
    return CheckOutcome(bad == 0 and table.height == 6, {"violations": bad, "rows": table.height})


def factor_regression_ok(table: pl.DataFrame) -> CheckOutcome:
    """Each row is an estimate with an ordered interval and the confounding note, or says
    why it is not estimable (never a bare number over too few models)."""
    estimated = pl.col("estimate").is_not_null() & pl.col("estimate").is_finite() & (pl.col("n_models") >= 4) \
        & (pl.col("ci_low").is_nan() | (pl.col("ci_low") <= pl.col("ci_high"))) & pl.col("note").str.contains("confounded")
    not_estimable = pl.col("estimate").is_null() & pl.col("note").str.starts_with("not estimable")
    bad = _violations(table, estimated | not_estimable)
    return CheckOutcome(bad == 0, {"violations": bad, "rows": table.height})


def speculation_lossless(items: pl.DataFrame) -> CheckOutcome:
    """Every self-speculative decoding gave greedy decoding's tokens, and its counts are
    those of a verify step: at each draft position no more accepted than proposed, and a
    draft checked at position j + 1 exactly when the one at j was accepted."""
    if items.is_empty():
        return CheckOutcome(True, {"violations": 0, "rows": 0})
    within = (pl.col("drafted_at") - pl.col("accepted_at")).list.min() >= 0
    chained = pl.col("drafted_at").list.slice(1) == pl.col("accepted_at").list.slice(0, pl.col("accepted_at").list.len() - 1)
    bad = _violations(items, pl.col("matches_greedy") & within & chained)
    return CheckOutcome(bad == 0, {"violations": bad, "rows": items.height})


def first_draft_acceptance(items: pl.DataFrame) -> float | None:
    """Accepted over proposed first drafts, over every item (the asset's headline)."""
    drafted = items["drafted_at"].list.first().sum() if items.height else 0
    return None if not drafted else float(items["accepted_at"].list.first().sum() / drafted)


def self_speculation_table_ok(table: pl.DataFrame) -> CheckOutcome:
    """Lossless rows; acceptance rates in [0, 1] where drafted; speedups and costs positive
    where measured; exactly one chosen (l, k) per model × workload, on both halves."""
    acceptance_ok = pl.col("acceptance").list.eval(pl.element().is_null() | pl.element().is_between(0.0, 1.0)).list.all()
    positive = [(pl.col(c).is_null() | (pl.col(c) > 0)) for c in ("realised_speedup", "draft_step_cost", "verify_cost")]
    ok = pl.col("lossless") & acceptance_ok
    for expr in positive:
        ok = ok & expr
    bad = _violations(table, ok)
    chosen = table.filter(pl.col("chosen")).group_by("model_id", "workload_id").agg(
        pl.struct("exit_layer", "draft_len").n_unique().alias("configs"), pl.col("split").n_unique().alias("splits"))
    bad += chosen.filter((pl.col("configs") != 1) | (pl.col("splits") > 2)).height
    return CheckOutcome(bad == 0, {"violations": bad, "rows": table.height})


def self_speculation_items_ok(items: pl.DataFrame) -> CheckOutcome:
    """`speculation_lossless` on every item of the store table."""
    return speculation_lossless(items)


def exit_head_similarity_ok(table: pl.DataFrame) -> CheckOutcome:
    """Stats within their ranges for every exit head; at the last layer every head reads the
    model's own output, so its top-1 agrees and its KL is zero."""
    failing = sum(not layer_similarity_in_range(part, int(part["layer"].max())).passed
                  for _, part in table.group_by(["model_id", "workload_id", "exit_head"]))
    last = table.filter(pl.col("layer") == pl.col("layer").max().over("model_id"))
    bad = last.filter((pl.col("top1_match") < 1.0) | (pl.col("kl_to_final").abs() > 1e-3)).height
    return CheckOutcome(failing == 0 and bad == 0, {"rows": table.height, "failing_partitions": failing,
                                                    "last_layer_violations": bad})


def exit_head_eas_ok(table: pl.DataFrame) -> CheckOutcome:
    """EAS within [0, EAS_ideal] for every head, and the gain equal to EAS minus the own head's."""
    ok = (pl.col("eas").is_between(0.0, pl.col("eas_ideal") + 1e-9)
          & ((pl.col("eas_gain") - (pl.col("eas") - pl.col("eas_own"))).abs() < 1e-9))
    bad = _violations(table, ok)
    return CheckOutcome(bad == 0, {"violations": bad, "rows": table.height})


def exit_heads_ok(table: pl.DataFrame) -> CheckOutcome:
    """Half-agreement and mean oracle exit layers within 1..L, the speedup bound at least 1
    and the one with checks positive."""
    ok = ((pl.col("half_agreement_layer").is_null() | pl.col("half_agreement_layer").is_between(1, pl.col("n_layers")))
          & pl.col("mean_oracle_exit_layer").is_between(1.0, pl.col("n_layers").cast(pl.Float64))
          & (pl.col("speedup_bound") >= 1.0) & (pl.col("speedup_bound_with_check") > 0))
    bad = _violations(table, ok)
    return CheckOutcome(bad == 0, {"violations": bad, "rows": table.height})


def tuned_no_worse_held_out(stats: pl.DataFrame) -> CheckOutcome:
    """On held-out tokens, at every layer below the last, the tuned head's mean KL to the
    final distribution is no worse than the own head's beyond sampling noise (the paired
    per-token difference's mean within two standard errors above zero)."""
    paired = (stats.filter(pl.col("exit_head").is_in(["own", "tuned"]))
              .pivot(on="exit_head", index=["workload_id", "sample", "position", "layer"], values="kl_to_final")
              .with_columns((pl.col("tuned").cast(pl.Float64) - pl.col("own").cast(pl.Float64)).alias("gap")))
    last = paired["layer"].max() if paired.height else 0
    per_layer = (paired.filter(pl.col("layer") < last).group_by("layer")
                 .agg(pl.col("gap").mean().alias("mean"), (2 * pl.col("gap").std() / pl.len().sqrt()).alias("noise"))
                 .sort("layer"))
    worse = per_layer.filter(pl.col("mean") > pl.col("noise").fill_null(0.0) + 1e-6)["layer"].to_list()
    return CheckOutcome(not worse, {"worse_layers": worse, "layers": per_layer.height})


def control_gains_nothing(stats: pl.DataFrame, constant_kl: float) -> CheckOutcome:
    """On held-out tokens the shuffled control's mean KL at every layer is no better than
    both the own head's and the best constant prediction's (5 % slack): what it learned
    needs no token."""
    per_layer = stats.group_by("exit_head", "layer").agg(pl.col("kl_to_final").cast(pl.Float64).mean())
    wide = per_layer.pivot(on="exit_head", index="layer", values="kl_to_final").sort("layer")
    last = wide["layer"].max() if wide.height else 0
    floor = pl.min_horizontal(pl.col("own"), pl.lit(constant_kl))
    better = wide.filter((pl.col("layer") < last) & (pl.col("control") < 0.95 * floor))["layer"].to_list()
    return CheckOutcome(not better, {"better_layers": better, "constant_kl": constant_kl})


def tuned_lens_fit_ok(table: pl.DataFrame) -> CheckOutcome:
    """The tuned lens keeps, on every layer, a translator no worse than the own head where
    it was chosen (validation tokens; the training tokens without them); KLs non-negative."""
    tuned = pl.col("exit_head") == "tuned"
    chosen_on_validation = pl.col("kl_validation").is_not_null()
    no_worse = (pl.when(chosen_on_validation).then(pl.col("kl_validation") <= pl.col("kl_validation_own") + 1e-6)
                .otherwise(pl.col("kl_fit") <= pl.col("kl_own") + 1e-6))
    ok = (pl.col("kl_own") >= -1e-6) & (pl.col("kl_fit") >= -1e-6) & (~tuned | no_worse)
    bad = _violations(table, ok)
    return CheckOutcome(bad == 0, {"violations": bad, "rows": table.height})


# store table -> the check of its rows (every table `eas_scores` publishes has one; a
# cosine-only run publishes no oracle exits)
STORE_TABLE_CHECKS = {
    "models": models_table_ok,
    "workloads": workloads_table_ok,
    "prompts": prompts_table_ok,
    "layer_similarity": layer_similarity_table_ok,
    "oracle_exits": lambda table: oracle_exits_in_range(table) if table.height else CheckOutcome(True, {"rows": 0}),
    "eas_scores": eas_in_range,
    "exit_accuracy": exit_accuracy_table_ok,
    "exit_items": exit_items_table_ok,
    "exit_skip_bounds": exit_skip_bounds_ok,
    "similarity_accuracy_correlation": correlation_table_ok,
    "zoo_training": zoo_training_ok,
    "eas_intervals": eas_intervals_ok,
    "oracle_intervals": oracle_intervals_ok,
    "factor_contrasts": factor_contrasts_ok,
    "variance_share": variance_share_ok,
    "training_dynamics": training_dynamics_ok,
    "published_eas": published_eas_ok,
    "factor_regression": factor_regression_ok,
    "self_speculation": self_speculation_table_ok,
    "self_speculation_items": self_speculation_items_ok,
    "exit_head_similarity": exit_head_similarity_ok,
    "exit_head_eas": exit_head_eas_ok,
    "exit_heads": exit_heads_ok,
    "tuned_lens_fit": tuned_lens_fit_ok,
}
