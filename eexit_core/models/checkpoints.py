"""Model checkpoints: locate the weights a registry entry names, verify and convert them.

Packaged GGUF files are checksum-verified, dequantised by transformers (with `gguf`) and
converted once into a Hugging Face folder under `data/models/<model_id>/`, with a
manifest recording the source checksum, the quantisation and the converted files'
checksums. Hub models resolve from the local HF cache (or download where allowed);
anything unreachable raises `ModelUnavailableError` with what to do about it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from eexit_core.errors import EexitError
from eexit_core.registry import GgufFileSource, GgufPackageSource, HubSource, LocalSource, ModelEntry, RegistryError
from eexit_core.storage.artifacts import atomic_dir, sha256_file

MANIFEST = "eexit_checkpoint.json"


class ModelUnavailableError(EexitError, RuntimeError):
    """The weights of a registered model cannot be reached on this machine."""


class ChecksumError(EexitError, RuntimeError):
    """A weight file does not match the checksum recorded for it."""


class GgufShapeError(EexitError, ValueError):
    """A GGUF file's tensors do not fit the architecture its own metadata describes."""


@dataclass(frozen=True)
class Checkpoint:
    model_id: str
    path: Path  # a Hugging Face format folder
    checksum: str  # sha256 of the source weights (GGUF file, or the folder's manifest)
    quantization: str | None


def locate_gguf(source: GgufPackageSource, cache_dir: Path) -> Path:
    """Path of the packaged GGUF file, rebuilding it from chunk packages if needed."""
    try:
        dist = importlib.metadata.distribution(source.package)
    except importlib.metadata.PackageNotFoundError:
        raise ModelUnavailableError(
            f"package {source.package!r} is not installed; install it with: {source.install_hint}"
        ) from None
    if source.file is not None:
        path = Path(str(dist.locate_file(source.file)))
        if not path.is_file():
            raise ModelUnavailableError(
                f"{source.package} is installed but has no {source.file}; reinstall with: "
                f"{source.install_hint}"
            )
        return path
    assemble = _assembler(source)
    target = cache_dir / f"{source.package}.gguf"
    if target.is_file() and sha256_file(target) == source.sha256:
        return target
    return Path(assemble(target, overwrite=True))


def _assembler(source: GgufPackageSource):
    """The function that joins a GGUF split across packages, named by the registry."""
    module_name, _, func_name = (source.assembler or "").partition(":")
    try:
        return getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError, ValueError) as exc:  # a registry mistake, not a missing package
        raise RegistryError(
            f"{source.package}: the registry's assembler {source.assembler!r} cannot be imported ({exc}); "
            f"fix source.assembler in data/registry/models.yaml or reinstall with: {source.install_hint}"
        ) from None


def gguf_file(model_id: str, source: GgufFileSource, cache_dir: Path) -> Path:
    """The registered GGUF file, joined from its parts (in order) when it is split."""
    from eexit_core.storage.artifacts import atomic_path

    if source.path is not None:
        path = Path(os.path.expanduser(source.path))
        if not path.is_file():
            raise ModelUnavailableError(f"{model_id}: no GGUF file at {path}; fix source.path in data/registry/models.yaml")
        return path
    parts = [Path(os.path.expanduser(part)) for part in source.parts or []]
    missing = [str(part) for part in parts if not part.is_file()]
    if missing:
        raise ModelUnavailableError(f"{model_id}: GGUF parts missing here: {', '.join(missing)} (source.parts)")
    target = cache_dir / f"{model_id}.gguf"
    if target.is_file() and sha256_file(target) == source.sha256:
        return target
    with atomic_path(target) as tmp, open(tmp, "wb") as joined:
        for part in parts:
            with open(part, "rb") as piece:
                shutil.copyfileobj(piece, joined, 1 << 24)
    return target


def _describe_gguf_source(source: GgufPackageSource | GgufFileSource) -> str:
    if isinstance(source, GgufPackageSource):
        return f"package {source.package}"
    return f"file {source.path}" if source.path else f"{len(source.parts or [])} parts from {source.parts[0]}"


def weights_on_this_machine(entry: ModelEntry) -> bool:
    """Whether a run here can reach the entry's weights without a download: an installed
    package, a local folder or file, or a hub repository in the Hugging Face cache."""
    source = entry.source
    if isinstance(source, GgufPackageSource):
        try:
            importlib.metadata.distribution(source.package)
        except importlib.metadata.PackageNotFoundError:
            return False
        return True
    if isinstance(source, GgufFileSource):
        files = [source.path] if source.path else source.parts or []
        return all(Path(os.path.expanduser(f)).is_file() for f in files)
    if isinstance(source, LocalSource):
        return (Path(os.path.expanduser(source.path)) / "config.json").is_file()
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(source.repo_id, "config.json", revision=source.revision), str)


def _verify(path: Path, expected: str) -> str:
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(
            f"{path} has sha256 {actual}, the registry expects {expected}; "
            "reinstall the package or fix the registry's sha256"
        )
    return actual


