"""eas_scores: the step that owns the results store (EAS, the dimension tables, the exit tables)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from eexit_core import settings as settings_defaults
from eexit_core.analysis.adaptability import eas_scores, eas_table  # noqa: F401  (eas_table re-exported)
from eexit_core.analysis.exit_summary import ITEM_SCHEMA, SUMMARY_SCHEMA
from eexit_core.analysis.similarity import SIMILARITY_METRICS
from eexit_core.analysis.speculation import ITEM_SCHEMA as SPECULATION_ITEM_SCHEMA
from eexit_core.registry import ModelRegistry, WorkloadRegistry
from eexit_core.stages.checkpoint import read_checkpoint
from eexit_core.stages.common import (
    EXIT_ACCURACY,
    EXIT_ITEMS,
    LAYER_SIMILARITY,
    ORACLE_EXITS,
    SELF_SPECULATION_ITEMS,
    TOKEN_STATS,
    TUNED_LENS,
    MissingUpstreamError,
    registries,
)
from eexit_core.stages.publishable import Publishable, publishable
from eexit_core.storage import store
from eexit_core.storage.artifacts import read_parquet_metadata
from eexit_core.storage.workspace import Workspace


@dataclass(frozen=True)
class ScoreSettings:
    alphas: tuple[float, ...] = settings_defaults.ALPHAS
    metrics: tuple[str, ...] = SIMILARITY_METRICS
    fallback_reference: str | None = None
    tolerance: float = settings_defaults.TOLERANCE  # relative accuracy loss for the max skip ratio (exit_skip_bounds)
    seed: int = 0  # bootstrap seed of the RQ1 and RQ2 intervals
    n_boot: int = settings_defaults.BOOTSTRAP_SAMPLES


def _concat_partitions(files: list[Path], empty_schema: dict | None = None) -> pl.DataFrame:
    """The partition files in one frame, in path order (with `empty_schema` if there are none)."""
    if not files:
        return pl.DataFrame(schema=empty_schema)
    return pl.concat([pl.read_parquet(f) for f in sorted(files)], how="diagonal_relaxed")


def compute_eas(similarity: pl.DataFrame, reference: str | None, settings: ScoreSettings) -> pl.DataFrame:
    """EAS per model × workload × metric × alpha, the per-model 'ALL' rows, and relatives."""
    return eas_scores(similarity, metrics=settings.metrics, alphas=settings.alphas, reference=reference,
                      fallback_reference=settings.fallback_reference)


def _zoo_training(ws: Workspace) -> pl.DataFrame:
    from eexit_core.stages.zoo import zoo_training_table

    return zoo_training_table(ws)


def _models_table(ws: Workspace, models: ModelRegistry) -> pl.DataFrame:
    rows = []
    for entry in models.models:
        record_path = ws.checkpoint_record(entry.model_id)
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
        source = entry.source
        rows.append({
            "model_id": entry.model_id, "display_name": entry.display_name, "family": entry.family,
            "architecture": entry.architecture, "arch_class": entry.arch_class,
            "params_total": entry.params_total, "params_active": entry.params_active,
            "n_layers": entry.n_layers, "d_model": entry.d_model, "vocab_size": entry.vocab_size,
            "context_length": entry.context_length, "release_date": entry.release_date,
            "generation": entry.generation, "training": entry.training,
            "early_exit_tuned": entry.early_exit_tuned, "reference": entry.model_id == models.reference_model,
            "embedded": entry.embedded, "source_kind": source.kind,
            "quantization": getattr(source, "quantization", None), "license": entry.license,
            "available": record.get("available"), "unavailable_reason": record.get("reason"),
            "checksum": record.get("checksum"),
            # the zoo's checkpoints (eexit_core/zoo/): which variant, seed and point in training
            "revision": entry.revision, "zoo_variant": entry.zoo.variant if entry.zoo else None,
            "seed": entry.zoo.seed if entry.zoo else None,
            "training_tokens": entry.zoo.training_tokens if entry.zoo else None,
        })
    return pl.DataFrame(rows, schema_overrides={"revision": pl.String, "zoo_variant": pl.String, "seed": pl.Int64,
                                                "training_tokens": pl.Int64})


def _workloads_table(ws: Workspace, workloads: WorkloadRegistry, published: Publishable) -> pl.DataFrame:
    """Every registered workload; n_prompts counts the published prompts, or for a workload
    whose prompts are not published (not selected, not run) the number a run draws."""
    rows = []
    prompt_files = set(published.paths("prompts"))
    for entry in workloads.workloads:
        path = ws.prompts_path(entry.workload_id)
        n = pl.scan_parquet(path).select(pl.len()).collect().item() if path in prompt_files else entry.n_prompts
        record_path = ws.prompts_record(entry.workload_id)
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
        rows.append({
            "workload_id": entry.workload_id, "domain": entry.domain, "source": entry.source.kind,
            "source_detail": json.dumps(entry.source.model_dump(mode="json"), sort_keys=True),
            "n_prompts": n, "grader": entry.grader, "max_tokens": entry.max_tokens, "seed": entry.seed,
            "chat_template": entry.chat_template, "description": entry.description,
            "available": record.get("available", path.is_file()), "unavailable_reason": record.get("reason"),
        })
    return pl.DataFrame(rows)


ORACLE_SCHEMA = {
    "model_id": pl.String, "workload_id": pl.String, "criterion": pl.String, "n_layers": pl.Int64,
    "mean_exit_layer": pl.Float64, "skip_ratio": pl.Float64, "speedup_bound": pl.Float64,
    "speedup_bound_with_check": pl.Float64, "check_cost_frac": pl.Float64, "n_tokens": pl.Int64,
}

EXIT_ACCURACY_SCHEMA = {"model_id": pl.String, "workload_id": pl.String, **SUMMARY_SCHEMA, "grader": pl.String}
EXIT_ITEMS_SCHEMA = {"model_id": pl.String, "workload_id": pl.String, **ITEM_SCHEMA}


def exit_tables(published: Publishable, similarity: pl.DataFrame, settings: ScoreSettings) -> dict[str, pl.DataFrame]:
    """Exit accuracy, its per-item rows, the max-skip table (RQ3) and RQ1's correlations."""
    from eexit_core.analysis.predictiveness import similarity_accuracy_correlation, skip_table

    accuracy = _concat_partitions(published.paths(EXIT_ACCURACY), EXIT_ACCURACY_SCHEMA)
    items = _concat_partitions(published.paths(EXIT_ITEMS), EXIT_ITEMS_SCHEMA)
    oracle = _concat_partitions(published.paths(ORACLE_EXITS), ORACLE_SCHEMA)
    metrics = [m for m in settings.metrics if m in similarity.columns]
    return {
        "exit_accuracy": accuracy,
        "exit_items": items,
        "exit_skip_bounds": skip_table(accuracy, oracle, settings.tolerance, items, n_boot=settings.n_boot,
                                       seed=settings.seed),
        "similarity_accuracy_correlation": similarity_accuracy_correlation(similarity, items, metrics, seed=settings.seed,
                                                                           n_boot=settings.n_boot),
    }


