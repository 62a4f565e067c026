"""eexit_core: how much could layer-wise early exit speed up a causal LM, and at what cost?

The public API (names are a contract):

    token_layer_stats(model, tokenizer, texts, *, top_k=10, batch_size=8) -> polars.DataFrame
    eas(similarity_by_layer, alpha=0.5) -> float
    oracle_exit_layers(stats, criterion="first" | "stable") -> polars.DataFrame
    register_adapter(architecture, adapter) / ExitHead: teach eexit a new model class

No Dagster import here: everything works from a notebook on a model you already loaded.
Names load on first use, so importing one part does not pull in the rest.
"""

from importlib import import_module

_EXPORTS = {
    "ExitHead": "eexit_core.adapters",
    "UnknownArchitectureError": "eexit_core.adapters",
    "register_adapter": "eexit_core.adapters",
    "resolve_exit_head": "eexit_core.adapters",
    "eas": "eexit_core.adaptability",
    "eas_ideal": "eexit_core.adaptability",
    "STAT_COLUMNS": "eexit_core.lens",
    "token_layer_stats": "eexit_core.lens",
    "oracle_exit_layers": "eexit_core.oracle",
    "layer_means": "eexit_core.similarity",
    "similarity_curve": "eexit_core.similarity",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'eexit_core' has no attribute {name!r}")
