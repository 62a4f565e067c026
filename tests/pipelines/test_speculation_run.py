"""`python -m pipelines.run --stage speculation` on the finished tiny run: lossless
self-speculation on the decoded workload only, published with its prediction and the
held-out choice, shown in the report; a rerun keeps the fresh items, and items measured by
older code are left out of the store and named."""

from __future__ import annotations

import polars as pl

from eexit_core.storage.artifacts import read_parquet_metadata, write_parquet
from tests.tiny_run import run_pipeline
from tests.tiny_run import store_rows as _rows


def test_the_speculation_stage_measures_publishes_and_reports(tiny_run_copy):
    root = tiny_run_copy
    assert _rows(root, "select count(*) from self_speculation") == [(0,)]  # `make run` leaves it out
    result = run_pipeline(root, "--stage", "speculation")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "tiny-llama × humaneval (never materialised)" in result.stdout
    # shakespeare is prose (teacher-forced, not decoded); the hub model has no weights here
    assert _rows(root, "select distinct model_id, workload_id from self_speculation_items") == [("tiny-llama", "humaneval")]
    assert _rows(root, "select count(*), bool_and(matches_greedy) from self_speculation_items") == [(2 * 3 * 2, True)]
    configs = _rows(root, "select exit_layer, draft_len, split, lossless, lens_acceptance is not null, "
                          "predicted_speedup > 0, realised_speedup > 0 from self_speculation order by all")
    assert [c[:3] for c in configs] == [(layer, k, split) for layer in (1, 2, 3) for k in (2, 4) for split in ("test", "tune")]
    assert all(c[3:] == (True, True, True, True) for c in configs)
    assert _rows(root, "select count(distinct (exit_layer, draft_len)), count(*) from self_speculation where chosen") == [(1, 2)]
    assert "Lossless self-speculation: the (l, k) chosen" in result.stdout
    report = (root / "data" / "reports" / "factor_report.md").read_text()
    assert "## What early exit realises" in report and "| tiny-llama | humaneval |" in report.split("## What early exit")[1]
    assert (root / "data" / "reports" / "self_speculation.png").is_file()

    again = run_pipeline(root, "--stage", "speculation")
    assert again.returncode == 0 and "tiny-llama × humaneval (fresh)" in again.stdout, again.stdout[-3000:]

    # items an older self-speculation code measured: left out and named, the rest published
    items_file = root / "data" / "artifacts" / "self_speculation_items" / "tiny-llama__humaneval.parquet"
    meta = read_parquet_metadata(items_file)
    write_parquet(pl.read_parquet(items_file), items_file, metadata={**meta, "speculation_code_version": "0" * 16})
    stale = run_pipeline(root, "--stage", "results")
    assert stale.returncode == 0, stale.stdout[-3000:] + stale.stderr[-3000:]
    assert ("not published: self_speculation_items[tiny-llama|humaneval]: computed by older self-speculation code"
            in stale.stdout)
    assert _rows(root, "select count(*) from self_speculation_items") == [(0,)]
    assert _rows(root, "select count(*) > 0 from eas_scores") == [(True,)]
