"""Early-exit decoding: what a model produces when tokens leave the stack before layer L.

Two ways to exit, both built on the model's own blocks and its exit head (`adapters`):

* **static** -- every token exits at layer `l`: the model truncated after block `l`, with
  the final norm and LM head applied to `h_l`. No KV-cache problem: the blocks above `l`
  never run for any token.
* **dynamic** -- per token, after each candidate layer a confidence signal decides whether
  to stop (`ExitPolicy`). Blocks above the exit layer still need keys and values for
  later tokens; they are filled by *state propagation* (CALM): the exit hidden state is
  copied upward, and each skipped block runs only its attention on it (to write its KV
  cache), never its MLP.

Both work by temporarily replacing the blocks' `forward` on the instance (`_patched`),
so the model's own embedding, masks, rotary tables, cache and head are used unchanged.
The prompt is prefilled at full depth (what a deployed early-exit system does); every
token the model then predicts, including the first, comes from a decode step that the
exit rule governs.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from eexit_core.models.adapters import ExitHead, resolve_exit_head

SIGNALS = ("max_prob", "margin", "entropy", "saturation")


@dataclass(frozen=True)
class ExitPolicy:
    """Exit after layer l when `signal(l)` passes `threshold` (and l is a candidate layer).

    `max_prob`, `margin` (top-1 minus top-2 probability) and `saturation`
    (cos(h_l, h_{l-1})) exit when >= threshold; `entropy` (nats) when <= threshold.
    `check_layers`: the layers after which an exit may happen (None: every layer below
    L). Each check of a vocabulary signal costs a full LM-head matmul, so GPU-free runs
    check a strided subset.
    """

    signal: str
    threshold: float
    check_layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.signal not in SIGNALS:
            raise ValueError(f"unknown exit signal {self.signal!r}; choose one of {', '.join(SIGNALS)}")
        if not math.isfinite(self.threshold):
            raise ValueError(f"exit threshold for {self.signal} must be finite, got {self.threshold}")

    @property
    def name(self) -> str:
        op = "<=" if self.signal == "entropy" else ">="
        return f"{self.signal}{op}{self.threshold:g}"

    def passes(self, value: float) -> bool:
        return value <= self.threshold if self.signal == "entropy" else value >= self.threshold

    def candidate(self, layer: int, n_layers: int) -> bool:
        if layer >= n_layers:
            return False
        return self.check_layers is None or layer in self.check_layers


def signal_values(signal: str, logits: torch.Tensor | None, hidden: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """The confidence signal of each row (leading dims) at one layer, in float64."""
    if signal == "saturation":
        a, b = hidden.double(), previous.double()
        return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-300)
    assert logits is not None
    logp = torch.log_softmax(logits.double(), dim=-1)
    if signal == "entropy":
        return -(logp.exp() * logp).sum(-1)
    top = torch.topk(logp, 2, dim=-1).values.exp()
    return top[..., 0] if signal == "max_prob" else top[..., 0] - top[..., 1]


def signal_value(signal: str, logits: torch.Tensor | None, hidden: torch.Tensor, previous: torch.Tensor) -> float:
    """The confidence signal of one token at one layer (float64 arithmetic)."""
    flat = None if logits is None else logits.flatten()
    return float(signal_values(signal, flat, hidden.flatten(), previous.flatten()))


# --- block patching ----------------------------------------------------------------------


def _hidden_of(output: object) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output[0]  # type: ignore[index]


def _like(output: object, hidden: torch.Tensor) -> object:
    """`hidden` in the structure a block returns (a tensor, or a tuple led by it)."""
    if isinstance(output, torch.Tensor):
        return hidden
    return (hidden, *([None] * (len(output) - 1)))  # type: ignore[arg-type]


BlockForward = Callable[..., object]


@contextlib.contextmanager
def _patched(blocks: Sequence[nn.Module], make: Callable[[int, BlockForward], BlockForward]) -> Iterator[None]:
    """Give block i the forward `make(i, original_forward)` for the duration."""
    for i, block in enumerate(blocks):
        block.forward = make(i, block.forward)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for block in blocks:
            del block.forward  # back to the class's forward


@contextlib.contextmanager
def truncated(model: nn.Module, layer: int, head: ExitHead | None = None) -> Iterator[ExitHead]:
    """The model computes only blocks 1..layer; its output logits are the layer-`layer` exit head."""
    head = head or resolve_exit_head(model)
    if not 1 <= layer <= head.n_layers:
        raise ValueError(f"exit layer must be in 1..{head.n_layers}, got {layer}")
    kind: list[object] = []

    def make(i: int, original: BlockForward) -> BlockForward:
        def forward(hidden_states: torch.Tensor, *args, **kwargs):
            if i < layer:
                out = original(hidden_states, *args, **kwargs)
                kind[:] = [out]
                return out
            return _like(kind[0], hidden_states) if kind else hidden_states

        return forward

    with _patched(head.blocks, make):
        yield head


def _propagate_state(block: nn.Module, original: BlockForward, hidden: torch.Tensor, args: tuple, kwargs: dict) -> str:
    """Write the block's KV cache for a token that exited below it, from the exit state.

    Pre-norm blocks (`input_layernorm` + `self_attn`) run only their attention; any other
    block runs whole, which fills its cache just the same but saves no compute.
    """
    norm, attention = getattr(block, "input_layernorm", None), getattr(block, "self_attn", None)
    if norm is not None and attention is not None and not args:
        attention(hidden_states=norm(hidden), **kwargs)
        return "attention_only"
    original(hidden, *args, **kwargs)
    return "full_block"


@dataclass
class _DynamicExit:
    """Per-token exit decisions inside one decode step (batch of one)."""

    head: ExitHead
    policy: ExitPolicy
    active: bool = False
    exit_layer: int | None = None
    exit_hidden: torch.Tensor | None = None
    kv_fill: str = "none"
    _output_kind: object = None  # a real block output, to return the exit state in its shape

    def make(self, i: int, original: BlockForward) -> BlockForward:
        block = self.head.blocks[i]
        n_layers = self.head.n_layers
        layer = i + 1

        def forward(hidden_states: torch.Tensor, *args, **kwargs):
            if not self.active:
                return original(hidden_states, *args, **kwargs)
            if i == 0:
                self.exit_layer, self.exit_hidden = None, None
            if self.exit_layer is not None:
                assert self.exit_hidden is not None
                self.kv_fill = _propagate_state(block, original, self.exit_hidden, args, kwargs)
                return _like(self._output_kind, self.exit_hidden)
            out = original(hidden_states, *args, **kwargs)
            self._output_kind = out
            hidden = _hidden_of(out)
            if self.policy.candidate(layer, n_layers):
                logits = None if self.policy.signal == "saturation" else self.head.logits(hidden[:, -1:])
                value = signal_value(self.policy.signal, logits, hidden[:, -1], hidden_states[:, -1])
                if self.policy.passes(value):
                    self.exit_layer, self.exit_hidden = layer, hidden
            return out

        return forward

    def layers_used(self) -> int:
        return self.exit_layer if self.exit_layer is not None else self.head.n_layers


# --- generation --------------------------------------------------------------------------


@dataclass(frozen=True)
class Generation:
    """One greedy continuation and what it cost."""

    text: str
    token_ids: list[int]
    exit_layers: list[int]  # layer each generated token came from
    decode_s: float  # wall time of the decode steps (prefill excluded)
    kv_fill: str = "none"

    @property
    def mean_layers(self) -> float:
        return sum(self.exit_layers) / len(self.exit_layers) if self.exit_layers else float("nan")


def _cache_kw(model: nn.Module, cache) -> dict:
    """The cache keyword of this transformers version (`past_key_values` became `cache`)."""
    import inspect

    params = inspect.signature(type(model).forward).parameters
    return {"cache": cache} if "cache" in params else {"past_key_values": cache}


def _stop_at(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _encode(tokenizer, prompt: str, device: torch.device) -> torch.Tensor:
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
    if ids.shape[1] < 2:
        raise ValueError(f"prompt must be at least two tokens long to decode under an exit rule: {prompt!r}")
    return ids


def _eos_ids(tokenizer, model: nn.Module) -> set[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(config_eos, int):
        ids.add(config_eos)
    elif config_eos:
        ids.update(config_eos)
    return ids


@torch.inference_mode()
def _greedy(model: nn.Module, tokenizer, prompt: str, *, max_new_tokens: int, stops: Sequence[str],
            control: _DynamicExit | None = None, static_layer: int | None = None) -> Generation:
    """Greedy decoding, batch of one: prefill prompt[:-1] at full depth, then one decode
    step per token, each governed by `control` (or all at `static_layer`)."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    ids = _encode(tokenizer, prompt, device)
    eos = _eos_ids(tokenizer, model)
    cache = DynamicCache(config=model.config)
    model(input_ids=ids[:, :-1], **_cache_kw(model, cache), use_cache=True, logits_to_keep=1)
    token = ids[:, -1:]
    generated: list[int] = []
    layers: list[int] = []
    if control is not None:
        control.active = True
    started = time.perf_counter()
    try:
        for _ in range(max_new_tokens):
            logits = model(input_ids=token, **_cache_kw(model, cache), use_cache=True).logits[:, -1]
            layers.append(control.layers_used() if control is not None else static_layer or 0)
            next_id = int(logits.argmax(-1))
            if next_id in eos:
                break
            generated.append(next_id)
            if stops and _stop_at(tokenizer.decode(generated), stops)[1]:
                break
            token = torch.tensor([[next_id]], device=device)
    finally:
        if control is not None:
            control.active = False
    seconds = time.perf_counter() - started
    text, _ = _stop_at(tokenizer.decode(generated), stops)
    return Generation(text, generated, layers, seconds, control.kv_fill if control is not None else "none")


