"""Which models a run takes: a local run the embedded models and every other registered
model whose weights are on this machine; the rest are named as skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from assets.partitions import selected_model_ids, skipped_model_ids
from eexit_core.settings import Environment
from eexit_core.storage.workspace import Workspace
from tests.conftest import build_tokenizer, model_entry_yaml, tiny_llama


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Workspace:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    here = tmp_path / "tiny"
    tiny_llama(len(build_tokenizer())).save_pretrained(here)
    entries = [("here", f"{{kind: local, path: {here}}}"), ("gone", f"{{kind: local, path: {tmp_path / 'gone'}}}"),
               ("on-the-hub", "{kind: hub, repo_id: eexit-tests/not-cached}"),
               ("gguf-here", f"{{kind: gguf_file, path: {here / 'config.json'}, sha256: '{'0' * 64}', quantization: Q8_0}}")]
    registry = tmp_path / "data" / "registry"
    registry.mkdir(parents=True)
    (registry / "models.yaml").write_text("reference_model: here\nmodels:\n" + "".join(
        model_entry_yaml(model_id, source) for model_id, source in entries))
    (registry / "workloads.yaml").write_text("workloads: []\n")
    return Workspace(Path(tmp_path))


def test_a_local_run_takes_every_model_whose_weights_are_here(workspace):
    local = Environment.read({})
    assert selected_model_ids(workspace, local) == ["here", "gguf-here"]
    assert skipped_model_ids(workspace, local) == ["gone", "on-the-hub"]


def test_a_cluster_run_and_a_chosen_list_take_what_they_say(workspace):
    assert selected_model_ids(workspace, Environment.read({"EEXIT_DEPLOYMENT": "cluster"})) == [
        "here", "gone", "on-the-hub", "gguf-here"]
    chosen = Environment.read({"EEXIT_MODELS": "gone"})
    assert selected_model_ids(workspace, chosen) == ["gone"]
