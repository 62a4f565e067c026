"""Evaluation: task accuracy under early exit, the graders and the sandbox for model-written code."""
