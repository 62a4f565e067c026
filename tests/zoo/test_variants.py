"""The zoo's variants: matched configs, seeded initialisation, and models the existing lens
measures."""

from __future__ import annotations

import pytest
import torch

from eexit_core.zoo.variants import SIZES, Variant, build_model, default_variants, parameter_counts

VOCAB = 512
ARCHS = [Variant("dense"), Variant("moe", moe_match="active"), Variant("moe", moe_match="total"), Variant("ssm"),
         Variant("hybrid")]


@pytest.fixture(scope="module")
def built() -> dict[str, tuple[torch.nn.Module, tuple[int, int]]]:
    out = {}
    for variant in ARCHS:
        model = build_model(variant, VOCAB)
        out[variant.model_id] = model, parameter_counts(model, variant)
    return out


def test_every_arch_class_shares_vocabulary_depth_and_width(built):
    size = SIZES["s"]
    for model, _ in built.values():
        config = model.config
        assert (config.vocab_size, config.num_hidden_layers, config.hidden_size) == (VOCAB, size.n_layers, size.d_model)


def test_parameters_are_matched_as_each_variant_says(built):
    dense_total, _ = built["zoo-dense-s-base-seed0"][1]
    active_total, active = built["zoo-moe-active-s-base-seed0"][1]
    total_total, total_active = built["zoo-moe-total-s-base-seed0"][1]
    assert active == pytest.approx(dense_total, rel=0.02) and active_total > 1.3 * dense_total
    assert total_total == pytest.approx(dense_total, rel=0.02) and total_active < 0.8 * dense_total
    for arch in ("ssm", "hybrid"):
        assert built[f"zoo-{arch}-s-base-seed0"][1][0] == pytest.approx(dense_total, rel=0.15), arch


@pytest.mark.parametrize("size", sorted(SIZES))
def test_every_size_matches_its_arch_classes_at_the_zoo_vocabulary(size):
    """The GPU sizes (l, xl) keep the matching of the CPU ones, at the real vocabulary;
    built on the meta device (no memory), so the 50M-parameter size costs nothing."""
    counts = {}
    for variant in ARCHS:
        variant = Variant(variant.arch_class, size, moe_match=variant.moe_match)
        with torch.device("meta"):
            counts[variant.model_id.split(f"-{size}-")[0]] = parameter_counts(build_model(variant, 4096), variant)
    dense = counts["zoo-dense"][0]
    assert counts["zoo-moe-active"][1] == pytest.approx(dense, rel=0.02)
    assert counts["zoo-moe-total"][0] == pytest.approx(dense, rel=0.02)
    assert counts["zoo-ssm"][0] == pytest.approx(dense, rel=0.15) and counts["zoo-hybrid"][0] == pytest.approx(dense, rel=0.15)


def test_the_gpu_scale_is_ten_times_the_cpu_one_in_parameters_and_tokens():
    from eexit_core.settings import ZOO_SCALES

    cpu, gpu = ZOO_SCALES["cpu"], ZOO_SCALES["gpu"]
    assert gpu.tokens >= 10 * cpu.tokens and gpu.device == "cuda"
    for small, large in zip(cpu.sizes, gpu.sizes, strict=True):
        with torch.device("meta"):
            params = [parameter_counts(build_model(Variant("dense", s), 4096), Variant("dense", s))[0] for s in (small, large)]
        assert params[1] >= 10 * params[0], (small, large)
    assert {v.size for v in default_variants(gpu.seeds, gpu.sizes)} == set(gpu.sizes)


def test_initialisation_is_seeded():
    first, again = build_model(Variant("dense"), VOCAB), build_model(Variant("dense"), VOCAB)
    other = build_model(Variant("dense", seed=1), VOCAB)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    assert not torch.equal(first.model.embed_tokens.weight, other.model.embed_tokens.weight)


def test_the_lens_measures_every_arch_class(built):
    """Each variant resolves an exit head that reproduces its own logits, so the existing
    assets measure the zoo unchanged."""
    from eexit_core.lens.engine import token_layer_stats
    from tests.conftest import build_tokenizer

    tokenizer = build_tokenizer()
    for model_id, (model, _) in built.items():
        frame = token_layer_stats(model.eval(), tokenizer, ["the king was at sea", "def sum ( x , y )"])
        assert frame["layer"].max() == SIZES["s"].n_layers and frame.height > 0, model_id


def test_the_default_zoo_varies_one_factor_at_a_time_at_two_seeds():
    variants = default_variants()
    assert len(variants) == 16 and len({v.model_id for v in variants}) == 16
    base = Variant("dense")
    for variant in variants:
        changed = [f for f in ("arch_class", "size", "recipe") if getattr(variant, f) != getattr(base, f)]
        assert len(changed) <= 1, variant.model_id
    with pytest.raises(ValueError, match="moe_match"):
        Variant("moe")
    with pytest.raises(ValueError, match="unknown zoo size"):
        Variant("dense", size="xxl")
