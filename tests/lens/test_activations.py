"""Activation dumps: the residual stream kept once gives `token_layer_stats` without the
model; a float32 dump equals the live lens row for row (both against the float64
reference too), a half-precision one stays within the error it is stated to add; a dump
over its budget is refused before the model runs; a missing, damaged or foreign dump is
refused with its path and reason; a failed dump leaves nothing behind."""

from __future__ import annotations

import json

import polars as pl
import pytest
import torch

from eexit_core.lens import activations
from eexit_core.lens.activations import (
    ActivationDumpError,
    DumpBudgetError,
    dump_activations,
    read_manifest,
    token_layer_stats_from_dump,
)
from eexit_core.lens.engine import token_layer_stats
from eexit_core.models.adapters import resolve_exit_head
from tests.conftest import TEXTS
from tests.lens.test_engine import assert_matches, brute_force
from tests.lens.test_router import _moe


@pytest.mark.parametrize("fixture", ["llama", "gemma"])
def test_a_float32_dump_gives_the_live_numbers_exactly(request, fixture, tokenizer, tmp_path):
    model = request.getfixturevalue(fixture)
    live = token_layer_stats(model, tokenizer, TEXTS, batch_size=3)
    manifest = dump_activations(model, tokenizer, TEXTS, tmp_path / "dump", batch_size=3, model_checksum="m1",
                                prompts_checksum="p1")
    assert manifest.n_tokens == live.select("sample", "position").unique().height
    assert len(manifest.shards) == 2  # one shard per batch of three texts
    dumped = token_layer_stats_from_dump(resolve_exit_head(model), tmp_path / "dump", model_checksum="m1",
                                         prompts_checksum="p1")
    assert dumped.equals(live)
    assert_matches(dumped, brute_force(model, tokenizer, TEXTS), model)


def test_router_stats_travel_with_the_dump(tokenizer, tmp_path):
    model = _moe("mixtral", len(tokenizer))
    live = token_layer_stats(model, tokenizer, TEXTS, batch_size=2)
    dump_activations(model, tokenizer, TEXTS, tmp_path / "dump", batch_size=2)
    dumped = token_layer_stats_from_dump(resolve_exit_head(model), tmp_path / "dump")
    assert "router_entropy" in dumped.columns and dumped.equals(live)


def test_a_stats_subset_from_the_dump_equals_the_live_subset(llama, tokenizer, tmp_path):
    dump_activations(llama, tokenizer, TEXTS, tmp_path / "dump", batch_size=4)
    head = resolve_exit_head(llama)
    for subset in (["kl_to_final", "top1_match"], ["logit_cos", "hidden_cos"]):  # vocabulary space, then d-space
        live = token_layer_stats(llama, tokenizer, TEXTS, batch_size=4, stats=subset)
        assert token_layer_stats_from_dump(head, tmp_path / "dump", stats=subset).equals(live)


# unit roundoff of the dump dtypes: 8 and 11 significant bits
_ROUNDOFF = {"bfloat16": 2.0**-8, "float16": 2.0**-11}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_half_precision_dump_stays_within_its_stated_error(llama, tokenizer, tmp_path, dtype):
    """Error analysis: every residual element is rounded with relative error <= u (the
    dtype's unit roundoff), so ||dh|| <= u ||h||; RMSNorm (scale-free) passes it on, and the
    head multiplies a relative error by at most its condition number kappa; a cosine moves
    by at most 2 x the relative error of each of its two vectors, and a probability or a
    margin by at most the logits' error. So the continuous stats move by at most
    4 kappa u (about 12 u on this head); the rank stats (top-1, top-k) may flip only
    where two logits are that close, on a small share of the rows."""
    live = token_layer_stats(llama, tokenizer, TEXTS, batch_size=4)
    dump_activations(llama, tokenizer, TEXTS, tmp_path / "dump", batch_size=4, dtype=dtype)
    dumped = token_layer_stats_from_dump(resolve_exit_head(llama), tmp_path / "dump")
    assert dumped.select("sample", "position", "layer").equals(live.select("sample", "position", "layer"))
    singular = torch.linalg.svdvals(llama.lm_head.weight.detach().double())
    bound = 4 * float(singular[0] / singular[-1]) * _ROUNDOFF[dtype]
    continuous = ["logit_cos", "logit_cos_raw", "hidden_cos", "max_prob", "margin"]
    worst = {c: float((dumped[c] - live[c]).abs().max()) for c in continuous}
    assert all(v <= bound for v in worst.values()), (bound, worst)
    assert max(worst.values()) > 0  # the rounding is real: a float32 copy would not move anything
    flipped = (dumped["top1_match"] != live["top1_match"]).mean()
    assert flipped < 0.05, flipped
    manifest = read_manifest(tmp_path / "dump")
    assert manifest.n_bytes == manifest.n_tokens * 4 * 32 * 2  # two bytes a value


