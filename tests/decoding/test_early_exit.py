"""Early-exit decoding against references that use no KV cache and no block patching of ours.

* static: each step reruns the whole sequence through the full model, captures block
  outputs with plain hooks and applies the layer-l exit head in float64;
* dynamic: each step reruns the whole sequence where every earlier token's rows are
  *frozen* above its exit layer (block output replaced by its input, so the block's keys
  and values come from the exit state: state propagation by definition), and the new
  token's exit is the first candidate layer whose float64 signal passes;
* choice log-likelihoods: one full forward per choice, float64 head per layer.
"""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from eexit_core.decoding.early_exit import (
    ExitPolicy,
    choice_logprobs_by_layer,
    choice_logprobs_dynamic,
    choice_logprobs_policies,
    generate_dynamic,
    generate_static,
    truncated,
)
from eexit_core.models.adapters import resolve_exit_head
from tests.conftest import tiny_gemma3, tiny_llama
from tests.reference import float64_exit_logits
from tests.tolerance import Float32Tolerance, assert_arrays_within

PROMPTS = ["the king was at sea and the", "def sum ( x , y ) : return"]


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text)["input_ids"])


_COPIES: dict[int, tuple] = {}


def _head64(head, hidden: torch.Tensor) -> torch.Tensor:
    """The exit head in float64, on copies (float64_exit_logits converts the modules it gets)."""
    key = id(head.lm_head)
    if key not in _COPIES:
        _COPIES[key] = (copy.deepcopy(head.final_norm), copy.deepcopy(head.lm_head))
    norm, lm_head = _COPIES[key]
    with torch.no_grad():
        return float64_exit_logits(None, norm, lm_head, hidden, head.logit_softcap)


@contextlib.contextmanager
def _frozen_rows(blocks, exit_of: list[int]):
    """Reference freezing: row t keeps its input at every block above exit_of[t]."""
    hooks = []
    for index, block in enumerate(blocks):
        layer = index + 1
        frozen = torch.tensor([layer > e for e in exit_of])

        def hook(_module, args, kwargs, output, frozen=frozen):
            hidden_in = args[0] if args else kwargs["hidden_states"]
            hidden_out = output[0] if isinstance(output, tuple) else output
            mixed = torch.where(frozen[None, :, None], hidden_in, hidden_out)
            return (mixed, *output[1:]) if isinstance(output, tuple) else mixed

        hooks.append(block.register_forward_hook(hook, with_kwargs=True))
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


def _capture(model, blocks, ids: list[int], exit_of: list[int] | None = None) -> list[torch.Tensor]:
    """Block outputs [T, d] for one sequence, no cache; optionally with frozen rows."""
    captured: list[torch.Tensor] = []
    keep = [b.register_forward_hook(lambda _m, _i, o: captured.append((o[0] if isinstance(o, tuple) else o)[0])) for b in blocks]
    freeze = _frozen_rows(blocks, exit_of) if exit_of is not None else contextlib.nullcontext()
    try:
        with torch.no_grad(), freeze:
            model(input_ids=torch.tensor([ids]), use_cache=False)
    finally:
        for h in keep:
            h.remove()
    return captured


def _signal64(signal: str, logits: torch.Tensor, hidden: torch.Tensor, previous: torch.Tensor) -> float:
    if signal == "saturation":
        a, b = hidden.double(), previous.double()
        return float(a @ b / (a.norm() * b.norm()))
    logp = torch.log_softmax(logits.double(), -1)
    p = logp.exp()
    if signal == "entropy":
        return float(-(p * logp).sum())
    top = torch.sort(p, descending=True).values
    return float(top[0]) if signal == "max_prob" else float(top[0] - top[1])


def reference_static(model, tokenizer, prompt: str, layer: int, n: int) -> list[int]:
    head = resolve_exit_head(model)
    ids = _ids(tokenizer, prompt)
    out = []
    for _ in range(n):
        hidden = _capture(model, head.blocks, ids)[layer - 1][-1]
        token = int(_head64(head, hidden).argmax())
        if token == tokenizer.eos_token_id:
            break
        out.append(token)
        ids.append(token)
    return out


def reference_dynamic(model, tokenizer, prompt: str, policy: ExitPolicy, n: int) -> tuple[list[int], list[int]]:
    """Greedy decoding with per-token exits and state propagation, recomputed from scratch."""
    head = resolve_exit_head(model)
    L = head.n_layers
    ids = _ids(tokenizer, prompt)
    exit_of = [L] * (len(ids) - 1)  # the prefill runs at full depth
    tokens, exits = [], []
    for _ in range(n):
        # the newest position runs unfrozen; its own freezing would only touch layers above its exit
        outputs = _capture(model, head.blocks, ids, exit_of + [L])
        embed = model.get_input_embeddings()(torch.tensor([ids]))[0]
        states = [embed[-1], *[o[-1] for o in outputs]]  # h_0..h_L of the newest position
        chosen = L
        for layer in range(1, L):
            if not policy.candidate(layer, L):
                continue
            logits = _head64(head, states[layer])
            if policy.passes(_signal64(policy.signal, logits, states[layer], states[layer - 1])):
                chosen = layer
                break
        token = int(_head64(head, states[chosen]).argmax())
        exit_of.append(chosen)
        exits.append(chosen)
        if token == tokenizer.eos_token_id:
            break
        tokens.append(token)
        ids.append(token)
    return tokens, exits


