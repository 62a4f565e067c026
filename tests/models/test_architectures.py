"""Every architecture family: token_layer_stats against a float64 brute force, by hand.

For each family below a tiny random-initialised model is built locally (no hub), the lens
is run on it, and every stat is checked, per token and per layer, against a float64
reference that applies the model's own final norm and head to each block's output. The
reference does not use `eexit_core.models.adapters`: the `FAMILIES` table below says, for each
family, where the blocks, the final norm (and any projection after it) and the head are,
and whether the model soft-caps or scales its final logits; block outputs are captured
with the test's own forward hooks.

Families covered (transformers 5.24): Llama, Mistral, Qwen2, Qwen3, Gemma2 (final logit
soft-capping), Gemma3 (text), Phi3, GPT-2, GPT-NeoX (Pythia), OPT (pre-norm, and
OPT-350m style: post-norm with `project_out`, word_embed_proj_dim != hidden_size), OLMo,
OLMo2, Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, DeepSeek-V2, DeepSeek-V3, GPT-OSS, Mamba,
Mamba2, and the hybrids Jamba, Falcon-H1 (with its lm_head multiplier), Zamba and Zamba2
(with shared transformer blocks). For SSM models a block is a mixer layer; for hybrids
every block (attention, Mamba or hybrid) counts.

Families transformers lacks: none of those listed; a family whose class is missing from
the installed transformers is skipped with the reason.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import polars as pl
import pytest
import torch
import transformers

from eexit_core.lens.engine import STAT_COLUMNS, token_layer_stats
from tests.conftest import TEXTS, build_tokenizer, sharpen
from tests.reference import float64_exit_logits, reference_stats
from tests.tolerance import Float32Tolerance, assert_within

VOCAB = 256


@dataclass(frozen=True)
class Family:
    """A tiny config and the test's own map of where the exit head lives."""

    name: str
    model_cls: str
    config_cls: str
    config: dict
    blocks: str  # dotted path of the module list whose outputs are h_1..h_L
    norm: tuple[str, ...]  # modules applied to h before the head, in order (may be empty)
    head: str  # dotted path of the LM head
    softcap: float | None = None  # final logit soft-capping, tanh(z / c) * c
    logit_scale: str | None = None  # dotted path of a scalar the model multiplies logits by
    sharpen: float = 4.0
    # (parameter-name suffix, factor): scale weights so the blocks move the residual stream
    # enough that early layers disagree with the last (Mamba's mixers start near-silent)
    boost: tuple[str, float] | None = None


def _dense(**over) -> dict:
    base = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.2,
    )
    base.update(over)
    return base


_DECODER = ("model.layers", ("model.norm",), "lm_head")

