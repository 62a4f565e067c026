"""The pipeline's stages as plain functions: each reads its inputs from the workspace,
computes, and writes its artifact atomically. Dagster assets (and notebooks) call these.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl

from eexit_core.errors import EexitError
from eexit_core.adaptability import eas, eas_ideal
from eexit_core import oracle, store
from eexit_core.artifacts import read_parquet_metadata, sha256_text, write_json, write_parquet
from eexit_core.checkpoints import Checkpoint, ModelUnavailableError, load_model, prepare_checkpoint
from eexit_core.exit_accuracy import ITEM_SCHEMA, SUMMARY_SCHEMA, ExitSweepSettings
from eexit_core.lens import token_layer_stats
from eexit_core.provenance import code_version, library_versions
from eexit_core.registry import (
    ModelEntry,
    ModelRegistry,
    WorkloadEntry,
    WorkloadRegistry,
    load_model_registry,
    load_workload_registry,
)
from eexit_core.schema import STAT_COLUMNS
from eexit_core.similarity import SIMILARITY_METRICS, layer_means, similarity_curve
from eexit_core.workspace import Workspace
from eexit_core import settings as settings_defaults

log = logging.getLogger(__name__)

TOKEN_STATS = "token_layer_stats"
LAYER_SIMILARITY = "layer_similarity"
ORACLE_EXITS = "oracle_exits"
EXIT_ACCURACY = "exit_accuracy"
EXIT_ITEMS = "exit_items"


class MissingUpstreamError(EexitError, FileNotFoundError):
    """An input artifact does not exist yet: materialise the named asset first."""


def registries(ws: Workspace) -> tuple[ModelRegistry, WorkloadRegistry]:
    return load_model_registry(ws.models_registry), load_workload_registry(ws.workloads_registry)


def _require(path: Path, asset: str, partition: str) -> Path:
    if not path.is_file():
        raise MissingUpstreamError(f"{path} is missing: materialise {asset} [{partition}] first")
    return path


# --- workload_prompts [w] ------------------------------------------------------------


def build_workload_prompts(ws: Workspace, entry: WorkloadEntry, n_prompts: int | None = None) -> pl.DataFrame:
    """Draw the workload's prompts from its packaged source and store them; a source that is
    not installed is recorded (with the command that installs it) and re-raised."""
    from eexit_core.workloads import SourceUnavailableError, load_prompts

    record = ws.prompts_record(entry.workload_id)
    try:
        prompts = load_prompts(entry, sdist_dir=ws.sdist_dir, cache_dir=ws.cache_dir / "workloads", n_prompts=n_prompts)
    except SourceUnavailableError as exc:
        write_json({"workload_id": entry.workload_id, "available": False, "reason": str(exc)}, record)
        raise
    if prompts.is_empty():
        raise ValueError(f"workload {entry.workload_id!r} produced no prompts; check its source in {ws.workloads_registry}")
    checksum = sha256_text(*prompts["text"].to_list())
    write_parquet(
        prompts,
        ws.prompts_path(entry.workload_id),
        metadata={"workload_id": entry.workload_id, "seed": entry.seed, "checksum": checksum,
                  "entry": entry.model_dump(mode="json"), "code_version": code_version()},
    )
    write_json({"workload_id": entry.workload_id, "available": True, "checksum": checksum}, record)
    return prompts


# --- model_checkpoints [m] -----------------------------------------------------------


def build_model_checkpoint(ws: Workspace, entry: ModelEntry, *, allow_download: bool = False) -> Checkpoint:
    """Prepare the model's weights and record whether they are available."""
    record = ws.checkpoint_record(entry.model_id)
    try:
        checkpoint = prepare_checkpoint(entry, models_dir=ws.models_dir, cache_dir=ws.cache_dir / "gguf", allow_download=allow_download)
    except ModelUnavailableError as exc:
        write_json({"model_id": entry.model_id, "available": False, "reason": str(exc)}, record)
        raise
    _check_depth(entry, checkpoint)
    write_json(
        {"model_id": entry.model_id, "available": True, "path": _portable(ws, checkpoint.path),
         "checksum": checkpoint.checksum, "quantization": checkpoint.quantization},
        record,
    )
    return checkpoint


def _check_depth(entry: ModelEntry, checkpoint: Checkpoint) -> None:
    config = json.loads((checkpoint.path / "config.json").read_text())
    config = config.get("text_config", config)
    layers = config.get("num_hidden_layers", config.get("n_layer"))
    if layers is not None and int(layers) != entry.n_layers:
        raise ValueError(
            f"{entry.model_id}: the registry says n_layers: {entry.n_layers} but the checkpoint "
            f"has {layers}; fix data/registry/models.yaml"
        )


