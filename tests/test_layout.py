"""The import contract: pipelines → assets → eexit_core, one way; eexit_core imports no
Dagster; the analysis modules import no torch (they run on stored tables, in a notebook
or on a machine without PyTorch). Checked on the source (every import statement, also
inside functions) and, for the analysis modules, by importing them in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.conftest import REPO

ANALYSIS = ["exit_summary", "schema", "adaptability", "similarity", "oracle", "predictiveness", "checks", "store", "report", "settings",
            "workspace", "registry", "artifacts"]
FORBIDDEN = {
    "eexit_core": {"dagster", "dagster_webserver", "assets", "pipelines"},
    "assets": {"pipelines"},
}


def _imports(path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package):
    offenders = {str(p.relative_to(REPO)): sorted(_imports(p) & FORBIDDEN[package])
                 for p in (REPO / package).rglob("*.py") if _imports(p) & FORBIDDEN[package]}
    assert offenders == {}


def test_analysis_modules_import_no_torch():
    offenders = [m for m in ANALYSIS if "torch" in _imports(REPO / "eexit_core" / f"{m}.py")]
    assert offenders == []
    code = ("import sys\n" + "".join(f"import eexit_core.{m}\n" for m in ANALYSIS)
            + "loaded = [m for m in ('torch', 'dagster', 'transformers') if m in sys.modules]\n"
            + "assert not loaded, loaded\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_contract_test_can_fail(tmp_path):
    """A module that imports Dagster is caught (the check is not vacuous)."""
    offender = tmp_path / "bad.py"
    offender.write_text("def f():\n    import dagster as dg\n    from pipelines.run import main\n")
    assert _imports(offender) & FORBIDDEN["eexit_core"] == {"dagster", "pipelines"}


def test_every_error_eexit_defines_is_an_eexit_error():
    """One base for the project's errors (each also keeps its builtin category)."""
    import importlib
    import inspect

    from eexit_core.errors import EexitError

    defined = []
    for path in sorted((REPO / "eexit_core").glob("*.py")):
        module = importlib.import_module(f"eexit_core.{path.stem}")
        defined += [obj for _, obj in inspect.getmembers(module, inspect.isclass)
                    if issubclass(obj, BaseException) and obj.__module__ == module.__name__]
    assert len(defined) >= 9
    assert [cls.__qualname__ for cls in defined if not issubclass(cls, EexitError) and cls is not EexitError] == []


def test_the_readme_layout_names_every_module():
    text = (REPO / "README.md").read_text()
    layout = text[text.index("## Layout"):]
    layout = layout[: layout.index("```", layout.index("```") + 3)]
    core = {p.stem for p in (REPO / "eexit_core").glob("*.py") if p.stem != "__init__"}
    stage_modules = {p.stem for p in (REPO / "eexit_core" / "stages").glob("*.py")}
    missing = sorted(m for m in core if m not in layout)
    assert missing == [] and "stages/" in layout and stage_modules
    for folder in ("assets", "pipelines", "data", "tests", "benchmarks"):
        assert f"{folder}/" in layout
