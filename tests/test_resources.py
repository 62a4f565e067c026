"""Every EEXIT_* knob reaches the resource in every deployment (they used to be ignored
locally), and a bad value names the variable."""

from __future__ import annotations

import pytest

from pipelines.resources import CLUSTER, LOCAL, resources_for


@pytest.mark.parametrize("deployment", ["local", "cluster"])
def test_every_knob_applies_to_every_deployment(deployment, monkeypatch):
    monkeypatch.setenv("EEXIT_ALLOW_DOWNLOAD", "1")
    monkeypatch.setenv("EEXIT_BATCH_SIZE", "3")
    monkeypatch.setenv("EEXIT_TOLERANCE", "0.1")
    resource = resources_for(deployment)["eexit"]
    assert resource.allow_download is True
    assert resource.batch_size == 3 and resource.lens_settings().batch_size == 3
    assert resource.tolerance == 0.1


@pytest.mark.parametrize(("deployment", "defaults"), [("local", LOCAL), ("cluster", CLUSTER)])
def test_defaults_come_from_the_deployment(deployment, defaults, monkeypatch):
    for name in ("EEXIT_ALLOW_DOWNLOAD", "EEXIT_BATCH_SIZE", "EEXIT_EXIT_SWEEP"):
        monkeypatch.delenv(name, raising=False)
    resource = resources_for(deployment)["eexit"]
    assert (resource.device, resource.batch_size, resource.exit_sweep) == (defaults.device, defaults.batch_size, defaults.exit_sweep)
    assert resource.allow_download is False


@pytest.mark.parametrize(("name", "value"), [("EEXIT_BATCH_SIZE", "eight"), ("EEXIT_BATCH_SIZE", "0"),
                                             ("EEXIT_ALLOW_DOWNLOAD", "yes")])
def test_a_bad_value_names_the_variable(name, value, monkeypatch):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        resources_for("local")
