"""The one Dagster resource: where the project lives and how the lens runs. Its values
come from `eexit_core.settings` (the defaults, and the EEXIT_* variables through the
deployment, `pipelines/deployment.py`)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from eexit_core import settings
from eexit_core.exit_accuracy import ExitSweepSettings
from eexit_core.lens import LENS_ENGINES
from eexit_core.stages import LensSettings, ScoreSettings
from eexit_core.workspace import Workspace


class EexitResource(dg.ConfigurableResource):
    """Where the project lives and how the lens runs."""

    root: str
    device: str = settings.DEPLOYMENTS["local"].device
    batch_size: int = settings.BATCH_SIZE
    top_k: int = settings.TOP_K
    allow_download: bool = False
    alphas: list[float] = list(settings.ALPHAS)
    fallback_reference: str = settings.FALLBACK_REFERENCE
    stats: list[str] | None = None
    # "cpu": subsampled items and strided layers, sized for `make run` on a laptop;
    # "full": every item and layer, five thresholds per exit signal (GPU runs)
    exit_sweep: str = settings.DEPLOYMENTS["local"].exit_sweep
    tolerance: float = settings.TOLERANCE
    # how the vocabulary-wide lens stats run: "eager" | "compiled" | "kernel" (GPU)
    lens_engine: str = settings.LENS_ENGINE

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
        if self.exit_sweep not in settings.EXIT_SWEEPS:
            raise ValueError(f"exit_sweep must be 'cpu' or 'full', got {self.exit_sweep!r} (EEXIT_EXIT_SWEEP)")
        return ExitSweepSettings.full() if self.exit_sweep == "full" else ExitSweepSettings()
