"""The layer_activations stage on a copy of the finished tiny run: token stats read from a
float32 dump equal the live stats the run stored, without loading the model; the dump's
size is announced before it is written and refused over the budget; a damaged, foreign or
mismatched dump is refused with its path and the reason, and a new dump serves again."""

from __future__ import annotations

import json

import polars as pl
import pytest

from eexit_core.lens.activations import ActivationDumpError, DumpBudgetError, dump_bytes
from eexit_core.stages import TOKEN_STATS, LensSettings, build_token_layer_stats, registries, token_stats_fresh
from eexit_core.stages.layer_activations import (
    DumpSettings,
    build_layer_activations,
    dump_problem,
    layer_activations_data_version,
    layer_activations_fresh,
)
from eexit_core.storage.artifacts import read_parquet_metadata
from eexit_core.storage.workspace import Workspace

MODEL, WORKLOAD = "tiny-llama", "shakespeare"


def _partition(root):
    ws = Workspace(root)
    models, workloads = registries(ws)
    return ws, models.get(MODEL), workloads.get(WORKLOAD)


def test_stats_from_a_float32_dump_equal_the_live_stats_without_the_model(tiny_run_copy, monkeypatch):
    ws, model, workload = _partition(tiny_run_copy)
    stats_path = ws.partition_path(TOKEN_STATS, MODEL, WORKLOAD)
    live = pl.read_parquet(stats_path)
    heard = []
    manifest = build_layer_activations(ws, model, workload, DumpSettings(), announce=heard.append)
    assert manifest.n_tokens == live.filter(pl.col("layer") == 1).height
    assert f"{manifest.n_bytes / 2**20:.1f} MiB" in heard[0] and f"{manifest.n_tokens} tokens × 4 layers" in heard[0]
    assert layer_activations_fresh(ws, MODEL, workload, DumpSettings())

    import eexit_core.models.checkpoints as checkpoints
    import eexit_core.stages.token_stats as token_stats

    def refuse(*_args, **_kwargs):
        raise AssertionError("the model was loaded to read a dump")

    monkeypatch.setattr(checkpoints, "load_model", refuse)
    monkeypatch.setattr(token_stats, "load_model", refuse)
    from_dump = LensSettings(dump_dtype="float32")
    assert not token_stats_fresh(ws, MODEL, workload, from_dump)  # the choice is part of the freshness key
    stats = build_token_layer_stats(ws, model, workload, from_dump)
    assert stats.equals(live)
    assert pl.read_parquet(stats_path).equals(live)
    assert read_parquet_metadata(stats_path)["dump_dtype"] == "float32"
    assert token_stats_fresh(ws, MODEL, workload, from_dump) and not token_stats_fresh(ws, MODEL, workload, LensSettings())


def test_the_size_is_refused_over_the_budget_before_anything_is_written(tiny_run_copy):
    ws, model, workload = _partition(tiny_run_copy)
    with pytest.raises(DumpBudgetError, match=r"tokens × 4 layers × d_model 32 × 4 bytes \(float32\)"):
        build_layer_activations(ws, model, workload, DumpSettings(budget_gib=1 / 2**30))
    assert not ws.dump_dir(MODEL, WORKLOAD).exists()


def test_a_bad_dump_is_refused_by_path_and_reason_and_a_new_one_serves(tiny_run_copy):
    ws, model, workload = _partition(tiny_run_copy)
    manifest = build_layer_activations(ws, model, workload)
    target = ws.dump_dir(MODEL, WORKLOAD)
    version = layer_activations_data_version(ws, MODEL, WORKLOAD)
    assert dump_problem(ws, MODEL, workload, "bfloat16") == f"{target}: dumped in float32, the settings ask for bfloat16"

    shard = target / manifest.shards[0].file
    shard.write_bytes(shard.read_bytes()[:-16])  # truncated
    assert dump_problem(ws, MODEL, workload, "float32") == (
        f"{shard}: the shard is damaged or truncated (its SHA-256 differs from the manifest's)")
    with pytest.raises(ActivationDumpError, match=f"{shard}: the shard is damaged.*materialise layer_activations"):
        build_token_layer_stats(ws, model, workload, LensSettings(dump_dtype="float32"))

    build_layer_activations(ws, model, workload)  # dumped again: the same content, the same data version
    assert dump_problem(ws, MODEL, workload, "float32") is None
    assert layer_activations_data_version(ws, MODEL, WORKLOAD) == version

    raw = json.loads((target / "manifest.json").read_text())
    (target / "manifest.json").write_text(json.dumps({**raw, "model_checksum": "0" * 64}))
    assert "dumped from another checkpoint" in dump_problem(ws, MODEL, workload, "float32")
    (target / "manifest.json").write_text(json.dumps({**raw, "inputs": {**raw["inputs"], "max_tokens": 7}}))
    assert dump_problem(ws, MODEL, workload, "float32") == (
        f"{target}: dumped with max_tokens 7, the registry now says {workload.max_tokens}")
    (target / "manifest.json").unlink()
    assert dump_problem(ws, MODEL, workload, "float32") == f"{target}: no activation dump here (manifest.json is missing)"


def test_a_half_precision_dump_holds_two_bytes_a_value(tiny_run_copy):
    """bfloat16 halves the dump exactly: the manifest's size is tokens × layers × d × 2."""
    ws, model, workload = _partition(tiny_run_copy)
    manifest = build_layer_activations(ws, model, workload, DumpSettings(dtype="bfloat16"))
    on_disk = sum((ws.dump_dir(MODEL, WORKLOAD) / s.file).stat().st_size for s in manifest.shards)
    assert manifest.n_bytes == dump_bytes(manifest.n_tokens, 4, 32, "bfloat16") == manifest.n_tokens * 4 * 32 * 2
    assert manifest.n_bytes < on_disk < manifest.n_bytes + 4096 * len(manifest.shards)  # plus sample ids and headers
