"""Per-layer means and similarity curves against plain Python loops."""

from __future__ import annotations

import math
import random

import polars as pl
import pytest

from eexit_core.analysis.similarity import SIMILARITY_METRICS, layer_means, similarity_curve
from eexit_core.lens.engine import STAT_COLUMNS


def _random_stats(n_tokens=7, n_layers=5, seed=0) -> pl.DataFrame:
    rng = random.Random(seed)
    rows = []
    for t in range(n_tokens):
        for l in range(1, n_layers + 1):
            row = {"sample": 0, "position": t, "layer": l}
            for name in STAT_COLUMNS:
                row[name] = rng.uniform(-1, 1) if "cos" in name else rng.uniform(0, 3)
            row["top1_match"] = rng.random() < 0.5
            rows.append(row)
    return pl.DataFrame(rows)


def test_layer_means_match_loops():
    stats = _random_stats()
    table = layer_means(stats, n_layers=5)
    for l in range(1, 6):
        rows = [r for r in stats.iter_rows(named=True) if r["layer"] == l]
        got = table.filter(pl.col("layer") == l).row(0, named=True)
        assert got["n_tokens"] == len(rows)
        assert got["depth_frac"] == pytest.approx(l / 5)
        for name in STAT_COLUMNS:
            assert got[name] == pytest.approx(sum(float(r[name]) for r in rows) / len(rows), abs=1e-12)


def test_nonfinite_values_are_counted_not_averaged():
    stats = _random_stats().with_columns(
        pl.when((pl.col("layer") == 2) & (pl.col("position") == 0)).then(float("nan")).otherwise(pl.col("kl_to_final")).alias("kl_to_final")
    )
    table = layer_means(stats, n_layers=5)
    layer2 = table.filter(pl.col("layer") == 2).row(0, named=True)
    assert layer2["n_nonfinite"] == 1
    assert math.isfinite(layer2["kl_to_final"])


def test_curves_are_in_unit_interval_and_kl_maps_through_exp():
    table = layer_means(_random_stats(), n_layers=5)
    for metric in SIMILARITY_METRICS:
        curve = similarity_curve(table, metric)
        assert len(curve) == 5 and all(0.0 <= s <= 1.0 for s in curve)
    kl = table.sort("layer")["kl_to_final"].to_list()
    assert similarity_curve(table, "kl_to_final") == pytest.approx([math.exp(-v) for v in kl])
    cos = table.sort("layer")["logit_cos"].to_list()
    assert similarity_curve(table, "logit_cos") == pytest.approx([min(max(v, 0.0), 1.0) for v in cos])


def test_unknown_metric():
    with pytest.raises(ValueError, match="unknown similarity metric"):
        similarity_curve(layer_means(_random_stats(), 5), "vibes")
