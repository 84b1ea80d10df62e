"""loupe-dl-segment: defect segmentation inference (ONNX Runtime, numpy, OpenCV; never torch)."""
