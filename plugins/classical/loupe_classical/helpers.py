"""Image helpers for plugin authors: what a new tool otherwise rewrites.

``from loupe_classical.helpers import skeletonize, skeleton_points, to_gray, to_u8, binarize``

* ``skeletonize(mask)``: one-pixel-wide centre lines of the objects in a binary mask (Zhang-Suen thinning,
  vectorised numpy: ``opencv-python-headless`` has no ``cv2.ximgproc.thinning``, and the host and the
  classical plugin do not depend on scikit-image). The test compares it with
  ``skimage.morphology.skeletonize``: the same topology, the same centre lines within a fraction of a pixel
  on average (scikit-image's look-up table is a variant of the paper's, so a few pixels differ).
* ``skeleton_points(skeleton)``: the end points and branch points of a skeleton (crack ends, junctions).
* ``to_gray``, ``to_u8``, ``binarize``, ``BinarizeParams``: the gray conversion, 8-bit scaling and
  thresholding the classical tools use, with the same parameters (so a new tool's form looks the same).
"""
from __future__ import annotations

import numpy as np

from .tools._common import BinarizeParams, binarize, to_gray, to_u8

__all__ = ["skeletonize", "skeleton_points", "neighbour_count", "to_gray", "to_u8", "binarize", "BinarizeParams"]

# the 8 neighbours in Zhang and Suen's order P2..P9 (north, then clockwise), as (dy, dx)
_NEIGHBOURS = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


def _zhang_suen_lut() -> tuple[np.ndarray, np.ndarray]:
    """Which of the 256 neighbourhoods may be removed in the first and in the second sub-iteration."""
    first = np.zeros(256, bool)
    second = np.zeros(256, bool)
    for code in range(256):
        p = [(code >> k) & 1 for k in range(8)]               # p[0] = P2 ... p[7] = P9
        b = sum(p)                                            # neighbours set
        a = sum(p[k] == 0 and p[(k + 1) % 8] == 1 for k in range(8))  # 0 -> 1 transitions around
        if not (2 <= b <= 6 and a == 1):
            continue
        p2, p4, p6, p8 = p[0], p[2], p[4], p[6]
        first[code] = p2 * p4 * p6 == 0 and p4 * p6 * p8 == 0
        second[code] = p2 * p4 * p8 == 0 and p2 * p6 * p8 == 0
    return first, second


_FIRST, _SECOND = _zhang_suen_lut()


def _simple_lut() -> np.ndarray:
    """Neighbourhoods whose centre is 8-simple (Yokoi's connectivity number is 1): removing it changes no
    8-connected component and no hole."""
    out = np.zeros(256, bool)
    for code in range(256):
        q = [1 - ((code >> k) & 1) for k in range(8)]         # 1 = background, in ring order N, NE, E, ...
        n8 = sum(q[k] - q[k] * q[(k + 1) % 8] * q[(k + 2) % 8] for k in (0, 2, 4, 6))
        out[code] = n8 == 1
    return out


_SIMPLE = _simple_lut()


def _codes_at(flat: np.ndarray, width: int, idx: np.ndarray) -> np.ndarray:
    """The 8-bit neighbourhood code (bit k = neighbour P(k+2)) of the pixels at flat indices ``idx`` of a
    zero-padded 0/1 image of row length ``width``, raveled as ``flat``: only the object's pixels are looked
    at, not the whole frame."""
    code = np.zeros(len(idx), np.uint8)
    for k, (dy, dx) in enumerate(_NEIGHBOURS):
        code |= flat[idx + (dy * width + dx)] << k
    return code


def skeletonize(mask: np.ndarray, max_iterations: int = 10_000) -> np.ndarray:
    """The skeleton of a binary ``mask`` (non-zero = object) as a bool array of the same shape.

    Zhang and Suen's parallel thinning (CACM 27(3), 1984): each iteration removes, in two sub-iterations,
    the boundary pixels whose removal keeps the object connected, until none is left; a last pass removes
    the pixels that leave 2 x 2 squares on diagonal strokes. Each sub-iteration is a few numpy operations on
    the coordinates of the object's remaining pixels (no Python loop over pixels), so the cost follows the
    object's area and thickness, not the frame's size.
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"skeletonize: expected a 2-D mask, got shape {m.shape}")
    img = np.pad((m != 0).astype(np.uint8), 1)
    width = img.shape[1]
    flat = img.ravel()                               # a view: writes go to img
    idx = np.flatnonzero(flat)
    for _ in range(max_iterations):
        changed = False
        for lut in (_FIRST, _SECOND):
            remove = lut[_codes_at(flat, width, idx)]  # decided on the image before this sub-iteration
            if remove.any():
                flat[idx[remove]] = 0
                idx = idx[~remove]
                changed = True
        if not changed:
            break
    _thin_staircases(flat, width, idx)
    return img[1:-1, 1:-1].astype(bool)


def _thin_staircases(flat: np.ndarray, width: int, idx: np.ndarray) -> None:
    """Zhang-Suen can leave 2 x 2 squares on diagonal strokes: remove their simple pixels, one quarter of the
    grid at a time (the four pixels of a square lie in different quarters), so the skeleton is one pixel
    wide everywhere and its topology unchanged. ``flat`` is the raveled zero-padded image, ``idx`` the flat
    indices of its set pixels."""
    corners = [a * width + b for a, b in ((-1, -1), (-1, 0), (0, -1), (0, 0))]   # the squares a pixel is in
    square = (0, 1, width, width + 1)
    for _ in range(flat.size):
        changed = False
        for oy in (0, 1):
            for ox in (0, 1):
                sel = (((idx // width) & 1) == oy) & (((idx % width) & 1) == ox)
                at = idx[sel]
                in_square = np.zeros(len(at), bool)
                for c in corners:
                    tl = at + c
                    in_square |= (flat[tl + square[0]] & flat[tl + square[1]] & flat[tl + square[2]]
                                  & flat[tl + square[3]]).astype(bool)
                if not in_square.any():
                    continue
                remove = in_square & _SIMPLE[_codes_at(flat, width, at)]
                if remove.any():
                    flat[at[remove]] = 0
                    gone = np.zeros(len(idx), bool)
                    gone[np.flatnonzero(sel)[remove]] = True
                    idx = idx[~gone]
                    changed = True
        if not changed:
            return


def neighbour_count(skeleton: np.ndarray) -> np.ndarray:
    """For each pixel, how many of its 8 neighbours are set (0 where the pixel itself is not set)."""
    img = (np.asarray(skeleton) != 0).astype(np.uint8)
    pad = np.pad(img, 1)
    h, w = img.shape
    n = sum(pad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx in _NEIGHBOURS).astype(np.uint8)
    return n * img


def skeleton_points(skeleton: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(end_points, branch_points)`` of a one-pixel-wide skeleton, each an ``(N, 2)`` array of (x, y).

    An end point has one neighbour on the skeleton; a branch point has three or more.
    """
    n = neighbour_count(skeleton)
    ends = np.argwhere(n == 1)[:, ::-1]
    branches = np.argwhere(n >= 3)[:, ::-1]
    return ends, branches
