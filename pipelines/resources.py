"""Resources, switched by deployment (EEXIT_DEPLOYMENT), never by `if` in asset code."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

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

    @property
    def workspace(self) -> Workspace:
        return Workspace(Path(self.root))

    def lens_settings(self) -> LensSettings:
        return LensSettings(top_k=self.top_k, batch_size=self.batch_size, device=self.device,
                            stats=tuple(self.stats) if self.stats else None)

    def score_settings(self) -> ScoreSettings:
        return ScoreSettings(alphas=tuple(self.alphas), fallback_reference=self.fallback_reference)


def _stats_from_env() -> list[str] | None:
    """EEXIT_STATS=logit_cos,hidden_cos picks stats; cosines only run the d-space lens."""
    raw = os.environ.get("EEXIT_STATS")
    return [name.strip() for name in raw.split(",") if name.strip()] if raw else None


def local_resources() -> dict[str, object]:
    return {"eexit": EexitResource(root=str(Workspace.default().root), device="cpu", batch_size=8, stats=_stats_from_env())}


def cluster_resources() -> dict[str, object]:
    return {
        "eexit": EexitResource(
            root=str(Workspace.default().root),
            device="cuda",
            batch_size=int(os.environ.get("EEXIT_BATCH_SIZE", "4")),
            allow_download=os.environ.get("EEXIT_ALLOW_DOWNLOAD", "0") == "1",
            stats=_stats_from_env(),
        )
    }


def resources_for(deployment: str) -> dict[str, object]:
    return cluster_resources() if deployment == "cluster" else local_resources()
