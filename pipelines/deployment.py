"""The deployment: resources and executor from the EEXIT_* variables (read once, by
`eexit_core.settings.Environment`), never by `if` in asset code."""

from __future__ import annotations

import dagster as dg

from assets.resources import EexitResource
from eexit_core.settings import Environment
from eexit_core.storage.workspace import Workspace


def eexit_resource(env: Environment) -> EexitResource:
    """The infrastructure of the deployment; the run-time knobs are the assets' Config,
    whose defaults the same Environment chooses (assets/config.py)."""
    defaults = env.defaults
    return EexitResource(root=str(env.root or Workspace.default().root), device=defaults.device,
                         allow_download=env.allow_download)


def resources_for(env: Environment) -> dict[str, object]:
    return {"eexit": eexit_resource(env)}


def executor_for(env: Environment) -> dg.ExecutorDefinition:
    # One partition at a time locally: torch already uses every core for one model.
    if env.deployment == "cluster":
        return dg.multiprocess_executor.configured({"max_concurrent": 4})
    return dg.in_process_executor
