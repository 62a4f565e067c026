"""Where a model keeps its blocks, its final norm and its LM head: the exit-head adapters.

All model-specific knowledge lives here (the measurement loop lives in `lens.py`). An
adapter is a function `model -> ExitHead`. Adapters are registered by transformers class
name; a class we have not met falls back to a structural probe of the common layouts,
and a model that matches none fails with `UnknownArchitectureError`, which shows how to
register an adapter in a few lines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from eexit_core.errors import EexitError


@dataclass(frozen=True)
class ExitHead:
    """The blocks of a causal LM and the exit head `E(h)` it applies after the last one.

    `E(h) = softcap(lm_head(final_norm(h)))`. `blocks[l-1]` produces the residual
    stream `h_l`; its output (or the first element of a tuple output) is `h_l`.
    """

    blocks: Sequence[nn.Module]
    final_norm: nn.Module | None
    lm_head: nn.Module
    logit_softcap: float | None = None

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def vocab_size(self) -> int | None:
        """Rows of the head's weight (None for a head without one)."""
        weight = getattr(self.lm_head, "weight", None)
        return int(weight.shape[0]) if weight is not None else None

    def normed(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden if self.final_norm is None else self.final_norm(hidden)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        normed = self.normed(hidden)
        weight = getattr(self.lm_head, "weight", None)
        if weight is not None:  # e.g. Mamba keeps its residual stream in float32
            normed = normed.to(weight.dtype)
        logits = self.lm_head(normed)
        if self.logit_softcap:
            logits = torch.tanh(logits / self.logit_softcap) * self.logit_softcap
        return logits

    def logits_into(self, hidden: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """`E(hidden)` written into a reusable float32 buffer `out` [N, V].

        Reusing one buffer matters: a fresh vocabulary-sized tensor per layer is
        re-mapped and paged in by the allocator every time.
        """
        head = self.lm_head
        if isinstance(head, nn.Linear):
            weight = head.weight
            normed = self.normed(hidden).to(weight.dtype)
            if weight.dtype == torch.float32:
                torch.matmul(normed, weight.t(), out=out)
            else:
                # half-precision weights: multiply in their dtype, accumulate and keep fp32
                _half_matmul_into(normed, weight, out)
            if head.bias is not None:
                out.add_(head.bias.to(torch.float32))
            if self.logit_softcap:
                out.div_(self.logit_softcap).tanh_().mul_(self.logit_softcap)
        else:
            out.copy_(self.logits(hidden))
        return out


def _half_matmul_into(normed: torch.Tensor, weight: torch.Tensor, out: torch.Tensor) -> None:
    """out = normed @ weightᵀ with fp32 output, without an fp32 copy of the weight."""
    try:
        out.copy_(torch.mm(normed, weight.t(), out_dtype=torch.float32))
    except (TypeError, RuntimeError, NotImplementedError):
        out.copy_(normed @ weight.t())


Adapter = Callable[[nn.Module], ExitHead]

_ADAPTERS: dict[str, Adapter] = {}


class UnknownArchitectureError(EexitError, LookupError):
    """No adapter knows where this model keeps its blocks, final norm and LM head."""


def register_adapter(architecture: str | type, adapter: Adapter) -> None:
    """Teach eexit a model class: `architecture` is the class (or its name)."""
    name = architecture if isinstance(architecture, str) else architecture.__name__
    _ADAPTERS[name] = adapter


def _get(module: nn.Module, dotted: str) -> nn.Module | None:
    for part in dotted.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def _softcap(model: nn.Module) -> float | None:
    config = getattr(model, "config", None)
    config = getattr(config, "get_text_config", lambda: config)()
    cap = getattr(config, "final_logit_softcapping", None)
    return float(cap) if cap else None


# (blocks, final norm) attribute paths of the layouts transformers uses, by family.
_LAYOUTS: tuple[tuple[str, str], ...] = (
    ("model.layers", "model.norm"),  # Llama, Mistral, Qwen, Gemma, Phi-3, OLMo, Mixtral, ...
    ("model.layers", "model.final_layernorm"),  # hybrids: Jamba, Zamba, Zamba2
    ("model.language_model.layers", "model.language_model.norm"),  # multimodal wrappers
    ("transformer.h", "transformer.ln_f"),  # GPT-2, GPT-J, Falcon
    ("gpt_neox.layers", "gpt_neox.final_layer_norm"),  # GPT-NeoX, Pythia
    ("model.decoder.layers", "model.decoder.final_layer_norm"),  # OPT
    ("backbone.layers", "backbone.norm_f"),  # Mamba, Mamba2
    ("model.blocks", "model.norm"),
)


def probe_layout(model: nn.Module) -> ExitHead | None:
    """Find blocks, final norm and head by the common attribute layouts, or None.

    A layout matches only when both its blocks and its final norm exist: several
    families share `model.layers` but name the norm differently, and silently
    dropping the norm would give a wrong exit head.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        return None
    for blocks_path, norm_path in _LAYOUTS:
        blocks = _get(model, blocks_path)
        norm = _get(model, norm_path)
        if isinstance(blocks, nn.ModuleList) and len(blocks) > 0 and norm is not None:
            return ExitHead(list(blocks), norm, head, _softcap(model))
    return None


_HOW_TO_REGISTER = """\
Register an adapter that says where the blocks, the final norm and the LM head are:

    from eexit_core import ExitHead, register_adapter

    register_adapter("{name}", lambda m: ExitHead(
        blocks=list(m.model.layers),   # the module list whose outputs are h_1..h_L
        final_norm=m.model.norm,       # applied before the head (None if there is none)
        lm_head=m.lm_head,             # hidden -> vocabulary logits
        logit_softcap=None,            # the model's final logit soft-capping, if any
    ))
"""


def resolve_exit_head(model: nn.Module) -> ExitHead:
    """The exit head of `model`: its registered adapter, else the structural probe."""
    name = type(model).__name__
    adapter = _ADAPTERS.get(name)
    head = adapter(model) if adapter is not None else probe_layout(model)
    if head is None:
        raise UnknownArchitectureError(
            f"eexit does not know where {name} keeps its blocks, final norm and LM head.\n"
            + _HOW_TO_REGISTER.format(name=name)
        )
    return head


# Where transformers keeps a mixture-of-experts block's router, relative to the block.
# Each router's forward returns the router logits [tokens, experts] (first, if a tuple).
_ROUTER_PATHS: tuple[str, ...] = ("mlp.gate", "mlp.router", "block_sparse_moe.gate", "feed_forward.router", "moe.gate")


def resolve_routers(head: ExitHead) -> list[nn.Module | None]:
    """The router of each block (None for a dense block): empty of routers for dense models."""
    routers: list[nn.Module | None] = []
    for block in head.blocks:
        found = None
        for path in _ROUTER_PATHS:
            module = _get(block, path)
            # a shared-expert gate or a plain projection has a single output, not experts
            if module is not None and not (isinstance(module, nn.Linear) and module.out_features == 1):
                found = module
                break
        routers.append(found)
    return routers


def _opt_adapter(model: nn.Module) -> ExitHead:
    # OPT-350m projects the hidden state down to the embedding size after the final norm.
    decoder = model.model.decoder
    project_out = getattr(decoder, "project_out", None)
    norm: nn.Module | None = decoder.final_layer_norm
    if project_out is not None:
        norm = nn.Sequential(*(m for m in (norm, project_out) if m is not None))
    return ExitHead(list(decoder.layers), norm, model.lm_head, None)


register_adapter("OPTForCausalLM", _opt_adapter)


class _ScaledNorm(nn.Module):
    """`norm(h) * scale`: a constant logit multiplier folded in front of a bias-free head.

    Folding it here (rather than after the head) keeps the head a plain `nn.Linear`, so
    the fast in-place path and the d-space lens still apply: `W (s x) = s (W x)`.
    """

    def __init__(self, norm: nn.Module, scale: float):
        super().__init__()
        self.norm, self.scale = norm, float(scale)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(hidden) * self.scale


def _falcon_h1_adapter(model: nn.Module) -> ExitHead:
    # Falcon-H1 (muP) multiplies its logits by `lm_head_multiplier`; its head has no bias.
    inner = model.model
    scale = float(getattr(inner, "lm_head_multiplier", 1.0))
    norm: nn.Module = inner.final_layernorm
    if scale != 1.0:
        if getattr(model.lm_head, "bias", None) is not None:
            raise ValueError("Falcon-H1 lm_head_multiplier folds into the norm only for a bias-free head")
        norm = _ScaledNorm(norm, scale)
    return ExitHead(list(inner.layers), norm, model.lm_head, None)


register_adapter("FalconH1ForCausalLM", _falcon_h1_adapter)