def test_a_dump_over_its_budget_is_refused_before_the_model_runs(llama, tokenizer, tmp_path, monkeypatch):
    n_tokens = activations.scored_token_count(llama, tokenizer, TEXTS)
    size = n_tokens * 4 * 32 * 4
    monkeypatch.setattr(activations.engine, "scored_residuals", lambda *a, **k: pytest.fail("the model ran"))
    with pytest.raises(DumpBudgetError, match=rf"{n_tokens} tokens × 4 layers × d_model 32 × 4 bytes \(float32\)"):
        dump_activations(llama, tokenizer, TEXTS, tmp_path / "dump", budget_bytes=size - 1)
    assert not (tmp_path / "dump").exists()


def test_a_failed_dump_leaves_nothing_and_keeps_the_old_one(llama, tokenizer, tmp_path, monkeypatch):
    target = tmp_path / "dump"
    dump_activations(llama, tokenizer, TEXTS, target, batch_size=4, model_checksum="old")
    calls = {"n": 0}

    def disk_full(*_args, **_kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real_save(*_args, **_kwargs)

    import safetensors.torch

    real_save = safetensors.torch.save_file
    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        dump_activations(llama, tokenizer, TEXTS, target, batch_size=2, model_checksum="new")
    assert read_manifest(target).model_checksum == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["dump"]


def test_a_missing_damaged_or_foreign_dump_is_refused_with_its_path(llama, tokenizer, tmp_path):
    head = resolve_exit_head(llama)
    with pytest.raises(ActivationDumpError, match="manifest.json is missing"):
        token_layer_stats_from_dump(head, tmp_path / "nowhere")
    target = tmp_path / "dump"
    manifest = dump_activations(llama, tokenizer, TEXTS, target, batch_size=2, model_checksum="m1", prompts_checksum="p1")
    with pytest.raises(ActivationDumpError, match="another checkpoint"):
        token_layer_stats_from_dump(head, target, model_checksum="m2")
    with pytest.raises(ActivationDumpError, match="other prompts"):
        token_layer_stats_from_dump(head, target, prompts_checksum="p2")
    shard = target / manifest.shards[1].file
    shard.write_bytes(shard.read_bytes()[:-16])
    with pytest.raises(ActivationDumpError, match=f"{shard}: the shard is damaged or truncated"):
        token_layer_stats_from_dump(head, target)
    shard.unlink()
    with pytest.raises(ActivationDumpError, match=f"{shard}: a shard of the dump is missing"):
        token_layer_stats_from_dump(head, target)
    (target / "manifest.json").write_text(json.dumps({"dtype": "float32"}))
    with pytest.raises(ActivationDumpError, match="not a readable dump manifest"):
        token_layer_stats_from_dump(head, target)


def test_a_shard_opens_with_plain_safetensors(llama, tokenizer, tmp_path):
    from safetensors.torch import load_file

    manifest = dump_activations(llama, tokenizer, TEXTS[:2], tmp_path / "dump", batch_size=2)
    shard = load_file(tmp_path / "dump" / manifest.shards[0].file)
    n_tokens = manifest.shards[0].n_tokens
    assert shard["residuals"].shape == (4, n_tokens, 32) and shard["residuals"].dtype == torch.float32
    assert set(shard["sample"].tolist()) == {0, 1} and shard["position"].min() >= 1  # the BOS is never scored
    live = token_layer_stats(llama, tokenizer, TEXTS[:2], batch_size=2)
    assert live.filter(pl.col("layer") == 1).height == n_tokens
