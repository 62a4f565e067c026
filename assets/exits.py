import dagster as dg

from eexit_core import checks
from eexit_core.stages import build_exit_accuracy, registries
from assets.partitions import model_graded_partitions, upstream_by_dimension
from assets.resources import EexitResource

_UPSTREAM = upstream_by_dimension(model="model_checkpoints")


@dg.asset(
    partitions_def=model_graded_partitions,
    group_name="measurements",
    kinds={"parquet", "pytorch"},
    deps=_UPSTREAM,
    check_specs=[dg.AssetCheckSpec("exit_accuracy_in_range", asset="exit_accuracy",
                                   description="accuracy in [0, 1], layers used within 1..L, one full-depth row")],
)
def exit_accuracy(context: dg.AssetExecutionContext, eexit: EexitResource) -> dg.MaterializeResult:
    """Task accuracy when tokens exit early: static exits, dynamic policies, per-item oracle."""
    keys = context.partition_key.keys_by_dimension
    models, workloads = registries(eexit.workspace)

    def progress(message: str) -> None:
        context.log.info(message)
        print(f"    {message}", flush=True)  # the runner's console shows Dagster warnings only

    summary = build_exit_accuracy(
        eexit.workspace, models.get(keys["model"]), workloads.get(keys["workload"]),
        eexit.exit_settings(), device=eexit.device, progress=progress,
    )
    full = summary.filter((summary["policy"] == "static") & (summary["exit_layer"] == summary["n_layers"]))
    outcome = checks.exit_accuracy_in_range(summary)
    return dg.MaterializeResult(metadata={
        "rows": summary.height,
        "full_depth_accuracy": float(full["accuracy"][0]) if full.height else None,
        "n_items": int(full["n_items"][0]) if full.height else 0,
    }, check_results=[dg.AssetCheckResult(check_name="exit_accuracy_in_range", passed=outcome.passed, metadata=outcome.metadata)])
