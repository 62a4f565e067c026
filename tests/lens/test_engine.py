"""token_layer_stats against a brute-force float64 reference on tiny random models."""

from __future__ import annotations

import copy

import polars as pl
import pytest
import torch

from eexit_core.lens import engine as lens
from eexit_core.lens.engine import STAT_COLUMNS, ExitHeadMismatchError, PromptTooLongError, token_layer_stats
from eexit_core.models.adapters import ExitHead, UnknownArchitectureError, register_adapter, resolve_exit_head
from tests.conftest import TEXTS, tiny_llama
from tests.reference import float64_exit_logits, reference_stats, run_and_capture
from tests.tolerance import Float32Tolerance, assert_arrays_within, assert_within


def _blocks_and_head(model):
    """The reference's own view of the model (not the adapter's)."""
    inner = model.model
    softcap = getattr(model.config, "final_logit_softcapping", None)
    return inner.layers, inner.norm, model.lm_head, softcap


def brute_force(model, tokenizer, texts, k=10) -> dict[tuple[int, int, int], dict[str, float]]:
    """Stats for every (sample, position, layer), one token at a time, in float64."""
    layers, norm, head, softcap = _blocks_and_head(model)
    norm64, head64 = copy.deepcopy(norm).double(), copy.deepcopy(head).double()
    out = {}
    for sample, text in enumerate(texts):
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        captured, logits = run_and_capture(model, layers, ids)
        n_layers = len(captured)
        for pos in range(ids.shape[1]):
            if pos == 0 and int(ids[0, 0]) == tokenizer.bos_token_id:
                continue
            z_final = logits[pos].double()
            h_final = captured[-1][0, pos]
            for layer in range(1, n_layers + 1):
                h = captured[layer - 1][0, pos]
                with torch.no_grad():
                    z = z_final if layer == n_layers else float64_exit_logits(None, norm64, head64, h, softcap)
                out[(sample, pos, layer)] = reference_stats(z, z_final, h, h_final, k)
    return out


def _key(row: dict) -> tuple[int, int, int]:
    return row["sample"], row["position"], row["layer"]


def assert_matches(frame: pl.DataFrame, reference: dict, model) -> None:
    """Every stat within the float32 error model of `model`'s sizes (tests/tolerance.py)."""
    assert frame.height == len(reference)
    assert_within(Float32Tolerance.for_model(model), frame.iter_rows(named=True), reference, STAT_COLUMNS, _key)


@pytest.mark.parametrize("fixture", ["llama", "gemma"])
def test_stats_match_float64_reference(request, fixture, tokenizer):
    model = request.getfixturevalue(fixture)
    frame = token_layer_stats(model, tokenizer, TEXTS, batch_size=3)
    assert_matches(frame, brute_force(model, tokenizer, TEXTS), model)


def test_untied_head_matches_reference(tokenizer):
    model = tiny_llama(len(tokenizer), tied=False, seed=3)
    frame = token_layer_stats(model, tokenizer, TEXTS)
    assert_matches(frame, brute_force(model, tokenizer, TEXTS), model)


def test_softcap_is_applied(gemma, tokenizer):
    head = resolve_exit_head(gemma)
    assert head.logit_softcap == 5.0
    frame = token_layer_stats(gemma, tokenizer, TEXTS[:1])
    # with the cap, |logits| < 5, so no layer is far more confident than the cap allows
    assert frame["max_prob"].max() < 1.0


def test_stats_are_informative(llama, tokenizer):
    """Guard against a degenerate fixture: the layers must actually disagree somewhere."""
    frame = token_layer_stats(llama, tokenizer, TEXTS)
    early = frame.filter(pl.col("layer") == 1)
    assert early["top1_match"].mean() < 1.0
    assert early["kl_to_final"].mean() > 1e-3


def test_batching_and_chunking_do_not_change_numbers(llama, tokenizer, monkeypatch):
    one_by_one = token_layer_stats(llama, tokenizer, TEXTS, batch_size=1)
    batched = token_layer_stats(llama, tokenizer, TEXTS, batch_size=4)
    monkeypatch.setattr(lens, "_CHUNK_FLOATS", len(tokenizer) * 3)  # 3-token chunks
    chunked = token_layer_stats(llama, tokenizer, TEXTS, batch_size=4)
    tolerance = Float32Tolerance.for_model(llama, runs=2)  # two float32 runs of the same thing
    for other in (batched, chunked):
        for name in STAT_COLUMNS:
            assert_arrays_within(tolerance, name, other[name], one_by_one[name])
        assert one_by_one["top1_match"].equals(other["top1_match"])


def test_padding_and_bos_are_never_scored(llama, tokenizer):
    frame = token_layer_stats(llama, tokenizer, TEXTS, batch_size=4)
    lengths = [len(tokenizer(t)["input_ids"]) for t in TEXTS]
    n_layers = llama.config.num_hidden_layers
    assert frame.height == sum(n - 1 for n in lengths) * n_layers
    assert frame["position"].min() == 1  # position 0 is the BOS
    per_sample = frame.group_by("sample").agg(pl.col("position").max()).sort("sample")
    assert per_sample["position"].to_list() == [n - 1 for n in lengths]


