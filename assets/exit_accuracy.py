import dagster as dg
import polars as pl

from assets.config import ExitAccuracyConfig
from assets.partitions import model_graded_partitions, upstream_by_dimension
from assets.resources import EexitResource
from eexit_core.analysis import checks
from eexit_core.stages import (
    EXIT_ACCURACY,
    build_exit_accuracy,
    exit_accuracy_data_version,
    exit_accuracy_fresh,
    exit_asset_code_version,
    plan_exit_accuracy,
    registries,
)

# Only the checkpoint is a Dagster dependency: Dagster maps a dimension only onto an asset
# with the very same partitions, and these graded workloads are a subset of the prompts'.
# The runner checks the items against the stored provenance instead.
_UPSTREAM = upstream_by_dimension(model="model_checkpoints")


@dg.asset(
    partitions_def=model_graded_partitions,
    group_name="measurements",
    kinds={"parquet", "pytorch"},
    deps=_UPSTREAM,
    code_version=exit_asset_code_version(ExitAccuracyConfig().exit_settings()),
    check_specs=[dg.AssetCheckSpec("exit_accuracy_in_range", asset="exit_accuracy",
                                   description="accuracy in [0, 1], layers used within 1..L, one full-depth row")],
)
def exit_accuracy(context: dg.AssetExecutionContext, eexit: EexitResource, config: ExitAccuracyConfig) -> dg.MaterializeResult:
    """Task accuracy when tokens exit early: static exits, dynamic policies, per-item oracle.
    Stored results that are fresh (same checkpoint, items, code and sweep) are kept unless
    `force` is set."""
    keys = context.partition_key.keys_by_dimension
    ws = eexit.workspace
    models, workloads = registries(ws)
    model, workload = models.get(keys["model"]), workloads.get(keys["workload"])
    sweep = config.exit_settings()

    def progress(message: str) -> None:
        context.log.info(message)
        print(f"    {message}", flush=True)  # the runner's console shows Dagster warnings only

    plan = plan_exit_accuracy(ws, model.model_id, workload, sweep)  # the items, drawn once
    recomputed = config.force or not exit_accuracy_fresh(ws, model.model_id, workload, sweep, plan)
    if recomputed:
        summary = build_exit_accuracy(ws, model, workload, sweep, device=eexit.device, progress=progress, plan=plan)
    else:
        context.log.info("the stored exit accuracy is fresh: kept (set force: true to recompute)")
        summary = pl.read_parquet(ws.partition_path(EXIT_ACCURACY, model.model_id, workload.workload_id))
    full = summary.filter((summary["policy"] == "static") & (summary["exit_layer"] == summary["n_layers"]))
    outcome = checks.exit_accuracy_in_range(summary)
    return dg.MaterializeResult(metadata={
        "rows": summary.height,
        "full_depth_accuracy": float(full["accuracy"][0]) if full.height else None,
        "n_items": int(full["n_items"][0]) if full.height else 0,
        "recomputed": recomputed,
    }, data_version=dg.DataVersion(exit_accuracy_data_version(ws, model.model_id, workload.workload_id)),
        check_results=[dg.AssetCheckResult(check_name="exit_accuracy_in_range", passed=outcome.passed, metadata=outcome.metadata)])
