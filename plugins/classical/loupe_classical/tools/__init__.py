"""Classical tools: ``preprocess`` (image to image) and one module per family of inspect tools."""


def INSPECT_TOOLS() -> list[type]:  # noqa: N802 - a registry list, built on demand
    """Every classical inspect tool class (imported on call, not at package import)."""
    from .blob import Blob
    from .caliper import Caliper
    from .codes import Barcode, QRCode
    from .hough import HoughCircles, HoughLines
    from .intensity import Intensity, PixelCount, Presence
    from .pattern import PatternMatch
    from .shape import ShapeMeasure

    return [Blob, Caliper, PatternMatch, Intensity, Presence, PixelCount, ShapeMeasure, HoughLines, HoughCircles,
            QRCode, Barcode]
