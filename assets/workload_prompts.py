import dagster as dg

from assets.partitions import workload_partitions
from assets.resources import EexitResource
from eexit_core.stages import build_workload_prompts, prompts_data_version, registries


@dg.asset(partitions_def=workload_partitions, group_name="inputs", kinds={"parquet"})
def workload_prompts(context: dg.AssetExecutionContext, eexit: EexitResource) -> dg.MaterializeResult:
    """Prompts of one workload, drawn (seeded) from data shipped in PyPI packages."""
    _, workloads = registries(eexit.workspace)
    entry = workloads.get(context.partition_key)
    prompts = build_workload_prompts(eexit.workspace, entry)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(prompts_data_version(eexit.workspace, entry.workload_id)),
        metadata={
            "n_prompts": len(prompts),
            "domain": entry.domain,
            "preview": dg.MetadataValue.md(_preview(prompts)),
        }
    )


def _preview(prompts) -> str:
    lines = ["| prompt_id | text |", "| --- | --- |"]
    for row in prompts.head(3).iter_rows(named=True):
        text = row["text"][:120].replace("\n", " ").replace("|", "\\|")
        lines.append(f"| {row['prompt_id']} | {text}… |")
    return "\n".join(lines)
