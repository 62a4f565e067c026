"""model_checkpoints: the registry's facts are checked against the checkpoint, and a local
model's checksum covers its weights (hashed once), so swapped weights are noticed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eexit_core.registry import RegistryError, load_model_registry
from eexit_core.stages import build_model_checkpoint
from eexit_core.storage import artifacts
from eexit_core.storage.workspace import Workspace
from tests.conftest import build_tokenizer, model_entry_yaml, tiny_llama


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    tokenizer = build_tokenizer()
    model_dir = tmp_path / "tiny"
    tiny_llama(len(tokenizer)).save_pretrained(model_dir)  # 4 layers, 64 positions
    tokenizer.save_pretrained(model_dir)
    (tmp_path / "data" / "registry").mkdir(parents=True)
    return Workspace(tmp_path)


def _entry(ws: Workspace, architecture: str = "LlamaForCausalLM", n_layers: int = 4, context_length: int = 64):
    entry = model_entry_yaml("tiny", f"{{kind: local, path: {ws.root / 'tiny'}}}", architecture=architecture,
                             n_layers=n_layers, context_length=context_length)
    path = ws.models_registry
    path.write_text("reference_model: tiny\nmodels:\n" + entry)
    return load_model_registry(path).get("tiny")


@pytest.mark.parametrize(("fact", "message"), [
    ({"architecture": "MistralForCausalLM"}, "architecture: MistralForCausalLM but the checkpoint's config.json says LlamaForCausalLM"),
    ({"context_length": 4096}, "context_length: 4096 but the checkpoint has 64 positions"),
    ({"n_layers": 6}, "n_layers: 6 but the checkpoint has 4"),
])
def test_a_registry_fact_the_checkpoint_contradicts_is_named(workspace, fact, message):
    with pytest.raises(RegistryError, match=message) as raised:
        build_model_checkpoint(workspace, _entry(workspace, **fact))
    assert "fix data/registry/models.yaml" in str(raised.value)
    assert not workspace.checkpoint_record("tiny").is_file()  # nothing recorded as available


def test_swapped_weights_change_the_checksum_and_each_file_is_hashed_once(workspace, monkeypatch):
    entry = _entry(workspace)
    hashed: list[str] = []
    real = artifacts.sha256_file

    def counting(path: Path, *args) -> str:
        hashed.append(Path(path).name)
        return real(path, *args)

    monkeypatch.setattr("eexit_core.models.checkpoints.sha256_file", counting)
    first = build_model_checkpoint(workspace, entry).checksum
    assert "model.safetensors" in hashed and "config.json" in hashed
    hashed.clear()
    assert build_model_checkpoint(workspace, entry).checksum == first
    assert hashed == []  # size and mtime unchanged: the recorded sha256 is reused
    tiny_llama(len(build_tokenizer()), seed=1).save_pretrained(workspace.root / "tiny")  # same config, other weights
    second = build_model_checkpoint(workspace, entry).checksum
    assert second != first
    assert "model.safetensors" in hashed
    assert json.loads(workspace.checkpoint_record("tiny").read_text())["checksum"] == second


def test_a_model_type_transformers_does_not_know_is_named_with_the_model(workspace):
    config = workspace.root / "tiny" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "model_type": "llama-from-the-future"}))
    unknown = r"tiny: .*config.json has model_type 'llama-from-the-future', which transformers \S+ does not know"
    with pytest.raises(RegistryError, match=unknown):
        build_model_checkpoint(workspace, _entry(workspace))
