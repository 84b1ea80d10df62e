"""Classical tools: ``preprocess`` (image to image) and one module per family of inspect tools."""
