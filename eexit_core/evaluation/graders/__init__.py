"""The graders, one module each; `eexit_core.evaluation.grading` imports them all."""