def _portable(ws: Workspace, path: Path) -> str:
    """Paths inside the project are stored relative to it, so clones and DVC pulls work."""
    try:
        return str(path.resolve().relative_to(ws.root.resolve()))
    except ValueError:
        return str(path)


def read_checkpoint(ws: Workspace, model_id: str) -> Checkpoint:
    path = _require(ws.checkpoint_record(model_id), "model_checkpoints", model_id)
    record = json.loads(path.read_text())
    if not record.get("available"):
        raise ModelUnavailableError(record.get("reason", f"{model_id} is unavailable"))
    return Checkpoint(model_id, ws.root / record["path"], record["checksum"], record.get("quantization"))


# --- token_layer_stats [m × w] -------------------------------------------------------


@dataclass(frozen=True)
class LensSettings:
    top_k: int = settings_defaults.TOP_K
    batch_size: int = settings_defaults.BATCH_SIZE
    device: str = "cpu"
    # None: every stat. Only cosines (logit_cos, logit_cos_raw, hidden_cos) switches the
    # lens to d-space: much faster, but no oracle exits (they need top1_match).
    stats: tuple[str, ...] | None = None
    # "eager" | "compiled" | "kernel": how the vocabulary-wide stats run (lens.LENS_ENGINES)
    engine: str = settings_defaults.LENS_ENGINE


def build_token_layer_stats(ws: Workspace, model: ModelEntry, workload: WorkloadEntry, settings: LensSettings = LensSettings()) -> pl.DataFrame:
    """Per-token, per-layer stats of one model on one workload, stored as Parquet."""
    from eexit_core.workloads import render_texts

    partition = f"{model.model_id}|{workload.workload_id}"
    prompts_path = _require(ws.prompts_path(workload.workload_id), "workload_prompts", workload.workload_id)
    prompts = pl.read_parquet(prompts_path)
    if prompts.is_empty():
        raise ValueError(f"workload {workload.workload_id!r} has no prompts")
    checkpoint = read_checkpoint(ws, model.model_id)
    lm, tokenizer = load_model(checkpoint, device=settings.device)
    texts = render_texts(prompts, tokenizer, use_chat_template=workload.chat_template)
    stats = token_layer_stats(
        lm, tokenizer, texts, top_k=settings.top_k, batch_size=settings.batch_size,
        max_tokens=workload.max_tokens, stats=settings.stats, engine=settings.engine,
    )
    prompt_ids = prompts["prompt_id"]
    stats = stats.with_columns(
        pl.lit(model.model_id).alias("model_id"),
        pl.lit(workload.workload_id).alias("workload_id"),
        prompt_ids.gather(stats["sample"]).alias("prompt_id"),
    )
    meta = {
        "partition": partition,
        "lens_version": lens_version(settings.engine),
        "lens_engine": settings.engine,
        "model_checksum": checkpoint.checksum,
        "workload_checksum": read_parquet_metadata(prompts_path).get("checksum"),
        "seed": workload.seed,
        "max_tokens": workload.max_tokens,
        "top_k": settings.top_k,
        "stats": list(settings.stats) if settings.stats else None,
        "code_version": code_version(),
        "libraries": library_versions(),
    }
    write_parquet(stats, ws.partition_path(TOKEN_STATS, model.model_id, workload.workload_id), metadata=meta)
    return stats


def lens_modules(engine: str = settings_defaults.LENS_ENGINE) -> list[Path]:
    """The code that turns a checkpoint and prompts into token stats: loading the model,
    rendering the prompts, the exit head, the vocabulary-space and d-space lenses (and the
    Triton kernel for stats it computed). `dvc.yaml`'s stats stage depends on the same files."""
    from eexit_core import adapters, checkpoints, gram, lens, workloads

    modules = [lens, adapters, gram, checkpoints, workloads]
    if engine == "kernel":
        from eexit_core import lens_kernel

        modules.append(lens_kernel)
    return [Path(m.__file__) for m in modules]


def lens_version(engine: str = settings_defaults.LENS_ENGINE) -> str:
    """Checksum of the code that computes token stats: a change invalidates stored stats."""
    return sha256_text(*(path.read_text() for path in lens_modules(engine)))[:16]


