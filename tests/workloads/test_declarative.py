"""Workloads declared in YAML over `datasets`: templates, the shape each grader gets, the
seeded draw, and bad input named by workload and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eexit_core.evaluation.grading import graded_items
from eexit_core.registry import WorkloadEntry, load_workload_registry
from eexit_core.workloads.declarative import TemplateError, render
from eexit_core.workloads.prompts import SourceUnavailableError, load_prompts
from eexit_core.workloads.sources.declared import DatasetsSource
from tests.conftest import REPO

ROWS = [
    {"id": "a", "question": "2 + 3 =", "choices": ["4", "5", "6"], "answer": "5", "label": 1},
    {"id": "b", "question": "1 + 1 =", "choices": ["2", "3", "4"], "answer": "2", "label": 0},
    {"id": "c", "question": "3 × 3 =", "choices": ["6", "9", "12"], "answer": "9", "label": 1},
    {"id": "d", "question": "7 - 2 =", "choices": ["5", "4", "3"], "answer": "5", "label": 0},
]


def _entry(tmp_path: Path, rows: list[dict] | None = None, *, grader: str = "multiple_choice_loglik", n: int = 4,
           **source) -> WorkloadEntry:
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in (ROWS if rows is None else rows)))
    fields = {"kind": "datasets", "path": "json", "data_files": "rows.jsonl", "doc_to_text": "Q: {{question}}",
              "doc_to_target": "answer", "doc_to_choice": "choices", "id_field": "id", **source}
    return WorkloadEntry(workload_id="toy", domain="math", description="toy", source=DatasetsSource(**fields),
                         n_prompts=n, grader=grader)


def _load(entry: WorkloadEntry, tmp_path: Path, **kw):
    return load_prompts(entry, sdist_dir=tmp_path, cache_dir=tmp_path / "cache", data_root=tmp_path, **kw)


def test_multiple_choice_rows_carry_context_choices_and_gold(tmp_path):
    prompts = _load(_entry(tmp_path), tmp_path)
    assert sorted(prompts["prompt_id"]) == ["toy/a", "toy/b", "toy/c", "toy/d"]
    row = prompts.filter(prompts["prompt_id"] == "toy/c").row(0, named=True)
    assert row["text"] == "Q: 3 × 3 = 9" and row["reference"] == "9" and row["choices"] == ["6", "9", "12"]
    items = {i.prompt_id: i for i in graded_items(prompts, "multiple_choice_loglik")}
    assert items["toy/c"].prompt == "Q: 3 × 3 =" and items["toy/c"].choices == ("6", "9", "12")
    assert json.loads(row["meta_json"])["dataset_fingerprint"]


def test_a_target_may_be_the_index_of_a_choice_and_choices_a_template(tmp_path):
    entry = _entry(tmp_path, doc_to_target="{{label}}", doc_to_choice="{{choices}}")
    prompts = _load(entry, tmp_path)
    assert dict(zip(prompts["prompt_id"], prompts["reference"])) == {"toy/a": "5", "toy/b": "2", "toy/c": "9", "toy/d": "5"}


def test_the_draw_is_seeded_and_prefix_stable(tmp_path):
    two = _load(_entry(tmp_path, n=2), tmp_path)["prompt_id"].to_list()
    three = _load(_entry(tmp_path, n=3), tmp_path)["prompt_id"].to_list()
    assert three[:2] == two and _load(_entry(tmp_path, n=2), tmp_path)["prompt_id"].to_list() == two


def test_numeric_and_ungraded_shapes(tmp_path):
    """As lm-eval poses them: the rendered prompt, the target delimiter, the target; a
    numeric item is generated after one worked example (the first drawn row)."""
    numeric = _load(_entry(tmp_path, grader="numeric_exact", doc_to_text="Question: {{question}}\nAnswer:",
                           doc_to_choice=None), tmp_path)
    assert numeric.filter(numeric["prompt_id"] == "toy/a")["text"].item() == "Question: 2 + 3 =\nAnswer: 5"
    items = graded_items(numeric, "numeric_exact")
    exemplar = numeric["text"][0]
    assert len(items) == 3 and all(i.prompt == f"{exemplar}\n\n{i.meta['context']}" for i in items)
    assert all(i.prompt.endswith("\nAnswer:") for i in items)
    plain = _load(_entry(tmp_path, grader="none", doc_to_choice=None, target_delimiter=" → "), tmp_path)
    assert plain.filter(plain["prompt_id"] == "toy/d")["text"].item() == "Q: 7 - 2 = → 5"
    rolling = _load(_entry(tmp_path, grader="none", doc_to_choice=None, doc_to_target=None, output_type="rolling"),
                    tmp_path)
    assert rolling.filter(rolling["prompt_id"] == "toy/d")["text"].item() == "Q: 7 - 2 ="


def test_few_shot_examples_precede_each_prompt_never_itself_and_seeded(tmp_path):
    entry = _entry(tmp_path, fewshot={"n": 2, "delimiter": "\n\n", "seed": 3})
    prompts = _load(entry, tmp_path)
    worked = {f"toy/{r['id']}": f"Q: {r['question']} {r['answer']}" for r in ROWS}
    for row in prompts.iter_rows(named=True):
        context = json.loads(row["meta_json"])["context"]
        shots = context.split("\n\n")
        assert len(shots) == 3 and shots[-1] == f"Q: {next(r['question'] for r in ROWS if row['prompt_id'].endswith(r['id']))}"
        assert set(shots[:2]) <= set(worked.values()) and worked[row["prompt_id"]] not in shots[:2]
    assert _load(entry, tmp_path).equals(prompts)  # seeded: the same examples each time
    other_seed = _load(_entry(tmp_path, fewshot={"n": 2, "seed": 4}), tmp_path)
    assert not other_seed.equals(prompts)
    with pytest.raises(TemplateError, match=r"fewshot\.n is 4 but the few-shot split has only 3 other row\(s\)"):
        _load(_entry(tmp_path, fewshot={"n": 4}), tmp_path)


def test_a_few_shot_split_of_its_own(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"id": "t", "question": "9 + 1 =", "choices": ["10", "11"],
                                                      "answer": "10", "label": 0}) + "\n")
    entry = _entry(tmp_path, data_files={"test": "rows.jsonl", "train": "train.jsonl"}, split="test",
                   fewshot={"n": 1, "split": "train"})
    contexts = [json.loads(m)["context"] for m in _load(entry, tmp_path)["meta_json"]]
    assert all(c.startswith("Q: 9 + 1 = 10\n\nQ: ") for c in contexts) and len(contexts) == 4


def test_until_and_the_answer_filter_shape_generation_and_grading(tmp_path):
    from eexit_core.evaluation.grading import filtered_answer, grade_answer

    entry = _entry(tmp_path, grader="numeric_exact", doc_to_choice=None, generation_kwargs={"until": ["\n", "Q:"]},
                   filter={"regex": r"= (-?\d+)", "take": "first"})
    item = graded_items(_load(entry, tmp_path), "numeric_exact")[0]
    assert item.stops == ("\n", "Q:")
    # without the filter the last number (12) would be graded
    assert grade_answer(item, f" so x = {item.reference}, not 12") and not grade_answer(item, " the answer is 12")
    assert filtered_answer("a = 1, b = 2", r"= (\d)", "last") == "2" and filtered_answer("none", r"\d") == ""
    plain_item = graded_items(_load(_entry(tmp_path, grader="numeric_exact", doc_to_choice=None), tmp_path),
                              "numeric_exact")[0]
    assert plain_item.stops[0] == "\nQuestion:"  # the grader's own stops where the workload names none


@pytest.mark.parametrize(("grader", "source", "message"), [
    ("numeric_exact", {"output_type": "multiple_choice"}, r"output_type multiple_choice needs a choice-scoring grader"),
    ("multiple_choice_loglik", {"output_type": "generate_until"}, r"output_type generate_until needs a generative"),
    ("multiple_choice_loglik", {"output_type": "loglikelihood"}, r"output_type loglikelihood needs grader: none"),
    ("multiple_choice_loglik", {"generation_kwargs": {"until": ["\n"]}}, r"generation_kwargs applies to generated"),
    ("none", {"filter": {"regex": "x"}}, r"filter applies to generated answers; grader none generates none"),
    ("none", {"output_type": "rolling"}, r"rolling teacher-forces doc_to_text alone"),
    ("numeric_exact", {"generation_kwargs": {"until": []}}, r"generation_kwargs\.until"),
    ("numeric_exact", {"fewshot": {"n": 0}}, r"fewshot\.n"),
])
def test_an_output_type_or_option_the_grader_cannot_serve_is_refused(tmp_path, grader, source, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        _entry(tmp_path, grader=grader, **source)


@pytest.mark.parametrize(("source", "rows", "message"), [
    ({"doc_to_text": "{{query}}"}, None, r"workload 'toy': doc_to_text uses 'query', which its rows do not have; "
                                         r"they have: answer, choices, id, label, question"),
    ({"doc_to_target": "gold"}, None, r"doc_to_target names the field 'gold'"),
    ({"doc_to_text": "{{question"}, None, r"doc_to_text is not a valid template"),
    ({}, [{**ROWS[0], "choices": []}], r"toy/a has 0 choice\(s\)"),
    ({}, [{**ROWS[0], "answer": "8"}], r"the target '8' of toy/a is not among its choices"),
    ({"id_field": "uid"}, None, r"id_field 'uid' is not a field of its rows"),
])
def test_bad_templates_and_rows_name_the_workload_and_the_field(tmp_path, source, rows, message):
    with pytest.raises(TemplateError, match=message):
        _load(_entry(tmp_path, rows, n=1, **source), tmp_path)


def test_missing_files_empty_data_and_unknown_splits_are_named(tmp_path):
    entry = _entry(tmp_path)
    moved = entry.model_copy(update={"source": entry.source.model_copy(update={"data_files": "elsewhere.jsonl"})})
    with pytest.raises(SourceUnavailableError, match=r"data file\(s\) not here: .*elsewhere\.jsonl"):
        _load(moved, tmp_path)
    (tmp_path / "empty.csv").write_text("question,answer\n")
    empty = entry.model_copy(update={"source": entry.source.model_copy(update={"path": "csv", "data_files": "empty.csv"})})
    with pytest.raises(ValueError, match="has no rows"):
        _load(empty, tmp_path)
    with pytest.raises(ValueError, match=r"source\.split"):
        _load(_entry(tmp_path, split="test"), tmp_path)


def test_a_hub_dataset_out_of_reach_is_unavailable_by_name(tmp_path, monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    entry = _entry(tmp_path, path="eexit-tests/not-on-this-machine", data_files=None)
    with pytest.raises(SourceUnavailableError, match="the dataset 'eexit-tests/not-on-this-machine' cannot be reached here"):
        _load(entry, tmp_path)


def test_the_shipped_arithmetic_questions_load_from_yaml_alone(tmp_path):
    """A workload added by YAML only, over a JSONL file shipped under data/workloads/."""
    registry = tmp_path / "workloads.yaml"
    registry.write_text("""\
