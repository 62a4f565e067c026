import dagster as dg
import polars as pl

from assets.config import SelfSpeculationConfig
from assets.partitions import model_decoded_partitions, upstream_by_dimension
from assets.resources import EexitResource
from eexit_core.analysis import checks
from eexit_core.stages import SELF_SPECULATION_ITEMS, registries
from eexit_core.stages.self_speculation import (
    build_self_speculation,
    plan_self_speculation,
    self_speculation_data_version,
    self_speculation_fresh,
    speculation_asset_code_version,
)

# As for exit accuracy, only the checkpoint is a Dagster dependency (the decoded workloads
# are a subset of the prompts' partitions); the prompts are checked against the stored
# provenance instead.
_UPSTREAM = upstream_by_dimension(model="model_checkpoints")


@dg.asset(
    partitions_def=model_decoded_partitions,
    group_name="measurements",
    kinds={"parquet", "pytorch"},
    deps=_UPSTREAM,
    code_version=speculation_asset_code_version(SelfSpeculationConfig().speculation_settings()),
    check_specs=[dg.AssetCheckSpec("lossless", asset="self_speculation_items",
                                   description="every self-speculative decoding equals greedy decoding, token for token")],
)
def self_speculation_items(context: dg.AssetExecutionContext, eexit: EexitResource,
                           config: SelfSpeculationConfig) -> dg.MaterializeResult:
    """Lossless self-speculation on a decoded workload: each prompt decoded greedily, then
    with drafts from each exit layer l and draft length k; drafts proposed and accepted per
    position, verify passes, blocks and wall times. Fresh stored items are kept unless
    `force` is set."""
    keys = context.partition_key.keys_by_dimension
    ws = eexit.workspace
    models, workloads = registries(ws)
    model, workload = models.get(keys["model"]), workloads.get(keys["workload"])
    sweep = config.speculation_settings()

    def progress(message: str) -> None:
        context.log.info(message)
        print(f"    {message}", flush=True)

    plan = plan_self_speculation(ws, model.model_id, workload, sweep)
    recomputed = config.force or not self_speculation_fresh(ws, model.model_id, workload, sweep, plan)
    if recomputed:
        items = build_self_speculation(ws, model, workload, sweep, device=eexit.device, progress=progress, plan=plan)
    else:
        context.log.info("the stored self-speculation items are fresh: kept (set force: true to recompute)")
        items = pl.read_parquet(ws.partition_path(SELF_SPECULATION_ITEMS, model.model_id, workload.workload_id))
    outcome = checks.speculation_lossless(items)
    return dg.MaterializeResult(metadata={
        "rows": items.height,
        "prompts": items["prompt_id"].n_unique(),
        "first_draft_acceptance": checks.first_draft_acceptance(items),
        "recomputed": recomputed,
    }, data_version=dg.DataVersion(self_speculation_data_version(ws, model.model_id, workload.workload_id)),
        check_results=[dg.AssetCheckResult(check_name="lossless", passed=outcome.passed, metadata=outcome.metadata)])
