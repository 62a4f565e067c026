import dagster as dg

from assets.partitions import model_workload_partitions
from assets.resources import EexitResource
from eexit_core.analysis import checks
from eexit_core.stages import build_oracle_exits, registries


@dg.asset(
    partitions_def=model_workload_partitions, group_name="measurements", kinds={"parquet"}, deps=["token_layer_stats"],
    check_specs=[dg.AssetCheckSpec("exit_layers_in_range", asset="oracle_exits",
                                   description="oracle exit layers within 1..L, speedup bounds finite and >= 1")],
)
def oracle_exits(context: dg.AssetExecutionContext, eexit: EexitResource) -> dg.MaterializeResult:
    """Token-level oracle exits (first and stable match) and their speedup bounds."""
    keys = context.partition_key.keys_by_dimension
    models, _ = registries(eexit.workspace)
    table = build_oracle_exits(eexit.workspace, models.get(keys["model"]), keys["workload"])
    outcome = checks.oracle_exits_in_range(table)
    return dg.MaterializeResult(
        metadata={f"speedup_bound_{r['criterion']}": float(r["speedup_bound"]) for r in table.iter_rows(named=True)},
        check_results=[dg.AssetCheckResult(check_name="exit_layers_in_range", passed=outcome.passed, metadata=outcome.metadata)],
    )