workloads:
  - workload_id: arithmetic
    domain: math
    description: small-number sums, differences and products, four choices each
    source:
      kind: datasets
      path: json
      data_files: data/workloads/arithmetic.jsonl
      doc_to_text: "{{question}}"
      doc_to_target: answer
      doc_to_choice: choices
      id_field: id
    n_prompts: 36
    grader: multiple_choice_loglik
""")
    entry = load_workload_registry(registry).get("arithmetic")
    prompts = load_prompts(entry, sdist_dir=tmp_path, cache_dir=tmp_path / "cache", data_root=REPO)
    items = graded_items(prompts, "multiple_choice_loglik")
    assert len(items) == 36 and len({i.prompt_id for i in items}) == 36
    assert all(len(i.choices) == 4 and i.reference in i.choices for i in items)
    golds = {i.choices.index(i.reference) for i in items}
    assert golds == {0, 1, 2, 3}  # the answer is not always in one position


def test_a_field_name_renders_its_value_unchanged():
    entry = WorkloadEntry(workload_id="w", domain="qa", description="d", n_prompts=1,
                          source=DatasetsSource(kind="datasets", path="json", doc_to_text="q"))
    assert render(entry, "doc_to_choice", "choices", {"choices": ["x", "y"]}) == ["x", "y"]
    assert render(entry, "doc_to_text", "{{ q | upper }}!", {"q": "hi"}) == "HI!"


def test_a_declared_workload_runs_end_to_end_on_a_tiny_model(tiny_workspace, tmp_path):
    """Prompts, stats, exit accuracy and EAS for a workload that exists only as YAML and a file."""
    import duckdb

    from eexit_core.evaluation.exit_accuracy import ExitSweepSettings
    from tests.tiny_run import run_pipeline, unrun_copy

    arithmetic = f"""\
workloads:
  - workload_id: arithmetic
    domain: math
    description: small-number arithmetic, four choices
    source: {{kind: datasets, path: json, data_files: {REPO / "data" / "workloads" / "arithmetic.jsonl"},
              doc_to_text: "{{{{question}}}}", doc_to_target: answer, doc_to_choice: choices, id_field: id}}
    n_prompts: 4
    max_tokens: 24
    grader: multiple_choice_loglik
"""
    root = unrun_copy(tiny_workspace, tmp_path, workloads_yaml=arithmetic)
    result = run_pipeline(root, EEXIT_MODELS="tiny-llama")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with duckdb.connect(str(root / "data" / "results.duckdb"), read_only=True) as con:
        assert con.sql("select count(*) from eas_scores where workload_id = 'arithmetic'").fetchone()[0] > 0
        n_items = con.sql("select n_items from exit_accuracy where workload_id = 'arithmetic' "
                          "and policy = 'static' order by exit_layer desc limit 1").fetchone()[0]
    assert n_items == ExitSweepSettings().n_items_choice
