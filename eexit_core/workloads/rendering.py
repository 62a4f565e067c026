"""The strings a model is fed for a prompts table: the only part of the workloads code the
token stats depend on (`stages.lens_modules`), so a new source invalidates no stats."""

from __future__ import annotations

from typing import Any

import polars as pl


def render_texts(prompts: pl.DataFrame, tokenizer: Any, *, use_chat_template: bool) -> list[str]:
    """The strings to tokenize: chat-templated user/assistant turns where asked and possible,
    otherwise the plain ``text``."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    out: list[str] = []
    for row in prompts.select("text", "user", "assistant").iter_rows(named=True):
        if use_chat_template and has_template and row["user"] is not None and row["assistant"] is not None:
            messages = [
                {"role": "user", "content": row["user"]},
                {"role": "assistant", "content": row["assistant"]},
            ]
            out.append(tokenizer.apply_chat_template(messages, tokenize=False))
        else:
            out.append(row["text"])
    return out
