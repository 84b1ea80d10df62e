"""Preprocessing tools: image in, image out.

Every tool keeps the input's dtype (8 or 16-bit) unless its job is to change it
(``classical.normalize`` to 8-bit, ``classical.threshold`` to a 0/255 mask), and
never modifies its input in place. Heavy work (kernels, CLAHE objects, reference
images) is prepared once in ``__init__``.
"""
from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from pydantic import Field, model_validator

from host import NoParams, Params, PreprocessTool, UsageError, check_image_size

from ._common import full_scale, odd, to_gray, to_u8

__all__ = ["Gray", "ColorConvert", "Resize", "Crop", "Rotate", "GaussianBlur", "MedianBlur", "Clahe",
           "Normalize", "Threshold", "Morphology", "FlatField", "PREPROCESS_TOOLS"]


class Gray(PreprocessTool):
    id = "classical.gray"
    title = "Grayscale"
    description = "convert a colour image to grayscale (gray images pass through)"
    Params = NoParams

    def process(self, image: np.ndarray) -> np.ndarray:
        return to_gray(image)


# ------------------------------------------------------------------ colour

_SPACES = {
    "gray": cv2.COLOR_BGR2GRAY, "rgb": cv2.COLOR_BGR2RGB, "hsv": cv2.COLOR_BGR2HSV,
    "lab": cv2.COLOR_BGR2LAB, "ycrcb": cv2.COLOR_BGR2YCrCb, "hls": cv2.COLOR_BGR2HLS, "xyz": cv2.COLOR_BGR2XYZ,
}


class ColorParams(Params):
    to: Literal["gray", "bgr", "rgb", "hsv", "lab", "ycrcb", "hls", "xyz"] = Field(
        "hsv", description="target colour space (sources give BGR or gray images; 16-bit input to hsv/lab/hls "
                           "gives float32: H in degrees, S and V in 0..1)")
    channel: int | None = Field(None, ge=0, le=2,
                                description="keep only this channel of the result (e.g. 0 = hue in HSV)")


class ColorConvert(PreprocessTool):
    id = "classical.color"
    title = "Colour space"
    description = "convert BGR to gray, RGB, HSV, Lab, YCrCb, HLS or XYZ, optionally keeping one channel"
    Params = ColorParams

    def __init__(self, params, context=None):
        super().__init__(params, context)
        self._code = _SPACES.get(params.to)
        self._channel = params.channel

    def process(self, image: np.ndarray) -> np.ndarray:
        if image.ndim == 2:
            if self.params.to == "gray":
                return image.copy()
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        elif image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        if self._code is None:
            out = image.copy()
        elif image.dtype == np.uint16 and self.params.to not in ("gray", "rgb", "ycrcb", "xyz"):
            # OpenCV has no 16-bit HSV/Lab/HLS: convert from float in [0, 1] (H in degrees, Lab in its units)
            out = cv2.cvtColor(image.astype(np.float32) * (1.0 / 65535.0), self._code)
        else:
            out = cv2.cvtColor(image, self._code)
        if self._channel is not None and out.ndim == 3:
            out = np.ascontiguousarray(out[:, :, self._channel])
        return out


# ----------------------------------------------------------------- geometry

_INTERP = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC,
           "area": cv2.INTER_AREA, "lanczos": cv2.INTER_LANCZOS4}


class ResizeParams(Params):
    scale: float | None = Field(None, gt=0, le=16, description="scale factor (used when width/height are unset)")
    width: int | None = Field(None, ge=1, le=65535, description="output width in pixels")
    height: int | None = Field(None, ge=1, le=65535,
                               description="output height in pixels (only one of width/height keeps the aspect)")
    interpolation: Literal["nearest", "linear", "cubic", "area", "lanczos"] = Field(
        "area", description="resampling method ('area' is best for shrinking)")

    @model_validator(mode="after")
    def _one(self) -> "ResizeParams":
        if self.scale is None and self.width is None and self.height is None:
            raise ValueError("give scale, or width and/or height")
        if self.width is not None and self.height is not None:
            check_image_size(self.width, self.height, "the resize target")
        return self


