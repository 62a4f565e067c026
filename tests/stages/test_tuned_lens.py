"""The tuned_lens stage on a copy of the finished tiny run, from float32 dumps: the held-out
own-head rows equal the live lens's rows for the held-out prompts; the tuned head's last
layer equals the own head's; the fit is stored with the translators; a new dump of other
dtype makes the lens stale, and a missing dump is named."""

from __future__ import annotations

import polars as pl
import pytest

from eexit_core.lens.tuned import Translators, TunedLensSettings
from eexit_core.stages import TOKEN_STATS, MissingUpstreamError, registries
from eexit_core.stages.layer_activations import DumpSettings, build_layer_activations
from eexit_core.stages.tuned_lens import (
    TUNED_LENS,
    build_tuned_lens,
    fit_path,
    translators_path,
    tuned_lens_data_version,
    tuned_lens_problem,
)
from eexit_core.storage.workspace import Workspace

SETTINGS = TunedLensSettings(steps=5)
MODEL = "tiny-llama"


def _setup(root):
    ws = Workspace(root)
    models, workloads = registries(ws)
    chosen = [workloads.get("humaneval"), workloads.get("shakespeare")]
    return ws, models.get(MODEL), chosen


def test_the_tuned_lens_is_fitted_from_dumps_and_judged_on_held_out_prompts(tiny_run_copy):
    ws, model, workloads = _setup(tiny_run_copy)
    with pytest.raises(MissingUpstreamError, match="humaneval: .*no activation dump here"):
        build_tuned_lens(ws, model, workloads, SETTINGS)
    for workload in workloads:
        build_layer_activations(ws, model, workload)
    heard = []
    fits = build_tuned_lens(ws, model, workloads, SETTINGS, progress=heard.append)
    assert fits.height == 2 * 4 and set(fits["exit_head"]) == {"tuned", "control"}
    assert "chosen per layer on 0 validation tokens" in heard[0]
    tuned = fits.filter(pl.col("exit_head") == "tuned")
    # two prompts a workload leave none for validation: the training tokens choose, never worse than the own head
    assert tuned["kl_validation"].is_null().all() and (tuned["kl_fit"] <= tuned["kl_own"] + 1e-6).all()
    translators, meta = Translators.load(translators_path(ws, MODEL))
    assert translators.weight.shape == (4, 32, 32) and meta["settings"]["steps"] == 5
    for workload in workloads:
        stats = pl.read_parquet(ws.partition_path(TUNED_LENS, MODEL, workload.workload_id))
        live = pl.read_parquet(ws.partition_path(TOKEN_STATS, MODEL, workload.workload_id))
        held_out = live.filter(pl.col("sample") % 2 == 1)  # prompts alternate: the odd ones are held out
        own = stats.filter(pl.col("exit_head") == "own").select(held_out.columns)
        assert held_out.height > 0 and own.equals(held_out)
        last = stats.filter(pl.col("layer") == 4).group_by("exit_head").agg(pl.col("kl_to_final").max(),
                                                                             pl.col("top1_match").all())
        assert last["kl_to_final"].max() < 1e-5 and last["top1_match"].all()  # the model's own last layer for all
    assert tuned_lens_problem(ws, MODEL, workloads, SETTINGS) is None
    assert tuned_lens_problem(ws, MODEL, workloads, TunedLensSettings(steps=6)) == "fitted by other code or settings"
    version = tuned_lens_data_version(ws, MODEL)
    build_layer_activations(ws, model, workloads[1], DumpSettings(dtype="bfloat16"))
    assert tuned_lens_problem(ws, MODEL, workloads, SETTINGS) == "fitted on other dumps (prompts, dtype or capture code)"
    build_tuned_lens(ws, model, workloads, SETTINGS)
    assert tuned_lens_problem(ws, MODEL, workloads, SETTINGS) is None and tuned_lens_data_version(ws, MODEL) != version
    assert fit_path(ws, MODEL).is_file() and len(heard) == 3
