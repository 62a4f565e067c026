"""The one Dagster resource: infrastructure only (where the project lives, the device,
whether hub weights may be fetched). The run-time knobs are the assets' Config
(`assets/config.py`)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from eexit_core import settings
from eexit_core.storage.workspace import Workspace


class EexitResource(dg.ConfigurableResource):
    """Where the project lives and what hardware and network it may use."""

    root: str
    device: str = settings.DEPLOYMENTS["local"].device
    allow_download: bool = False

    @property
    def workspace(self) -> Workspace:
        return Workspace(Path(self.root))
