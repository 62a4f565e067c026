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


def check_machine(env: Environment, *, cuda: bool | None = None) -> None:
    """Fail before any work when the settings ask for hardware this machine lacks, naming
    the variable to change (`cuda`: whether a CUDA device is usable; None asks torch)."""
    import torch

    from eexit_core.lens import kernel

    cuda = torch.cuda.is_available() if cuda is None else cuda
    device = env.defaults.device
    if device == "cuda" and not cuda:
        raise ValueError(f"EEXIT_DEPLOYMENT={env.deployment} runs on a CUDA device and this machine has none; "
                         "use EEXIT_DEPLOYMENT=local (the default) here")
    if env.lens_engine == "kernel" and not kernel.runs_on("cuda" if cuda else device):
        raise ValueError("EEXIT_LENS_ENGINE=kernel needs a CUDA device (or Triton's interpreter, TRITON_INTERPRET=1, "
                         "which is slow); use EEXIT_LENS_ENGINE=eager (the default) on this machine")