def token_stats_fresh(ws: Workspace, model_id: str, workload: WorkloadEntry, settings: LensSettings) -> bool:
    """True when the stored stats were made from the current checkpoint, prompts and code."""
    workload_id = workload.workload_id
    path = ws.partition_path(TOKEN_STATS, model_id, workload_id)
    record = ws.checkpoint_record(model_id)
    prompts = ws.prompts_path(workload_id)
    if not (path.is_file() and record.is_file() and prompts.is_file()):
        return False
    meta = read_parquet_metadata(path)
    return (
        meta.get("lens_version") == lens_version(settings.engine)
        and meta.get("lens_engine", settings_defaults.LENS_ENGINE) == settings.engine
        and meta.get("model_checksum") == json.loads(record.read_text()).get("checksum")
        and meta.get("workload_checksum") == read_parquet_metadata(prompts).get("checksum")
        and meta.get("top_k") == settings.top_k
        and meta.get("stats") == (list(settings.stats) if settings.stats else None)
        and meta.get("max_tokens") == workload.max_tokens
    )


def _provenance_columns(meta: dict) -> list[pl.Expr]:
    return [
        pl.lit(meta.get("code_version"), dtype=pl.String).alias("code_version"),
        pl.lit(meta.get("model_checksum"), dtype=pl.String).alias("model_checksum"),
        pl.lit(meta.get("workload_checksum"), dtype=pl.String).alias("workload_checksum"),
        pl.lit(meta.get("seed"), dtype=pl.Int64).alias("seed"),
    ]


def _token_stats(ws: Workspace, model_id: str, workload_id: str) -> tuple[pl.DataFrame, dict]:
    path = _require(ws.partition_path(TOKEN_STATS, model_id, workload_id), TOKEN_STATS, f"{model_id}|{workload_id}")
    return pl.read_parquet(path), read_parquet_metadata(path)


# --- layer_similarity [m × w] --------------------------------------------------------


def build_layer_similarity(ws: Workspace, model_id: str, workload_id: str) -> pl.DataFrame:
    stats, meta = _token_stats(ws, model_id, workload_id)
    n_layers = int(stats["layer"].max())
    table = layer_means(stats, n_layers).with_columns(
        pl.lit(model_id).alias("model_id"), pl.lit(workload_id).alias("workload_id"), *_provenance_columns(meta)
    )
    # a cosine-only (d-space) run leaves the other stats null, so every table has one shape
    table = table.with_columns(pl.lit(None, dtype=pl.Float64).alias(c) for c in STAT_COLUMNS if c not in table.columns)
    table = table.select("model_id", "workload_id", "layer", pl.exclude("model_id", "workload_id", "layer"))
    write_parquet(table, ws.partition_path(LAYER_SIMILARITY, model_id, workload_id), metadata=meta)
    return table


# --- oracle_exits [m × w] ------------------------------------------------------------


def build_oracle_exits(ws: Workspace, model: ModelEntry, workload_id: str, *, tied_embeddings: bool = True) -> pl.DataFrame:
    stats, meta = _token_stats(ws, model.model_id, workload_id)
    if "top1_match" not in stats.columns:
        raise ValueError(
            f"{model.model_id}|{workload_id}: oracle exits need top1_match, but the token stats "
            "were computed for cosines only (EEXIT_STATS); rerun token_layer_stats with all stats"
        )
    n_layers = int(stats["layer"].max())
    check_cost = oracle.exit_check_cost(model.d_model, model.vocab_size, model.params_total, n_layers, tied_embeddings)
    rows = []
    for criterion in oracle.CRITERIA:
        exits = oracle.oracle_exit_layers(stats, criterion)
        rows.append({"model_id": model.model_id, "workload_id": workload_id, "criterion": criterion,
                     "n_layers": n_layers, **oracle.summarise(exits, n_layers, check_cost)})
    table = pl.DataFrame(rows).with_columns(*_provenance_columns(meta))
    write_parquet(table, ws.partition_path(ORACLE_EXITS, model.model_id, workload_id), metadata=meta)
    return table


# --- exit_accuracy [m × graded w] ----------------------------------------------------


def exit_code_modules() -> list[Path]:
    """The code behind exit accuracy (`dvc.yaml`'s exits stage depends on the same files)."""
    from eexit_core import adapters, checkpoints, early_exit, exit_accuracy, grading, sandbox

    return [Path(m.__file__) for m in (adapters, checkpoints, early_exit, exit_accuracy, grading, sandbox)]


