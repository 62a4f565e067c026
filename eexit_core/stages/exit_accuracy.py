"""exit_accuracy [m × graded w]: task accuracy under early exit, and its freshness."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl

from eexit_core.evaluation.exit_accuracy import ExitSweepSettings
from eexit_core.models.checkpoints import load_model
from eexit_core.registry import ModelEntry, WorkloadEntry
from eexit_core.stages.checkpoint import read_checkpoint
from eexit_core.stages.common import EXIT_ACCURACY, EXIT_ITEMS, _require, data_version, log
from eexit_core.stages.token_stats import _provenance_columns
from eexit_core.storage.artifacts import read_parquet_metadata, sha256_text, write_parquet
from eexit_core.storage.provenance import code_version
from eexit_core.storage.workspace import Workspace


def exit_code_modules(grader_name: str | None = None) -> list[Path]:
    """The code behind exit accuracy on a workload graded by `grader_name` (with every
    grader, without a name: `dvc.yaml`'s exits stage depends on the same files)."""
    from eexit_core.decoding import early_exit
    from eexit_core.evaluation import exit_accuracy, grading
    from eexit_core.evaluation.sandbox import child, probe, supervisor
    from eexit_core.models import adapters, checkpoints

    modules = (adapters, checkpoints, early_exit, exit_accuracy, grading, supervisor, child, probe)
    return [Path(m.__file__) for m in modules] + grading.grader_modules(grader_name)


def exit_code_version(grader_name: str | None = None) -> str:
    """Checksum of the code behind exit accuracy with this grader: a change invalidates
    stored results (of this grader's workloads only, when one grader's file changes)."""
    return sha256_text(*(path.read_text() for path in exit_code_modules(grader_name)))[:16]


def exit_asset_code_version(settings: ExitSweepSettings = ExitSweepSettings()) -> str:
    """The Dagster code version of `exit_accuracy`: its code and the sweep it runs, from the
    deployment's default settings (EEXIT_EXIT_SWEEP), so a new sweep marks it stale in the UI."""
    return sha256_text(exit_code_version(), _sweep_key(settings))[:16]


def _sweep_key(settings: ExitSweepSettings) -> str:
    return json.dumps(asdict(settings), sort_keys=True)


@dataclass(frozen=True)
class ExitPlan:
    """The graded items of one partition and the provenance a result made from them carries:
    drawn once, then used to decide freshness and to compute."""

    items: list
    meta: dict


def plan_exit_accuracy(ws: Workspace, model_id: str, workload: WorkloadEntry, settings: ExitSweepSettings) -> ExitPlan:
    from eexit_core.evaluation.grading import graded_items
    from eexit_core.workloads.prompts import load_prompts

    if not workload.graded:
        raise ValueError(f"workload {workload.workload_id!r} has no grader; exit accuracy needs a graded workload")
    prompts = load_prompts(workload, sdist_dir=ws.sdist_dir, cache_dir=ws.cache_dir / "workloads",
                           n_prompts=settings.items_needed(workload.grader), data_root=ws.root)
    items = graded_items(prompts, workload.grader)
    checksum = sha256_text(*(f"{i.prompt_id}\x00{i.prompt}\x00{i.reference}" for i in items))
    return ExitPlan(items, _exit_meta(ws, model_id, workload, checksum, settings))


def _exit_meta(ws: Workspace, model_id: str, workload: WorkloadEntry, items_checksum: str, settings: ExitSweepSettings) -> dict:
    record = json.loads(_require(ws.checkpoint_record(model_id), "model_checkpoints", model_id).read_text())
    return {
        "partition": f"{model_id}|{workload.workload_id}",
        "exit_code_version": exit_code_version(workload.grader),
        "model_checksum": record.get("checksum"),
        "workload_checksum": items_checksum,
        "seed": workload.seed,
        "over_context": workload.over_context,
        "settings": _sweep_key(settings),
        "code_version": code_version(),
    }


# the stored fields that decide an exit-accuracy partition's content (its Dagster data version)
EXIT_VERSION_FIELDS = ("exit_code_version", "model_checksum", "workload_checksum", "settings", "over_context")


def exit_accuracy_data_version(ws: Workspace, model_id: str, workload_id: str) -> str:
    return data_version(read_parquet_metadata(ws.partition_path(EXIT_ACCURACY, model_id, workload_id)), EXIT_VERSION_FIELDS)


def exit_accuracy_fresh(ws: Workspace, model_id: str, workload: WorkloadEntry, settings: ExitSweepSettings,
                        plan: ExitPlan | None = None) -> bool:
    """True when stored exit accuracy came from the current checkpoint, items, code and settings."""
    path = ws.partition_path(EXIT_ACCURACY, model_id, workload.workload_id)
    if not (path.is_file() and ws.checkpoint_record(model_id).is_file()):
        return False
    try:
        plan = plan or plan_exit_accuracy(ws, model_id, workload, settings)
    except (ValueError, FileNotFoundError):
        return False
    stored = read_parquet_metadata(path)
    return all(stored.get(k) == plan.meta[k] for k in EXIT_VERSION_FIELDS)


def build_exit_accuracy(ws: Workspace, model: ModelEntry, workload: WorkloadEntry,
                        settings: ExitSweepSettings = ExitSweepSettings(), device: str = "cpu",
                        progress=None, plan: ExitPlan | None = None) -> pl.DataFrame:
    """Static exits, dynamic policies and the per-item oracle of one model on one graded
    workload: the `exit_accuracy` summary and the per-item `exit_items` table."""
    from eexit_core.evaluation.exit_accuracy import evaluate_exits, fit_to_context
    from eexit_core.lens.engine import model_context_length

    plan = plan or plan_exit_accuracy(ws, model.model_id, workload, settings)
    progress = progress or log.info
    checkpoint = read_checkpoint(ws, model.model_id)
    lm, tokenizer = load_model(checkpoint, device=device)
    fitted = fit_to_context(plan.items, tokenizer, model_context_length(lm), workload.over_context, settings.max_new_tokens)
    items, meta = fitted.items, {**plan.meta, "over_context_prompt_ids": fitted.over_context}
    if fitted.over_context:
        done = "cut from the left" if workload.over_context == "truncate_left" else "left out"
        progress(f"{len(fitted.over_context)} item(s) longer than the context {done}: {', '.join(fitted.over_context[:3])}")
    per_item, summary = evaluate_exits(lm, tokenizer, items, settings, progress=progress, hidden_paths=(ws.root,))
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
