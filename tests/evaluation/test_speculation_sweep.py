"""The self-speculation sweep: its exit layers, its tune/test halves, and on a tiny model
items whose tokens equal greedy decoding's and whose counts are a verify step's."""

from __future__ import annotations

import pytest

from eexit_core.analysis.checks import speculation_lossless
from eexit_core.evaluation.speculation_sweep import SpeculationSettings, measure_speculation, split_of
from tests.conftest import TEXTS


@pytest.mark.parametrize(("points", "n_layers", "layers"), [
    (3, 30, [8, 15, 22]), (3, 18, [4, 9, 14]), (3, 4, [1, 2, 3]), (3, 3, [1, 2]), (None, 5, [1, 2, 3, 4]), (1, 2, [1]),
])
def test_exit_layers_spread_below_the_last(points, n_layers, layers):
    assert SpeculationSettings(exit_points=points).exit_layers(n_layers) == layers


def test_settings_round_trip_through_their_stored_json():
    for settings in (SpeculationSettings(), SpeculationSettings.full(), SpeculationSettings(draft_lens=(3,), n_prompts=None)):
        assert SpeculationSettings.from_json(settings.to_json()) == settings


def test_prompts_alternate_between_the_halves():
    assert [split_of(i) for i in range(5)] == ["tune", "test", "tune", "test", "tune"]


def test_a_tiny_model_decodes_every_configuration_losslessly(llama, tokenizer):
    settings = SpeculationSettings(exit_points=3, draft_lens=(1, 3), max_new_tokens=10)
    prompts = [(f"p{i}", text) for i, text in enumerate(TEXTS[:3])]
    items = measure_speculation(llama, tokenizer, prompts, settings, progress=lambda _: None)
    assert items.height == 3 * 3 * 2
    assert items["matches_greedy"].all() and speculation_lossless(items).passed
    assert items["split"].to_list()[:6] == ["tune"] * 6 and set(items.filter(items["prompt_id"] == "p1")["split"]) == {"test"}
    assert (items["n_tokens"] == items["greedy_tokens"]).all()
    assert ((items["draft_s"] + items["verify_s"]) <= items["decode_s"] + 1e-9).all()
    drafted_first = items["drafted_at"].list.first()
    assert (drafted_first == items["verify_passes"]).all()  # every round checks its first draft
    assert items["accepted_at"].list.sum().sum() < items["drafted_at"].list.sum().sum()  # some drafts were rejected