def generate_dynamic(model: nn.Module, tokenizer, prompt: str, policy: ExitPolicy | None, *, max_new_tokens: int,
                     stops: Sequence[str] = (), head: ExitHead | None = None) -> Generation:
    """Greedy continuation where each token exits at the first layer whose signal passes
    (`policy=None`: every token at full depth, through the same loop: the timing baseline)."""
    head = head or resolve_exit_head(model)
    if policy is None:
        return _greedy(model, tokenizer, prompt, max_new_tokens=max_new_tokens, stops=stops, static_layer=head.n_layers)
    control = _DynamicExit(head, policy)
    with _patched(head.blocks, control.make):
        return _greedy(model, tokenizer, prompt, max_new_tokens=max_new_tokens, stops=stops, control=control)


@torch.inference_mode()
def generate_static(model: nn.Module, tokenizer, prompts: Sequence[str], layer: int, *, max_new_tokens: int,
                    stops: Sequence[str] = (), batch_size: int = 8, head: ExitHead | None = None) -> list[Generation]:
    """Greedy continuations with every token exiting at `layer` (the model truncated after
    block `layer`), batched with left padding through `model.generate`."""
    head = head or resolve_exit_head(model)
    pad_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    out: list[Generation] = []
    try:
        with truncated(model, layer, head):
            for start in range(0, len(prompts), batch_size):
                batch = list(prompts[start:start + batch_size])
                enc = tokenizer(batch, return_tensors="pt", padding=True).to(device)
                started = time.perf_counter()
                generated = model.generate(
                    **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id,
                    stopping_criteria=_stop_criteria(tokenizer, enc.input_ids.shape[1], stops),
                    temperature=None, top_p=None, top_k=None,
                )
                seconds = time.perf_counter() - started
                new = generated[:, enc.input_ids.shape[1]:]
                eos = _eos_ids(tokenizer, model) | {pad_id}
                for row in new.tolist():
                    ids = _until(row, eos)
                    text, _ = _stop_at(tokenizer.decode(ids), stops)
                    out.append(Generation(text, ids, [layer] * max(len(ids), 1), seconds / len(batch)))
    finally:
        tokenizer.padding_side = pad_side
    return out


