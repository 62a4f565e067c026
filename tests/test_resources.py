"""Every EEXIT_* knob reaches the resource in every deployment (they used to be ignored
locally), the deployment only sets defaults, and a bad value names the variable. The
variables are read in one module, eexit_core/settings.py."""

from __future__ import annotations

import pytest

from eexit_core import settings
from eexit_core.settings import DEPLOYMENTS, Environment
from pipelines.deployment import resources_for


def _resource(**variables: str):
    return resources_for(Environment.read(variables))["eexit"]


@pytest.mark.parametrize("deployment", ["local", "cluster"])
def test_every_knob_applies_to_every_deployment(deployment):
    resource = _resource(EEXIT_DEPLOYMENT=deployment, EEXIT_ALLOW_DOWNLOAD="1", EEXIT_BATCH_SIZE="3", EEXIT_TOLERANCE="0.1",
                         EEXIT_EXIT_SWEEP="full", EEXIT_STATS="logit_cos,hidden_cos", EEXIT_LENS_ENGINE="compiled")
    assert resource.allow_download is True
    assert resource.batch_size == 3 and resource.lens_settings().batch_size == 3
    assert resource.tolerance == 0.1 and resource.score_settings().tolerance == 0.1
    assert resource.exit_sweep == "full" and resource.stats == ["logit_cos", "hidden_cos"]
    assert resource.lens_settings().engine == "compiled"


@pytest.mark.parametrize("deployment", ["local", "cluster"])
def test_defaults_come_from_the_deployment_and_the_settings_module(deployment):
    resource = _resource(EEXIT_DEPLOYMENT=deployment)
    defaults = DEPLOYMENTS[deployment]
    assert (resource.device, resource.batch_size, resource.exit_sweep) == (defaults.device, defaults.batch_size, defaults.exit_sweep)
    assert resource.allow_download is False
    assert resource.tolerance == settings.TOLERANCE and resource.lens_engine == settings.LENS_ENGINE
    assert resource.top_k == settings.TOP_K and tuple(resource.alphas) == settings.ALPHAS


@pytest.mark.parametrize(("name", "value"), [("EEXIT_BATCH_SIZE", "eight"), ("EEXIT_BATCH_SIZE", "0"),
                                             ("EEXIT_ALLOW_DOWNLOAD", "yes"), ("EEXIT_DEPLOYMENT", "laptop"),
                                             ("EEXIT_EXIT_SWEEP", "most"), ("EEXIT_TOLERANCE", "5%")])
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
            if path.name != "settings.py" and re.search(r"environ[^\n]*[\"']EEXIT_", path.read_text()):
                readers.append(str(path.relative_to(REPO)))
    assert readers == []
