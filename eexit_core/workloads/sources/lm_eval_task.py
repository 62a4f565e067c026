"""``lm_eval_task``: a task YAML of the lm-evaluation-harness, posed as lm-eval poses it
(the fields it maps, and those it refuses: `eexit_core.workloads.lm_eval`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from eexit_core.workloads.lm_eval import LmEvalTaskError, lm_eval_source
from eexit_core.workloads.sources import SourceConfig, SourceContext, register_source

if TYPE_CHECKING:
    from eexit_core.registry import WorkloadEntry


@register_source
class LmEvalTaskSource(SourceConfig):
    kind: Literal["lm_eval_task"]
    task_file: str = Field(description="the task's YAML, relative to the workspace root")

    def rows(self, entry: WorkloadEntry, n: int, context: SourceContext) -> list[dict[str, Any]]:
        path = Path(self.task_file)
        source = lm_eval_source(path if path.is_absolute() else context.data_root / path)
        problems = source.entry_problems(entry)
        if problems:
            raise LmEvalTaskError(f"workload {entry.workload_id!r}: {self.task_file}: {'; '.join(problems)}")
        return source.rows(entry, n, context)
