"""Resources, switched by deployment (EEXIT_DEPLOYMENT), never by `if` in asset code."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from eexit_core.exit_accuracy import ExitSweepSettings
from eexit_core.lens import LENS_ENGINES
from eexit_core.stages import LensSettings, ScoreSettings
from eexit_core.workspace import Workspace


class EexitResource(dg.ConfigurableResource):
    """Where the project lives and how the lens runs."""

    root: str
    device: str = "cpu"
    batch_size: int = 8
    top_k: int = 10
    allow_download: bool = False
    alphas: list[float] = [0.25, 0.5, 0.75]
    fallback_reference: str = "smollm2-135m-instruct"
    stats: list[str] | None = None
    # "cpu": subsampled items and strided layers, sized for `make run` on a laptop;
    # "full": every item and layer, five thresholds per exit signal (GPU runs)
    exit_sweep: str = "cpu"
    tolerance: float = 0.05
    # how the vocabulary-wide lens stats run: "eager" | "compiled" | "kernel" (GPU)
    lens_engine: str = "eager"

    @property
    def workspace(self) -> Workspace:
        return Workspace(Path(self.root))

    def lens_settings(self) -> LensSettings:
        if self.lens_engine not in LENS_ENGINES:
            raise ValueError(f"lens_engine must be one of {sorted(LENS_ENGINES)}, got {self.lens_engine!r} (EEXIT_LENS_ENGINE)")
        return LensSettings(top_k=self.top_k, batch_size=self.batch_size, device=self.device,
                            stats=tuple(self.stats) if self.stats else None, engine=self.lens_engine)

    def score_settings(self) -> ScoreSettings:
        return ScoreSettings(alphas=tuple(self.alphas), fallback_reference=self.fallback_reference, tolerance=self.tolerance)

    def exit_settings(self) -> ExitSweepSettings:
        if self.exit_sweep not in ("cpu", "full"):
            raise ValueError(f"exit_sweep must be 'cpu' or 'full', got {self.exit_sweep!r} (EEXIT_EXIT_SWEEP)")
        return ExitSweepSettings.full() if self.exit_sweep == "full" else ExitSweepSettings()


def _stats_from_env() -> list[str] | None:
    """EEXIT_STATS=logit_cos,hidden_cos picks stats; cosines only run the d-space lens."""
    raw = os.environ.get("EEXIT_STATS")
    return [name.strip() for name in raw.split(",") if name.strip()] if raw else None


def _tolerance_from_env() -> float:
    raw = os.environ.get("EEXIT_TOLERANCE", "0.05")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"EEXIT_TOLERANCE must be a number such as 0.05, got {raw!r}") from None
    if not 0 <= value < 1:
        raise ValueError(f"EEXIT_TOLERANCE is a relative accuracy loss in [0, 1), got {value}")
    return value


@dataclass(frozen=True)
class DeploymentDefaults:
    """What a deployment chooses when no EEXIT_* variable says otherwise."""

    device: str
    batch_size: int
    exit_sweep: str


LOCAL = DeploymentDefaults(device="cpu", batch_size=8, exit_sweep="cpu")
CLUSTER = DeploymentDefaults(device="cuda", batch_size=4, exit_sweep="full")


def _batch_size_from_env(default: int) -> int:
    raw = os.environ.get("EEXIT_BATCH_SIZE")
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"EEXIT_BATCH_SIZE must be a whole number such as {default}, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"EEXIT_BATCH_SIZE must be at least 1, got {value}")
    return value


def _allow_download_from_env() -> bool:
    raw = os.environ.get("EEXIT_ALLOW_DOWNLOAD", "0")
    if raw not in ("0", "1"):
        raise ValueError(f"EEXIT_ALLOW_DOWNLOAD must be 0 or 1, got {raw!r}")
    return raw == "1"


def _resource(defaults: DeploymentDefaults) -> EexitResource:
    """Every EEXIT_* knob applies to every deployment; the deployment only sets defaults."""
    return EexitResource(
        root=str(Workspace.default().root),
        device=defaults.device,
        batch_size=_batch_size_from_env(defaults.batch_size),
        allow_download=_allow_download_from_env(),
        stats=_stats_from_env(),
        exit_sweep=os.environ.get("EEXIT_EXIT_SWEEP", defaults.exit_sweep),
        tolerance=_tolerance_from_env(),
        lens_engine=os.environ.get("EEXIT_LENS_ENGINE", "eager"),
    )


def local_resources() -> dict[str, object]:
    return {"eexit": _resource(LOCAL)}


def cluster_resources() -> dict[str, object]:
    return {"eexit": _resource(CLUSTER)}


def resources_for(deployment: str) -> dict[str, object]:
    return cluster_resources() if deployment == "cluster" else local_resources()
