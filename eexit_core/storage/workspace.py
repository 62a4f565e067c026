"""Where everything lives on disk, relative to one project root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# the checkout this package runs from (eexit_core/storage/workspace.py -> the repository)
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def _default_root() -> Path:
    from eexit_core.settings import Environment

    root = Environment.read().root
    if root is not None:
        return root
    # the repository root: the folder above this package, if it has our data folder
    here = REPOSITORY_ROOT
    return here if (here / "data" / "registry").is_dir() else Path.cwd()


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def default(cls) -> "Workspace":
        return cls(_default_root())

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def models_registry(self) -> Path:
        return self.data / "registry" / "models.yaml"

    @property
    def workloads_registry(self) -> Path:
        return self.data / "registry" / "workloads.yaml"

    @property
    def models_dir(self) -> Path:
        return self.data / "models"

    @property
    def cache_dir(self) -> Path:
        return self.data / "cache"

    @property
    def gguf_cache_dir(self) -> Path:
        """GGUF files joined from parts or chunk packages, before conversion."""
        return self.cache_dir / "gguf"

    @property
    def atomically_written_dirs(self) -> tuple[Path, ...]:
        """The folders our atomic writes leave temporaries in when killed (not the rest of
        the cache, which holds other libraries' files)."""
        return self.artifacts_dir, self.models_dir, self.reports_dir, self.gguf_cache_dir, self.zoo_dir

    @property
    def zoo_dir(self) -> Path:
        """The zoo: its corpus and tokenizer, and each variant's checkpoints over training."""
        return self.data / "zoo"

    @property
    def zoo_registry(self) -> Path:
        """The zoo's checkpoints as model entries, written by the zoo when it has trained."""
        return self.zoo_dir / "models.yaml"

    @property
    def checksum_index(self) -> Path:
        """The sha256 of each local or hub weight file, under its size and mtime: hashed once."""
        return self.cache_dir / "weight_checksums.json"

    @property
    def sdist_dir(self) -> Path:
        return self.cache_dir / "sdists"

    @property
    def artifacts_dir(self) -> Path:
        return self.data / "artifacts"

    @property
    def reports_dir(self) -> Path:
        return self.data / "reports"

    @property
    def results_db(self) -> Path:
        return self.data / "results.duckdb"

    def prompts_path(self, workload_id: str) -> Path:
        return self.artifacts_dir / "prompts" / f"{workload_id}.parquet"

    def prompts_record(self, workload_id: str) -> Path:
        """Whether the workload's source was available when its prompts were last built."""
        return self.artifacts_dir / "prompts" / f"{workload_id}.json"

    def checkpoint_record(self, model_id: str) -> Path:
        return self.artifacts_dir / "checkpoints" / f"{model_id}.json"

    def partition_path(self, asset: str, model_id: str, workload_id: str) -> Path:
        return self.artifacts_dir / asset / f"{model_id}__{workload_id}.parquet"

    def dump_dir(self, model_id: str, workload_id: str) -> Path:
        """A partition's activation dump: a folder of shards and its manifest."""
        return self.artifacts_dir / "layer_activations" / f"{model_id}__{workload_id}"
