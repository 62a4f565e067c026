"""The Dagster UI starts exactly as the README says and serves this project's code location.

`dagster dev` starts its webserver and daemon with `--workspace`; a DAGSTER_MODULE_NAME
inherited from the shell makes both exit without a word and the port never opens. These
tests start the UI the two ways the README names (the activated environment, `make ui`),
with that variable exported in the calling shell, and ask the webserver over GraphQL.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT_S = 120.0

LOCATIONS_QUERY = """{ workspaceOrError { ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
ASSETS_QUERY = "{ assetNodes { assetKey { path } } }"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["data"]


def _wait_until_serving(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the UI exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5):
                return
        except OSError:
            time.sleep(1.0)
    pytest.fail(f"nothing on port {port} after {STARTUP_TIMEOUT_S:.0f} s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    """Stop the UI and every process it started (they share its session)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _assert_location_serves_every_asset(port: int) -> None:
    entries = _graphql(port, LOCATIONS_QUERY)["workspaceOrError"]["locationEntries"]
    assert [(e["name"], e["loadStatus"]) for e in entries] == [("eexit", "LOADED")], entries
    assert entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation", entries

    from pipelines.definitions import defs

    expected = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    served = {"/".join(node["assetKey"]["path"]) for node in _graphql(port, ASSETS_QUERY)["assetNodes"]}
    assert served == expected


def _run_ui(shell_command: str, tmp_path: Path) -> None:
    port = _free_port()
    log = tmp_path / "ui.log"
    env = {**os.environ, "DAGSTER_MODULE_NAME": "pipelines.definitions"}
    env.pop("DAGSTER_HOME", None)
    command = shell_command.format(port=port, home=tmp_path / "dagster_home")
    with log.open("w") as sink:
        process = subprocess.Popen(
            ["bash", "-c", command], cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_until_serving(port, process, log)
        _assert_location_serves_every_asset(port)
    finally:
        _stop(process)


def test_dagster_dev_in_the_activated_environment(tmp_path):
    (tmp_path / "dagster_home").mkdir()
    _run_ui(
        "source .venv/bin/activate && export DAGSTER_HOME={home} && "
        "exec dagster dev -h 127.0.0.1 -p {port}",
        tmp_path,
    )


def test_make_ui(tmp_path):
    (tmp_path / "dagster_home").mkdir()
    _run_ui('exec make -s ui DAGSTER_HOME={home} UI_FLAGS="-h 127.0.0.1 -p {port}"', tmp_path)


def test_the_activate_script_never_exports_a_module_name():
    """Set-up's activate hook is what a README user's shell inherits."""
    activate = (REPO / ".venv" / "bin" / "activate").read_text()
    assert "export DAGSTER_MODULE_NAME" not in activate
    assert "unset DAGSTER_MODULE_NAME" in activate


def _readme_dagster_asset_commands() -> list[str]:
    """The README's `dagster asset ...` commands, with continuation lines joined."""
    text = (REPO / "README.md").read_text().replace("\\\n", " ")
    return [line.split("#")[0].strip() for line in text.splitlines() if line.startswith("dagster asset ")]


def test_the_readme_cli_commands_name_the_code_location():
    """`dagster asset` reads neither workspace.yaml nor pyproject.toml (dagster 1.13): without -m it fails."""
    commands = _readme_dagster_asset_commands()
    assert len(commands) >= 5, "the README lost its dagster CLI examples"
    assert all(" -m pipelines.definitions " in f"{c} " for c in commands), commands


def test_dagster_asset_list_as_the_readme_writes_it():
    env = {**os.environ, "DAGSTER_MODULE_NAME": ""}
    env.pop("DAGSTER_MODULE_NAME")
    (command,) = [c for c in _readme_dagster_asset_commands() if c.startswith("dagster asset list")]
    result = subprocess.run(
        ["bash", "-c", f"source .venv/bin/activate && {command}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from pipelines.definitions import defs

    expected = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert set(result.stdout.split()) == expected
