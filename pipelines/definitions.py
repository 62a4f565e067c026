"""The eexit code location: every asset, check, resource and the executor, in one place."""

import dagster as dg

from assets import activations, exits, models, oracle, report, scores, similarity, workloads
from pipelines.partitions import deployment
from pipelines.resources import resources_for

_MODULES = [workloads, models, activations, similarity, oracle, exits, scores, report]

# One partition at a time locally: torch already uses every core for one model.
_EXECUTOR = (
    dg.multiprocess_executor.configured({"max_concurrent": 4})
    if deployment() == "cluster"
    else dg.in_process_executor
)

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(_MODULES),
    asset_checks=dg.load_asset_checks_from_modules(_MODULES),
    resources=resources_for(deployment()),
    executor=_EXECUTOR,
)