def _manifest_ok(folder: Path, source_sha: str) -> bool:
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return False
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("source_sha256") != source_sha:
        return False
    for name, digest in manifest.get("files", {}).items():
        if not (folder / name).is_file() or sha256_file(folder / name) != digest:
            return False
    return True


def convert_gguf(gguf_path: Path, target: Path, *, model_id: str, source: GgufPackageSource | GgufFileSource) -> None:
    """Dequantise a GGUF file into a float32 Hugging Face folder, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    except (ValueError, RuntimeError) as error:
        # transformers fails deep inside a reshape or with a load report on its logger;
        # name the tensor that does not fit, when one does not, so the message says what to fix.
        misfits = gguf_shape_misfits(gguf_path)
        if not misfits:
            raise
        raise GgufShapeError(
            f"{model_id}: {gguf_path} ({_describe_gguf_source(source)}) does not fit the architecture its "
            f"metadata describes: {'; '.join(misfits[:3])}{' ...' if len(misfits) > 3 else ''}. The file is "
            "damaged or was exported for another model; re-export it, or fix sha256 and the source in "
            "data/registry/models.yaml"
        ) from error
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # The weights are now plain float32 tensors; forget the GGUF quantiser so they save.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        files = {
            p.name: sha256_file(p)
            for p in sorted(tmp.iterdir())
            if p.suffix in {".safetensors", ".json", ".jinja", ".model"}
        }
        manifest = {
            "model_id": model_id,
            "source": _describe_gguf_source(source),
            "source_sha256": source.sha256,
            "quantization": f"{source.quantization} GGUF, dequantised to float32",
            "transformers": importlib.metadata.version("transformers"),
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def gguf_shape_misfits(gguf_path: Path) -> list[str]:
    """Each GGUF tensor whose size differs from the parameter transformers maps it to, in a
    model built (on the meta device, so without memory) from the file's own metadata."""
    from gguf import GGUFReader
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
        read_field,
    )

    reader = GGUFReader(gguf_path)
    config = AutoConfig.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    architecture = read_field(reader, "general.architecture")[0]
    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=config.to_dict())
    names = get_gguf_hf_weights_map(model, processor)
    expected = model.state_dict()
    misfits = []
    for tensor in reader.tensors:
        parameter = names.get(tensor.name)
        if parameter not in expected:
            continue
        found = tuple(int(d) for d in reversed(tensor.shape.tolist()))  # GGUF lists dimensions innermost first
        wanted = tuple(expected[parameter].shape)
        if math.prod(found) != math.prod(wanted):
            misfits.append(f"tensor {tensor.name} has shape {found}, {parameter} needs {wanted}")
    return misfits


def prepare_checkpoint(entry: ModelEntry, *, models_dir: Path, cache_dir: Path, allow_download: bool = False,
                       checksum_index: Path | None = None) -> Checkpoint:
    """Make the entry's weights available as a verified HF folder; idempotent. A local or hub
    folder's checksum covers its weight files, each hashed once (`checksum_index`)."""
    source = entry.source
    if isinstance(source, (GgufPackageSource, GgufFileSource)):
        target = models_dir / entry.model_id
        if not _manifest_ok(target, source.sha256):
            if isinstance(source, GgufPackageSource):
                gguf = locate_gguf(source, cache_dir)
            else:
                gguf = gguf_file(entry.model_id, source, cache_dir)
            _verify(gguf, source.sha256)
            convert_gguf(gguf, target, model_id=entry.model_id, source=source)
            if not _manifest_ok(target, source.sha256):
                raise ChecksumError(f"{target}: converted files fail their own checksums")
        return Checkpoint(entry.model_id, target, source.sha256, source.quantization)
    if isinstance(source, LocalSource):
        path = Path(os.path.expanduser(source.path))
        if not (path / "config.json").is_file():
            raise ModelUnavailableError(
                f"{entry.model_id}: no Hugging Face folder at {path} (config.json missing); "
                "fix source.path in data/registry/models.yaml"
            )
        digests = _file_digests(path, checksum_index)
        _verify_weights(entry.model_id, source, digests)
        return Checkpoint(entry.model_id, path, _folder_checksum(digests), source.quantization)
    if isinstance(source, HubSource):
        return _hub_checkpoint(entry, source, allow_download, checksum_index)
    raise TypeError(f"unsupported source {source!r}")


def _file_digests(path: Path, index: Path | None = None) -> dict[str, str]:
    """The sha256 of each file of a model folder (weights, config, tokenizer; not docs or
    hidden files) by relative name. Each file is hashed once: `index` keeps its sha256
    under its resolved path, size and modification time."""
    from eexit_core.storage.artifacts import write_json

    known = json.loads(index.read_text()) if index is not None and index.is_file() else {}
    digests, changed = {}, False
    for file in _model_files(path):
        stat = file.stat()
        key, stamp = str(file.resolve()), [stat.st_size, stat.st_mtime_ns]
        if known.get(key, {}).get("stamp") != stamp:
            known[key] = {"stamp": stamp, "sha256": sha256_file(file)}
            changed = True
        digests[file.relative_to(path).as_posix()] = known[key]["sha256"]
    if changed and index is not None:
        write_json(known, index)
    return digests


