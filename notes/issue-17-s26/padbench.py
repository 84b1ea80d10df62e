"""padbench.py [BLOCKS]: the backbone's symmetric TF-SAME padding inside the convolution (``after``; built in
session 26 as commit ba92df1 and reverted) against a padded copy of the input (``before``, the product), in one process,
alternated: the median time of a detector training step (DetNet,
batch 8 of 192 px crops, the trainer's defaults; forward + backward), the verifier's frozen trunk on 256 crops of 80
px and the classifier's on 64 images of 96 px (no grad). Prints each ratio (before / after) per block, and their
medians; 2 threads."""
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from loupe_trainer.backbone import Conv2dSame, _same_pad, build_backbone
from loupe_trainer.detect.net import DetNet

torch.set_num_threads(2)


#: the product's ``Conv2dSame.forward``: a padded copy of the input before every padded convolution
before = Conv2dSame.forward


def after(self, x):
    """The variant: a symmetric padding done by the convolution itself; other cases as the product."""
    k, s = self.kernel_size[0], self.stride[0]
    pt, pb = _same_pad(int(x.shape[-2]), k, s)
    pl, pr = _same_pad(int(x.shape[-1]), k, s)
    if (k, s) != (1, 1) and pt == pb and pl == pr:
        return F.conv2d(x, self.weight, self.bias, self.stride, (pt, pl), self.dilation, self.groups)
    return before(self, x)


torch.manual_seed(0)
det = DetNet(4)
trunk = build_backbone(pretrained=True).eval()
xd, xv, xc = torch.randn(8, 3, 192, 192), torch.randn(256, 3, 80, 80), torch.randn(64, 3, 96, 96)


def det_step():
    out = det(xd)
    sum(o.float().mean() for o in (out.values() if isinstance(out, dict) else out)).backward()


@torch.no_grad()
def verifier():
    trunk.stages(xv, ("stage4", "stage6"))


@torch.no_grad()
def classifier():
    trunk.stages(xc, ("stage4", "stage5", "stage6"))


def timed(fn, n=5):
    fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


blocks = int(sys.argv[1]) if len(sys.argv) > 1 else 5
ratios = {f.__name__: [] for f in (det_step, verifier, classifier)}
for b in range(blocks):
    for f in (det_step, verifier, classifier):
        Conv2dSame.forward = before
        t0 = timed(f)
        Conv2dSame.forward = after
        t1 = timed(f)
        ratios[f.__name__].append(t0 / t1)
        print(f"block {b} {f.__name__}: before {t0 * 1000:.1f} ms, after {t1 * 1000:.1f} ms, {t0 / t1:.3f}x",
              flush=True)
print({k: round(statistics.median(v), 3) for k, v in ratios.items()}, flush=True)