def _stop_criteria(tokenizer, prompt_width: int, stops: Sequence[str]):
    """Stop a row once its decoded continuation holds a stop string. Our own check, not
    `stop_strings=`: that one needs a tokenizer whose every token decodes on its own."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Stops(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
            texts = tokenizer.batch_decode(input_ids[:, prompt_width:])
            return torch.tensor([_stop_at(t, stops)[1] for t in texts], device=input_ids.device)

    return StoppingCriteriaList([_Stops()] if stops else [])


def _until(row: list[int], eos: set[int]) -> list[int]:
    for i, token in enumerate(row):
        if token in eos:
            return row[:i]
    return row


# --- multiple-choice log-likelihood ------------------------------------------------------


def _choice_ids(tokenizer, context: str, choices: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """Context ids (with special tokens) and each choice's continuation ids (" " + choice),
    the lm-evaluation-harness convention for BIG-bench multiple choice."""
    context_ids = list(tokenizer(context, add_special_tokens=True)["input_ids"])
    continuations = [list(tokenizer(" " + c, add_special_tokens=False)["input_ids"]) for c in choices]
    if len(context_ids) < 2 or any(not c for c in continuations):
        raise ValueError(f"cannot score choices {list(choices)!r} after context {context[-80:]!r}")
    return context_ids, continuations


@dataclass(frozen=True)
class _ChoiceBatch:
    """The positions that score each choice, one row per choice: the last context token,
    then the choice's tokens but its last (right padding is causal-safe: a real position
    never attends to a later pad). `targets[b, j]` is the token position (b, j) predicts."""

    context_ids: list[int]
    rows: torch.Tensor  # [n, width] token ids
    real: torch.Tensor  # [n, width] bool: not padding
    targets: torch.Tensor  # [n, width]

    @classmethod
    def build(cls, tokenizer, context: str, choices: Sequence[str], device) -> "_ChoiceBatch":
        context_ids, continuations = _choice_ids(tokenizer, context, choices)
        n, width = len(continuations), max(len(c) for c in continuations)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        rows = torch.full((n, width), pad, dtype=torch.long)
        real = torch.zeros((n, width), dtype=torch.bool)
        targets = torch.zeros((n, width), dtype=torch.long)
        for b, continuation in enumerate(continuations):
            rows[b, : len(continuation)] = torch.tensor([context_ids[-1], *continuation[:-1]])
            real[b, : len(continuation)] = True
            targets[b, : len(continuation)] = torch.tensor(continuation)
        return cls(context_ids, rows.to(device), real.to(device), targets.to(device))

    @property
    def n(self) -> int:
        return self.rows.shape[0]

    def prefill(self, model: nn.Module, copies: int):
        """The context minus its last token, run once at full depth, its cache repeated for
        `copies` rows (every row shares the context, so one prefill serves them all)."""
        from transformers import DynamicCache

        cache = DynamicCache(config=model.config)
        context = torch.tensor([self.context_ids[:-1]], device=self.rows.device)
        _run_body(model, context, cache)
        if copies > 1:
            cache.batch_repeat_interleave(copies)
        return cache


def _run_body(model: nn.Module, input_ids: torch.Tensor, cache) -> None:
    """The blocks (and their hooks) over `input_ids`, filling `cache`, without the model's
    own LM head: choice scoring applies the exit head itself, to the positions it needs,
    and a 262k-vocabulary head costs as much as the blocks of a small model."""
    body = model.base_model
    if body is model:  # no separate body: keep one position through the head
        model(input_ids=input_ids, **_cache_kw(model, cache), use_cache=True, logits_to_keep=1)
    else:
        body(input_ids=input_ids, **_cache_kw(body, cache), use_cache=True)


# Vocabulary-wide logits held at once when many positions go through the exit head:
# 2^25 floats (128 MiB in float32; the float64 signal maths on them takes four times that).
_LOGIT_BUDGET = 1 << 25


def _rows_per_chunk(head: ExitHead) -> int:
    return max(1, _LOGIT_BUDGET // (head.vocab_size or 1 << 18))


def _head_target_logprobs(head: ExitHead, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) under the exit head for each row of `hidden` [N, d], float64 [N].

    Rows go through the head together, in chunks of bounded size: with few rows the
    product is bound by reading the V × d head (671 MB for a 262k vocabulary), so batching
    every layer's positions reads it once instead of once per layer."""
    chunk = _rows_per_chunk(head)
    parts = [_target_logprobs(head.logits(hidden[i:i + chunk]), targets[i:i + chunk])
             for i in range(0, hidden.shape[0], chunk)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64, device=hidden.device)


