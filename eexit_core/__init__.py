"""eexit_core: how much could layer-wise early exit speed up a causal LM, and at what cost?

The public API (names are a contract):

    token_layer_stats(model, tokenizer, texts, *, top_k=10, batch_size=8) -> polars.DataFrame
    eas(similarity_by_layer, alpha=0.5) -> float
    oracle_exit_layers(stats, criterion="first" | "stable") -> polars.DataFrame
    register_adapter(architecture, adapter) / ExitHead: teach eexit a new model class

No Dagster import here: everything works from a notebook on a model you already loaded.
"""

from eexit_core.adapters import ExitHead, UnknownArchitectureError, register_adapter, resolve_exit_head
from eexit_core.eas import eas, eas_ideal
from eexit_core.lens import STAT_COLUMNS, token_layer_stats
from eexit_core.oracle import oracle_exit_layers
from eexit_core.similarity import layer_means, similarity_curve

__all__ = [
    "ExitHead",
    "STAT_COLUMNS",
    "UnknownArchitectureError",
    "eas",
    "eas_ideal",
    "layer_means",
    "oracle_exit_layers",
    "register_adapter",
    "resolve_exit_head",
    "similarity_curve",
    "token_layer_stats",
]
