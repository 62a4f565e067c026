"""The sandbox for model-written code: supervisor (the parent side), child and probe (the programs the child interpreter runs)."""

from eexit_core.evaluation.sandbox.supervisor import (
    OS_LAYERS_ENV,
    SandboxLimits,
    SandboxResult,
    humaneval_program,
    run_python,
    sandbox_report,
)

__all__ = ["OS_LAYERS_ENV", "SandboxLimits", "SandboxResult", "humaneval_program", "run_python", "sandbox_report"]