def exit_code_version() -> str:
    """Checksum of the code behind exit accuracy: a change invalidates stored results."""
    return sha256_text(*(path.read_text() for path in exit_code_modules()))[:16]


def _exit_items(ws: Workspace, workload: WorkloadEntry, settings: ExitSweepSettings) -> tuple[list, str]:
    from eexit_core.grading import graded_items
    from eexit_core.workloads import load_prompts

    if workload.grader == "none":
        raise ValueError(f"workload {workload.workload_id!r} has no grader; exit accuracy needs a graded workload")
    prompts = load_prompts(workload, sdist_dir=ws.sdist_dir, cache_dir=ws.cache_dir / "workloads",
                           n_prompts=settings.items_needed(workload.grader))
    items = graded_items(prompts, workload.grader)
    return items, sha256_text(*(f"{i.prompt_id}\x00{i.prompt}\x00{i.reference}" for i in items))


def _exit_meta(ws: Workspace, model_id: str, workload: WorkloadEntry, items_checksum: str, settings: ExitSweepSettings) -> dict:
    record = json.loads(_require(ws.checkpoint_record(model_id), "model_checkpoints", model_id).read_text())
    return {
        "partition": f"{model_id}|{workload.workload_id}",
        "exit_code_version": exit_code_version(),
        "model_checksum": record.get("checksum"),
        "workload_checksum": items_checksum,
        "seed": workload.seed,
        "settings": json.dumps(asdict(settings), sort_keys=True),
        "code_version": code_version(),
    }


def exit_accuracy_fresh(ws: Workspace, model_id: str, workload: WorkloadEntry, settings: ExitSweepSettings) -> bool:
    """True when stored exit accuracy came from the current checkpoint, items, code and settings."""
    path = ws.partition_path(EXIT_ACCURACY, model_id, workload.workload_id)
    if not (path.is_file() and ws.checkpoint_record(model_id).is_file()):
        return False
    stored = read_parquet_metadata(path)
    try:
        _, checksum = _exit_items(ws, workload, settings)
    except (ValueError, FileNotFoundError):
        return False
    current = _exit_meta(ws, model_id, workload, checksum, settings)
    return all(stored.get(k) == current[k] for k in ("exit_code_version", "model_checksum", "workload_checksum", "settings"))


def build_exit_accuracy(ws: Workspace, model: ModelEntry, workload: WorkloadEntry,
                        settings: ExitSweepSettings = ExitSweepSettings(), device: str = "cpu",
                        progress=None) -> pl.DataFrame:
    """Static exits, dynamic policies and the per-item oracle of one model on one graded
    workload: the `exit_accuracy` summary and the per-item `exit_items` table."""
    from eexit_core.exit_accuracy import evaluate_exits

    items, checksum = _exit_items(ws, workload, settings)
    checkpoint = read_checkpoint(ws, model.model_id)
    lm, tokenizer = load_model(checkpoint, device=device)
    per_item, summary = evaluate_exits(lm, tokenizer, items, settings, progress=progress or log.info, hidden_paths=(ws.root,))
    meta = _exit_meta(ws, model.model_id, workload, checksum, settings)
    keys = [pl.lit(model.model_id).alias("model_id"), pl.lit(workload.workload_id).alias("workload_id")]
    provenance = _provenance_columns(meta)
    by_id = {i.prompt_id: i for i in items}
    per_item = per_item.with_columns(
        *keys, *provenance,
        pl.col("prompt_id").replace_strict({k: v.prompt for k, v in by_id.items()}, return_dtype=pl.String).alias("prompt"),
        pl.col("prompt_id").replace_strict({k: v.reference for k, v in by_id.items()}, return_dtype=pl.String).alias("reference"),
    ).select("model_id", "workload_id", pl.exclude("model_id", "workload_id"))
    summary = summary.with_columns(*keys, pl.lit(workload.grader).alias("grader"), *provenance).select(
        "model_id", "workload_id", pl.exclude("model_id", "workload_id"))
    # items first: the summary's presence is what marks the partition done
    write_parquet(per_item, ws.partition_path(EXIT_ITEMS, model.model_id, workload.workload_id), metadata=meta)
    write_parquet(summary, ws.partition_path(EXIT_ACCURACY, model.model_id, workload.workload_id), metadata=meta)
    return summary


# --- eas_scores: the step that owns the results store --------------------------------


