"""Loupe image classification inference (ONNX Runtime, no torch)."""
