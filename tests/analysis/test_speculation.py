"""`self_speculation` from hand-made items: acceptance per draft position, costs in greedy
steps, the realised and predicted speedups against values worked out by hand, and the
(l, k) chosen on the tune half only."""

from __future__ import annotations

import polars as pl
import pytest

from eexit_core.analysis.checks import self_speculation_table_ok, speculation_lossless
from eexit_core.analysis.speculation import ITEM_SCHEMA, expected_tokens_per_round, summarise_speculation


def _item(prompt_id: str, split: str, layer: int, k: int, *, drafted, accepted, passes: int, tokens: int,
          draft_s: float, verify_s: float, greedy_s: float, same: bool = True) -> dict:
    return {
        "model_id": "m", "workload_id": "w", "prompt_id": prompt_id, "split": split, "exit_layer": layer,
        "draft_len": k, "n_layers": 4, "n_tokens": tokens, "verify_passes": passes, "drafted_at": drafted,
        "accepted_at": accepted, "draft_blocks": passes * k * layer, "verify_blocks": passes * (k + 1) * 4,
        "draft_s": draft_s, "verify_s": verify_s, "decode_s": draft_s + verify_s, "greedy_tokens": tokens,
        "greedy_s": greedy_s, "matches_greedy": same,
    }


def _similarity(top1: dict[int, float]) -> pl.DataFrame:
    return pl.DataFrame({"model_id": "m", "workload_id": "w", "layer": list(top1), "top1_match": list(top1.values())})


def test_one_configuration_worked_by_hand():
    # two prompts at l = 2, k = 2: 8 rounds proposed 8 first drafts (4 accepted) and 4
    # second drafts (1 accepted); 13 tokens (8 rounds + 5 accepted drafts)
    items = pl.DataFrame([
        _item("a", "test", 2, 2, drafted=[5, 3], accepted=[3, 1], passes=5, tokens=9, draft_s=0.5, verify_s=1.0,
              greedy_s=0.9),
        _item("b", "test", 2, 2, drafted=[3, 1], accepted=[1, 0], passes=3, tokens=4, draft_s=0.3, verify_s=0.6,
              greedy_s=0.4),
    ], schema=ITEM_SCHEMA)
    row = summarise_speculation(items, _similarity({1: 0.2, 2: 0.5, 3: 0.9})).row(0, named=True)
    assert row["acceptance"] == [0.5, 0.25]
    assert row["first_acceptance"] == 0.5
    assert row["mean_accepted"] == pytest.approx(5 / 8)
    assert row["blocks_per_token"] == pytest.approx((8 * 2 * 2 + 8 * 3 * 4) / 13)
    greedy_ms = 1300 / 13  # 100 ms per greedy token
    assert row["greedy_ms_per_token"] == pytest.approx(greedy_ms)
    assert row["ms_per_token"] == pytest.approx(2400 / 13)
    assert row["realised_speedup"] == pytest.approx(1300 / 2400)
    assert row["draft_step_cost"] == pytest.approx((800 / 16) / greedy_ms)  # 50 ms a draft step: half a greedy one
    assert row["verify_cost"] == pytest.approx((1600 / 8) / greedy_ms)  # 200 ms a verify pass: two greedy steps
    assert row["lens_acceptance"] == 0.5
    assert row["predicted_speedup"] == pytest.approx((1 + 0.5 + 0.25) / (2 * 0.5 + 2.0))
    assert row["prediction_error"] == pytest.approx(row["predicted_speedup"] / row["realised_speedup"] - 1)
    assert row["lossless"] and row["n_prompts"] == 2 and row["n_tokens"] == 13


def test_the_best_configuration_is_chosen_on_the_tune_half_and_kept_on_both():
    # tune: (1, 2) is fastest; test: (3, 4) would be, but the choice must not look at it
    def pair(layer, k, tune_greedy_s, test_greedy_s):
        common = {"drafted": [4] + [0] * (k - 1), "accepted": [0] * k, "passes": 4, "tokens": 4, "draft_s": 0.5,
                  "verify_s": 0.5}
        return [_item("a", "tune", layer, k, greedy_s=tune_greedy_s, **common),
                _item("b", "test", layer, k, greedy_s=test_greedy_s, **common)]

    items = pl.DataFrame([*pair(1, 2, 0.9, 0.1), *pair(3, 4, 0.2, 0.95)], schema=ITEM_SCHEMA)
    table = summarise_speculation(items, _similarity({1: 0.1, 3: 0.3}))
    chosen = table.filter(pl.col("chosen"))
    assert set(chosen.select("exit_layer", "draft_len").unique().iter_rows()) == {(1, 2)}
    assert sorted(chosen["split"].to_list()) == ["test", "tune"]
    assert self_speculation_table_ok(table).passed


def test_a_lossy_item_fails_the_checks():
    good = _item("a", "test", 2, 2, drafted=[2, 1], accepted=[1, 0], passes=2, tokens=3, draft_s=0.1, verify_s=0.1,
                 greedy_s=0.1)
    items = pl.DataFrame([good, {**good, "prompt_id": "b", "matches_greedy": False}], schema=ITEM_SCHEMA)
    assert not speculation_lossless(items).passed
    assert speculation_lossless(items.head(1)).passed
    assert not self_speculation_table_ok(summarise_speculation(items, _similarity({2: 0.5}))).passed
    for drafted, accepted in (([2, 1], [2, 1]),  # a second draft checked after a rejected first
                              ([2, 3], [3, 0])):  # more accepted than proposed
        impossible = pl.DataFrame([{**good, "drafted_at": drafted, "accepted_at": accepted}], schema=ITEM_SCHEMA)
        assert not speculation_lossless(impossible).passed, (drafted, accepted)


def test_no_generated_token_and_no_lens_give_nulls_not_errors():
    empty = _item("a", "test", 2, 2, drafted=[1, 0], accepted=[0, 0], passes=1, tokens=0, draft_s=0.1, verify_s=0.1,
                  greedy_s=0.0)
    row = summarise_speculation(pl.DataFrame([{**empty, "greedy_tokens": 0}], schema=ITEM_SCHEMA),
                                _similarity({1: 0.3})).row(0, named=True)
    assert row["lens_acceptance"] is None and row["predicted_speedup"] is None
    assert summarise_speculation(pl.DataFrame(schema=ITEM_SCHEMA), _similarity({1: 0.3})).is_empty()


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_a_round_of_certain_or_hopeless_drafts(p):
    assert expected_tokens_per_round(p, 3) == pytest.approx({0.0: 1.0, 0.3: 1 + 0.3 + 0.09 + 0.027, 1.0: 4.0}[p])
