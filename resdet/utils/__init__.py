"""Utilities: logging set-up, training metrics (JSON lines, TensorBoard, progress bar)."""
