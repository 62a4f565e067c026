"""`make run`'s runner with EEXIT_ACTIVATION_DUMPS=float32 on a copy of the finished tiny
run: each partition is dumped, its token stats are read from the dump and equal the live
stats the run stored; a rerun keeps both; a damaged dump is named and dumped again."""

from __future__ import annotations

import polars as pl

from tests.tiny_run import run_pipeline

PARTITIONS = ("tiny-llama__humaneval", "tiny-llama__shakespeare")


def _stats(root) -> dict[str, pl.DataFrame]:
    folder = root / "data" / "artifacts" / "token_layer_stats"
    return {p: pl.read_parquet(folder / f"{p}.parquet") for p in PARTITIONS}


def test_a_run_with_dumps_reads_the_stats_from_them(tiny_run_copy):
    root = tiny_run_copy
    live = _stats(root)
    result = run_pipeline(root, EEXIT_ACTIVATION_DUMPS="float32")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "layer_activations → token_layer_stats" in result.stdout
    assert "tiny-llama × shakespeare (dump: never materialised)" in result.stdout
    dumps = root / "data" / "artifacts" / "layer_activations"
    assert sorted(p.name for p in dumps.iterdir()) == list(PARTITIONS)
    from_dumps = _stats(root)
    assert all(from_dumps[p].equals(live[p]) for p in PARTITIONS)

    again = run_pipeline(root, EEXIT_ACTIVATION_DUMPS="float32")
    assert again.returncode == 0 and "tiny-llama × shakespeare (dump fresh) (stats fresh)" in again.stdout, again.stdout[-3000:]

    shard = dumps / "tiny-llama__shakespeare" / "shard-00000.safetensors"
    shard.write_bytes(b"\0" * shard.stat().st_size)
    damaged = run_pipeline(root, EEXIT_ACTIVATION_DUMPS="float32")
    assert damaged.returncode == 0, damaged.stdout[-3000:] + damaged.stderr[-3000:]
    assert ("tiny-llama × shakespeare (dump: the shard is damaged or truncated (its SHA-256 differs from the manifest's)) "
            "(stats fresh)") in damaged.stdout
    assert _stats(root)["tiny-llama__shakespeare"].equals(live["tiny-llama__shakespeare"])
    assert shard.read_bytes().strip(b"\0")  # dumped again

    off = run_pipeline(root, "--stage", "activations")  # dumps off: the stage has nothing to do
    assert off.returncode == 0 and "layer_activations" not in off.stdout, off.stdout[-3000:]