class Resize(PreprocessTool):
    id = "classical.resize"
    title = "Resize"
    description = "scale the image by a factor or to a width/height (aspect kept when only one is given)"
    Params = ResizeParams

    def __init__(self, params, context=None):
        super().__init__(params, context)
        self._interp = _INTERP[params.interpolation]

    def process(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        return cv2.resize(image, self._size(h, w), interpolation=self._interp)

    def _size(self, h: int, w: int) -> tuple[int, int]:
        p = self.params
        if p.width is None and p.height is None:
            return max(1, round(w * p.scale)), max(1, round(h * p.scale))
        if p.width is not None and p.height is not None:
            return p.width, p.height
        if p.width is not None:
            return p.width, max(1, round(h * p.width / w))
        return max(1, round(w * p.height / h)), p.height

    def transform(self, shape):
        h, w = shape[:2]
        nw, nh = self._size(h, w)
        return np.array([[nw / w, 0.0, 0.0], [0.0, nh / h, 0.0]])


class CropParams(Params):
    x: int = Field(0, ge=0, description="left edge in pixels")
    y: int = Field(0, ge=0, description="top edge in pixels")
    width: int = Field(..., ge=1, description="width in pixels")
    height: int = Field(..., ge=1, description="height in pixels")


class Crop(PreprocessTool):
    id = "classical.crop"
    title = "Crop"
    description = "keep a rectangle of the image (all later steps see the crop; overlays are in its coordinates)"
    Params = CropParams

    def process(self, image: np.ndarray) -> np.ndarray:
        p = self.params
        h, w = image.shape[:2]
        if p.x >= w or p.y >= h:
            raise ValueError(f"crop [{p.x}, {p.y}, {p.width}, {p.height}] lies outside the {w}x{h} image")
        return image[p.y:p.y + p.height, p.x:p.x + p.width].copy()

    def transform(self, shape):
        return np.array([[1.0, 0.0, -self.params.x], [0.0, 1.0, -self.params.y]])


class RotateParams(Params):
    angle: float = Field(0.0, ge=-360, le=360,
                         description="counter-clockwise rotation in degrees; multiples of 90 are exact")
    flip: Literal["none", "horizontal", "vertical", "both"] = Field(
        "none", description="mirror after rotating (horizontal = left-right)")
    expand: bool = Field(True, description="arbitrary angles: grow the canvas so no corner is cut off")
    border: float = Field(0, ge=0, le=65535, description="gray level that fills the uncovered corners")


class Rotate(PreprocessTool):
    id = "classical.rotate"
    title = "Rotate / flip"
    description = "rotate by any angle (exact for multiples of 90) and mirror"
    Params = RotateParams

    _EXACT = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}
    _FLIP = {"horizontal": 1, "vertical": 0, "both": -1}

    def process(self, image: np.ndarray) -> np.ndarray:
        p = self.params
        a = p.angle % 360
        if a == 0:
            out = image
        elif a in self._EXACT:
            out = cv2.rotate(image, self._EXACT[int(a)])
        else:
            h, w = image.shape[:2]
            m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), a, 1.0)
            size = (w, h)
            if p.expand:
                c, s = abs(m[0, 0]), abs(m[0, 1])
                nw, nh = int(np.ceil(h * s + w * c)), int(np.ceil(h * c + w * s))
                m[0, 2] += (nw - w) / 2.0
                m[1, 2] += (nh - h) / 2.0
                size = (nw, nh)
            fill = (p.border,) * (1 if image.ndim == 2 else image.shape[2])
            out = cv2.warpAffine(image, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                 borderValue=fill)
        if p.flip != "none":
            out = cv2.flip(out, self._FLIP[p.flip])
        return out if out is not image else image.copy()

    def transform(self, shape):
        """Pixel centres: the same matrix ``process`` warps with (exact angles included), then the flip."""
        p = self.params
        h, w = shape[:2]
        a = p.angle % 360
        if a == 0:
            m, (nw, nh) = np.array([[1.0, 0, 0], [0, 1.0, 0]]), (w, h)
        elif a in self._EXACT:
            m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), a, 1.0)
            nw, nh = (h, w) if a in (90, 270) else (w, h)
            m[0, 2] += (nw - w) / 2.0
            m[1, 2] += (nh - h) / 2.0
        else:
            m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), a, 1.0)
            nw, nh = w, h
            if p.expand:
                c, s = abs(m[0, 0]), abs(m[0, 1])
                nw, nh = int(np.ceil(h * s + w * c)), int(np.ceil(h * c + w * s))
                m[0, 2] += (nw - w) / 2.0
                m[1, 2] += (nh - h) / 2.0
        m3 = np.vstack([m, [0.0, 0.0, 1.0]])
        if p.flip in ("horizontal", "both"):
            m3 = np.array([[-1.0, 0, nw - 1], [0, 1.0, 0], [0, 0, 1.0]]) @ m3
        if p.flip in ("vertical", "both"):
            m3 = np.array([[1.0, 0, 0], [0, -1.0, nh - 1], [0, 0, 1.0]]) @ m3
        return m3[:2]