SPECULATION_ITEMS_SCHEMA = {**SPECULATION_ITEM_SCHEMA, "code_version": pl.String, "model_checksum": pl.String,
                            "workload_checksum": pl.String, "seed": pl.Int64}


def speculation_tables(published: Publishable, similarity: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Lossless self-speculation: its items, and per (l, k) and half of the prompts what it
    realised beside what the lens's top-1 agreement predicted (issue 16)."""
    from eexit_core.analysis.speculation import summarise_speculation

    items = _concat_partitions(published.paths(SELF_SPECULATION_ITEMS), SPECULATION_ITEMS_SCHEMA)
    return {"self_speculation": summarise_speculation(items, similarity), "self_speculation_items": items}


def tuned_lens_tables(ws: Workspace, published: Publishable, models: ModelRegistry,
                      settings: ScoreSettings) -> dict[str, pl.DataFrame]:
    """The exit heads on held-out tokens (own, tuned, control) and the tuned lens's fit (issue 25)."""
    from eexit_core.analysis import exit_heads
    from eexit_core.stages.oracle_exits import head_is_tied

    files = published.paths(TUNED_LENS)
    stats = pl.concat([pl.read_parquet(f) for f in sorted(files)], how="diagonal_relaxed") if files else None
    fit_files = published.paths(f"{TUNED_LENS}_fit")
    fits = (pl.concat([pl.read_parquet(f).with_columns(pl.lit(read_parquet_metadata(f).get("n_train_tokens"))
                                                       .alias("n_train_tokens")) for f in sorted(fit_files)])
            .select([pl.col(c).cast(t) for c, t in exit_heads.FIT_SCHEMA.items()])
            if fit_files else pl.DataFrame(schema=exit_heads.FIT_SCHEMA))
    if stats is None:
        return {"exit_head_similarity": pl.DataFrame(schema=exit_heads.SIMILARITY_SCHEMA),
                "exit_head_eas": pl.DataFrame(schema=exit_heads.EAS_SCHEMA),
                "exit_heads": pl.DataFrame(schema=exit_heads.HEADS_SCHEMA), "tuned_lens_fit": fits}
    costs = {}
    for model_id in stats["model_id"].unique().to_list():
        entry = models.get(model_id)
        n_layers = int(stats.filter(pl.col("model_id") == model_id)["layer"].max())
        costs[model_id] = exit_heads.check_costs(entry.d_model, entry.vocab_size, entry.params_total, n_layers,
                                                 head_is_tied(read_checkpoint(ws, model_id).path))
    similarity = exit_heads.head_similarity(stats)
    return {
        "exit_head_similarity": similarity,
        "exit_head_eas": exit_heads.head_eas(similarity, metrics=settings.metrics, alphas=settings.alphas),
        "exit_heads": exit_heads.head_summary(stats, costs),
        "tuned_lens_fit": fits,
    }


def factor_tables(published: Publishable, models: ModelRegistry, models_table: pl.DataFrame, similarity: pl.DataFrame,
                  scores: pl.DataFrame, settings: ScoreSettings) -> dict[str, pl.DataFrame]:
    """RQ2: EAS intervals (prompts resampled within workloads), the zoo's controlled
    contrasts, the variance share of model and workload, EAS over training and the
    study's published values beside ours."""
    from eexit_core.analysis import factors, uncertainty, variance

    measured = similarity.select("model_id", "workload_id").unique()
    files = published.paths(TOKEN_STATS)
    stats = (pl.concat([pl.scan_parquet(f) for f in sorted(files)], how="diagonal_relaxed") if files
             else pl.DataFrame(schema={"model_id": pl.String, "workload_id": pl.String, "prompt_id": pl.String,
                                       "layer": pl.Int16}).lazy())
    stats = stats.join(measured.lazy(), on=["model_id", "workload_id"])
    sums = uncertainty.prompt_layer_sums(stats, settings.metrics)
    metrics = [m for m in settings.metrics if f"{m}__sum" in sums.columns]
    boot = uncertainty.bootstrap_eas(sums, metrics=metrics, alphas=settings.alphas, n_boot=settings.n_boot,
                                     seed=settings.seed)
    intervals = _with_provenance(uncertainty.eas_intervals(boot, n_boot=settings.n_boot, seed=settings.seed), similarity)
    measured_ids = set(measured["model_id"].to_list())
    zoo = factors.zoo_checkpoints([m for m in models.models if m.model_id in measured_ids])
    finals = {last.model_id for last, _ in factors.final_and_middle(zoo).values()}
    scopes = {"registered": sorted(measured_ids - {c.model_id for c in zoo}), "zoo_final": sorted(finals)}
    # "seed" is the zoo's training seed in these tables: the bootstrap's has its own name
    resampled = [pl.lit(settings.n_boot).alias("n_boot"), pl.lit(settings.seed).alias("bootstrap_seed")]
    return {
        "eas_intervals": intervals,
        "oracle_intervals": uncertainty.oracle_intervals(stats, n_boot=settings.n_boot, seed=settings.seed),
        "factor_contrasts": factors.factor_contrasts(boot, zoo, metrics=metrics, alphas=settings.alphas,
                                                     seed=settings.seed).with_columns(resampled),
        "variance_share": variance.variance_share(sums, {k: v for k, v in scopes.items() if v}, metrics=metrics,
                                                  alphas=settings.alphas),
        "training_dynamics": factors.training_dynamics(intervals, similarity, zoo).with_columns(resampled),
        "published_eas": factors.published_eas(scores, intervals),
        "factor_regression": factors.factor_regression(scores, models_table, n_boot=settings.n_boot, seed=settings.seed)
        .with_columns(resampled),
    }


def _with_provenance(intervals: pl.DataFrame, similarity: pl.DataFrame) -> pl.DataFrame:
    """The checksums and lens code version of the partition behind each row (an 'ALL' row:
    the model's checksum only)."""
    columns = [c for c in ("code_version", "model_checksum", "workload_checksum") if c in similarity.columns]
    if not columns:
        return intervals
    partitions = similarity.select("model_id", "workload_id", *columns).unique(["model_id", "workload_id"], keep="first")
    joined = intervals.join(partitions, on=["model_id", "workload_id"], how="left", maintain_order="left")
    if "model_checksum" in columns:
        per_model = partitions.select("model_id", pl.col("model_checksum").alias("_model")).unique("model_id", keep="first")
        joined = (joined.join(per_model, on="model_id", how="left", maintain_order="left")
                  .with_columns(pl.coalesce("model_checksum", "_model").alias("model_checksum")).drop("_model"))
    return joined


def build_eas_scores(ws: Workspace, settings: ScoreSettings = ScoreSettings(), *, model_ids: list[str] | None = None,
                     workload_ids: list[str] | None = None) -> tuple[pl.DataFrame, Publishable]:
    """Compute EAS from the current layer_similarity partitions of the selected models and
    workloads (every registered one by default) and publish the results store. Returns the
    scores and what was published (with the stale partitions left out, and why)."""
    models, workloads = registries(ws)
    published = publishable(ws, models, workloads, model_ids=model_ids, workload_ids=workload_ids)
    similarity = _concat_partitions(published.paths(LAYER_SIMILARITY))
    if similarity.is_empty():
        detail = f" ({len(published.excluded)} stale: {published.excluded[0]} …)" if published.excluded else ""
        raise MissingUpstreamError(f"no current layer_similarity partitions yet{detail}: materialise layer_similarity first")
    scores = compute_eas(similarity, models.reference_model, settings)
    models_table = _models_table(ws, models)
    store.publish(
        ws.results_db,
        {
            "models": models_table,
            "workloads": _workloads_table(ws, workloads, published),
            "prompts": _concat_partitions(published.paths("prompts")),
            "layer_similarity": similarity,
            "oracle_exits": _concat_partitions(published.paths(ORACLE_EXITS), ORACLE_SCHEMA),
            "eas_scores": scores,
            **exit_tables(published, similarity, settings),
            "zoo_training": _zoo_training(ws),
            **factor_tables(published, models, models_table, similarity, scores, settings),
            **speculation_tables(published, similarity),
            **tuned_lens_tables(ws, published, models, settings),
        },
        token_stats_files=[str(path.relative_to(ws.root)) for path in sorted(published.paths(TOKEN_STATS))],
    )
    return scores, published
