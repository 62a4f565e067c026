"""The benchmark harness runs both sides on the same input and agrees with itself."""

from __future__ import annotations

import json

from benchmarks import run as bench
from eexit_core.lens.engine import stats_for_tokens


def test_tiny_case_reports_every_key(tmp_path, monkeypatch):
    tiny = bench.Case("tiny-llama", lambda dev, dt: bench._random_model(bench._llama(512, 32, 3, 64, 4, 2), dev, dt), ("cpu",))
    monkeypatch.setattr(bench, "CASES", [tiny])
    out = tmp_path / "latest.json"
    assert bench.main(["--child", "test", "--device", "cpu", "--tokens", "2x16", "--output", str(out)]) == 0
    result = json.loads(out.read_text())["cases"]["cpu/tiny-llama/test"]
    for key in ("naive_tok_s", "engine_tok_s", "speedup", "max_abs_diff", "dspace_tok_s", "dspace_speedup",
                "dspace_max_abs_diff", "peak_mem_bytes"):
        assert key in result, key
    # the engine, the naive pipeline and the d-space lens against the float64 lens
    assert result["max_abs_diff"] < 1e-5 and result["naive_max_abs_diff"] < 1e-4
    assert result["dspace_max_abs_diff"] < 1e-5
    assert result["engine_vs_naive_max_abs_diff"] < 1e-4
    assert result["top1_agreement"] == 1.0
    assert set(result["max_abs_diff_by_stat"]) == set(result["naive_max_abs_diff_by_stat"])
    # and against a lens whose exit head is float64 too (float32 logits' own error)
    assert result["f64_head_tokens"] == 32
    assert result["engine_max_abs_diff_f64_head"] < 1e-4


def test_float64_reference_is_computed_once_per_case(tmp_path, monkeypatch):
    """The second allocator child reads the reference the first one wrote, and a wrong
    engine would show against it."""
    tiny = bench.Case("tiny-llama", lambda dev, dt: bench._random_model(bench._llama(512, 32, 3, 64, 4, 2), dev, dt), ("cpu",))
    monkeypatch.setattr(bench, "CASES", [tiny])
    calls = []
    real = bench.float64_lens
    monkeypatch.setattr(bench, "float64_lens", lambda *a, **k: calls.append(1) or real(*a, **k))
    cache = tmp_path / "reference"
    for label in ("first", "second"):
        bench.main(["--child", label, "--device", "cpu", "--tokens", "2x8", "--output", str(tmp_path / f"{label}.json"),
                    "--reference-cache", str(cache)])
    assert len(calls) == 1 and (cache / "tiny-llama-2x8.pt").exists()
    first, second = (json.loads((tmp_path / f"{l}.json").read_text())["cases"][f"cpu/tiny-llama/{l}"] for l in ("first", "second"))
    assert first["max_abs_diff_by_stat"] == second["max_abs_diff_by_stat"]

    monkeypatch.setattr(bench, "stats_for_tokens", lambda *a, **k: stats_for_tokens(*a, **k) * 1.001)
    bench.main(["--child", "broken", "--device", "cpu", "--tokens", "2x8", "--output", str(tmp_path / "broken.json"),
                "--reference-cache", str(cache)])
    broken = json.loads((tmp_path / "broken.json").read_text())["cases"]["cpu/tiny-llama/broken"]
    assert broken["max_abs_diff"] > 1e-4
