"""lm-evaluation-harness task YAMLs, taken as they are (the ``lm_eval_task`` source kind).

The common fields map onto a `datasets` source (`dataset_path`, `dataset_name`,
`dataset_kwargs.data_files`, `test_split` / `validation_split`, `fewshot_split`,
`num_fewshot`, `fewshot_delimiter`, `target_delimiter`, `doc_to_text`, `doc_to_target`,
`doc_to_choice`, `output_type`, `generation_kwargs.until` and a regex `filter_list`);
labels (`task`, `tag`, `metadata`, `metric_list`) are read past. Anything else changes
how lm-eval poses or scores the task in a way eexit would not reproduce, so it is refused
with the keys named. `python -m eexit_core.workloads.lm_eval TASK.yaml`
prints the equivalent `kind: datasets` source.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from eexit_core.errors import EexitError
from eexit_core.workloads.sources.declared import DatasetsSource

LABELS = ("task", "tag", "metadata", "metric_list")
MAPPED = ("dataset_path", "dataset_name", "dataset_kwargs", "test_split", "validation_split", "training_split",
          "fewshot_split", "num_fewshot", "fewshot_delimiter", "target_delimiter", "doc_to_text", "doc_to_target",
          "doc_to_choice", "output_type", "generation_kwargs", "filter_list")
# greedy decoding is what the exit sweeps do; these values say so and change nothing
GREEDY = {"do_sample": False, "temperature": 0.0}


class LmEvalTaskError(EexitError, ValueError):
    """An lm-eval task YAML eexit cannot take as it is; the message names the keys."""


class _Function(str):
    """A `!function module.name` value: Python code lm-eval would import."""


def _task_yaml(path: Path) -> dict[str, Any]:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: _Function(loader.construct_scalar(node)))
    if not path.is_file():
        from eexit_core.workloads.prompts import SourceUnavailableError

        raise SourceUnavailableError(f"no lm-eval task file at {path}; fix source.task_file")
    task = yaml.load(path.read_text(), Loader=Loader)  # noqa: S506  (SafeLoader, plus one tag)
    if not isinstance(task, dict):
        raise LmEvalTaskError(f"{path}: not an lm-eval task (a mapping of its fields)")
    return task


def lm_eval_source(path: Path) -> DatasetsSource:
    """The `datasets` source that poses `path`'s task as lm-eval does, or an error naming
    every key it cannot take."""
    task = _task_yaml(path)
    refused = [key for key in task if key not in LABELS + MAPPED]
    refused += [f"{key} (!function {value})" for key, value in task.items() if isinstance(value, _Function)]
    kwargs = task.get("dataset_kwargs") or {}
    refused += [f"dataset_kwargs.{key}" for key in kwargs if key != "data_files"]
    generation = task.get("generation_kwargs") or {}
    refused += [f"generation_kwargs.{key}" for key, value in generation.items()
                if key != "until" and GREEDY.get(key, object()) != value]
    answer_filter, filter_problems = _filter(task.get("filter_list"))
    refused += filter_problems
    if "dataset_path" not in task or "doc_to_text" not in task:
        refused.append("(dataset_path and doc_to_text are required)")
    if refused:
        raise LmEvalTaskError(f"{path}: eexit cannot pose this task as lm-eval does; unsupported: {', '.join(refused)}")
    fields: dict[str, Any] = {
        "kind": "datasets", "path": task["dataset_path"], "name": task.get("dataset_name"),
        "data_files": kwargs.get("data_files"),
        "split": task.get("test_split") or task.get("validation_split") or task.get("training_split") or "train",
        "doc_to_text": _template(task["doc_to_text"]),
        "doc_to_target": None if task.get("doc_to_target") is None else _template(task["doc_to_target"]),
        "doc_to_choice": None if task.get("doc_to_choice") is None else _template(task["doc_to_choice"]),
        "target_delimiter": task.get("target_delimiter", " "), "output_type": task.get("output_type"),
        "filter": answer_filter,
    }
    if "until" in generation:
        until = generation["until"]
        fields["generation_kwargs"] = {"until": [until] if isinstance(until, str) else list(until)}
    if task.get("num_fewshot"):
        fields["fewshot"] = {"n": task["num_fewshot"], "split": task.get("fewshot_split"),
                             "delimiter": task.get("fewshot_delimiter", "\n\n")}
    try:
        return DatasetsSource(**fields)
    except ValueError as exc:
        raise LmEvalTaskError(f"{path}: {exc}") from None


def _template(value: Any) -> str:
    """lm-eval allows a literal list of choices or an integer target where eexit takes a
    template: write them as one."""
    if isinstance(value, list):
        return "{{ " + repr([str(v) for v in value]) + " }}"
    return str(value) if not isinstance(value, int) else "{{ " + str(value) + " }}"


def _filter(filter_list: Any) -> tuple[dict[str, str] | None, list[str]]:
    """One pipeline of a regex, optionally then take_first: what eexit's answer filter does."""
    if not filter_list:
        return None, []
    if not isinstance(filter_list, list) or len(filter_list) != 1:
        return None, ["filter_list (one pipeline at most)"]
    steps = filter_list[0].get("filter") or []
    functions = [step.get("function") for step in steps]
    if not steps or functions[0] != "regex" or any(f != "take_first" for f in functions[1:]):
        return None, [f"filter_list functions {functions} (a regex, then take_first, is supported)"]
    regex = steps[0]
    extra = [key for key in regex if key not in ("function", "regex_pattern", "group_select")]
    if extra or regex.get("group_select", 0) not in (0, -1) or "regex_pattern" not in regex:
        return None, [f"filter_list regex options {extra or regex.get('group_select')}"]
    return {"regex": regex["regex_pattern"], "take": "last" if regex.get("group_select") == -1 else "first"}, []


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m eexit_core.workloads.lm_eval TASK.yaml", file=sys.stderr)
        return 2
    try:
        source = lm_eval_source(Path(args[0]))
    except EexitError as exc:
        print(exc, file=sys.stderr)
        return 1
    dumped = source.model_dump(mode="json", exclude_defaults=True)
    print(yaml.safe_dump({"source": {"kind": "datasets", **dumped}}, sort_keys=False, allow_unicode=True), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
