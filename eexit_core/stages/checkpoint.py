"""model_checkpoints [m]: the weights prepared (converted, checksummed) and their availability recorded."""

from __future__ import annotations

import json
from pathlib import Path

from eexit_core.models.checkpoints import Checkpoint, ModelUnavailableError, prepare_checkpoint
from eexit_core.registry import ModelEntry, RegistryError
from eexit_core.stages.common import _require
from eexit_core.storage.artifacts import availability_recorded, write_json
from eexit_core.storage.workspace import Workspace


def build_model_checkpoint(ws: Workspace, entry: ModelEntry, *, allow_download: bool = False) -> Checkpoint:
    """Prepare the model's weights and record whether they are available."""
    record = ws.checkpoint_record(entry.model_id)
    with availability_recorded(record, {"model_id": entry.model_id}, ModelUnavailableError):
        checkpoint = prepare_checkpoint(entry, models_dir=ws.models_dir, cache_dir=ws.gguf_cache_dir,
                                        allow_download=allow_download, checksum_index=ws.checksum_index)
    _check_registry_facts(entry, checkpoint)
    write_json(
        {"model_id": entry.model_id, "available": True, "path": _portable(ws, checkpoint.path),
         "checksum": checkpoint.checksum, "quantization": checkpoint.quantization},
        record,
    )
    return checkpoint


def _check_registry_facts(entry: ModelEntry, checkpoint: Checkpoint) -> None:
    """The registry's depth, class and context length are the checkpoint's: a wrong class
    would load another architecture, a wrong context would let too-long prompts through."""
    config = json.loads((checkpoint.path / "config.json").read_text())
    _check_model_type(entry, checkpoint.path, config.get("model_type"))
    text = config.get("text_config", config)
    problems = []
    layers = text.get("num_hidden_layers", text.get("n_layer"))
    if layers is not None and int(layers) != entry.n_layers:
        problems.append(f"n_layers: {entry.n_layers} but the checkpoint has {layers}")
    architectures = config.get("architectures") or []
    if architectures and entry.architecture not in architectures:
        problems.append(f"architecture: {entry.architecture} but the checkpoint's config.json says {', '.join(architectures)}")
    context = next((text[k] for k in ("max_position_embeddings", "n_positions", "max_seq_len") if text.get(k)), None)
    if context is not None and int(context) != entry.context_length:
        problems.append(f"context_length: {entry.context_length} but the checkpoint has {context} positions")
    if problems:
        raise RegistryError(f"{entry.model_id}: the registry says " + "; ".join(problems) + "; fix data/registry/models.yaml")


def _check_model_type(entry: ModelEntry, path: Path, model_type: str | None) -> None:
    """A model type this transformers does not know would fail later, at loading, with an
    "upgrade transformers" hint that names neither the model nor the type."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if model_type is None:
        raise RegistryError(f"{entry.model_id}: {path / 'config.json'} has no model_type; it is not a transformers checkpoint")
    if model_type not in CONFIG_MAPPING_NAMES:
        raise RegistryError(
            f"{entry.model_id}: {path / 'config.json'} has model_type {model_type!r}, which transformers "
            f"{transformers.__version__} does not know; upgrade transformers if a newer release has it, "
            "or register a checkpoint of a supported architecture"
        )


def _portable(ws: Workspace, path: Path) -> str:
    """Paths inside the project are stored relative to it, so clones and DVC pulls work."""
    try:
        return str(path.resolve().relative_to(ws.root.resolve()))
    except ValueError:
        return str(path)


def read_checkpoint(ws: Workspace, model_id: str) -> Checkpoint:
    path = _require(ws.checkpoint_record(model_id), "model_checkpoints", model_id)
    record = json.loads(path.read_text())
    if not record.get("available"):
        raise ModelUnavailableError(record.get("reason", f"{model_id} is unavailable"))
    return Checkpoint(model_id, ws.root / record["path"], record["checksum"], record.get("quantization"))


def load_registered_model(model_id: str, *, root: Path | str | None = None, device: str = "cpu",
                          allow_download: bool = False):
    """One call from a registry id to `(model, tokenizer)`: the checkpoint is prepared (and
    recorded) as the `model_checkpoints` asset would, then loaded in eval mode."""
    from eexit_core.models.checkpoints import load_model
    from eexit_core.stages.common import registries

    ws = Workspace(Path(root).resolve()) if root is not None else Workspace.default()
    models, _ = registries(ws)
    checkpoint = build_model_checkpoint(ws, models.get(model_id), allow_download=allow_download)
    return load_model(checkpoint, device=device)
