"""lm-evaluation-harness task YAMLs: the common fields posed as lm-eval poses them, the
rest refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from eexit_core.registry import WorkloadEntry
from eexit_core.workloads.lm_eval import LmEvalTaskError, lm_eval_source, main
from eexit_core.workloads.prompts import load_prompts
from tests.conftest import REPO

OPPOSITES = REPO / "data" / "workloads" / "lm_eval" / "opposites.yaml"


def _entry(source: dict, grader: str = "multiple_choice_loglik") -> WorkloadEntry:
    return WorkloadEntry(workload_id="opposites", domain="qa", description="d", n_prompts=6, grader=grader, source=source)


def _load(entry: WorkloadEntry, tmp_path: Path):
    return load_prompts(entry, sdist_dir=tmp_path, cache_dir=tmp_path / "cache", data_root=REPO)


def test_the_shipped_task_poses_its_items_as_the_printed_datasets_source_does(tmp_path, capsys):
    assert main([str(OPPOSITES)]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)["source"]
    assert printed == {"kind": "datasets", "path": "json", "data_files": "data/workloads/opposites.jsonl",
                       "doc_to_text": 'The opposite of "{{word}}" is "', "doc_to_target": "label",
                       "doc_to_choice": "choices", "target_delimiter": "", "output_type": "multiple_choice"}
    from_task = _load(_entry({"kind": "lm_eval_task", "task_file": "data/workloads/lm_eval/opposites.yaml"}), tmp_path)
    assert from_task.equals(_load(_entry(printed), tmp_path))
    row = from_task.row(0, named=True)
    meta = json.loads(row["meta_json"])
    assert row["text"] == meta["context"] + row["reference"] and meta["context"].startswith('The opposite of "')
    assert len(row["choices"]) == 4 and row["reference"] in row["choices"]


def test_generation_filters_fewshot_and_literal_choices_map(tmp_path):
    task = tmp_path / "task.yaml"
    task.write_text("""\
task: sums
dataset_path: json
dataset_kwargs: {data_files: {test: t.jsonl, train: f.jsonl}}
test_split: test
fewshot_split: train
num_fewshot: 2
fewshot_delimiter: "\\n###\\n"
output_type: generate_until
doc_to_text: "Q: {{q}}\\nA:"
doc_to_target: "{{a}}"
generation_kwargs: {until: ["\\n\\n", "Q:"], do_sample: false, temperature: 0.0}
filter_list:
  - name: strict
    filter:
      - {function: regex, regex_pattern: "#### (\\\\-?[0-9]+)"}
      - {function: take_first}
metadata: {version: 1.0}
""")
    source = lm_eval_source(task)
    assert source.split == "test" and source.data_files == {"test": "t.jsonl", "train": "f.jsonl"}
    assert source.fewshot.n == 2 and source.fewshot.split == "train" and source.fewshot.delimiter == "\n###\n"
    assert source.generation_kwargs.until == ["\n\n", "Q:"]
    assert source.filter.regex == "#### (\\-?[0-9]+)" and source.filter.take == "first"
    task.write_text("dataset_path: json\noutput_type: multiple_choice\ndoc_to_text: q\ndoc_to_choice: [\"no\", \"yes\"]\n"
                    "doc_to_target: 1\n")
    literal = lm_eval_source(task)
    from eexit_core.workloads.declarative import render

    entry = _entry({"kind": "datasets", "path": "json", "doc_to_text": "q"})
    assert render(entry, "doc_to_choice", literal.doc_to_choice, {}) == "['no', 'yes']"
    assert render(entry, "doc_to_target", literal.doc_to_target, {}) == "1"


def test_what_lm_eval_would_pose_differently_is_refused_with_every_key_named(tmp_path):
    task = tmp_path / "task.yaml"
    task.write_text("""\
dataset_path: super_glue
dataset_kwargs: {trust_remote_code: true}
description: "Answer the question.\\n\\n"
process_docs: !function utils.process_docs
doc_to_text: q
generation_kwargs: {until: ["\\n"], max_gen_toks: 32}
filter_list:
  - {name: a, filter: [{function: lowercase}]}
""")
    with pytest.raises(LmEvalTaskError) as refused:
        lm_eval_source(task)
    for key in ("dataset_kwargs.trust_remote_code", "description", "process_docs (!function utils.process_docs)",
                "generation_kwargs.max_gen_toks", "filter_list functions ['lowercase']"):
        assert key in str(refused.value), key


def test_a_task_whose_output_type_the_grader_cannot_serve_fails_by_workload(tmp_path):
    entry = _entry({"kind": "lm_eval_task", "task_file": "data/workloads/lm_eval/opposites.yaml"}, grader="numeric_exact")
    with pytest.raises(LmEvalTaskError, match=r"workload 'opposites': .*output_type multiple_choice needs a choice-scoring"):
        _load(entry, tmp_path)