@torch.inference_mode()
def choice_logprobs_by_layer(model: nn.Module, tokenizer, context: str, choices: Sequence[str],
                             head: ExitHead | None = None) -> torch.Tensor:
    """log P_l(choice | context) summed over the choice's tokens, for every exit layer:
    float64 [n_choices, L], column l-1 = the layer-l exit head. The context is prefilled
    once; one pass over the choices' positions; only those positions go through the exit
    head, every layer's together."""
    head = head or resolve_exit_head(model)
    device = next(model.parameters()).device
    batch = _ChoiceBatch.build(tokenizer, context, choices, device)
    cache = batch.prefill(model, copies=batch.n)
    picked: list[torch.Tensor] = []

    def keep(_module, _inputs, output):
        picked.append(_hidden_of(output)[batch.real])

    handles = [block.register_forward_hook(keep) for block in head.blocks]
    try:
        _run_body(model, batch.rows, cache)
    finally:
        for handle in handles:
            handle.remove()
    if len(picked) != head.n_layers:
        raise RuntimeError(f"captured {len(picked)} of {head.n_layers} blocks; the exit head's block list is wrong")
    targets = batch.targets[batch.real]
    per_position = _head_target_logprobs(head, torch.cat(picked), targets.repeat(head.n_layers))
    choice_of = batch.real.nonzero()[:, 0]
    out = torch.zeros((batch.n, head.n_layers), dtype=torch.float64, device=device)
    out.index_add_(0, choice_of, per_position.view(head.n_layers, -1).t())
    return out.cpu()


