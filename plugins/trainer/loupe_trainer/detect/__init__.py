"""Object detection: data analysis, training (CenterNet on EfficientNet-Lite0), export, sample data."""
