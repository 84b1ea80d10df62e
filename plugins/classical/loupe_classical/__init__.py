"""Loupe classical vision: OpenCV sources, preprocessing and inspection tools."""