def _target_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) per row, float64 result: z_target − logsumexp(z). The logsumexp runs
    in the logits' precision (max-shifted, so float32 is accurate to ~1e-6) instead of a
    float64 copy of a whole vocabulary-wide log-softmax."""
    chosen = logits.gather(-1, targets[..., None])[..., 0].double()
    return chosen - torch.logsumexp(logits.float(), dim=-1).double()


@dataclass(frozen=True)
class ChoiceScores:
    """Log-likelihood of each choice under a dynamic exit rule, and the layers it used."""

    logprobs: list[float]
    exit_layers: list[int]  # one per scored position of each choice, choice by choice
    seconds: float


@torch.inference_mode()
def choice_logprobs_dynamic(model: nn.Module, tokenizer, context: str, choices: Sequence[str],
                            policy: ExitPolicy | None, head: ExitHead | None = None) -> ChoiceScores:
    """Teacher-forced scoring where each position predicting a choice token exits by `policy`."""
    return choice_logprobs_policies(model, tokenizer, context, choices, [policy], head)[0]


@torch.inference_mode()
def choice_logprobs_policies(model: nn.Module, tokenizer, context: str, choices: Sequence[str],
                             policies: Sequence[ExitPolicy | None], head: ExitHead | None = None) -> list[ChoiceScores]:
    """`choice_logprobs_dynamic` under several policies, in one forward pass.

    The context minus its last token is prefilled once at full depth (identical for
    every policy and choice). The scored positions of every choice then run once per
    policy, all policies side by side in one batch (policy g owns rows g·n .. g·n+n-1),
    layer by layer: a position whose signal passes after one of its policy's candidate
    layers is frozen there, so every later block gets its exit state as input (its keys
    and values come from the exit state: state propagation) and passes it through
    unchanged. That is exactly token-by-token decoding with state propagation (tested
    against it, and against each policy run alone). Sharing the pass means each exit
    head product reads the head's weights once for all policies. Exits here save no
    compute, so `seconds` (the shared pass over the number of policies) is not a realised
    per-token cost.
    """
    head = head or resolve_exit_head(model)
    device = next(model.parameters()).device
    batch = _ChoiceBatch.build(tokenizer, context, choices, device)
    n_groups = len(policies)
    cache = batch.prefill(model, copies=batch.n * n_groups)
    real = batch.real.repeat(n_groups, 1)
    freezer = _FrozenRows(head, policies, batch.n, real)
    started = time.perf_counter()
    with _patched(head.blocks, freezer.make):
        _run_body(model, batch.rows.repeat(n_groups, 1), cache)
    assert freezer.final is not None
    token_logp = torch.zeros(real.shape, dtype=torch.float64, device=device)
    token_logp[real] = _head_target_logprobs(head, freezer.final[real], batch.targets.repeat(n_groups, 1)[real])
    seconds = (time.perf_counter() - started) / n_groups
    scores = token_logp.sum(-1).view(n_groups, batch.n)
    results = []
    for g in range(n_groups):
        rows = slice(g * batch.n, (g + 1) * batch.n)
        layers = freezer.exit_layer[rows][batch.real].tolist()
        results.append(ChoiceScores(scores[g].tolist(), [int(l) for l in layers], seconds))
    return results


class _FrozenRows:
    """Per-position exits inside one multi-position forward pass (teacher forcing), for
    several policies at once: policy g governs rows g·n .. g·n+n-1."""

    def __init__(self, head: ExitHead, policies: Sequence[ExitPolicy | None], n: int, real: torch.Tensor) -> None:
        self.head, self.policies, self.n, self.real = head, list(policies), n, real
        self.frozen = torch.zeros(real.shape, dtype=torch.bool, device=real.device)
        self.exit_layer = torch.full(real.shape, head.n_layers, dtype=torch.long, device=real.device)
        self.final: torch.Tensor | None = None  # the last block's output: what the model's head reads

    def make(self, i: int, original: BlockForward) -> BlockForward:
        layer = i + 1

        def forward(hidden_states: torch.Tensor, *args, **kwargs):
            out = original(hidden_states, *args, **kwargs)
            hidden = torch.where(self.frozen[..., None], hidden_states, _hidden_of(out))
            self._decide(layer, hidden, hidden_states)
            if layer == self.head.n_layers:
                self.final = hidden
            return _like(out, hidden)

        return forward

    def _decide(self, layer: int, hidden: torch.Tensor, previous: torch.Tensor) -> None:
        """Freeze the positions whose policy passes at this layer. The positions of every
        policy that needs vocabulary logits here go through the head together."""
        deciding = [(g, p) for g, p in enumerate(self.policies)
                    if p is not None and p.candidate(layer, self.head.n_layers)]
        if not deciding:
            return
        open_ = self.real & ~self.frozen
        needs_logits = torch.zeros_like(open_)
        for g, policy in deciding:
            if policy.signal != "saturation":
                needs_logits[g * self.n:(g + 1) * self.n] = open_[g * self.n:(g + 1) * self.n]
        where = needs_logits.nonzero()
        values = torch.full(open_.shape, math.nan, dtype=torch.float64, device=hidden.device)
        chunk = _rows_per_chunk(self.head)
        for start in range(0, where.shape[0], chunk):
            at = where[start:start + chunk]
            logits = self.head.logits(hidden[at[:, 0], at[:, 1]])
            group_of = at[:, 0] // self.n
            for g, policy in deciding:
                mine = group_of == g
                if policy.signal != "saturation" and bool(mine.any()):
                    sel = at[mine]
                    values[sel[:, 0], sel[:, 1]] = signal_values(policy.signal, logits[mine], hidden[sel[:, 0], sel[:, 1]],
                                                                 previous[sel[:, 0], sel[:, 1]])
        for g, policy in deciding:
            rows = slice(g * self.n, (g + 1) * self.n)
            if policy.signal == "saturation":
                values[rows] = signal_values("saturation", None, hidden[rows], previous[rows])
            passes = (values[rows] <= policy.threshold) if policy.signal == "entropy" else (values[rows] >= policy.threshold)
            newly = passes & open_[rows]
            self.exit_layer[rows][newly] = layer
            self.frozen[rows] |= newly
