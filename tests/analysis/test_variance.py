"""The variance share against the textbook two-way ANOVA on a balanced table, and a known
effect found where it was put."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from eexit_core.analysis.variance import two_way_shares


def _balanced(a: int, b: int, n: int, seed: int, model_effect: float = 1.0, workload_effect: float = 0.3,
              interaction: float = 0.5) -> tuple[pl.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    alpha, beta, gamma = rng.normal(0, model_effect, a), rng.normal(0, workload_effect, b), rng.normal(0, interaction, (a, b))
    y = alpha[:, None, None] + beta[None, :, None] + gamma[:, :, None] + rng.normal(0, 0.2, (a, b, n))
    frame = pl.DataFrame({"model_id": [f"m{i}" for i in range(a) for _ in range(b) for _ in range(n)],
                          "workload_id": [f"w{j}" for _ in range(a) for j in range(b) for _ in range(n)],
                          "eas": y.reshape(-1)})
    return frame, y


def test_balanced_sums_of_squares_are_the_textbook_ones():
    a, b, n = 4, 3, 5
    frame, y = _balanced(a, b, n, seed=0)
    grand, rows, cols, cells = y.mean(), y.mean(axis=(1, 2)), y.mean(axis=(0, 2)), y.mean(axis=2)
    textbook = {
        "model": (a - 1, n * b * ((rows - grand) ** 2).sum()),
        "workload": (b - 1, n * a * ((cols - grand) ** 2).sum()),
        "interaction": ((a - 1) * (b - 1), n * ((cells - rows[:, None] - cols[None, :] + grand) ** 2).sum()),
        "residual": (a * b * (n - 1), ((y - cells[:, :, None]) ** 2).sum()),
    }
    got = {r["component"]: r for r in two_way_shares(frame.sample(fraction=1.0, shuffle=True, seed=1))}
    total = ((y - grand) ** 2).sum()
    for source, (df, ss) in textbook.items():
        assert got[source]["df"] == df, source
        assert got[source]["ss"] == pytest.approx(ss, rel=1e-9), source
        assert got[source]["share"] == pytest.approx(ss / total, rel=1e-9), source
    assert sum(r["share"] for r in got.values()) == pytest.approx(1.0)


def test_an_effect_shows_in_the_factor_that_carries_it():
    only_workload, _ = _balanced(3, 4, 6, seed=2, model_effect=0.0, workload_effect=2.0, interaction=0.0)
    shares = {r["component"]: r["share"] for r in two_way_shares(only_workload)}
    assert shares["workload"] > 0.9 and shares["model"] < 0.05
