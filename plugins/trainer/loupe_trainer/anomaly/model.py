"""The PatchCore-class model in torch: patch features, memory bank, nearest-neighbour scoring.

``PatchFeatures``: EfficientNet-Lite0 trunk -> the chosen stages (default the
stride-8 and stride-16 stages) -> local neighbourhood aggregation (a k x k
average over each position's neighbours) -> the coarser maps upsampled to the
finest stride -> concatenated -> optionally projected (a fixed matrix) ->
(N, h, w, D) patch embeddings.

``PatchCore``: the features plus a memory bank (K, D). ``forward`` returns
``(anomaly_map (N, 1, H, W), score (N,))``: each patch's distance to its nearest
bank entry, normalised per position with the mean and spread of held-out good
images at that position (``(d - mu[y, x]) / sd[y, x]``: border and corner
patches, which are always rarer, then no longer dominate), smoothed with a
Gaussian at feature resolution, upsampled bilinearly to the input size; the
score is the maximum of the (smoothed) map. This module is
what is exported to ONNX, so the nearest-neighbour search is in the graph.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import EfficientNetLite0, normalize, stage_channels, stage_stride


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(x * x) / (2 * sigma * sigma))
    return k / k.sum()


class PatchFeatures(nn.Module):
    def __init__(self, backbone: EfficientNetLite0, layers: tuple[str, ...] = ("stage3", "stage4"),
                 aggregate: int = 3, projection: torch.Tensor | None = None):
        super().__init__()
        self.backbone = backbone
        self.layers = tuple(layers)
        self.aggregate = int(aggregate)
        self.stride = min(stage_stride(n) for n in self.layers)
        self.raw_dim = sum(stage_channels(n) for n in self.layers)
        if projection is not None:
            self.register_buffer("projection", projection.float())
        else:
            self.projection = None

    @property
    def dim(self) -> int:
        return self.raw_dim if self.projection is None else int(self.projection.shape[1])

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image: (N, 3, H, W) RGB 0..255 -> (N, h, w, D) with h = H / stride."""
        feats = self.backbone.stages(normalize(image), self.layers)
        h = math.ceil(image.shape[-2] / self.stride)
        w = math.ceil(image.shape[-1] / self.stride)
        maps = []
        for name in self.layers:
            f = feats[name]
            if self.aggregate > 1:
                f = F.avg_pool2d(f, self.aggregate, stride=1, padding=self.aggregate // 2,
                                 count_include_pad=False)
            if f.shape[-2] != h or f.shape[-1] != w:
                f = F.interpolate(f, size=(h, w), mode="bilinear", align_corners=False)
            maps.append(f)
        x = torch.cat(maps, dim=1).permute(0, 2, 3, 1)  # N, h, w, C
        if self.projection is not None:
            x = x @ self.projection
        return x


def nn_distance(x: torch.Tensor, bank: torch.Tensor, bank_sq: torch.Tensor | None = None,
                chunk: int = 0) -> torch.Tensor:
    """Euclidean distance of each row of x (M, D) to its nearest row of bank (K, D)."""
    if bank_sq is None:
        bank_sq = (bank * bank).sum(1)
    if chunk and x.shape[0] > chunk:
        return torch.cat([nn_distance(x[i:i + chunk], bank, bank_sq) for i in range(0, x.shape[0], chunk)])
    d2 = (x * x).sum(1, keepdim=True) - 2.0 * (x @ bank.t()) + bank_sq[None, :]
    return d2.min(dim=1).values.clamp_min(0.0).sqrt()


class PatchCore(nn.Module):
    def __init__(self, features: PatchFeatures, bank: torch.Tensor, sigma: float = 0.5,
                 mu: torch.Tensor | None = None, sd: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("mu", mu.float().reshape(1, 1, *mu.shape[-2:]) if mu is not None
                             else torch.zeros(1, 1, 1, 1))
        self.register_buffer("sd", sd.float().reshape(1, 1, *sd.shape[-2:]) if sd is not None
                             else torch.ones(1, 1, 1, 1))
        self.features = features
        self.register_buffer("bank", bank.float().contiguous())
        self.register_buffer("bank_sq", (self.bank * self.bank).sum(1))
        self.sigma = float(sigma)
        if sigma > 0:
            self.register_buffer("kernel", gaussian_kernel1d(sigma))
        else:
            self.kernel = None

    def patch_scores(self, image: torch.Tensor) -> torch.Tensor:
        """(N, 1, h, w) nearest-neighbour distances of each patch."""
        f = self.features(image)
        n, h, w, d = f.shape
        dist = nn_distance(f.reshape(n * h * w, d), self.bank, self.bank_sq, chunk=0 if n == 1 else 8192)
        return dist.reshape(n, 1, h, w)

    def smooth(self, m: torch.Tensor) -> torch.Tensor:
        if self.kernel is None:
            return m
        k = self.kernel
        r = k.numel() // 2
        m = F.pad(m, [r, r, r, r], mode="replicate")
        m = F.conv2d(m, k.view(1, 1, 1, -1))
        return F.conv2d(m, k.view(1, 1, -1, 1))

    def normalized(self, dist: torch.Tensor) -> torch.Tensor:
        return (dist - self.mu) / self.sd

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.smooth(self.normalized(self.patch_scores(image)))
        score = m.flatten(1).max(dim=1).values
        amap = F.interpolate(m, size=(image.shape[-2], image.shape[-1]), mode="bilinear", align_corners=False)
        return amap, score