def _folder_checksum(digests: dict[str, str]) -> str:
    """One checksum over a folder's files, so swapped weights invalidate what was computed
    from them."""
    from eexit_core.storage.artifacts import sha256_text

    return sha256_text(*(f"{name}\x00{digest}" for name, digest in sorted(digests.items())))


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def _verify_weights(model_id: str, source: LocalSource, digests: dict[str, str]) -> None:
    """The registry's sha256 of a local folder's weights: of its one weight file, or by name."""
    if source.sha256 is None:
        return
    weights = sorted(name for name in digests if name.endswith(WEIGHT_SUFFIXES))
    if isinstance(source.sha256, str):
        if len(weights) != 1:
            raise RegistryError(
                f"{model_id}: source.sha256 is one checksum but {source.path} has {len(weights)} weight files "
                f"({', '.join(weights) or 'none'}); give one per file name in data/registry/models.yaml")
        expected = {weights[0]: source.sha256}
    else:
        expected = source.sha256
    for name, digest in expected.items():
        if name not in digests:
            raise ChecksumError(f"{model_id}: {source.path} has no {name}, which source.sha256 names")
        if digests[name] != digest:
            raise ChecksumError(
                f"{model_id}: {Path(source.path) / name} has sha256 {digests[name]}, the registry expects {digest}; "
                "the weights were replaced: restore them or fix source.sha256 in data/registry/models.yaml")


def _model_files(path: Path) -> list[Path]:
    def counted(file: Path) -> bool:
        relative = file.relative_to(path).parts
        return file.is_file() and file.suffix != ".md" and not any(part.startswith(".") for part in relative)

    return sorted(file for file in path.rglob("*") if counted(file))


def _hub_checkpoint(entry: ModelEntry, source: HubSource, allow_download: bool, checksum_index: Path | None) -> Checkpoint:
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(
            source.repo_id,
            revision=source.revision,
            local_files_only=not allow_download,
            allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"],
        )
    except Exception as exc:  # the hub raises many types; all mean "not reachable"
        how = (
            "it is not in the local Hugging Face cache and hub downloads are off "
            "(set EEXIT_ALLOW_DOWNLOAD=1 where the hub is reachable, or register a "
            "local copy with source kind: local)"
            if not allow_download
            else f"the hub could not be reached ({type(exc).__name__})"
        )
        raise ModelUnavailableError(f"{entry.model_id} ({source.repo_id}): {how}") from None
    return Checkpoint(entry.model_id, Path(path), _folder_checksum(_file_digests(Path(path), checksum_index)), None)


def load_model(checkpoint: Checkpoint, *, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """The model (eval mode) and tokenizer of a prepared checkpoint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint.path)
    model = AutoModelForCausalLM.from_pretrained(checkpoint.path, dtype=dtype)
    return model.to(device).eval(), tokenizer


def load_exit_head(checkpoint: Checkpoint, *, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """The model's exit head alone (final norm and LM head, read from the checkpoint's
    safetensors), on a skeleton whose blocks hold no weights: all that statistics from an
    activation dump need, at the head's memory rather than the model's. A checkpoint whose
    files do not name the head's weights as the model does falls back to the full model."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    from eexit_core.models.adapters import resolve_exit_head

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(checkpoint.path), dtype=dtype)
    head = resolve_exit_head(skeleton)
    names: dict[int, list[str]] = {}  # a tied weight has several names: the head's and the embedding's
    for name, tensor in [*skeleton.named_parameters(remove_duplicate=False), *skeleton.named_buffers(remove_duplicate=False)]:
        names.setdefault(id(tensor), []).append(name)
    where = {key: file for file in sorted(checkpoint.path.glob("*.safetensors"))
             for key in safe_open(str(file), framework="pt").keys()}
    for module in (head.final_norm, head.lm_head):
        if module is None:
            continue
        state = {}
        for local, tensor in [*module.named_parameters(), *module.named_buffers()]:
            stored = next((n for n in names.get(id(tensor), []) if n in where), None)
            if stored is None:
                model, _ = load_model(checkpoint, device=device, dtype=dtype)
                return resolve_exit_head(model)
            with safe_open(str(where[stored]), framework="pt", device="cpu") as opened:
                state[local] = opened.get_tensor(stored).to(device=device, dtype=tensor.dtype)
        module.load_state_dict(state, strict=False, assign=True)
        if any(t.is_meta for t in [*module.parameters(), *module.buffers()]):
            model, _ = load_model(checkpoint, device=device, dtype=dtype)
            return resolve_exit_head(model)
    return head
