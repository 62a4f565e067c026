"""The observational regression: slopes recovered on a hand-made population, and 'not
estimable' instead of a number over too few models."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from eexit_core.analysis.factors import factor_regression


def _population(n: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """EAS = 0.2 + 0.05 per layer, exactly; two arch classes, one training recipe."""
    models = pl.DataFrame({"model_id": [f"m{i}" for i in range(n)], "params_total": [10 ** (6 + i) for i in range(n)],
                           "params_active": [10 ** (6 + i) for i in range(n)], "n_layers": [4 + 2 * i for i in range(n)],
                           "vocab_size": [32000] * n, "release_date": [dt.date(2020 + i, 1, 1) for i in range(n)],
                           "arch_class": ["dense", "moe"] * (n // 2) + ["dense"] * (n % 2), "training": ["base"] * n,
                           "zoo_variant": [None] * n}, schema_overrides={"zoo_variant": pl.String})
    scores = pl.DataFrame({"model_id": models["model_id"], "workload_id": "ALL", "metric": "logit_cos", "alpha": 0.5,
                           "eas": [0.2 + 0.05 * layers for layers in models["n_layers"]]})
    return scores, models


def test_a_slope_put_in_is_recovered_and_a_constant_factor_is_not_estimable():
    table = factor_regression(*_population(6), n_boot=200, seed=0)
    layers = table.filter(pl.col("factor") == "n_layers").row(0, named=True)
    assert layers["estimate"] == pytest.approx(0.05) and layers["ci_low"] == pytest.approx(0.05)
    assert layers["n_models"] == 6 and "confounded" in layers["note"]
    assert table.filter(pl.col("factor") == "log10_vocab_size")["note"][0].startswith("not estimable")
    assert table.filter(pl.col("factor") == "training")["note"][0].startswith("not estimable")
    arch = table.filter(pl.col("factor") == "arch_class").row(0, named=True)
    assert arch["term"] == "moe − dense" and arch["estimate"] == pytest.approx(0.1)  # moe models have 2 more layers


def test_three_models_are_too_few_for_any_estimate():
    table = factor_regression(*_population(3), n_boot=50, seed=0)
    assert table["estimate"].null_count() == table.height
    assert table.filter(pl.col("factor") == "n_layers")["note"][0] == (
        "not estimable: 3 model(s) with this factor measured; 4 or more are needed")