FAMILIES: tuple[Family, ...] = (
    Family("llama", "LlamaForCausalLM", "LlamaConfig", _dense(), *_DECODER),
    Family("mistral", "MistralForCausalLM", "MistralConfig", _dense(sliding_window=16), *_DECODER),
    Family("qwen2", "Qwen2ForCausalLM", "Qwen2Config", _dense(), *_DECODER),
    Family("qwen3", "Qwen3ForCausalLM", "Qwen3Config", _dense(head_dim=8), *_DECODER),
    Family(
        "gemma2", "Gemma2ForCausalLM", "Gemma2Config",
        _dense(head_dim=8, sliding_window=16, final_logit_softcapping=5.0), *_DECODER, softcap=5.0,
    ),
    Family(
        "gemma3", "Gemma3ForCausalLM", "Gemma3TextConfig",
        _dense(head_dim=8, sliding_window=16, final_logit_softcapping=5.0), *_DECODER, softcap=5.0,
    ),
    Family("phi3", "Phi3ForCausalLM", "Phi3Config", _dense(), *_DECODER),
    Family(
        "gpt2", "GPT2LMHeadModel", "GPT2Config",
        dict(n_embd=32, n_layer=3, n_head=4, n_positions=64, initializer_range=0.2),
        "transformer.h", ("transformer.ln_f",), "lm_head",
    ),
    Family(
        "gpt_neox", "GPTNeoXForCausalLM", "GPTNeoXConfig",
        _dense(num_key_value_heads=None, rotary_pct=0.25),
        "gpt_neox.layers", ("gpt_neox.final_layer_norm",), "lm_head",
    ),
    Family(
        "opt", "OPTForCausalLM", "OPTConfig",
        dict(hidden_size=32, ffn_dim=64, num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=64,
             word_embed_proj_dim=32, init_std=0.2),
        "model.decoder.layers", ("model.decoder.final_layer_norm",), "lm_head",
    ),
    Family(  # OPT-350m style: post-norm blocks, no final norm, project_out to a smaller embedding
        "opt_project_out", "OPTForCausalLM", "OPTConfig",
        dict(hidden_size=32, ffn_dim=64, num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=64,
             word_embed_proj_dim=16, do_layer_norm_before=False, init_std=0.2),
        "model.decoder.layers", ("model.decoder.project_out",), "lm_head",
    ),
    Family("olmo", "OlmoForCausalLM", "OlmoConfig", _dense(), *_DECODER),
    Family("olmo2", "Olmo2ForCausalLM", "Olmo2Config", _dense(), *_DECODER),
    Family(
        "mixtral", "MixtralForCausalLM", "MixtralConfig",
        _dense(num_local_experts=4, num_experts_per_tok=2), *_DECODER,
    ),
    Family(
        "qwen2_moe", "Qwen2MoeForCausalLM", "Qwen2MoeConfig",
        _dense(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32),
        *_DECODER,
    ),
    Family(
        "qwen3_moe", "Qwen3MoeForCausalLM", "Qwen3MoeConfig",
        _dense(head_dim=8, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32), *_DECODER,
    ),
    Family("olmoe", "OlmoeForCausalLM", "OlmoeConfig", _dense(num_experts=4, num_experts_per_tok=2), *_DECODER),
    Family(
        "deepseek_v2", "DeepseekV2ForCausalLM", "DeepseekV2Config",
        _dense(num_key_value_heads=4, n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1,
               moe_intermediate_size=16, first_k_dense_replace=1, kv_lora_rank=16, q_lora_rank=16,
               qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8, n_group=1, topk_group=1),
        *_DECODER,
    ),
    Family(
        "deepseek_v3", "DeepseekV3ForCausalLM", "DeepseekV3Config",
        _dense(num_key_value_heads=4, n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1,
               moe_intermediate_size=16, first_k_dense_replace=1, kv_lora_rank=16, q_lora_rank=16,
               qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8, n_group=1, topk_group=1),
        *_DECODER,
    ),
    Family(
        "gpt_oss", "GptOssForCausalLM", "GptOssConfig",
        _dense(intermediate_size=32, head_dim=8, num_local_experts=4, num_experts_per_tok=2, sliding_window=16,
               layer_types=["sliding_attention", "full_attention", "sliding_attention"]),
        *_DECODER,
    ),
    Family(
        "mamba", "MambaForCausalLM", "MambaConfig",
        dict(hidden_size=32, state_size=8, num_hidden_layers=3, expand=2, conv_kernel=4, initializer_range=0.2),
        "backbone.layers", ("backbone.norm_f",), "lm_head", boost=("mixer.out_proj.weight", 4.0),
    ),
    Family(
        "mamba2", "Mamba2ForCausalLM", "Mamba2Config",
        dict(hidden_size=32, num_heads=4, head_dim=16, state_size=8, n_groups=1, num_hidden_layers=3, expand=2,
             conv_kernel=4, chunk_size=8),
        "backbone.layers", ("backbone.norm_f",), "lm_head",
    ),
    Family(
        "jamba", "JambaForCausalLM", "JambaConfig",
        _dense(num_hidden_layers=4, attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2,
               expert_layer_offset=1, num_experts=4, num_experts_per_tok=2, mamba_d_state=8, mamba_d_conv=4,
               mamba_expand=2, mamba_dt_rank=4, use_mamba_kernels=False),
        "model.layers", ("model.final_layernorm",), "lm_head",
    ),
    Family(
        "falcon_h1", "FalconH1ForCausalLM", "FalconH1Config",
        _dense(head_dim=8, mamba_d_ssm=32, mamba_n_heads=4, mamba_d_head=8, mamba_n_groups=1, mamba_d_state=8,
               mamba_chunk_size=8, lm_head_multiplier=0.5, embedding_multiplier=2.0),
        "model.layers", ("model.final_layernorm",), "lm_head", logit_scale="model.lm_head_multiplier",
    ),
    Family(
        "zamba", "ZambaForCausalLM", "ZambaConfig",
        _dense(num_hidden_layers=4, layers_block_type=["mamba", "hybrid", "mamba", "hybrid"],
               mamba_d_state=8, mamba_d_conv=4, mamba_expand=2, mamba_dt_rank=4, n_mamba_heads=2,
               use_mamba_kernels=False),
        "model.layers", ("model.final_layernorm",), "lm_head", boost=("mamba.out_proj.weight", 4.0),
    ),
    Family(
        "zamba2", "Zamba2ForCausalLM", "Zamba2Config",
        _dense(num_hidden_layers=4, layers_block_type=["mamba", "hybrid", "mamba", "hybrid"], num_mem_blocks=1,
               mamba_d_state=8, mamba_d_conv=4, mamba_expand=2, n_mamba_heads=4, chunk_size=8,
               use_mamba_kernels=False, adapter_rank=8),
        "model.layers", ("model.final_layernorm",), "lm_head",
    ),
)


def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


@functools.cache
def tokenizer():
    return build_tokenizer()


