"""Resources, switched by deployment (EEXIT_DEPLOYMENT), never by `if` in asset code."""

from __future__ import annotations

import os
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


def local_resources() -> dict[str, object]:
    return {"eexit": EexitResource(root=str(Workspace.default().root), device="cpu", batch_size=8, stats=_stats_from_env(),
                                   exit_sweep=os.environ.get("EEXIT_EXIT_SWEEP", "cpu"), tolerance=_tolerance_from_env(),
                                   lens_engine=os.environ.get("EEXIT_LENS_ENGINE", "eager"))}


def cluster_resources() -> dict[str, object]:
    return {
        "eexit": EexitResource(
            root=str(Workspace.default().root),
            device="cuda",
            batch_size=int(os.environ.get("EEXIT_BATCH_SIZE", "4")),
            allow_download=os.environ.get("EEXIT_ALLOW_DOWNLOAD", "0") == "1",
            stats=_stats_from_env(),
            exit_sweep=os.environ.get("EEXIT_EXIT_SWEEP", "full"),
            tolerance=_tolerance_from_env(),
            lens_engine=os.environ.get("EEXIT_LENS_ENGINE", "eager"),
        )
    }


def resources_for(deployment: str) -> dict[str, object]:
    return cluster_resources() if deployment == "cluster" else local_resources()
