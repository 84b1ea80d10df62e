"""band5.py BUNDLE...: more looks for the second look's candidates: besides the 8 quarter turns and mirror images,
crops of the same candidate box zoomed (margin x 0.85 / 1.15) or shifted (+-0.08 of the box's size in x and y,
the runtime's ``shifted_boxes``); the
verifier trains on boxes jittered by up to 0.15, so these are in its training distribution (issue 17, session 29;
2 threads). The candidates that get them are the shipped rule's (band 0.3-1.4 and doubt 0.1 at the bundle's
threshold); their p is the mean over all their looks. Count accuracy at the bundle's threshold (SCENE_SETS as in
band4.py, whose cached looks it reads) and the extra crops per frame beyond the shipped second look."""
import sys
from pathlib import Path

import numpy as np

from host import Bundle, create_session
from loupe_dl_detect.verify import crop_boxes, shifted_boxes
from loupe_trainer.detect import verifier as V

sys.path.insert(0, str(Path(__file__).parents[1] / "issue-17-s23"))
sys.path.insert(0, str(Path(__file__).parents[1] / "issue-17-s28"))
sys.path.insert(0, str(Path(__file__).parent))
from band4 import cached, looked, near_mask  # noqa: E402
from ens import dihedral  # noqa: E402
from scenes import acc_table, test_scenes  # noqa: E402

DOUBT = 0.1
ZOOMS = (0.85, 1.15)
SHIFT = 0.08   # the runtime's shifted_boxes: right, left, down, up
VARIANTS = {"d8 (shipped)": ([], 0), "d8 + zoom2 x1": (["z0", "z1"], 1), "d8 + zoom2 x2": (["z0", "z1"], 2),
            "d8 + zoom2 x8": (["z0", "z1"], 8), "d8 + shift4 x1": (["s0", "s1", "s2", "s3"], 1),
            "d8 + shift4 x2": (["s0", "s1", "s2", "s3"], 2),
            "d8 + zoom2 + shift4 x1": (["z0", "z1", "s0", "s1", "s2", "s3"], 1)}


def main():
    for bpath in sys.argv[1:]:
        bl = cached(bpath)
        b = Bundle.load(Path(bpath))
        v = b.meta["verifier"]
        sess = create_session(b.path / "verifier.onnx", 2)
        scenes = test_scenes(b.meta["classes"])
        thr, side = bl.thr, v["crop"]
        extra_looks = []     # per scene: {name: [looks, n_near, K+1]} for the near candidates
        for (bx, s, _cr, _g), ps, (rgb, _gl) in zip(bl.test, bl.looks, scenes):
            if ps is None:
                extra_looks.append(None)
                continue
            near = near_mask(s, ps[0], thr, doubt=DOUBT)
            out = {}
            if near.any():
                boxes = bx[near].astype(np.float32)
                for i, z in enumerate(ZOOMS):
                    cr = crop_boxes(rgb, boxes, side, V.MARGIN * z, V.MIN_BOX_PX)
                    out[f"z{i}"] = np.stack([V.onnx_probabilities(sess, dihedral(cr, k)) for k in range(8)])
                for i, moved in enumerate(np.split(shifted_boxes(boxes, SHIFT), 4)):
                    cr = crop_boxes(rgb, moved, side, V.MARGIN, V.MIN_BOX_PX)
                    out[f"s{i}"] = np.stack([V.onnx_probabilities(sess, dihedral(cr, k)) for k in (0, 4)])
            extra_looks.append(out)
        name = Path(bpath).name
        for tag, (keys, n_look) in VARIANTS.items():
            preds, n_near = looked(bl, lambda s, p: near_mask(s, p, thr, doubt=DOUBT),
                                   lambda i, near: [extra_looks[i][k][:n_look] for k in keys] if near.any() else [])
            acc = acc_table(preds, bl.gts, bl.n_cls)
            print(f"{name} {tag}: test {acc[thr]:.3f} extra crops/frame {np.mean(n_near) * n_look * len(keys):.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
