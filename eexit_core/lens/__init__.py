"""The lens: per-token, per-layer statistics of the exit head (eager engine, d-space Gram lens, fused kernel)."""