def test_final_layer_row_is_the_final_layer(llama, tokenizer):
    frame = token_layer_stats(llama, tokenizer, TEXTS)
    last = frame.filter(pl.col("layer") == llama.config.num_hidden_layers)
    assert last["top1_match"].all()
    # the final layer against itself: only the vocabulary-wide sums round (no forward, no head)
    same_logits = Float32Tolerance(d_model=0, vocab=len(tokenizer), n_layers=0)
    assert_arrays_within(same_logits, "kl_to_final", last["kl_to_final"], [0.0] * last.height)
    assert_arrays_within(same_logits, "logit_cos", last["logit_cos"], [1.0] * last.height)
    assert frame["layer"].min() == 1


def test_prompt_longer_than_context_is_a_clear_error(llama, tokenizer):
    long_text = " ".join(["the"] * 100)  # context is 64
    with pytest.raises(PromptTooLongError, match="context is 64"):
        token_layer_stats(llama, tokenizer, [long_text])
    frame = token_layer_stats(llama, tokenizer, [long_text], max_tokens=16)
    assert frame["position"].max() == 15


def test_wrong_adapter_is_caught(tokenizer):
    model = tiny_llama(len(tokenizer), seed=5)

    class BrokenLlama(type(model)):
        pass

    model.__class__ = BrokenLlama
    register_adapter(BrokenLlama, lambda m: ExitHead(list(m.model.layers), None, m.lm_head))  # forgets the norm
    with pytest.raises(ExitHeadMismatchError, match="register a correct adapter"):
        token_layer_stats(model, tokenizer, TEXTS[:1])


def test_unknown_architecture_explains_how_to_register():
    class Mystery(torch.nn.Module):
        def get_output_embeddings(self):
            return torch.nn.Linear(2, 2)

    with pytest.raises(UnknownArchitectureError) as info:
        resolve_exit_head(Mystery())
    assert "Mystery" in str(info.value) and "register_adapter" in str(info.value)


