"""Every EEXIT_* knob reaches the resource in every deployment (they used to be ignored
locally), the deployment only sets defaults, and a bad value names the variable. The
variables are read in one module, eexit_core/settings.py."""

from __future__ import annotations

import os

import pytest

from eexit_core import settings
from eexit_core.settings import DEPLOYMENTS, Environment
from pipelines.deployment import resources_for


def _resource(**variables: str):
    return resources_for(Environment.read(variables))["eexit"]


@pytest.fixture
def configs(monkeypatch):
    """assets.config re-read under the variables a test sets (its defaults are chosen once, at load)."""
    import importlib

    import assets.config

    def load(**variables: str):
        for name in [n for n in os.environ if n.startswith("EEXIT_")]:
            monkeypatch.delenv(name)
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        return importlib.reload(assets.config)

    yield load
    monkeypatch.undo()
    importlib.reload(assets.config)


@pytest.mark.parametrize("deployment", ["local", "cluster"])
def test_every_knob_applies_to_every_deployment(deployment, configs):
    config = configs(EEXIT_DEPLOYMENT=deployment, EEXIT_BATCH_SIZE="3", EEXIT_TOLERANCE="0.1", EEXIT_EXIT_SWEEP="full",
                     EEXIT_STATS="logit_cos,hidden_cos", EEXIT_LENS_ENGINE="compiled",
                     EEXIT_ACTIVATION_DUMPS="bfloat16", EEXIT_DUMP_BUDGET_GIB="2.5")
    lens = config.TokenStatsConfig().lens_settings("cpu")
    assert lens.batch_size == 3 and lens.stats == ("logit_cos", "hidden_cos") and lens.engine == "compiled"
    assert lens.dump_dtype == "bfloat16" and config.activation_dumps_on()
    dump = config.ActivationDumpConfig().dump_settings("cpu")
    assert (dump.dtype, dump.budget_gib, dump.batch_size) == ("bfloat16", 2.5, 3)
    assert config.ScoresConfig().score_settings().tolerance == 0.1
    assert config.ExitAccuracyConfig().sweep == "full"
    assert _resource(EEXIT_DEPLOYMENT=deployment, EEXIT_ALLOW_DOWNLOAD="1").allow_download is True


@pytest.mark.parametrize("deployment", ["local", "cluster"])
def test_defaults_come_from_the_deployment_and_the_settings_module(deployment, configs):
    config = configs(EEXIT_DEPLOYMENT=deployment)
    defaults = DEPLOYMENTS[deployment]
    resource = _resource(EEXIT_DEPLOYMENT=deployment)
    assert resource.device == defaults.device and resource.allow_download is False
    lens = config.TokenStatsConfig().lens_settings(resource.device)
    assert (lens.batch_size, lens.top_k, lens.engine) == (defaults.batch_size, settings.TOP_K, settings.LENS_ENGINE)
    assert lens.dump_dtype is None and not config.activation_dumps_on()  # dumps are off by default: the live lens
    assert config.ActivationDumpConfig().dump_settings("cpu").budget_gib == settings.DUMP_BUDGET_GIB
    assert config.ExitAccuracyConfig().sweep == defaults.exit_sweep
    scores = config.ScoresConfig().score_settings()
    assert scores.tolerance == settings.TOLERANCE and scores.alphas == settings.ALPHAS


def test_knobs_are_config_with_descriptions_and_the_resource_is_infrastructure():
    import assets.config as config
    from assets.resources import EexitResource

    assert set(EexitResource.model_fields) == {"root", "device", "allow_download"}
    for cls in (config.TokenStatsConfig, config.ExitAccuracyConfig, config.ScoresConfig, config.ActivationDumpConfig):
        assert all(field.description for field in cls.model_fields.values()), cls.__name__
    assert "force" in config.TokenStatsConfig.model_fields and "force" in config.ExitAccuracyConfig.model_fields


@pytest.mark.parametrize(("name", "value"), [("EEXIT_BATCH_SIZE", "eight"), ("EEXIT_BATCH_SIZE", "0"),
                                             ("EEXIT_ALLOW_DOWNLOAD", "yes"), ("EEXIT_DEPLOYMENT", "laptop"),
                                             ("EEXIT_EXIT_SWEEP", "most"), ("EEXIT_TOLERANCE", "5%"),
                                             ("EEXIT_STATS", "logit_cos,bogus"), ("EEXIT_MODELS", " , "),
                                             ("EEXIT_WORKLOADS", ","), ("EEXIT_LENS_ENGINE", "fast"),
                                             ("EEXIT_ACTIVATION_DUMPS", "fp8"), ("EEXIT_DUMP_BUDGET_GIB", "lots"),
                                             ("EEXIT_DUMP_BUDGET_GIB", "0")])
def test_a_bad_value_names_the_variable(name, value):
    with pytest.raises(ValueError, match=name):
        Environment.read({name: value})


def test_only_the_settings_module_reads_eexit_variables():
    """The one-source-of-truth rule, checked on the source: no other module reads EEXIT_*."""
    import re

    from tests.conftest import REPO

    readers = []
    for folder in ("eexit_core", "assets", "pipelines"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text()
            reads_environ = re.search(r"\benviron\b|\bgetenv\b", text)
            names_a_variable = re.search(r"[\"']EEXIT_[A-Z_]+[\"']", text)
            if path.name != "settings.py" and reads_environ and names_a_variable:
                readers.append(str(path.relative_to(REPO)))
    assert readers == []


def test_the_readme_lists_exactly_the_variables_settings_reads():
    import re

    from tests.conftest import REPO

    read = set(re.findall(r"\"(EEXIT_[A-Z_]+)\"", (REPO / "eexit_core" / "settings.py").read_text()))
    readme = (REPO / "README.md").read_text()
    start = readme.index("## Registries and configuration")
    section = readme[start:readme.index("\n## ", start + 5)]
    listed = set(re.findall(r"`(EEXIT_[A-Z_]+)", section))
    assert read == listed, (read - listed, listed - read)


def test_the_lens_engine_names_settings_accepts_are_the_engines_the_lens_has():
    from eexit_core import settings
    from eexit_core.lens.engine import LENS_ENGINES

    assert set(settings.LENS_ENGINE_NAMES) == set(LENS_ENGINES)


def test_settings_this_machine_cannot_serve_are_refused_by_name(monkeypatch):
    from pipelines.deployment import check_machine

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="EEXIT_DEPLOYMENT=cluster"):
        check_machine(Environment.read({"EEXIT_DEPLOYMENT": "cluster"}), cuda=False)
    with pytest.raises(ValueError, match="EEXIT_LENS_ENGINE=kernel"):
        check_machine(Environment.read({"EEXIT_LENS_ENGINE": "kernel"}), cuda=False)
    check_machine(Environment.read({"EEXIT_DEPLOYMENT": "cluster", "EEXIT_LENS_ENGINE": "kernel"}), cuda=True)
    check_machine(Environment.read({}), cuda=False)


@pytest.mark.parametrize(("name", "value"), [("EEXIT_STATS", "logit_cos,bogus"), ("EEXIT_DEPLOYMENT", "cluster")])
def test_the_runner_stops_before_any_work_on_a_bad_setting(tmp_path, name, value):
    """One line naming the variable, exit status 2, no traceback, nothing written."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {**os.environ, name: value, "DAGSTER_HOME": str(tmp_path / "dagster"), "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-m", "pipelines.run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert name in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == "" and not (tmp_path / "dagster").exists()
