"""Router statistics of mixture-of-experts models, against transformers' own router logits."""

from __future__ import annotations

import math

import polars as pl
import pytest
import torch

from eexit_core.analysis.similarity import layer_means
from eexit_core.lens.engine import token_layer_stats
from tests.conftest import TEXTS, sharpen
from tests.tolerance import Float32Tolerance, assert_arrays_within


def _moe(kind: str, vocab: int):
    import transformers as t

    torch.manual_seed(1)
    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=32, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  bos_token_id=2, eos_token_id=3, pad_token_id=0)
    configs = {
        "mixtral": lambda: t.MixtralConfig(num_local_experts=4, num_experts_per_tok=2, **common),
        "qwen3_moe": lambda: t.Qwen3MoeConfig(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, **common),
        "olmoe": lambda: t.OlmoeConfig(num_experts=4, num_experts_per_tok=2, **common),
    }
    model = t.AutoModelForCausalLM.from_config(configs[kind]()).eval()
    with torch.no_grad():  # routers start near uniform; make their choices decisive
        for name, param in model.named_parameters():
            if name.endswith(("mlp.gate.weight", "router.weight")):
                param.mul_(20)
    return sharpen(model)


@pytest.mark.parametrize("kind", ["mixtral", "qwen3_moe", "olmoe"])
def test_router_stats_match_transformers_router_logits(kind, tokenizer):
    model = _moe(kind, len(tokenizer))
    frame = token_layer_stats(model, tokenizer, TEXTS, batch_size=3)
    assert {"router_top_expert", "router_entropy", "router_n_experts"} <= set(frame.columns)
    for sample, text in enumerate(TEXTS):
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            router_logits = model(input_ids=ids, output_router_logits=True).router_logits
        for layer, logits in enumerate(router_logits, start=1):
            logp = torch.log_softmax(logits.double(), dim=-1)
            rows = frame.filter((pl.col("sample") == sample) & (pl.col("layer") == layer)).sort("position")
            positions = rows["position"].to_list()
            assert rows["router_top_expert"].to_list() == logits.argmax(-1)[positions].tolist()
            expected = (-(logp.exp() * logp).sum(-1))[positions]
            # an entropy over the experts: the float32 error model with the experts as the vocabulary
            tolerance = Float32Tolerance.for_model(model)
            tolerance = Float32Tolerance(tolerance.d_model, logits.shape[-1], tolerance.n_layers, tolerance.d_inner)
            assert_arrays_within(tolerance, "entropy", rows["router_entropy"], expected)


def test_layer_router_means_match_loops(tokenizer):
    model = _moe("mixtral", len(tokenizer))
    frame = token_layer_stats(model, tokenizer, TEXTS)
    table = layer_means(frame, 3).sort("layer")
    tops = {(r["sample"], r["position"], r["layer"]): r["router_top_expert"] for r in frame.iter_rows(named=True)}
    tokens = sorted({(s, p) for s, p, _ in tops})
    for layer in (1, 2, 3):
        counts: dict[int, int] = {}
        for s, p in tokens:
            counts[tops[(s, p, layer)]] = counts.get(tops[(s, p, layer)], 0) + 1
        shares = [c / len(tokens) for c in counts.values()]
        load_entropy = -sum(x * math.log(x) for x in shares)
        row = table.filter(pl.col("layer") == layer).row(0, named=True)
        assert row["router_load_entropy"] == pytest.approx(load_entropy)
        assert row["router_load_balance"] == pytest.approx(load_entropy / math.log(4))
        if layer == 1:
            assert row["router_top_change"] is None
        else:
            changed = sum(tops[(s, p, layer)] != tops[(s, p, layer - 1)] for s, p in tokens) / len(tokens)
            assert row["router_top_change"] == pytest.approx(changed)


def test_dense_models_have_no_router_columns(llama, tokenizer):
    frame = token_layer_stats(llama, tokenizer, TEXTS[:1])
    assert not any(c.startswith("router_") for c in frame.columns)