# ---------------------------------------------------------------- filtering


class GaussianParams(Params):
    sigma: float = Field(1.5, gt=0, le=100, description="standard deviation in pixels")
    ksize: int = Field(0, ge=0, le=201, description="kernel size (odd); 0 derives it from sigma")


class GaussianBlur(PreprocessTool):
    id = "classical.gaussian"
    title = "Gaussian blur"
    description = "smooth with a Gaussian kernel"
    Params = GaussianParams

    def __init__(self, params, context=None):
        super().__init__(params, context)
        k = params.ksize
        self._k = (odd(k), odd(k)) if k else (0, 0)

    def process(self, image: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(image, self._k, self.params.sigma)


class MedianParams(Params):
    ksize: int = Field(5, ge=3, le=255, description="odd aperture size (above 5 needs an 8-bit image)")


class MedianBlur(PreprocessTool):
    id = "classical.median"
    title = "Median blur"
    description = "remove salt-and-pepper noise with a median filter"
    Params = MedianParams

    def __init__(self, params, context=None):
        super().__init__(params, context)
        self._k = odd(params.ksize)

    def process(self, image: np.ndarray) -> np.ndarray:
        if image.dtype != np.uint8 and self._k > 5:
            raise ValueError(f"median ksize {self._k} needs an 8-bit image (got {image.dtype}); "
                             "add classical.normalize first or use ksize 3 or 5")
        return cv2.medianBlur(image, self._k)


class ClaheParams(Params):
    clip_limit: float = Field(2.0, gt=0, le=100, description="contrast limit per tile")
    tiles: int = Field(8, ge=1, le=64, description="tiles per side of the grid")


class Clahe(PreprocessTool):
    id = "classical.clahe"
    title = "CLAHE"
    description = "contrast-limited adaptive histogram equalisation (colour: on the L channel of Lab)"
    Params = ClaheParams

    def __init__(self, params, context=None):
        super().__init__(params, context)
        self._clahe = cv2.createCLAHE(clipLimit=params.clip_limit, tileGridSize=(params.tiles, params.tiles))

    def process(self, image: np.ndarray) -> np.ndarray:
        if image.ndim == 2:
            return self._clahe.apply(image)
        lab = cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2LAB)
        lab[:, :, 0] = self._clahe.apply(np.ascontiguousarray(lab[:, :, 0]))
        return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


class NormalizeParams(Params):
    mode: Literal["minmax", "percentile", "equalize", "scale"] = Field(
        "minmax", description="minmax: stretch min..max; percentile: stretch low..high percentiles "
                              "(robust); equalize: histogram equalisation; scale: 16-bit to 8-bit by 1/257")
    low: float = Field(1.0, ge=0, le=100, description="percentile mode: lower percentile")
    high: float = Field(99.0, ge=0, le=100, description="percentile mode: upper percentile")
    out_max: float = Field(255, gt=0, le=65535, description="brightest output level")
    to_8bit: bool = Field(True, description="give an 8-bit image (else keep the input dtype)")


class Normalize(PreprocessTool):
    id = "classical.normalize"
    title = "Normalise"
    description = "stretch contrast (min-max or percentiles), equalise, or bring 16-bit images to 8-bit"
    Params = NormalizeParams

    def process(self, image: np.ndarray) -> np.ndarray:
        p = self.params
        if p.mode == "minmax" and image.dtype == np.uint8 and p.out_max >= 255:  # the common case, one call
            return cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX, dtype=cv2.CV_8U)
        dtype = np.uint8 if p.to_8bit else image.dtype
        top = min(p.out_max, full_scale(np.dtype(dtype))) if np.issubdtype(dtype, np.integer) else p.out_max
        if p.mode == "scale":
            return to_u8(image)
        if p.mode == "equalize":
            g = to_u8(image)
            if g.ndim == 2:
                return cv2.equalizeHist(g)
            ycc = cv2.cvtColor(g, cv2.COLOR_BGR2YCrCb)
            ycc[:, :, 0] = cv2.equalizeHist(np.ascontiguousarray(ycc[:, :, 0]))
            return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2BGR)
        cv_dtype = {np.dtype(np.uint8): cv2.CV_8U, np.dtype(np.uint16): cv2.CV_16U}.get(np.dtype(dtype), cv2.CV_32F)
        if p.mode == "minmax":
            return cv2.normalize(image, None, 0, top, cv2.NORM_MINMAX, dtype=cv_dtype)
        lo, hi = np.percentile(image, [p.low, p.high])
        if hi <= lo:
            hi = lo + 1
        alpha = top / (hi - lo)
        out = cv2.convertScaleAbs(image, alpha=alpha, beta=-lo * alpha) if cv_dtype == cv2.CV_8U else \
            np.clip((image.astype(np.float32) - lo) * alpha, 0, top).astype(dtype)
        return out


