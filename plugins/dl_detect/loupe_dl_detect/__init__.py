"""loupe-dl-detect: object detection inference (ONNX Runtime, no torch)."""