@functools.cache
def build(name: str):
    family = next(f for f in FAMILIES if f.name == name)
    if not hasattr(transformers, family.model_cls) or not hasattr(transformers, family.config_cls):
        pytest.skip(f"transformers {transformers.__version__} has no {family.model_cls}")
    config = getattr(transformers, family.config_cls)(
        vocab_size=VOCAB, bos_token_id=2, eos_token_id=3, pad_token_id=0, **family.config
    )
    torch.manual_seed(0)
    model = getattr(transformers, family.model_cls)(config).eval()
    if family.boost is not None:
        suffix, factor = family.boost
        with torch.no_grad():
            for param_name, param in model.named_parameters():
                if param_name.endswith(suffix):
                    param.mul_(factor)
    return family, sharpen(model, family.sharpen)


def _hand_exit(family: Family, model):
    """E(h) in float64, from the table: float64 copies of the norm chain and head."""
    norms = [copy.deepcopy(_get(model, path)).double() for path in family.norm]
    norm = torch.nn.Sequential(*norms) if norms else None
    head = copy.deepcopy(_get(model, family.head)).double()
    scale = float(_get(model, family.logit_scale)) if family.logit_scale else 1.0

    def exit_logits(h: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z = float64_exit_logits(None, norm, head, h) * scale
        if family.softcap:
            z = torch.tanh(z / family.softcap) * family.softcap
        return z

    return exit_logits


def brute_force(family: Family, model, texts, k: int = 10) -> dict[tuple[int, int, int], dict[str, float]]:
    """Stats for every (sample, position, layer), one text and one token at a time, in float64."""
    tok = tokenizer()
    exit_logits = _hand_exit(family, model)
    blocks = list(_get(model, family.blocks))
    out = {}
    for sample, text in enumerate(texts):
        ids = tok(text, return_tensors="pt")["input_ids"]
        captured: list[torch.Tensor] = []

        def keep(_module, _inputs, output):
            captured.append(output[0] if isinstance(output, (tuple, list)) else output)

        hooks = [block.register_forward_hook(keep) for block in blocks]
        try:
            with torch.no_grad():
                logits = model(input_ids=ids, use_cache=False).logits[0]
        finally:
            for hook in hooks:
                hook.remove()
        assert len(captured) == len(blocks), f"{family.name}: {len(captured)} block outputs for {len(blocks)} blocks"
        n_layers = len(captured)
        # the table is right: E(h_L) by hand reproduces the model's own logits
        by_hand = exit_logits(captured[-1][0])
        assert torch.allclose(by_hand, logits.double(), atol=1e-4, rtol=1e-4), f"{family.name}: table is wrong"
        for pos in range(1, ids.shape[1]):  # position 0 is the BOS
            z_final = logits[pos].double()
            h_final = captured[-1][0, pos]
            for layer in range(1, n_layers + 1):
                h = captured[layer - 1][0, pos]
                z = z_final if layer == n_layers else exit_logits(h)
                out[(sample, pos, layer)] = reference_stats(z, z_final, h, h_final, k)
    return out


def _key(row: dict) -> tuple[int, int, int]:
    return row["sample"], row["position"], row["layer"]


def assert_matches(frame: pl.DataFrame, reference: dict, model) -> None:
    """Every stat within the float32 error model of the family's sizes (tests/tolerance.py)."""
    assert frame.height == len(reference)
    assert_within(Float32Tolerance.for_model(model), frame.iter_rows(named=True), reference, STAT_COLUMNS, _key)


NAMES = [f.name for f in FAMILIES]


@pytest.mark.parametrize("name", NAMES)
def test_stats_match_float64_reference(name):
    family, model = build(name)
    frame = token_layer_stats(model, tokenizer(), TEXTS, batch_size=3)
    assert_matches(frame, brute_force(family, model, TEXTS), model)
    # informative: an early layer disagrees with the final one somewhere
    early = frame.filter(pl.col("layer") == 1)
    assert early["top1_match"].mean() < 1.0
    assert early["kl_to_final"].mean() > 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_batched_equals_one_by_one(name):
    """Right padding and mixed lengths in a batch of 3 do not change any number."""
    _, model = build(name)
    one_by_one = token_layer_stats(model, tokenizer(), TEXTS, batch_size=1)
    batched = token_layer_stats(model, tokenizer(), TEXTS, batch_size=3)
    assert one_by_one.select("sample", "position", "layer").equals(batched.select("sample", "position", "layer"))
    assert one_by_one["top1_match"].equals(batched["top1_match"])
    # two float32 runs, each within the error model of the exact value: twice the bound apart
    reference = {_key(row): row for row in one_by_one.iter_rows(named=True)}
    assert_within(Float32Tolerance.for_model(model, runs=2), batched.iter_rows(named=True), reference,
                  STAT_COLUMNS, _key)
