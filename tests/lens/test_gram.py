"""The d-space lens equals the vocabulary-space lens, with and without a head bias."""

from __future__ import annotations

import pytest
import torch

from eexit_core.lens.engine import STAT_COLUMNS, stats_for_tokens, token_layer_stats
from eexit_core.lens.gram import DSPACE_STATS, dspace_stats, gram_head, supports_dspace
from eexit_core.models.adapters import ExitHead
from tests.tolerance import Float32Tolerance, assert_arrays_within


@pytest.mark.parametrize("bias", [False, True])
def test_dspace_matches_vocabulary_space(bias):
    torch.manual_seed(0)
    d, vocab, layers, tokens = 16, 300, 5, 9
    head = ExitHead([torch.nn.Identity()] * layers, torch.nn.LayerNorm(d), torch.nn.Linear(d, vocab, bias=bias))
    with torch.no_grad():
        head.lm_head.weight.mul_(3)
        head.lm_head.weight.add_(0.5)  # a large shared component, as real heads have
    residuals = torch.randn(layers, tokens, d) * 4
    final_logits = head.logits(residuals[-1]).detach()
    full = stats_for_tokens(head, residuals, final_logits)
    fast = dspace_stats(head, gram_head(head), residuals)
    # two float32 routes from the same residuals: no forward-pass drift (n_layers 0)
    tolerance = Float32Tolerance(d_model=d, vocab=vocab, n_layers=0, runs=2)
    for name in DSPACE_STATS:
        assert_arrays_within(tolerance, name, fast[name], full[..., STAT_COLUMNS.index(name)])


def test_softcapped_heads_stay_in_vocabulary_space(gemma):
    from eexit_core.models.adapters import resolve_exit_head

    assert not supports_dspace(resolve_exit_head(gemma))


def test_token_layer_stats_picks_dspace_for_cosines(llama, tokenizer, monkeypatch):
    texts = ["the king was at sea", "def sum ( x , y ) : return x + y"]
    full = token_layer_stats(llama, tokenizer, texts)
    import eexit_core.lens.engine as lens

    def refuse(*_a, **_k):
        raise AssertionError("vocabulary-space lens used for cosine-only stats")

    monkeypatch.setattr(lens, "stats_for_tokens", refuse)
    fast = token_layer_stats(llama, tokenizer, texts, stats=["logit_cos", "hidden_cos"])
    assert fast.columns == ["sample", "position", "layer", "logit_cos", "hidden_cos"]
    tolerance = Float32Tolerance.for_model(llama, runs=2)  # the same forward pass, two lenses
    for name in ("logit_cos", "hidden_cos"):
        assert_arrays_within(tolerance, name, fast[name], full[name])


def test_unknown_stat_is_rejected(llama, tokenizer):
    with pytest.raises(ValueError, match="unknown stats"):
        token_layer_stats(llama, tokenizer, ["the"], stats=["vibes"])
