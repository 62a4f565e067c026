"""The controlled model zoo: a training corpus from shipped data, its tokenizer, and (next) matched variants trained on it."""
