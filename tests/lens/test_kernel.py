"""The fused Triton lens kernel against the eager engine and the float64 reference.

Runs through Triton's CPU interpreter (float32 tiles; `conftest.py` switches it on), so
it checks the kernel's arithmetic here and in CI; on a GPU the same kernel multiplies
half-precision tiles, and `make bench` checks it there against the float64 lens.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from eexit_core.lens import engine as lens
from eexit_core.models.adapters import ExitHead, resolve_exit_head
from tests.conftest import TEXTS, tiny_llama
from tests.reference import reference_stats
from tests.tolerance import Float32Tolerance, assert_arrays_within


def _linear_head(vocab: int, d_model: int, generator: torch.Generator, layers: int, norm: bool = True) -> ExitHead:
    lm_head = nn.Linear(d_model, vocab, bias=False)
    with torch.no_grad():
        lm_head.weight.copy_(torch.randn(vocab, d_model, generator=generator))
    return ExitHead([nn.Identity()] * layers, nn.LayerNorm(d_model) if norm else None, lm_head)


def _both(head: ExitHead, residuals: torch.Tensor, top_k: int = 5, chunk_floats: int | None = None):
    with torch.no_grad():
        final_logits = head.logits(residuals[-1])
        eager = lens.stats_for_tokens(head, residuals, final_logits, top_k=top_k)
        kernel = lens.stats_for_tokens(head, residuals, final_logits, top_k=top_k, fused="kernel", chunk_floats=chunk_floats)
    return eager, kernel


def test_kernel_equals_the_eager_engine_on_a_tiny_llama(tokenizer):
    model = tiny_llama(len(tokenizer), layers=5, seed=3)
    head = resolve_exit_head(model)
    batch = lens.batches(lens.encode_texts(tokenizer, TEXTS, max_tokens=None, context_length=None),
                         batch_size=8, pad_id=0, bos_id=2)[0]
    residuals, logits = lens.capture_residuals(model, head, batch)
    rows, cols = torch.nonzero(batch.scored, as_tuple=True)
    stacked, final_logits = residuals[:, rows, cols], logits[rows, cols]
    eager = lens.stats_for_tokens(head, stacked, final_logits)
    kernel = lens.stats_for_tokens(head, stacked, final_logits, fused="kernel")
    tolerance = Float32Tolerance.for_model(model, runs=2)  # the same residuals, two engines
    for column, name in enumerate(lens.STAT_COLUMNS):
        assert_arrays_within(tolerance, name, kernel[..., column], eager[..., column])
    assert eager[:-1, :, 0].mean() < 0.9 and eager[:-1, :, 1].std() > 0  # top-1 / top-k really vary


@settings(max_examples=12, deadline=None)
@given(
    vocab=st.integers(3, 200), d_model=st.integers(1, 40), n_tokens=st.integers(1, 9),
    layers=st.integers(1, 4), spread=st.floats(0.05, 8.0), seed=st.integers(0, 2**16),
)
def test_kernel_equals_the_eager_engine_on_ragged_shapes(vocab, d_model, n_tokens, layers, spread, seed):
    """Shapes that are not multiples of any tile; one layer (no kernel rows); tiny vocabularies."""
    generator = torch.Generator().manual_seed(seed)
    head = _linear_head(vocab, d_model, generator, layers, norm=False)
    residuals = torch.randn(layers, n_tokens, d_model, generator=generator) * spread
    eager, kernel = _both(head, residuals, top_k=min(3, vocab), chunk_floats=vocab * 4)
    scale = eager.abs().clamp_min(1.0)  # KL and entropy are in nats: compare relatively
    assert ((eager - kernel).abs() / scale).max() < 2e-5


def test_kernel_stays_exact_when_early_layers_are_hundreds_of_nats_away():
    """The online log-sum-exp and the streaming centred norm, against float64."""
    generator = torch.Generator().manual_seed(1)
    vocab, d_model, n_tokens = 1000, 16, 5
    head = _linear_head(vocab, d_model, generator, layers=2, norm=False)
    final = torch.randn(n_tokens, d_model, generator=generator) * 0.6
    early = torch.randn(n_tokens, d_model, generator=generator) * 40.0 + 5.0  # a large logit mean too
    residuals = torch.stack([early, final])
    _, kernel = _both(head, residuals, top_k=10)
    with torch.no_grad():
        z_early, z_final = head.logits(early), head.logits(final)
    for token in range(n_tokens):
        reference = reference_stats(z_early[token], z_final[token], early[token], final[token], 10)
        assert reference["kl_to_final"] > 50
        for column, name in enumerate(lens.STAT_COLUMNS):
            error = abs(float(kernel[0, token, column]) - reference[name]) / max(1.0, abs(reference[name]))
            assert error < 1e-6, (token, name)


def test_softcapped_heads_are_capped_in_the_epilogue():
    """Gemma-2's tanh cap on the logits, applied inside the kernel and to the candidates."""
    generator = torch.Generator().manual_seed(2)
    head = _linear_head(150, 12, generator, layers=3)
    head = ExitHead(head.blocks, head.final_norm, head.lm_head, logit_softcap=5.0)
    residuals = torch.randn(3, 6, 12, generator=generator) * 3.0
    eager, kernel = _both(head, residuals)
    assert eager[0, :, 6].max() > 0.5  # the cap really bends the logits (entropy stays high)
    assert ((eager - kernel).abs() / eager.abs().clamp_min(1.0)).max() < 2e-5


