"""The Early-exit Adaptability Score (EAS) of the paper, SPEC §1.

    w_l = (L - l) / L
    EAS = (1/L) · Σ_{l=1..L} S_l^α · w_l^(1-α)

a weighted geometric mean of how close layer l is to the final answer (S_l) and how
much exiting there would save (w_l).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def skip_weights(n_layers: int) -> np.ndarray:
    """w_l = (L - l) / L for l = 1..L."""
    if n_layers < 1:
        raise ValueError("a model has at least one layer")
    layers = np.arange(1, n_layers + 1, dtype=np.float64)
    return (n_layers - layers) / n_layers


def eas(similarity_by_layer: Sequence[float], alpha: float = 0.5) -> float:
    """EAS for per-layer similarities S_1..S_L (each in [0, 1]).

    At α = 1 the weights drop out (0^0 = 1); at α = 0 the similarities do.
    """
    s = np.asarray(similarity_by_layer, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError("similarity_by_layer must be a non-empty sequence S_1..S_L")
    if not np.all(np.isfinite(s)) or s.min() < 0.0 or s.max() > 1.0:
        raise ValueError("similarities must be finite and within [0, 1]")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be within [0, 1], got {alpha}")
    w = skip_weights(s.size)
    return float(np.mean(np.power(s, alpha) * np.power(w, 1.0 - alpha)))


def eas_ideal(n_layers: int, alpha: float = 0.5) -> float:
    """EAS of a model whose every layer already matches the final one (S_l = 1)."""
    return eas(np.ones(n_layers), alpha)