class ThresholdParams(Params):
    method: Literal["fixed", "otsu", "triangle", "adaptive_mean", "adaptive_gaussian"] = Field(
        "otsu", description="fixed: 'level'; otsu/triangle: automatic; adaptive_*: local mean or Gaussian")
    level: float = Field(128, ge=0, le=65535, description="fixed: the gray level")
    invert: bool = Field(False, description="dark pixels become 255 (objects darker than the background)")
    block_size: int = Field(31, ge=3, le=1001, description="adaptive: odd neighbourhood size")
    offset: float = Field(5, ge=-255, le=255, description="adaptive: constant subtracted from the local mean")


class Threshold(PreprocessTool):
    id = "classical.threshold"
    title = "Threshold"
    description = "binarise to a 0/255 mask: fixed level, Otsu, triangle or adaptive"
    Params = ThresholdParams

    def process(self, image: np.ndarray) -> np.ndarray:
        p = self.params
        kind = cv2.THRESH_BINARY_INV if p.invert else cv2.THRESH_BINARY
        gray = to_gray(image)
        if p.method == "fixed":
            if gray.dtype == np.uint16:
                m = (gray > p.level) != p.invert
                return m.astype(np.uint8) * 255
            _, out = cv2.threshold(gray, p.level, 255, kind)
            return out.astype(np.uint8)
        g8 = to_u8(gray)
        if p.method in ("otsu", "triangle"):
            _, out = cv2.threshold(g8, 0, 255, kind | (cv2.THRESH_OTSU if p.method == "otsu" else cv2.THRESH_TRIANGLE))
            return out
        method = cv2.ADAPTIVE_THRESH_MEAN_C if p.method == "adaptive_mean" else cv2.ADAPTIVE_THRESH_GAUSSIAN_C
        return cv2.adaptiveThreshold(g8, 255, method, kind, odd(p.block_size), p.offset)


_MORPH = {"erode": cv2.MORPH_ERODE, "dilate": cv2.MORPH_DILATE, "open": cv2.MORPH_OPEN, "close": cv2.MORPH_CLOSE,
          "gradient": cv2.MORPH_GRADIENT, "tophat": cv2.MORPH_TOPHAT, "blackhat": cv2.MORPH_BLACKHAT}
_KSHAPE = {"rect": cv2.MORPH_RECT, "ellipse": cv2.MORPH_ELLIPSE, "cross": cv2.MORPH_CROSS}


class MorphParams(Params):
    operation: Literal["erode", "dilate", "open", "close", "gradient", "tophat", "blackhat"] = Field(
        "open", description="open removes specks, close fills holes, tophat/blackhat keep small bright/dark details")
    kernel: Literal["rect", "ellipse", "cross"] = Field("ellipse", description="structuring element shape")
    size: int = Field(3, ge=1, le=255, description="structuring element size in pixels")
    iterations: int = Field(1, ge=1, le=50, description="how many times to apply it")


class Morphology(PreprocessTool):
    id = "classical.morphology"
    title = "Morphology"
    description = "erode, dilate, open, close, gradient, top-hat, black-hat"
    Params = MorphParams

    def __init__(self, params, context=None):
        super().__init__(params, context)
        self._op = _MORPH[params.operation]
        self._k = cv2.getStructuringElement(_KSHAPE[params.kernel], (params.size, params.size))

    def process(self, image: np.ndarray) -> np.ndarray:
        return cv2.morphologyEx(image, self._op, self._k, iterations=self.params.iterations)


