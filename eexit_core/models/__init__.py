"""Models: where a model keeps its blocks and exit head (adapters), and its checkpoints."""
