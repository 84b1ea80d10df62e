"""``loupe train segment``: supervised defect segmentation (EfficientNet-Lite0 encoder, light FPN decoder)."""
