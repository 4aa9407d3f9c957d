"""Training loops and their helpers (checkpoints, distributed)."""
