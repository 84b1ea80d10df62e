"""The helpers the classical plugin exposes to plugin authors: skeletonising equals scikit-image's."""
import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
from loupe_classical.helpers import skeleton_points, skeletonize  # noqa: E402


def _shapes() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    out = {}
    m = np.zeros((120, 160), np.uint8)
    cv2.rectangle(m, (10, 10), (150, 40), 255, -1)            # a thick bar
    cv2.circle(m, (60, 85), 25, 255, -1)                      # a disc
    cv2.line(m, (90, 60), (150, 110), 255, 7)                 # a thick diagonal
    out["shapes"] = m
    c = np.zeros((200, 200), np.uint8)
    for _ in range(6):                                        # random thick "cracks" that cross
        pts = rng.integers(0, 200, (4, 2)).astype(np.int32)
        cv2.polylines(c, [pts], False, 255, int(rng.integers(3, 9)))
    out["cracks"] = c
    r = cv2.GaussianBlur(rng.random((96, 96)).astype(np.float32), (0, 0), 3)
    out["blobs"] = ((r > np.quantile(r, 0.6)) * 255).astype(np.uint8)   # irregular blobs with holes
    t = np.zeros((64, 64), np.uint8)
    cv2.putText(t, "Lp", (4, 50), cv2.FONT_HERSHEY_SIMPLEX, 1.8, 255, 6)
    out["text"] = t
    return out


@pytest.mark.parametrize("name", ["shapes", "cracks", "blobs", "text"])
def test_skeletonize_matches_scikit_image(name):
    """Against ``skimage.morphology.skeletonize`` (whose Zhang-Suen look-up table is a variant of the paper's,
    so a few pixels differ): the same topology (objects and holes), centre lines on the same pixels within a
    fraction of a pixel on average, and one pixel wide everywhere."""
    morphology = pytest.importorskip("skimage.morphology")
    measure = pytest.importorskip("skimage.measure")
    mask = _shapes()[name]
    ours = skeletonize(mask)
    ref = morphology.skeletonize(mask > 0)
    assert ours.dtype == bool and ours.shape == mask.shape and ours.sum() > 0
    assert not (ours & ~(mask > 0)).any()                                  # inside the objects
    assert measure.label(ours, connectivity=2).max() == measure.label(ref, connectivity=2).max()
    assert measure.euler_number(ours, 2) == measure.euler_number(ref, 2) == measure.euler_number(mask > 0, 2)
    to_ref = cv2.distanceTransform((~ref).astype(np.uint8), cv2.DIST_L2, 5)
    to_ours = cv2.distanceTransform((~ours).astype(np.uint8), cv2.DIST_L2, 5)
    assert to_ref[ours].mean() < 0.5 and to_ours[ref].mean() < 0.5
    assert np.percentile(to_ref[ours], 95) <= 2.5 and np.percentile(to_ours[ref], 95) <= 2.5
    assert abs(int(ours.sum()) - int(ref.sum())) <= 0.2 * ref.sum()
    squares = ours[:-1, :-1] & ours[1:, :-1] & ours[:-1, 1:] & ours[1:, 1:]
    assert not squares.any(), "the skeleton is two pixels wide somewhere"


def test_skeleton_of_a_line_and_a_cross():
    m = np.zeros((41, 61), np.uint8)
    cv2.line(m, (5, 20), (55, 20), 255, 5)                    # a 5-px thick horizontal bar
    sk = skeletonize(m)
    ys, xs = np.nonzero(sk)
    assert set(ys) <= {19, 20, 21} and xs.min() <= 8 and xs.max() >= 52   # one centre line, end to end
    ends, branches = skeleton_points(sk)
    assert len(ends) == 2 and len(branches) == 0
    cv2.line(m, (30, 2), (30, 38), 255, 5)                    # a cross: four arms, one junction
    ends, branches = skeleton_points(skeletonize(m))
    assert len(ends) == 4 and len(branches) >= 1
    assert np.all(np.abs(branches - [30, 20]).max(axis=1) <= 3)


def test_skeletonize_rejects_colour_and_keeps_input():
    m = np.zeros((10, 10), np.uint8)
    m[3:7, 2:9] = 1
    before = m.copy()
    skeletonize(m)
    assert np.array_equal(m, before)
    with pytest.raises(ValueError, match="2-D"):
        skeletonize(np.zeros((4, 4, 3)))
