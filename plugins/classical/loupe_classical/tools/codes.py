"""QR code and barcode decoding with OpenCV's detectors."""
from __future__ import annotations

import cv2
import numpy as np
from pydantic import Field

from host import InspectTool, Params, Shape, ToolOutput

from ._common import ALERT, BAD, OK, to_gray, to_u8

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


class CodeParams(Params):
    expected: str | None = Field(None, description="text the code must hold (sets 'match'); none = any text")
    retry_smoothed: bool = Field(True, description="when nothing decodes, retry on a smoothed image (helps with "
                                                   "sensor noise and very sharp synthetic codes)")
    retry_scales: list[float] = Field([0.75, 1.5], max_length=6,
                                      description="when nothing decodes yet, retry at these scale factors "
                                                  "(the detectors are sensitive to module size)")
    upscale_below: int = Field(200, ge=0, le=4000, description="upscale images whose smaller side is below this (px) "
                                                               "before decoding (0 = never)")


def _prep(image: np.ndarray, upscale_below: int) -> tuple[np.ndarray, float]:
    g = to_u8(to_gray(image))
    s = min(g.shape)
    if upscale_below and 0 < s < upscale_below:
        f = float(np.ceil(upscale_below / s))
        return cv2.resize(g, None, fx=f, fy=f, interpolation=cv2.INTER_CUBIC), f
    return g, 1.0


class _CodeTool(InspectTool):
    measurements = {"count": "codes decoded", "decoded": "true when at least one code decoded",
                    "text": "text of the first decoded code ('' when none)",
                    "match": "true when a decoded code equals 'expected' (true when no text is expected)"}

    def _decode(self, gray: np.ndarray) -> list[tuple[str, np.ndarray, str]]:
        raise NotImplementedError

    @staticmethod
    def _smooth(gray: np.ndarray) -> np.ndarray:
        return cv2.medianBlur(gray, 3)

    def inspect(self, image: np.ndarray) -> ToolOutput:
        p = self.params
        g, f = _prep(image, p.upscale_below)
        found = self._decode(g)
        attempts = []
        if p.retry_smoothed:
            attempts.append((1.0, True))
        attempts += [(s, p.retry_smoothed) for s in p.retry_scales if s > 0 and s != 1.0]
        for scale, smooth in attempts:
            if any(t for t, _, _ in found):
                break
            x = g if scale == 1.0 else cv2.resize(g, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA
                                                  if scale < 1 else cv2.INTER_LINEAR)
            if smooth:
                x = self._smooth(x)
            again = [(t, pts / scale, k) for t, pts, k in self._decode(x)]
            if again and (any(t for t, _, _ in again) or not found):
                found = again
        decoded = [(t, pts / f, kind) for t, pts, kind in found if t]
        texts = [t for t, _, _ in decoded]
        meas = {"count": len(texts), "decoded": bool(texts), "text": texts[0] if texts else "",
                "match": (p.expected in texts) if p.expected is not None else True,
                "texts": texts, "types": [k for _, _, k in decoded]}
        overlays = []
        for t, pts, kind in decoded:
            ok = p.expected is None or t == p.expected
            overlays.append(Shape("polygon", [(float(x), float(y)) for x, y in pts.reshape(-1, 2)],
                                  label=t[:40], status=OK if ok else BAD))
        for t, pts, kind in found:
            if not t and pts is not None:
                overlays.append(Shape("polygon", [(float(x), float(y)) for x, y in (pts / f).reshape(-1, 2)],
                                      label="not decoded", status=BAD))
        if not found:
            overlays.append(Shape("text", [(2.0, 12.0)], label="no code", status=ALERT))
        return ToolOutput(meas, overlays)


class QRCode(_CodeTool):
    id = "classical.qrcode"
    title = "QR code reader"
    description = "detect and decode QR codes (several per image, any rotation)"
    Params = CodeParams

    def __init__(self, params, context=None):
        super().__init__(params, context)
        self._det = cv2.QRCodeDetector()

    def _decode(self, gray):
        try:
            ok, texts, points, _ = self._det.detectAndDecodeMulti(gray)
        except cv2.error:
            ok = False
        if ok and points is not None:
            return [(t, np.asarray(pts, np.float64), "QR") for t, pts in zip(texts, points)]
        text, points, _ = self._det.detectAndDecode(gray)
        if points is not None:
            return [(text, np.asarray(points, np.float64).reshape(-1, 2), "QR")]
        return []


class Barcode(_CodeTool):
    id = "classical.barcode"
    title = "Barcode reader"
    description = "detect and decode 1-D barcodes (EAN-8/13, UPC-A/E) with OpenCV's barcode detector"
    Params = CodeParams

    def __init__(self, params, context=None):
        super().__init__(params, context)
        self._det = cv2.barcode.BarcodeDetector()

    @staticmethod
    def _smooth(gray: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(gray, (0, 0), 1.0)

    def _decode(self, gray):
        try:
            ok, texts, types, points = self._det.detectAndDecodeWithType(gray)
        except cv2.error:
            return []
        if not ok or points is None:
            return []
        return [(t, np.asarray(pts, np.float64), str(k)) for t, k, pts in zip(texts, types, points)]