@dataclass(frozen=True)
class ScoreSettings:
    alphas: tuple[float, ...] = settings_defaults.ALPHAS
    metrics: tuple[str, ...] = SIMILARITY_METRICS
    fallback_reference: str | None = None
    tolerance: float = settings_defaults.TOLERANCE  # relative accuracy loss for the max skip ratio (exit_skip_bounds)
    seed: int = 0  # bootstrap seed of the RQ1 intervals


def _concat_partitions(ws: Workspace, asset: str, empty_schema: dict | None = None) -> pl.DataFrame:
    """Every partition file of an asset in one frame (with `empty_schema` if there are none)."""
    files = sorted((ws.artifacts_dir / asset).glob("*.parquet"))
    if not files:
        return pl.DataFrame(schema=empty_schema)
    return pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")


def compute_eas(similarity: pl.DataFrame, reference: str | None, settings: ScoreSettings) -> pl.DataFrame:
    """EAS per model × workload × metric × alpha, the per-model 'ALL' rows, and relatives."""
    rows = []
    for (model_id, workload_id), part in similarity.group_by(["model_id", "workload_id"], maintain_order=True):
        n_layers = part.height
        for metric in [m for m in settings.metrics if part[m].null_count() < part.height]:
            curve = similarity_curve(part, metric)
            for alpha in settings.alphas:
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
    ref = reference if reference in models else settings.fallback_reference
    if ref not in models:
        ref = None
    if ref is None:
        return scores.with_columns(pl.lit(None, dtype=pl.Float64).alias("eas_relative"), pl.lit(None, dtype=pl.String).alias("relative_to"))
    ref_scores = scores.filter(pl.col("model_id") == ref).select("workload_id", "metric", "alpha", pl.col("eas").alias("_ref"))
    return (
        scores.join(ref_scores, on=["workload_id", "metric", "alpha"], how="left")
        .with_columns(
            pl.when(pl.col("_ref") > 0).then(pl.col("eas") / pl.col("_ref")).otherwise(None).alias("eas_relative"),
            pl.lit(ref).alias("relative_to"),
        )
        .drop("_ref")
    )


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
        })
    return pl.DataFrame(rows)


def _workloads_table(ws: Workspace, workloads: WorkloadRegistry) -> pl.DataFrame:
    rows = []
    for entry in workloads.workloads:
        path = ws.prompts_path(entry.workload_id)
        n = pl.scan_parquet(path).select(pl.len()).collect().item() if path.is_file() else None
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


def exit_tables(ws: Workspace, similarity: pl.DataFrame, settings: ScoreSettings) -> dict[str, pl.DataFrame]:
    """Exit accuracy, its per-item rows, the max-skip table (RQ3) and RQ1's correlations."""
    from eexit_core.predictiveness import similarity_accuracy_correlation, skip_table

    accuracy = _concat_partitions(ws, EXIT_ACCURACY, EXIT_ACCURACY_SCHEMA)
    items = _concat_partitions(ws, EXIT_ITEMS, EXIT_ITEMS_SCHEMA)
    metrics = [m for m in settings.metrics if m in similarity.columns]
    return {
        "exit_accuracy": accuracy,
        "exit_items": items,
        "exit_skip_bounds": skip_table(accuracy, _concat_partitions(ws, ORACLE_EXITS, ORACLE_SCHEMA), settings.tolerance, items),
        "similarity_accuracy_correlation": similarity_accuracy_correlation(similarity, items, metrics, seed=settings.seed),
    }


def build_eas_scores(ws: Workspace, settings: ScoreSettings = ScoreSettings()) -> pl.DataFrame:
    """Compute EAS from every layer_similarity partition and publish the results store."""
    models, workloads = registries(ws)
    similarity = _concat_partitions(ws, LAYER_SIMILARITY)
    if similarity.is_empty():
        raise MissingUpstreamError("no layer_similarity partitions yet: materialise layer_similarity first")
    scores = compute_eas(similarity, models.reference_model, settings)
    token_glob = ws.artifacts_dir / TOKEN_STATS / "*.parquet"
    store.publish(
        ws.results_db,
        {
            "models": _models_table(ws, models),
            "workloads": _workloads_table(ws, workloads),
            "prompts": _concat_partitions(ws, "prompts"),
            "layer_similarity": similarity,
            "oracle_exits": _concat_partitions(ws, ORACLE_EXITS, ORACLE_SCHEMA),
            "eas_scores": scores,
            **exit_tables(ws, similarity, settings),
        },
        token_stats_glob=str(token_glob.relative_to(ws.root)) if any(token_glob.parent.glob("*.parquet")) else None,
    )
    return scores


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
