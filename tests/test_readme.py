"""The README's Python API example runs as written (on the packaged SmolLM2)."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _python_blocks(section: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    start = text.index(f"## {section}")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


def test_api_example_runs(capsys):
    blocks = _python_blocks("The Python API")
    assert blocks, "the README lost its API example"
    exec(compile(blocks[0], "README.md", "exec"), {})
    out = capsys.readouterr().out
    eas_value = float(re.search(r"EAS = ([0-9.]+)", out).group(1))
    assert 0.0 < eas_value < 0.67
    assert "exit_layer" in out


def test_adapter_example_registers(tokenizer):
    """The adapter snippet is valid code: run it against a class that has those attributes."""
    import torch

    from eexit_core.models.adapters import resolve_exit_head

    snippet = _python_blocks("The Python API")[1]
    exec(compile(snippet, "README.md", "exec"), {})

    class Backbone(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Identity(), torch.nn.Identity()])
            self.norm_out = torch.nn.LayerNorm(4)

    class MyModelForCausalLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone, self.output = Backbone(), torch.nn.Linear(4, 8)

    head = resolve_exit_head(MyModelForCausalLM())
    assert head.n_layers == 2 and head.final_norm is not None
