"""What every stage shares: the asset names, the registries, and the error for a missing input."""

from __future__ import annotations

import logging
from pathlib import Path

from eexit_core.errors import EexitError
from eexit_core.registry import ModelRegistry, WorkloadRegistry, load_model_registry, load_workload_registry
from eexit_core.storage.workspace import Workspace

log = logging.getLogger(__name__)

TOKEN_STATS = "token_layer_stats"
LAYER_ACTIVATIONS = "layer_activations"
TUNED_LENS = "tuned_lens"
LAYER_SIMILARITY = "layer_similarity"
ORACLE_EXITS = "oracle_exits"
EXIT_ACCURACY = "exit_accuracy"
EXIT_ITEMS = "exit_items"
SELF_SPECULATION_ITEMS = "self_speculation_items"


class MissingUpstreamError(EexitError, FileNotFoundError):
    """An input artifact does not exist yet: materialise the named asset first."""


def registries(ws: Workspace) -> tuple[ModelRegistry, WorkloadRegistry]:
    """The registries under data/registry/, the models with the zoo's checkpoints appended
    once the zoo has trained (data/zoo/models.yaml, written by the zoo)."""
    models = load_model_registry(ws.models_registry)
    if ws.zoo_registry.is_file():  # its folders are relative to the workspace, wherever it was trained
        zoo = [m.model_copy(update={"source": m.source.model_copy(update={"path": str(ws.root / m.source.path)})})
               for m in load_model_registry(ws.zoo_registry).models]
        models = ModelRegistry(reference_model=models.reference_model, models=[*models.models, *zoo])
    return models, load_workload_registry(ws.workloads_registry)


def _require(path: Path, asset: str, partition: str) -> Path:
    if not path.is_file():
        raise MissingUpstreamError(f"{path} is missing: materialise {asset} [{partition}] first")
    return path


def data_version(meta: dict, fields: tuple[str, ...]) -> str:
    """A stored artifact's data version for Dagster: a checksum of the provenance fields
    that decide its content (its inputs' checksums, its code version and settings)."""
    import json

    from eexit_core.storage.artifacts import sha256_text

    return sha256_text(*(json.dumps(meta.get(f), sort_keys=True) for f in fields))[:16]
