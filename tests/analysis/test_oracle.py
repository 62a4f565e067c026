"""Oracle exits against plain loops over hand-made and random agreement patterns."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eexit_core.analysis.oracle import exit_check_cost, oracle_exit_layers, summarise


def _stats(patterns: list[list[bool]]) -> pl.DataFrame:
    rows = [
        {"sample": 0, "position": t, "layer": l, "top1_match": match}
        for t, pattern in enumerate(patterns)
        for l, match in enumerate(pattern, start=1)
    ]
    return pl.DataFrame(rows)


def _loop_first(pattern):
    return next(l for l, m in enumerate(pattern, start=1) if m)


def _loop_stable(pattern):
    return next(l for l in range(1, len(pattern) + 1) if all(pattern[l - 1 :]))


def test_hand_made_patterns():
    patterns = [
        [False, True, False, True],  # first match at 2, stable from 4
        [True, True, True, True],  # exits at once
        [False, False, False, True],  # only the last layer
    ]
    stats = _stats(patterns)
    assert oracle_exit_layers(stats, "first")["exit_layer"].to_list() == [2, 1, 4]
    assert oracle_exit_layers(stats, "stable")["exit_layer"].to_list() == [4, 1, 4]


def test_summary():
    exits = pl.DataFrame({"exit_layer": [2, 1, 4, 1]})
    summary = summarise(exits, n_layers=4, check_cost=0.0)
    assert summary["mean_exit_layer"] == 2.0
    assert summary["skip_ratio"] == 0.5
    assert summary["speedup_bound"] == 2.0
    assert summary["speedup_bound_with_check"] == 2.0
    with_check = summarise(exits, n_layers=4, check_cost=0.5)
    assert with_check["speedup_bound_with_check"] == pytest.approx((4 + 0.5) / (2 * 1.5))


def test_unknown_criterion():
    with pytest.raises(ValueError, match="criterion"):
        oracle_exit_layers(_stats([[True]]), "best")


def test_check_cost_of_smollm2():
    # one LM head (576 x 49152) against one of 30 blocks of the 134.5M-parameter model
    cost = exit_check_cost(576, 49152, 134_515_008, 30, tied=True)
    assert cost == pytest.approx(576 * 49152 / ((134_515_008 - 576 * 49152) / 30))


def test_check_cost_of_an_untied_head_counts_its_own_matrix():
    """An untied head is a second V × d matrix outside the blocks: the blocks' share is
    smaller, so one check costs more block-equivalents than a tied head of the same size."""
    d, vocab, total, layers = 896, 151_936, 630_167_424, 24  # a Qwen2.5-0.5B-shaped model with its head untied
    untied = exit_check_cost(d, vocab, total, layers, tied=False)
    assert untied == pytest.approx(d * vocab / ((total - 2 * d * vocab) / layers))
    assert untied > exit_check_cost(d, vocab, total, layers, tied=True)


@pytest.mark.parametrize(("config", "tied"), [({"tie_word_embeddings": False}, False), ({"tie_word_embeddings": True}, True),
                                              ({}, True), ({"text_config": {"tie_word_embeddings": False}}, False)])
def test_the_oracle_stage_reads_whether_the_head_is_tied(tmp_path, config, tied):
    import json

    from eexit_core.stages.oracle_exits import head_is_tied

    (tmp_path / "config.json").write_text(json.dumps(config))
    assert head_is_tied(tmp_path) is tied


patterns = st.lists(st.lists(st.booleans(), min_size=1, max_size=12), min_size=1, max_size=20)


@settings(max_examples=150, deadline=None)
@given(patterns, st.integers(1, 12))
def test_matches_loops_and_stable_never_earlier(raw, n_layers):
    # the final layer always agrees with itself
    pats = [(p + [True] * n_layers)[: n_layers - 1] + [True] for p in raw]
    stats = _stats(pats)
    first = oracle_exit_layers(stats, "first")["exit_layer"].to_list()
    stable = oracle_exit_layers(stats, "stable")["exit_layer"].to_list()
    assert first == [_loop_first(p) for p in pats]
    assert stable == [_loop_stable(p) for p in pats]
    assert all(1 <= f <= s <= n_layers for f, s in zip(first, stable))
