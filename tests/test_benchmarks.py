"""The benchmark harness runs both sides on the same input and agrees with itself."""

from __future__ import annotations

import json

from benchmarks import run as bench


def test_tiny_case_reports_every_key(tmp_path, monkeypatch):
    tiny = bench.Case("tiny-llama", lambda dev, dt: bench._random_model(bench._llama(512, 32, 3, 64, 4, 2), dev, dt), ("cpu",))
    monkeypatch.setattr(bench, "CASES", [tiny])
    out = tmp_path / "latest.json"
    assert bench.main(["--child", "test", "--device", "cpu", "--tokens", "2x16", "--output", str(out)]) == 0
    result = json.loads(out.read_text())["cases"]["cpu/tiny-llama/test"]
    for key in ("naive_tok_s", "engine_tok_s", "speedup", "max_abs_diff", "dspace_tok_s", "dspace_speedup",
                "dspace_max_abs_diff", "peak_mem_bytes"):
        assert key in result, key
    # the engine and the naive pipeline compute the same numbers (float32 on CPU)
    assert result["max_abs_diff"] < 1e-4
    assert result["dspace_max_abs_diff"] < 1e-4
    assert result["top1_agreement"] == 1.0
    # both sides against the float64 lens on the same residuals
    assert result["f64_tokens"] == 32
    assert result["engine_max_abs_diff_f64"] < 1e-4 and result["naive_max_abs_diff_f64"] < 1e-4
    assert set(result["engine_max_abs_diff_f64_by_stat"]) == set(result["max_abs_diff_by_stat"])