class FlatFieldParams(Params):
    method: Literal["blur", "morphology", "reference"] = Field(
        "blur", description="how the background is estimated: a large blur, a morphological closing/opening "
                            "(keeps the background under objects), or a reference image file (flat field)")
    mode: Literal["divide", "subtract"] = Field(
        "divide", description="divide: correct uneven illumination (flat-field); subtract: keep the difference")
    size: int = Field(51, ge=3, le=1001, description="blur/morphology: kernel size, larger than the objects")
    polarity: Literal["dark", "bright"] = Field(
        "dark", description="morphology/subtract: the objects are dark (closing) or bright (opening)")
    reference: str | None = Field(None, description="method 'reference': background image (path, relative to the "
                                                    "recipe), same size as the frames")
    dark: str | None = Field(None, description="optional dark frame subtracted from image and reference")
    target: float | None = Field(None, ge=0, le=65535,
                                 description="divide: output level of the background (default: mean of background)")


class FlatField(PreprocessTool):
    id = "classical.flatfield"
    title = "Flat-field / background subtraction"
    description = "remove uneven illumination or a background: divide or subtract an estimated or reference background"
    Params = FlatFieldParams

    def __init__(self, params, context=None):
        super().__init__(params, context)
        self._ref = self._dark = None
        if params.method == "reference":
            if not params.reference:
                raise UsageError(f"step {self.context.step!r}: classical.flatfield method 'reference' needs "
                                 "params.reference (a background image)")
            self._ref = self._load(params.reference, "reference").astype(np.float32)
        if params.dark:
            self._dark = self._load(params.dark, "dark").astype(np.float32)
            if self._ref is not None:
                self._ref = np.maximum(self._ref - self._dark, 1e-3)
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (params.size, params.size))

    def _load(self, path: str, field: str) -> np.ndarray:
        from ..sources import read_image

        p = self.context.resolve(path)
        try:
            return read_image(p)
        except (ValueError, OSError) as exc:
            raise UsageError(f"step {self.context.step!r}: params.{field}: {exc}") from None

    def _background(self, f: np.ndarray) -> np.ndarray:
        p = self.params
        if self._ref is not None:
            if self._ref.shape != f.shape:
                raise ValueError(f"reference background is {self._ref.shape[1]}x{self._ref.shape[0]}, the image "
                                 f"{f.shape[1]}x{f.shape[0]}{'' if f.ndim == self._ref.ndim else ' (channels differ)'}")
            return self._ref
        if p.method == "blur":
            k = odd(p.size)
            return cv2.blur(cv2.blur(f, (k, k)), (k, k))  # two box passes ~ a smooth, cheap low-pass
        op = cv2.MORPH_CLOSE if p.polarity == "dark" else cv2.MORPH_OPEN
        # on a reduced copy: the background varies slowly, and big kernels are slow at full size
        h, w = f.shape[:2]
        s = max(1, p.size // 15)
        small = cv2.resize(f, (max(1, w // s), max(1, h // s)), interpolation=cv2.INTER_AREA)
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (odd(max(3, p.size // s)),) * 2)
        bg = cv2.morphologyEx(small, op, k)
        bg = cv2.blur(bg, (3, 3))
        return cv2.resize(bg, (w, h), interpolation=cv2.INTER_LINEAR)

    def process(self, image: np.ndarray) -> np.ndarray:
        p = self.params
        f = image.astype(np.float32)
        if self._dark is not None:
            f = f - self._dark
        bg = self._background(f)
        top = full_scale(image.dtype)
        if p.mode == "divide":
            target = p.target if p.target is not None else float(cv2.mean(bg)[0])
            if image.dtype in (np.uint8, np.uint16) and bg.ndim == f.ndim:
                # one saturating OpenCV pass (x / 0 gives 0)
                return cv2.divide(f, bg, scale=target, dtype=cv2.CV_8U if image.dtype == np.uint8 else cv2.CV_16U)
            out = f * (target / np.maximum(bg, 1e-3))
        else:
            diff = (f - bg) if p.polarity == "bright" else (bg - f)
            # keep the result in the input's range; the background maps to 'target' (default 0)
            out = diff + (p.target or 0.0)
            if p.polarity == "dark" and p.target is None:
                out = top - diff  # dark objects stay dark on a white background
        if np.issubdtype(image.dtype, np.integer):
            return np.clip(out, 0, top).astype(image.dtype)
        return out.astype(image.dtype)


PREPROCESS_TOOLS = [Gray, ColorConvert, Resize, Crop, Rotate, GaussianBlur, MedianBlur, Clahe, Normalize,
                    Threshold, Morphology, FlatField]