def test_registered_adapter_for_a_new_class_is_used(tokenizer):
    model = tiny_llama(len(tokenizer), seed=7)
    inner = model.model

    class Renamed(torch.nn.Module):
        """A model class the registry has never seen, with non-standard attribute names."""

        def __init__(self):
            super().__init__()
            self.trunk, self.head, self.config = inner, model.lm_head, model.config

        def forward(self, input_ids, attention_mask=None, use_cache=False):
            hidden = self.trunk(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return type("Out", (), {"logits": self.head(hidden)})

        def get_output_embeddings(self):
            return None

    wrapped = Renamed().eval()
    with pytest.raises(UnknownArchitectureError):
        resolve_exit_head(wrapped)
    register_adapter("Renamed", lambda m: ExitHead(list(m.trunk.layers), m.trunk.norm, m.head))
    frame = token_layer_stats(wrapped, tokenizer, TEXTS)
    assert_matches(frame, brute_force(model, tokenizer, TEXTS), model)


def test_fusable_stats_equal_the_in_place_ones(llama, tokenizer, monkeypatch):
    """The torch.compile-friendly formulation (used on GPUs) computes the same numbers."""
    monkeypatch.setattr(lens, "_fused_layer_stats", lambda: lens._layer_stats_fusable)
    head = resolve_exit_head(llama)
    batch = lens.batches(lens.encode_texts(tokenizer, TEXTS, max_tokens=None, context_length=None), batch_size=4, pad_id=0, bos_id=2)[0]
    residuals, logits = lens.capture_residuals(llama, head, batch)
    rows, cols = torch.nonzero(batch.scored, as_tuple=True)
    stacked = residuals[:, rows, cols]
    eager = lens.stats_for_tokens(head, stacked, logits[rows, cols])
    fused = lens.stats_for_tokens(head, stacked, logits[rows, cols], fused=True, chunk_floats=len(tokenizer) * 8)
    tolerance = Float32Tolerance.for_model(llama, runs=2)  # the same residuals, two formulations
    for column, name in enumerate(STAT_COLUMNS):
        assert_arrays_within(tolerance, name, fused[..., column], eager[..., column])


def test_nonfinite_layer_is_flagged_not_averaged(tokenizer):
    """A NaN in one layer stops the partition with the layer named, instead of poisoning means."""
    from eexit_core.lens.engine import NonFiniteError

    model = tiny_llama(len(tokenizer), seed=11)

    def poison(_module, _inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden[:, 1] = float("nan")
        return output

    model.model.layers[1].register_forward_hook(poison)
    with pytest.raises(NonFiniteError, match=r"layers \[2"):
        token_layer_stats(model, tokenizer, TEXTS[:1])


def test_kl_stays_exact_on_a_large_vocabulary_with_a_flat_tail():
    """Gemma-3's 262k vocabulary: when the final distribution's mass sits in a long flat tail,
    float32 `log_softmax` misses the normaliser by ~1e-5 and an early layer's KL (hundreds
    of nats) inherits that error times its size. The engine must stay at float32 precision
    relative to the float64 reference."""
    from torch import nn

    generator = torch.Generator().manual_seed(0)
    vocab, d, n_tokens = 262144, 16, 4
    lm_head = nn.Linear(d, vocab, bias=False)
    with torch.no_grad():
        lm_head.weight.copy_(torch.randn(vocab, d, generator=generator))
    head = ExitHead([nn.Identity()] * 2, None, lm_head)
    final = torch.randn(n_tokens, d, generator=generator) * 0.6  # logits' std ~2.4: a flat tail
    early = torch.randn(n_tokens, d, generator=generator) * 25.0  # logits spread over hundreds of nats
    with torch.no_grad():
        z_final, z_early = lm_head(final), lm_head(early)
        stats = lens.stats_for_tokens(head, torch.stack([early, final]), z_final)
    for token in range(n_tokens):
        reference = reference_stats(z_early[token], z_final[token], early[token], final[token], 10)
        for column, name in enumerate(STAT_COLUMNS):
            error = abs(float(stats[0, token, column]) - reference[name]) / max(1.0, abs(reference[name]))
            assert error < 1e-6, (token, name, float(stats[0, token, column]), reference[name])
    assert max(reference_stats(z_early[t], z_final[t], early[t], final[t], 10)["kl_to_final"] for t in range(n_tokens)) > 200


def test_the_stats_fingerprint_covers_every_module_the_stats_run(llama, tokenizer):
    """Every eexit_core module that runs while prompts become token stats is part of
    `lens_version`, so a change in any of them makes stored stats stale (gram.py was not)."""
    import sys
    from pathlib import Path

    from eexit_core import stages
    from eexit_core.workloads.prompts import PROMPT_SCHEMA
    from eexit_core.workloads.rendering import render_texts

    core = Path(lens.__file__).parents[1]  # eexit_core, every subpackage
    executed: set[Path] = set()

    def profile(frame, event, _arg):
        if event == "call" and core in Path(frame.f_code.co_filename).parents:
            executed.add(Path(frame.f_code.co_filename))

    prompts = pl.DataFrame({"text": TEXTS, "user": [None] * len(TEXTS), "assistant": [None] * len(TEXTS)},
                           schema={k: PROMPT_SCHEMA[k] for k in ("text", "user", "assistant")})
    sys.setprofile(profile)
    try:
        texts = render_texts(prompts, tokenizer, use_chat_template=False)
        token_layer_stats(llama, tokenizer, texts)
        token_layer_stats(llama, tokenizer, texts, stats=["logit_cos", "hidden_cos"])  # the d-space lens
    finally:
        sys.setprofile(None)
    assert {str(p.relative_to(core)) for p in executed} >= {"lens/engine.py", "lens/gram.py", "workloads/rendering.py"}
    assert executed <= set(stages.lens_modules("eager")), executed - set(stages.lens_modules("eager"))


# --- a text longer than the model's context (64 positions here) --------------------------

LONG = " ".join(f"the king {i % 10} was at sea ." for i in range(12))  # 1 + 84 tokens


class _CutTokenizer:
    """The test tokenizer, except that `LONG` encodes to its left-truncated ids: the
    float64 reference then sees exactly what `truncate_left` should feed the model."""

    def __init__(self, tokenizer, cut: list[int]) -> None:
        self.inner, self.cut = tokenizer, cut

    def __call__(self, text, **kwargs):
        if text == LONG:
            return {"input_ids": torch.tensor([self.cut])}
        return self.inner(text, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_text_over_the_context_fails_is_cut_from_the_left_or_is_left_out(llama, tokenizer):
    texts = [TEXTS[0], LONG, TEXTS[3]]
    ids = tokenizer(LONG)["input_ids"]
    assert len(ids) > 64 and lens.overflowing(tokenizer, texts, max_tokens=None, context_length=64) == [1]
    with pytest.raises(lens.PromptTooLongError, match="text 1 has 85 tokens") as failed:
        token_layer_stats(llama, tokenizer, texts)
    assert failed.value.index == 1
    cut = lens.truncate_left(ids, 64, tokenizer.bos_token_id)
    assert cut[0] == tokenizer.bos_token_id and cut[1:] == ids[-63:]
    reference = brute_force(llama, _CutTokenizer(tokenizer, cut), texts)
    truncated = token_layer_stats(llama, tokenizer, texts, overflow="truncate_left")
    assert truncated.filter(pl.col("sample") == 1)["position"].max() == 63
    assert_matches(truncated, reference, llama)
    skipped = token_layer_stats(llama, tokenizer, texts, overflow="skip")
    assert sorted(skipped["sample"].unique()) == [0, 2]  # the others keep their indices into `texts`
    assert_matches(skipped, {key: row for key, row in reference.items() if key[0] != 1}, llama)
    assert lens.overflowing(tokenizer, texts, max_tokens=64, context_length=64) == []  # max_tokens cuts first
