"""`python -m pipelines.run --stage tuned` on the finished tiny run: float32 dumps of every
partition (dumps are off for the stats, which stay live), a tuned lens for the model, and
the exit heads compared on held-out prompts in the results store; a rerun keeps the lens."""

from __future__ import annotations

from tests.tiny_run import run_pipeline
from tests.tiny_run import store_rows as _rows


def test_the_tuned_stage_dumps_fits_and_publishes_the_exit_heads(tiny_run_copy):
    root = tiny_run_copy
    assert _rows(root, "select count(*) from exit_head_eas") == [(0,)]  # `make run` leaves it out
    stats = root / "data" / "artifacts" / "token_layer_stats" / "tiny-llama__shakespeare.parquet"
    before = stats.read_bytes()
    result = run_pipeline(root, "--stage", "tuned")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "layer_activations (float32) → tuned_lens" in result.stdout
    assert "tiny-llama × shakespeare (dump: never materialised)" in result.stdout
    assert "tiny-llama (never materialised)" in result.stdout
    assert stats.read_bytes() == before  # dumps off: the stats stay the live lens's
    assert _rows(root, "select exit_head, count(distinct workload_id) from exit_head_eas group by all order by 1") == [
        ("control", 3), ("own", 3), ("tuned", 3)]  # humaneval, shakespeare and ALL
    assert _rows(root, "select max(abs(eas_gain)) from exit_head_eas where exit_head = 'own'") == [(0.0,)]
    assert _rows(root, "select count(*), bool_and(top1_match = 1) from exit_head_similarity where layer = 4") == [(6, True)]
    assert _rows(root, "select exit_head, count(*), bool_and(kl_fit <= kl_own + 1e-6) from tuned_lens_fit "
                       "group by all order by 1")[1] == ("tuned", 4, True)
    assert _rows(root, "select count(*) from exit_heads where workload_id = 'ALL'") == [(3,)]
    report = (root / "data" / "reports" / "factor_report.md").read_text()
    section = report.split("## A learned exit head")[1]
    assert "| tiny-llama | ALL |" in section and "tuned_gain" in section
    assert (root / "data" / "reports" / "exit_heads.png").is_file()
    again = run_pipeline(root, "--stage", "tuned")
    assert again.returncode == 0 and "tiny-llama (tuned lens fresh)" in again.stdout, again.stdout[-3000:]