def test_rank_counting_skips_tiles_that_cannot_change_the_top_k_and_stays_exact_below_k():
    from eexit_core.lens.kernel import kernel_layer_reductions

    # small integers: every logit is exact in float32, so counts compare exactly with a
    # brute-force float64 count (ties included)
    generator = torch.Generator().manual_seed(11)
    vocab, d_model, n_tokens, layers, top_k = 4096, 16, 6, 5, 10
    weight = torch.randint(-3, 4, (vocab, d_model), generator=generator).float()
    final = torch.randint(-3, 4, (n_tokens, d_model), generator=generator).float()
    drift = torch.randint(-1, 2, (n_tokens, layers, d_model), generator=generator).float()
    # layers range from unrelated to the final one (counts decided at once) to equal to it
    # (its top-k stay undecided all the way)
    keep = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0])[None, :, None]
    noise = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0])[None, :, None]
    random_rows = torch.randint(-3, 4, (n_tokens, layers, d_model), generator=generator).float()
    normed = (keep * final[:, None, :] + noise * torch.where(keep > 0, drift, random_rows)).contiguous()
    final_logits = final @ weight.T
    final_probs = torch.softmax(final_logits, dim=-1)
    top_ids = torch.topk(final_logits, top_k, dim=-1).indices
    reduced = kernel_layer_reductions(normed, weight, final_probs, final_logits - final_logits.mean(-1, keepdim=True), top_ids)

    z = (normed.double() @ weight.double().T).reshape(n_tokens * layers, vocab)
    ids = top_ids.repeat_interleave(layers, dim=0)
    cand = torch.gather(z, 1, ids)
    not_self = torch.arange(vocab)[None, None, :] != ids[:, :, None]
    brute = ((z[:, None, :] > cand[:, :, None]) & not_self).sum(-1)
    ranks = reduced.ranks.long()
    decided = brute >= top_k
    assert torch.equal(ranks[~decided], brute[~decided])
    assert bool((ranks[decided] >= top_k).all())
    assert 0 < reduced.counted_frac < 0.5, reduced.counted_frac


def test_heads_the_kernel_cannot_serve_get_a_clear_error():
    generator = torch.Generator().manual_seed(0)
    residuals = torch.randn(2, 3, 8, generator=generator)
    biased = ExitHead([nn.Identity()] * 2, None, nn.Linear(8, 50, bias=True))
    with torch.no_grad(), pytest.raises(ValueError, match="use fused=False"):
        lens.stats_for_tokens(biased, residuals, biased.logits(residuals[-1]), fused="kernel")


def test_token_layer_stats_runs_each_engine_to_the_same_numbers(tokenizer):
    model = tiny_llama(len(tokenizer), layers=3, seed=4)
    eager = lens.token_layer_stats(model, tokenizer, TEXTS)
    kernel = lens.token_layer_stats(model, tokenizer, TEXTS, engine="kernel")
    assert eager.select("sample", "position", "layer").equals(kernel.select("sample", "position", "layer"))
    tolerance = Float32Tolerance.for_model(model, runs=2)
    for name in lens.STAT_COLUMNS:
        assert_arrays_within(tolerance, name, kernel[name].cast(float), eager[name].cast(float))
    with pytest.raises(ValueError, match="unknown lens engine 'fast'"):
        lens.token_layer_stats(model, tokenizer, TEXTS, engine="fast")


# Ahead-of-time builds for the H200 (sm_90a): what the interpreter cannot show

def test_the_kernel_compiles_for_the_h200_on_tensor_cores_without_spilling():
    from benchmarks.kernel_resources import compile_config

    build = compile_config((128, 64, 64, 8, 3))  # the Llama-3-8B anchor shape, bf16 weights
    assert build.tensor_cores, "the exit head's matmul must run on Hopper's wgmma tensor cores"
    assert build.fits
    assert (build.spill_store_bytes, build.spill_load_bytes) == (0, 0), build


@pytest.mark.slow
def test_every_tuned_config_compiles_for_the_h200_and_fits_its_shared_memory():
    from benchmarks.kernel_resources import compile_config, tuned_builds

    builds = tuned_builds("bf16", softcap=30.0, vocab=32000, d_model=4096)  # Llama-2 and a Gemma-2 cap
    assert len(builds) >= 4
    assert all(b.fits and b.tensor_cores for b in builds), builds
    exact = compile_config((64, 128, 64, 8, 3), "fp32", vocab=49152, d_model=576)  # SmolLM2 in float32
    assert exact.fits and not exact.tensor_cores, "float32 weights multiply in IEEE float32, not on TF32 cores"
