"""The zoo's matched variants: transformers model classes built from configs (no model
code of our own), differing in one factor at a time.

Every variant of a size shares the tokenizer, depth, width, data order and token budget;
what differs is the architecture class (dense Llama, Mixtral MoE, Mamba2 SSM, Falcon-H1
hybrid: attention and a Mamba2 mixer side by side in every block), the size (depth and width scaled together), the recipe (base, instruct,
early-exit-aware) or the seed. A MoE is matched to the dense model of its size either on
*active* parameters (each of 4 experts half the dense MLP, 2 routed per token) or on
*total* parameters (each a quarter, 2 routed); the SSM and the hybrid are sized to the
dense model's total within a few percent (`tests/zoo/test_variants.py` checks all four).

Both state-space variants run Mamba2's chunked scan, its pure-torch path on a CPU: Mamba v1
(and so Jamba) falls back to a sequential scan there, about 25 tokens/s (SPEC §1), and a
Mamba2 chunk as long as the training window (128) is 2-3x faster than the default 256,
which pads every window to twice its length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

ArchClass = Literal["dense", "moe", "ssm", "hybrid"]
Recipe = Literal["base", "instruct", "ee_aware"]
MoeMatch = Literal["active", "total"]

N_EXPERTS, EXPERTS_PER_TOKEN = 4, 2
CONTEXT = 512  # positions: training sequences and the workloads' prompts (max_tokens 128) fit
SSM_CHUNK = 128  # Mamba2's scan chunk: the training window (TrainingPlan.seq_len)


@dataclass(frozen=True)
class Size:
    n_layers: int
    d_model: int
    n_heads: int
    ffn: int  # the dense MLP's hidden width
    ssm_expand: int  # Mamba2's inner width over d_model, chosen to match the dense total


# Two dense sizes per scale (settings.ZOO_SCALES), depth and width scaled together: s and m
# for the CPU default (1.3M and 3.4M parameters at a 4096 vocabulary), l and xl for one GPU
# (15.7M and 50M). Every other arch class is matched to the dense model of its size.
SIZES = {"s": Size(n_layers=4, d_model=128, n_heads=4, ffn=352, ssm_expand=4),
         "m": Size(n_layers=6, d_model=192, n_heads=6, ffn=512, ssm_expand=4),
         "l": Size(n_layers=8, d_model=384, n_heads=6, ffn=1024, ssm_expand=4),
         "xl": Size(n_layers=12, d_model=576, n_heads=9, ffn=1536, ssm_expand=4)}


@dataclass(frozen=True)
class Variant:
    arch_class: ArchClass
    size: str = "s"
    recipe: Recipe = "base"
    seed: int = 0
    moe_match: MoeMatch | None = None

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"unknown zoo size {self.size!r}; sizes: {', '.join(SIZES)}")
        if (self.arch_class == "moe") != (self.moe_match is not None):
            raise ValueError("a moe variant names moe_match (active or total); no other variant does")

    @property
    def model_id(self) -> str:
        arch = f"moe-{self.moe_match}" if self.arch_class == "moe" else self.arch_class
        return f"zoo-{arch}-{self.size}-{self.recipe}-seed{self.seed}"


def default_variants(seeds: tuple[int, ...] = (0, 1), sizes: tuple[str, str] = ("s", "m")) -> list[Variant]:
    """Each factor against the dense base of size `sizes[0]`: arch class (both MoE
    matchings), size (`sizes[1]`), recipe, and every variant at each seed."""
    base, larger = sizes
    kinds = [Variant("dense", base), Variant("dense", larger), Variant("moe", base, moe_match="active"),
             Variant("moe", base, moe_match="total"), Variant("ssm", base), Variant("hybrid", base),
             Variant("dense", base, recipe="instruct"), Variant("dense", base, recipe="ee_aware")]
    return [Variant(v.arch_class, v.size, v.recipe, seed, v.moe_match) for seed in seeds for v in kinds]


def model_config(variant: Variant, vocab_size: int):
    """The transformers config of a variant (tied embeddings, as in the small models studied)."""
    from transformers import FalconH1Config, LlamaConfig, Mamba2Config, MixtralConfig

    size = SIZES[variant.size]
    shared = {"vocab_size": vocab_size, "hidden_size": size.d_model, "num_hidden_layers": size.n_layers,
              "tie_word_embeddings": True, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1}
    attention = {"num_attention_heads": size.n_heads, "num_key_value_heads": size.n_heads,
                 "max_position_embeddings": CONTEXT}
    if variant.arch_class == "dense":
        return LlamaConfig(**shared, **attention, intermediate_size=size.ffn, rms_norm_eps=1e-5)
    if variant.arch_class == "moe":
        share = EXPERTS_PER_TOKEN if variant.moe_match == "active" else N_EXPERTS
        return MixtralConfig(**shared, **attention, intermediate_size=size.ffn // share, num_local_experts=N_EXPERTS,
                             num_experts_per_tok=EXPERTS_PER_TOKEN, router_jitter_noise=0.0, rms_norm_eps=1e-5)
    if variant.arch_class == "ssm":
        head_dim = 128
        return Mamba2Config(**shared, expand=size.ssm_expand, head_dim=head_dim, n_groups=1, state_size=16,
                            num_heads=size.ssm_expand * size.d_model // head_dim, conv_kernel=4, chunk_size=SSM_CHUNK,
                            layer_norm_epsilon=1e-5)
    # hybrid: Falcon-H1's blocks, attention and a Mamba2 mixer in parallel, then a dense MLP
    # half the dense model's (the mixer takes the other half of the parameters)
    return FalconH1Config(**shared, **attention, intermediate_size=size.ffn // 2, mamba_d_ssm=size.d_model,
                          mamba_n_heads=size.d_model // 64, mamba_d_head=64, mamba_d_state=16, mamba_n_groups=1,
                          mamba_expand=1, mamba_chunk_size=SSM_CHUNK, rms_norm_eps=1e-5)


def build_model(variant: Variant, vocab_size: int) -> torch.nn.Module:
    """The variant's model, initialised from its seed (identical weights on every CPU run)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(variant.seed)
    return AutoModelForCausalLM.from_config(model_config(variant, vocab_size), dtype=torch.float32)


def parameter_counts(model: torch.nn.Module, variant: Variant) -> tuple[int, int]:
    """(total, active per token): a MoE routes each token through EXPERTS_PER_TOKEN of
    its N_EXPERTS experts; every other parameter is active."""
    total = sum(p.numel() for p in model.parameters())
    if variant.arch_class != "moe":
        return total, total
    experts = sum(p.numel() for name, p in model.named_parameters() if ".experts." in name)
    return total, total - experts + experts * EXPERTS_PER_TOKEN // N_EXPERTS
