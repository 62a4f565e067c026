"""Workload sources: a registry, so a new source of prompts is one file in this folder.

A source is a pydantic model of its registry fields, with `kind: Literal["<name>"]`, that
subclasses `SourceConfig`, implements `rows(entry, n, context)` and is decorated with
`@register_source`. Every module here is imported when the workload registry is first
built; the registry's `source` field accepts exactly the registered kinds.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from eexit_core.registry import WorkloadEntry


@dataclass(frozen=True)
class SourceContext:
    """Where a source may read from: the sdists `make setup` fetched, a cache of its own
    and the workspace root (what a declared file's path is relative to)."""

    sdist_dir: Path
    cache_dir: Path
    data_root: Path


class SourceConfig(BaseModel):
    """A source's registry fields; `rows` returns every prompt row (`prompts.prompt_row`) it
    draws for `n` prompts, seeded by the entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def entry_problems(self, entry: WorkloadEntry) -> list[str]:
        """What in the rest of the entry (its grader, say) this source cannot serve."""
        return []

    def rows(self, entry: WorkloadEntry, n: int, context: SourceContext) -> list[dict[str, Any]]:
        raise NotImplementedError(f"source kind {self.kind!r} does not implement rows()")  # type: ignore[attr-defined]


_SOURCES: dict[str, type[SourceConfig]] = {}
_discovered = False


def register_source(config: type[SourceConfig]) -> type[SourceConfig]:
    """Register a source under its `kind`; a second source of a kind is an error naming both."""
    field = config.model_fields.get("kind")
    kinds = typing.get_args(field.annotation) if field is not None else ()
    if len(kinds) != 1 or not isinstance(kinds[0], str):
        raise TypeError(f"{config.__qualname__}: a source needs `kind: Literal['<name>']`")
    kind = kinds[0]
    if kind in _SOURCES and _SOURCES[kind] is not config:
        raise ValueError(f"source kind {kind!r} is registered twice: by {_origin(_SOURCES[kind])} and by {_origin(config)}")
    if config.rows is SourceConfig.rows:
        raise TypeError(f"{_origin(config)}: a source must implement rows(entry, n, context)")
    _SOURCES[kind] = config
    return config


def _origin(config: type) -> str:
    return f"{config.__module__}.{config.__qualname__}"


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{module.name}")


def source_types() -> tuple[type[SourceConfig], ...]:
    """The registered source models, by kind."""
    _discover()
    return tuple(_SOURCES[kind] for kind in sorted(_SOURCES))


def source_kinds() -> tuple[str, ...]:
    _discover()
    return tuple(sorted(_SOURCES))


def source_modules() -> list[Path]:
    """The files that define the registered sources (what drawn prompts depend on)."""
    _discover()
    return sorted({Path(sys.modules[config.__module__].__file__) for config in _SOURCES.values()})