@pytest.fixture(scope="module")
def models(tokenizer):
    # untied: with tied embeddings a random model's first layers just predict their input
    # token with high confidence, so every exit would happen at the first check
    return {"llama": tiny_llama(len(tokenizer), layers=6, seed=3, tied=False), "gemma3": tiny_gemma3(len(tokenizer), layers=5, seed=5)}


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_static_exit_matches_truncated_reference(models, tokenizer, family):
    model = models[family]
    L = resolve_exit_head(model).n_layers
    for layer in (1, L // 2, L):
        got = generate_static(model, tokenizer, PROMPTS, layer, max_new_tokens=8, batch_size=2)
        for prompt, gen in zip(PROMPTS, got):
            assert gen.token_ids == reference_static(model, tokenizer, prompt, layer, 8), (family, layer, prompt)
            assert set(gen.exit_layers) == {layer}


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_never_exit_loop_is_full_depth(models, tokenizer, family):
    model = models[family]
    L = resolve_exit_head(model).n_layers
    gen = generate_dynamic(model, tokenizer, PROMPTS[0], None, max_new_tokens=6)
    assert gen.token_ids == reference_static(model, tokenizer, PROMPTS[0], L, 6)
    assert gen.exit_layers == [L] * len(gen.exit_layers)


def _calibrated(model, tokenizer, signal: str, checks) -> float:
    """A threshold in the widest gap between the quartiles of the signal at the first
    candidate layer: about half the tokens exit there and the rest go deeper, and no
    value sits within float32 error of it."""
    head = resolve_exit_head(model)
    ids = _ids(tokenizer, PROMPTS[1])
    outputs = _capture(model, head.blocks, ids)
    embed = model.get_input_embeddings()(torch.tensor([ids]))[0]
    values = []
    for t in range(1, len(ids)):
        states = [embed[t], *[o[t] for o in outputs]]
        for layer in checks[:1]:
            values.append(_signal64(signal, _head64(head, states[layer]), states[layer], states[layer - 1]))
    ranked = sorted(values)
    lo, hi = len(ranked) // 4, 3 * len(ranked) // 4
    gap, i = max((ranked[j + 1] - ranked[j], j) for j in range(lo, hi))
    return (ranked[i] + ranked[i + 1]) / 2


@pytest.mark.parametrize("family", ["llama", "gemma3"])
@pytest.mark.parametrize("signal", ["max_prob", "margin", "entropy", "saturation"])
def test_dynamic_exit_matches_state_propagation_reference(models, tokenizer, family, signal):
    model = models[family]
    L = resolve_exit_head(model).n_layers
    checks = tuple(range(2, L))
    policy = ExitPolicy(signal, _calibrated(model, tokenizer, signal, checks), checks)
    gen = generate_dynamic(model, tokenizer, PROMPTS[1], policy, max_new_tokens=10)
    tokens, exits = reference_dynamic(model, tokenizer, PROMPTS[1], policy, 10)
    assert gen.token_ids == tokens
    assert gen.exit_layers == exits
    assert gen.kv_fill == "attention_only" or set(exits) == {L}


def test_exits_vary_so_the_reference_test_means_something(models, tokenizer):
    varied = 0
    for family, model in models.items():
        L = resolve_exit_head(model).n_layers
        for signal in ("max_prob", "margin", "entropy", "saturation"):
            checks = tuple(range(2, L))
            policy = ExitPolicy(signal, _calibrated(model, tokenizer, signal, checks), checks)
            gen = generate_dynamic(model, tokenizer, PROMPTS[1], policy, max_new_tokens=10)
            varied += len(set(gen.exit_layers)) > 1 and min(gen.exit_layers) < L
    assert varied >= 5


def test_skipped_layers_change_later_tokens_only_through_propagated_state(models, tokenizer):
    """Dropping state propagation (leaving skipped layers' KV empty) must be detectable:
    the reference with frozen rows differs from plain full-depth recomputation."""
    model = models["llama"]
    head = resolve_exit_head(model)
    ids = _ids(tokenizer, PROMPTS[1])
    full = _capture(model, head.blocks, ids)[-1][-1]
    frozen = _capture(model, head.blocks, ids, [1] * (len(ids) - 1) + [head.n_layers])[-1][-1]
    assert not torch.allclose(full, frozen)


def test_truncation_restores_the_model(models, tokenizer):
    model = models["llama"]
    ids = torch.tensor([_ids(tokenizer, PROMPTS[0])])
    with torch.no_grad():
        before = model(input_ids=ids).logits
        with truncated(model, 2):
            during = model(input_ids=ids).logits
        after = model(input_ids=ids).logits
    assert torch.equal(before, after)
    assert not torch.allclose(before, during)


def test_bad_exit_layer_and_policy_are_clear_errors(models):
    with pytest.raises(ValueError, match="exit layer must be in 1..6"):
        with truncated(models["llama"], 7):
            pass
    with pytest.raises(ValueError, match="unknown exit signal"):
        ExitPolicy("confidence", 0.5)


def reference_choice_logprobs(model, tokenizer, context: str, choices: list[str]) -> torch.Tensor:
    head = resolve_exit_head(model)
    ctx = _ids(tokenizer, context)
    out = torch.zeros(len(choices), head.n_layers, dtype=torch.float64)
    for i, choice in enumerate(choices):
        cont = list(tokenizer(" " + choice, add_special_tokens=False)["input_ids"])
        outputs = _capture(model, head.blocks, ctx + cont)
        for layer in range(head.n_layers):
            for j, token in enumerate(cont):
                logits = _head64(head, outputs[layer][len(ctx) - 1 + j])
                out[i, layer] += torch.log_softmax(logits, -1)[token]
    return out


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_choice_logprobs_by_layer_match_reference(models, tokenizer, family):
    model = models[family]
    context, choices = "question : is the sea love ? answer :", ["yes", "no", "the king"]
    got = choice_logprobs_by_layer(model, tokenizer, context, choices)
    want = reference_choice_logprobs(model, tokenizer, context, choices)
    tolerance = Float32Tolerance.for_model(model)
    assert_arrays_within(tolerance, "choice_logprob", got, want)
    full = choice_logprobs_dynamic(model, tokenizer, context, choices, None)
    assert_arrays_within(tolerance, "choice_logprob", full.logprobs, want[:, -1])


@pytest.mark.parametrize("signal", ["max_prob", "entropy", "saturation"])
def test_dynamic_choice_scoring_matches_reference(models, tokenizer, signal):
    """Choices of different lengths, scored in one padded pass: each scored position exits
    by the policy exactly as in token-by-token decoding with state propagation."""
    model = models["llama"]
    L = resolve_exit_head(model).n_layers
    checks = tuple(range(2, L))
    policy = ExitPolicy(signal, _calibrated(model, tokenizer, signal, checks), checks)
    context, choices = "question : is the sea love ? answer :", ["the king was at sea", "no", "thou art"]
    scores = choice_logprobs_dynamic(model, tokenizer, context, choices, policy)
    head = resolve_exit_head(model)
    want_scores, want_exits = [], []
    for choice in choices:
        ids = _ids(tokenizer, context)
        cont = list(tokenizer(" " + choice, add_special_tokens=False)["input_ids"])
        exit_of = [L] * (len(ids) - 1)
        total = 0.0
        for target in cont:
            outputs = _capture(model, head.blocks, ids, exit_of + [L])
            embed = model.get_input_embeddings()(torch.tensor([ids]))[0]
            states = [embed[-1], *[o[-1] for o in outputs]]
            chosen = next((l for l in checks if policy.passes(_signal64(signal, _head64(head, states[l]), states[l], states[l - 1]))), L)
            total += float(torch.log_softmax(_head64(head, states[chosen]), -1)[target])
            exit_of.append(chosen)
            want_exits.append(chosen)
            ids.append(target)
        want_scores.append(total)
    assert scores.exit_layers == want_exits
    assert_arrays_within(Float32Tolerance.for_model(model), "choice_logprob", scores.logprobs, want_scores)
    assert len(set(want_exits)) > 1 or signal == "saturation"


def test_policies_scored_together_equal_each_policy_alone(models, tokenizer):
    """One pass with every policy side by side gives each policy exactly what it gets alone:
    the same exit layer for every position and the same log-likelihoods (two float32 runs
    whose batches differ)."""
    model = models["llama"]
    L = resolve_exit_head(model).n_layers
    checks = tuple(range(2, L))
    policies = [None, *(ExitPolicy(s, _calibrated(model, tokenizer, s, checks), checks)
                        for s in ("max_prob", "margin", "entropy", "saturation"))]
    context, choices = "question : is the sea love ? answer :", ["the king was at sea", "no", "thou art"]
    together = choice_logprobs_policies(model, tokenizer, context, choices, policies)
    tolerance = Float32Tolerance.for_model(model, runs=2)
    for policy, shared in zip(policies, together):
        alone = choice_logprobs_dynamic(model, tokenizer, context, choices, policy)
        assert shared.exit_layers == alone.exit_layers, policy
        assert_arrays_within(tolerance, "choice_logprob", shared.logprobs, alone.logprobs)
    exits = {tuple(s.exit_layers) for s in together}
    assert len(exits) >= 3, "the policies must exit differently, or the test cannot tell them apart"
