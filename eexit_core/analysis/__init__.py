"""Analysis without torch: EAS, layer similarity, oracle exits, what similarity predicts, exit summaries."""
