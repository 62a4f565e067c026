"""Which workloads and models self-speculation serves, and what it decodes from: the
registry's decoded workloads, the user turn (chat-templated where asked) of an instruction
workload, and a refusal naming the recurrent models."""

from __future__ import annotations

import polars as pl
import pytest

from eexit_core.decoding.self_speculation import SpeculationUnsupportedError
from eexit_core.registry import load_model_registry, load_workload_registry
from eexit_core.stages.self_speculation import build_self_speculation, decoded_workload, served_model, speculation_inputs
from eexit_core.storage.workspace import Workspace
from tests.conftest import REPO, build_tokenizer


def test_the_registry_decodes_code_math_and_instruction_workloads_only():
    workloads = load_workload_registry(REPO / "data" / "registry" / "workloads.yaml").workloads
    assert sorted(w.workload_id for w in workloads if decoded_workload(w)) == ["gsm-symbolic", "humaneval", "ifbench"]


def test_an_instruction_workload_decodes_from_its_user_turn():
    workloads = load_workload_registry(REPO / "data" / "registry" / "workloads.yaml")
    ifbench = workloads.get("ifbench")
    prompts = pl.DataFrame({"prompt_id": ["a", "b"], "text": ["ask one answer one", "plain"], "user": ["ask one", None]})
    plain = build_tokenizer()
    assert [(i.prompt_id, i.prompt) for i in speculation_inputs(prompts, ifbench, plain)] == [("a", "ask one"), ("b", "plain")]
    chat = build_tokenizer()
    chat.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<a>{% endif %}"
    assert speculation_inputs(prompts, ifbench, chat)[0].prompt == "<user>ask one<a>"
    untemplated = ifbench.model_copy(update={"chat_template": False})
    assert speculation_inputs(prompts, untemplated, chat)[0].prompt == "ask one"


def test_recurrent_models_are_refused_by_name(tmp_path):
    models = load_model_registry(REPO / "data" / "registry" / "models.yaml").models
    recurrent = [m for m in models if m.arch_class in ("ssm", "hybrid")]
    assert recurrent and not any(served_model(m) for m in recurrent)
    assert all(served_model(m) for m in models if m.arch_class in ("dense", "moe"))
    workload = load_workload_registry(REPO / "data" / "registry" / "workloads.yaml").get("humaneval")
    with pytest.raises(SpeculationUnsupportedError, match=f"{recurrent[0].model_id} is a {recurrent[0].arch_class} model"):
        build_self_speculation(Workspace(tmp_path), recurrent[0], workload)
