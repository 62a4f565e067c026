"""Instruction data for the zoo's post-training recipe, from a generator that ships with the
set-up (reasoning_gym): short tasks with their answers, rendered as chat turns.

None of the tasks is a measured workload (gsm_symbolic, the one reasoning_gym workload,
is left out), so post-training teaches the chat format and answering, not the test
items. Examples are drawn round-robin over the tasks from seeded generators: the same
seed gives the same examples in the same order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

INSTRUCTION_TASKS = ("basic_arithmetic", "chain_sum", "word_sorting", "letter_counting", "leg_counting",
                     "number_sorting", "spell_backward", "gcd", "lcm", "caesar_cipher", "family_relationships",
                     "coin_flip")
# a plain-text chat format: the zoo's byte-level BPE encodes it like any text
CHAT_TEMPLATE = ("{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def instruction_examples(n: int, seed: int, tasks: Sequence[str] = INSTRUCTION_TASKS) -> list[tuple[str, str]]:
    """`n` (question, answer) pairs, round-robin over `tasks`."""
    import reasoning_gym

    per_task = -(-n // len(tasks))
    datasets = [reasoning_gym.create_dataset(task, size=per_task, seed=seed + k) for k, task in enumerate(tasks)]
    examples = [(str(ds[i]["question"]), str(ds[i]["answer"])) for i in range(per_task) for ds in datasets]
    return examples[:n]


def chat_texts(tokenizer, examples: Sequence[tuple[str, str]]) -> list[str]:
    """Each example as one user turn and one assistant turn, through the chat template."""
    return [tokenizer.apply_chat_template([{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                                          tokenize=False, chat_template=CHAT_TEMPLATE) for q, a in examples]


def instruction_stream(tokenizer, n_tokens: int, seed: int) -> tuple[list[int], str]:
    """At least `n_tokens` tokens of chat-rendered examples, each followed by the
    end-of-text token, and the fingerprint of the texts."""
    from eexit_core.zoo.tokenizer import END_OF_TEXT

    end = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    ids: list[int] = []
    digest = hashlib.sha256()
    n = 256
    while len(ids) < n_tokens:  # examples are ~30-80 tokens: draw more until the budget is met
        ids, digest = [], hashlib.sha256()
        for text in chat_texts(tokenizer, instruction_examples(n, seed)):
            ids += tokenizer(text, add_special_tokens=False)["input_ids"] + [end]
            digest.update(text.encode())
        n *= 2
    return ids, digest.hexdigest()
