"""eexit_core: how much could layer-wise early exit speed up a causal LM, and at what cost?

The public API (names are a contract):

    token_layer_stats(model, tokenizer, texts, *, top_k=10, batch_size=8) -> polars.DataFrame
    eas(similarity_by_layer, alpha=0.5) -> float
    oracle_exit_layers(stats, criterion="first" | "stable") -> polars.DataFrame
    register_adapter(architecture, adapter) / ExitHead: teach eexit a new model class
    load_registered_model(model_id, *, root=None, device="cpu") -> (model, tokenizer)

No Dagster import here: everything works from a notebook on a model you already loaded.
Names load on first use, so importing one part does not pull in the rest.
"""

from importlib import import_module

_EXPORTS = {
    "ExitHead": "eexit_core.models.adapters",
    "UnknownArchitectureError": "eexit_core.models.adapters",
    "register_adapter": "eexit_core.models.adapters",
    "resolve_exit_head": "eexit_core.models.adapters",
    "eas": "eexit_core.analysis.adaptability",
    "eas_ideal": "eexit_core.analysis.adaptability",
    "STAT_COLUMNS": "eexit_core.lens.engine",
    "token_layer_stats": "eexit_core.lens.engine",
    "oracle_exit_layers": "eexit_core.analysis.oracle",
    "layer_means": "eexit_core.analysis.similarity",
    "similarity_curve": "eexit_core.analysis.similarity",
    "load_registered_model": "eexit_core.stages.checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'eexit_core' has no attribute {name!r}")
