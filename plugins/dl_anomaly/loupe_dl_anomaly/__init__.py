"""Loupe anomaly detection inference with heatmaps (ONNX Runtime, no torch)."""
