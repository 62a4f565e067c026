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

# Packages whose every module must import without torch, and single modules besides them.
TORCH_FREE_PACKAGES = ("analysis", "storage", "report")
TORCH_FREE_MODULES = ("settings", "registry", "errors")


def _module_name(path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _torch_free_modules() -> dict[str, object]:
    """Module name -> source file of every module that must import without torch."""
    found = {_module_name(p): p for package in TORCH_FREE_PACKAGES for p in sorted((REPO / "eexit_core" / package).rglob("*.py"))}
    return found | {f"eexit_core.{m}": REPO / "eexit_core" / (m.replace(".", "/") + ".py") for m in TORCH_FREE_MODULES}


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
    modules = _torch_free_modules()
    assert "eexit_core.analysis.adaptability" in modules and "eexit_core.storage.store" in modules
    offenders = [m for m, path in modules.items() if "torch" in _imports(path)]
    assert offenders == []
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
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
    for path in sorted((REPO / "eexit_core").rglob("*.py")):
        module = importlib.import_module(_module_name(path))
        defined += [obj for _, obj in inspect.getmembers(module, inspect.isclass)
                    if issubclass(obj, BaseException) and obj.__module__ == module.__name__]
    assert len(defined) >= 9
    assert [cls.__qualname__ for cls in defined if not issubclass(cls, EexitError) and cls is not EexitError] == []


def test_the_readme_layout_names_every_module():
    """Every subpackage of eexit_core, with a one-line docstring, and every module in it
    appear in the README's layout section."""
    import importlib

    text = (REPO / "README.md").read_text()
    layout = text[text.index("## Layout"):]
    layout = layout[: layout.index("```", layout.index("```") + 3)]
    packages = sorted(p.parent for p in (REPO / "eexit_core").glob("*/__init__.py"))
    assert len(packages) >= 8
    for package in packages:
        doc = importlib.import_module(_module_name(package / "__init__.py")).__doc__ or ""
        summary = doc.strip().split("\n\n")[0]
        assert summary and "\n" not in summary, f"{package.name}/__init__.py needs a docstring led by one line"
    folders = [f"{p.name}/" for p in packages]
    modules = [p.stem for p in (REPO / "eexit_core").rglob("*.py") if p.stem != "__init__"]
    missing = sorted(name for name in [*folders, *modules] if name not in layout)
    assert missing == []
    for folder in ("assets", "pipelines", "data", "tests", "benchmarks"):
        assert f"{folder}/" in layout


def test_ruff_is_clean():
    """The linter configured in pyproject.toml ([tool.ruff]) finds nothing in the tree."""
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert "No module named ruff" not in result.stderr, "ruff is missing: `make setup` installs the test extra"
    assert result.returncode == 0, result.stdout[-3000:]


def test_the_tests_mirror_the_code():
    """Each test folder is named after the code it tests: an eexit_core subpackage, or a
    top-level package (pipelines, assets); each top-level test module after a top-level
    module, tool or document. A renamed subpackage leaves its tests' folder behind here."""
    code_packages = {p.parent.name for p in (REPO / "eexit_core").glob("*/__init__.py")}
    test_folders = {p.parent.name for p in (REPO / "tests").glob("*/__init__.py")}
    assert test_folders - code_packages - {"pipelines", "assets"} == set()
    assert {"analysis", "lens", "models", "evaluation", "storage", "workloads", "decoding"} <= test_folders
    for folder in test_folders:
        assert list((REPO / "tests" / folder).glob("test_*.py")), f"tests/{folder}/ holds no tests"
    top_level = {p.stem.removeprefix("test_") for p in (REPO / "tests").glob("test_*.py")}
    subjects = {p.stem for p in (REPO / "eexit_core").glob("*.py")} | {"layout", "lock", "readme", "tolerance", "benchmarks", "faults"}
    assert top_level - subjects == set(), "a test of a subpackage's module belongs in its folder"
