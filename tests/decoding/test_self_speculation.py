"""Self-speculative decoding is lossless: for every exit layer and draft length its tokens
equal greedy full-depth decoding (recomputed without a cache, an independent reference),
on tiny Llama and Gemma 3 models (the Gemma one past its sliding window, so the draft's
cache entries are rolled back in a sliding layer); the Llama's drafts really are rejected
along the way, so a skipped or shifted verify step fails it."""

from __future__ import annotations

import pytest
import torch

from eexit_core.decoding.self_speculation import SpeculationUnsupportedError, speculate
from tests.conftest import tiny_gemma3, tiny_llama

VOCAB, NEW = 64, 24


def _greedy_without_cache(model, ids: torch.Tensor, n: int) -> list[int]:
    out = ids
    with torch.no_grad():
        for _ in range(n):
            next_id = model(input_ids=out).logits[0, -1].argmax()
            out = torch.cat([out, next_id.view(1, 1)], dim=1)
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_every_exit_layer_and_draft_length_gives_the_greedy_tokens(family):
    model = tiny_llama(VOCAB, layers=4) if family == "llama" else tiny_gemma3(VOCAB, layers=4)
    prompts = [torch.tensor([[2, 5 + seed, 17, 9 + seed, 30, 11]]) for seed in range(3)]
    rejected = accepted = 0
    for ids in prompts:
        want = _greedy_without_cache(model, ids, NEW)
        for layer in (1, 2, 3):
            for draft_len in (1, 2, 4):
                got = speculate(model, ids, exit_layer=layer, draft_len=draft_len, max_new_tokens=NEW)
                assert got.token_ids == want, (family, layer, draft_len)
                rounds = got.verify_passes
                assert got.draft_blocks == rounds * draft_len * layer and got.verify_blocks == rounds * (draft_len + 1) * 4
                rejected += sum(got.drafted_at) - sum(got.accepted_at)
                accepted += sum(got.accepted_at)
                assert all(0.0 <= a <= 1.0 for a in got.acceptance if a == a)
    if family == "llama":  # the verify step threw drafts away and kept others
        assert rejected > 0 and accepted > 0
    # the tiny Gemma repeats its last token at every depth, so its drafts all pass; each
    # round still rolls the draft's own entries back, past the 16-token sliding window


def test_it_stops_at_eos_and_at_the_budget():
    model = tiny_llama(VOCAB, layers=4)
    ids = torch.tensor([[2, 7, 17, 9, 30, 11]])
    want = _greedy_without_cache(model, ids, NEW)
    assert speculate(model, ids, exit_layer=2, draft_len=3, max_new_tokens=5).token_ids == want[:5]
    stop = want[7]
    got = speculate(model, ids, exit_layer=2, draft_len=3, max_new_tokens=NEW, eos_ids=[stop]).token_ids
    assert got == want[: want.index(stop)]


def test_a_state_space_model_is_refused_by_name():
    from transformers import Mamba2Config, Mamba2ForCausalLM

    config = Mamba2Config(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, expand=2, head_dim=16, num_heads=4,
                          n_groups=1, state_size=8, chunk_size=8)
    with pytest.raises(SpeculationUnsupportedError, match="Mamba2ForCausalLM"):
        speculate(Mamba2ForCausalLM(config).eval(), torch.tensor([[2, 5, 7]]), exit_layer=1, draft_len=2,
                  max_new_tokens=4)


def test_the_expected_tokens_per_round_match_a_simulation_and_their_closed_form():
    import numpy as np

    from eexit_core.analysis.speculation import expected_tokens_per_round

    rng = np.random.default_rng(0)
    for p, k in ((0.0, 3), (1.0, 3), (0.6, 4), (0.9, 2)):
        accepted = rng.random((200_000, k)) < p
        simulated = 1 + np.cumprod(accepted, axis=1).sum(axis=1).mean()  # the prefix before the first rejection
        assert expected_tokens_per_round(p, k) == pytest.approx(simulated, abs=0.01)
        closed = k + 1 if p == 1 else (1 - p ** (k + 1)) / (1 - p)
        assert expected_tokens_per_round(p, k) == pytest.approx(closed)


def test_the_predicted_speedup_follows_the_cost_model():
    from eexit_core.analysis.speculation import predicted_speedup

    # every draft accepted, drafts free, verify one step: k + 1 tokens per step
    assert predicted_speedup(1.0, exit_layer=1, n_layers=10**9, draft_len=3) == pytest.approx(4.0, rel=1e-6)
    # nothing accepted: one token per round for k draft steps and a verify pass
    assert predicted_speedup(0.0, exit_layer=5, n_layers=10, draft_len=2, head_cost=0.1) == pytest.approx(1 / (2 * 0.6 + 1))
    # a compute-bound verify of k + 1 tokens can never pay back at any acceptance
    assert predicted_speedup(1.0, exit_layer=5, n_layers=10, draft_len=3, verify_cost=4.0) < 1.0
    with pytest.raises(ValueError, match="exit layer"):
        predicted_speedup(0.5, exit_layer=10, n_layers=10, draft_len=2)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_transformers_own_early_exit_assistant_gives_the_same_tokens(family):
    """transformers' `generate(..., assistant_early_exit=l)` (LayerSkip's self-speculation in
    the library) is the reference where it runs: the same tokens, up to its EOS."""
    model = tiny_llama(VOCAB, layers=4) if family == "llama" else tiny_gemma3(VOCAB, layers=4)
    eos = model.config.eos_token_id
    for seed in range(2):
        ids = torch.tensor([[2, 5 + seed, 17, 9 + seed, 30, 11]])
        for layer in (1, 2, 3):
            theirs = model.generate(ids, assistant_early_exit=layer, do_sample=False, max_new_tokens=NEW,
                                    num_assistant_tokens=3, pad_token_id=0)[0, ids.shape[1]:].tolist()
            theirs = theirs[: theirs.index(eos)] if eos in theirs else theirs
            ours = speculate(model, ids, exit_layer=layer, draft_len=3, max_new_tokens=NEW, eos_ids=[eos]).token_ids
            assert ours == theirs, (family, seed, layer)
