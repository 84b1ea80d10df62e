"""The PatchCore-class model in torch: patch features, memory bank, nearest-neighbour scoring.

``PatchFeatures``: EfficientNet-Lite0 trunk -> the chosen stages (default the
stride-8 and stride-16 stages) -> optionally a local neighbourhood aggregation
(a k x k average over each position's neighbours; off by default) -> the coarser maps upsampled to the
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

The search (issue 18) is exact by default for ``search_dim = 0``; with ``search_dim = d``
(the trainer's default) it runs in two stages: *which* bank entry is nearest is chosen in the
bank's top-d principal components (one (patches x bank) product of depth d instead of D, by
chunks of patches, then an arg-min in each of ``search_groups`` random subsets of the bank), and the
distance handed on is the exact float32 distance, in all D dimensions, to the chosen entry (the
best of the ``search_groups`` candidates). Where the coarse choice misses the true nearest entry
the distance is to a real, slightly farther entry; the position statistics and the threshold are
computed with the same search, so they agree with inference.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import EfficientNetLite0, normalize, stage_channels, stage_stride


def bilinear_matrix(n_out: int, n_in: int) -> torch.Tensor:
    """(n_out, n_in) weights of a 1-D linear resize with half-pixel centres and edge clamping: the weights of
    ``F.interpolate(..., mode="bilinear", align_corners=False)`` along one axis, so ``A_h @ m @ A_w^T``
    is the bilinear upsampling of the map ``m`` as two small matrix products (issue 18: ONNX Runtime's
    Resize of a 32 x 32 map to 256 x 256 took about twice as long, 0.21 against 0.12 ms at one thread)."""
    scale = n_in / n_out
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * scale - 0.5).clamp_min(0.0)
    i0 = src.floor().long().clamp_max(n_in - 1)
    i1 = (i0 + 1).clamp_max(n_in - 1)
    w1 = src - i0.double()
    a = torch.zeros(n_out, n_in, dtype=torch.float64)
    a[torch.arange(n_out), i0] += 1.0 - w1
    a[torch.arange(n_out), i1] += w1
    return a.float()


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(x * x) / (2 * sigma * sigma))
    return k / k.sum()


class PatchFeatures(nn.Module):
    def __init__(self, backbone: EfficientNetLite0, layers: tuple[str, ...] = ("stage3", "stage4"),
                 aggregate: int = 1, projection: torch.Tensor | None = None, global_stage: str | None = None,
                 color: float = 0.0, global_size: int = 0, global_size_stage: str = "head",
                 gauss_size: int = 0, gauss_stage: str = "head", gauss_backbone: nn.Module | None = None,
                 gauss_power: float = 1.0):
        super().__init__()
        self.color = float(color)
        self.backbone = backbone
        self.layers = tuple(layers)
        self.global_stage = global_stage
        # the global descriptor's second view (issue 18, session 11): the input upsampled in the graph to
        # global_size pixels high, one more trunk pass to global_size_stage (0 = no second view)
        self.global_size = int(global_size) if global_stage else 0
        self.global_size_stage = global_size_stage
        # the Gaussian term's descriptor (issue 18, session 14): the pooled gauss_stage map of the input upsampled
        # in the graph to gauss_size pixels high (the input itself when it is not smaller); 0 = no Gaussian term
        self.gauss_size = int(gauss_size) if global_stage else 0
        self.gauss_stage = gauss_stage
        # issue 18, session 15: the Gaussian view through its own trunk (EfficientNet-Lite1 by default; None = the
        # patch trunk) and the pooled map to this power before the L2 normalisation (0.5: a square root)
        self.gauss_backbone = gauss_backbone if self.gauss_size else None
        self.gauss_power = float(gauss_power)
        self.aggregate = int(aggregate)
        self.stride = min(stage_stride(n) for n in self.layers)
        variant = getattr(backbone, "variant", "lite0")   # Lite1 / Lite2 have wider stages (issue 18)
        self.raw_dim = sum(stage_channels(n, variant) for n in self.layers) + (2 if self.color > 0 else 0)
        if projection is not None:
            self.register_buffer("projection", projection.float())
        else:
            self.projection = None

    @property
    def dim(self) -> int:
        return self.raw_dim if self.projection is None else int(self.projection.shape[1])

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image: (N, 3, H, W) RGB 0..255 -> (N, h, w, D) with h = H / stride."""
        return self.extract(image)[0]

    def extract(self, image: torch.Tensor) -> tuple:
        """(patch embeddings (N, h, w, D), global descriptor (N, C) or None) from one trunk pass; with the
        Gaussian term (``gauss_size``, only with a global stage) a third element, its descriptor (N, C3): the
        average-pooled ``gauss_stage`` map of the input upsampled to ``gauss_size`` high (of the input itself
        when it is not smaller), L2-normalised (issue 18, session 14: normalised, Fashion-MNIST 0.9527 against
        0.9497 for the raw pooled map).

        The global descriptor is the average-pooled ``global_stage`` map, L2-normalised
        (the image-level feature DN2-style kNN scoring uses). With ``global_size`` (larger than
        the input) the image is also upsampled bilinearly to that height (the width keeps the
        aspect ratio, a multiple of 32) and run through the trunk to ``global_size_stage``; that
        map, average-pooled and L2-normalised, is concatenated with the first and the whole
        descriptor normalised again (each view weighs the same in the distance)."""
        vg = self.gauss_view_size(image.shape)   # None: no Gaussian term, or it pools the input's own map
        gauss_in_input = self.gauss_size > 0 and vg is None and self.gauss_backbone is None
        names = self.layers + ((self.global_stage,) if self.global_stage else ()) + \
            ((self.gauss_stage,) if gauss_in_input else ())
        feats = self.backbone.stages(normalize(image), tuple(dict.fromkeys(names)))
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
        if self.color > 0:
            maps.append(self.color * self.chroma(image, (h, w)))
        x = torch.cat(maps, dim=1).permute(0, 2, 3, 1)  # N, h, w, C
        if self.projection is not None:
            x = x @ self.projection
        if not self.global_stage:
            return x, None
        g = _l2n(feats[self.global_stage].mean(dim=(2, 3)))
        # the upsampled views, one trunk pass per size (the kNN term's second view and the Gaussian term's share
        # one when their sizes are equal)
        want: dict[tuple[int, int], list[str]] = {}
        v2 = self.global_view_size(image.shape)
        if v2 is not None:
            want.setdefault(v2, []).append(self.global_size_stage)
        if vg is not None and self.gauss_backbone is None:
            want.setdefault(vg, []).append(self.gauss_stage)
        views = {size: self._view(image, size, stages) for size, stages in want.items()}
        if v2 is not None:
            g = _l2n(torch.cat([g, _l2n(views[v2][self.global_size_stage])], dim=1))
        if not self.gauss_size:
            return x, g
        if self.gauss_backbone is not None:
            h = self._view(image, vg, [self.gauss_stage], self.gauss_backbone)[self.gauss_stage]
        else:
            h = views[vg][self.gauss_stage] if vg is not None else feats[self.gauss_stage].mean(dim=(2, 3))
        if self.gauss_power != 1.0:   # the pooled map is >= 0 (ReLU6); the clamp guards a pruned or quantised trunk
            h = h.clamp_min(0.0).pow(self.gauss_power)
        return x, g, _l2n(h)

    @staticmethod
    def view_size(size: int, shape) -> tuple[int, int] | None:
        """(H, W) of a view ``size`` pixels high (aspect kept, width a multiple of 32) of an input of ``shape``
        (..., H, W), or None when ``size`` is 0 or not larger than the input height."""
        h, w = int(shape[-2]), int(shape[-1])
        if not size or size <= h:
            return None
        return int(size), max(32, int(round(size * w / h / 32.0)) * 32)

    def global_view_size(self, shape) -> tuple[int, int] | None:
        """(H, W) of the second global view for an input of ``shape`` (..., H, W), or None when it is off
        (``global_size`` 0 or not larger than the input)."""
        return self.view_size(self.global_size, shape)

    def gauss_view_size(self, shape) -> tuple[int, int] | None:
        """(H, W) of the Gaussian term's view, or None (off, or the input itself: not smaller than gauss_size)."""
        return self.view_size(self.gauss_size, shape) if self.gauss_size else None

    def _view(self, image: torch.Tensor, size: tuple[int, int] | None, names,
              backbone: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """The average-pooled maps (N, C) of ``names`` of the image upsampled bilinearly to ``size`` (None: the
        image itself), through ``backbone`` (default: the patch trunk)."""
        up = image if size is None else F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        f = (self.backbone if backbone is None else backbone).stages(normalize(up), tuple(dict.fromkeys(names)))
        return {n: f[n].mean(dim=(2, 3)) for n in names}

    def global_view(self, image: torch.Tensor) -> torch.Tensor:
        """(N, C2) average-pooled ``global_size_stage`` map of the image upsampled to ``global_view_size``."""
        size = self.global_view_size(image.shape)
        if size is None:
            raise ValueError("no second global view for this input size")
        return self._view(image, size, [self.global_size_stage])[self.global_size_stage]


    def chroma(self, image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(N, 2, h, w) brightness-normalised opponent chroma ((R - G) / L, (R + G - 2B) / 2L, with L the
        channel mean) averaged over each feature cell and its aggregation neighbourhood: a colour-only
        change (a stain of another hue, same luminance) moves it; a change of gain or exposure does not."""
        r, g, b = image[:, 0:1], image[:, 1:2], image[:, 2:3]
        lum = (r + g + b) / 3.0 + 8.0
        c = torch.cat([(r - g) / lum, (r + g - 2.0 * b) / (2.0 * lum)], dim=1)
        c = F.avg_pool2d(c, self.stride, stride=self.stride, ceil_mode=True)
        if self.aggregate > 1:
            c = F.avg_pool2d(c, self.aggregate, stride=1, padding=self.aggregate // 2, count_include_pad=False)
        if c.shape[-2:] != size:
            c = F.interpolate(c, size=size, mode="bilinear", align_corners=False)
        return c


def _l2n(g: torch.Tensor) -> torch.Tensor:
    return g / (g * g).sum(1, keepdim=True).clamp_min(1e-12).sqrt()


class FeatureGraph(nn.Module):
    """What training runs through ONNX Runtime: image -> (patch features, global descriptor)."""

    def __init__(self, features: PatchFeatures):
        super().__init__()
        self.features = features

    def forward(self, image: torch.Tensor):
        return self.features.extract(image)


def knn_distance(g: torch.Tensor, bank: torch.Tensor, k: int, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Mean Euclidean distance of each row of g (N, C) to its k nearest rows of bank (M, C).

    ``exclude`` (N, n) bool (training only): row i ignores bank row j < n where it is true (the bank starts
    with g's own rows: leave-one-out).

    The squared distances are sums of squared differences, not ``|g|^2 - 2 g.b + |b|^2``: an image whose
    descriptor is (nearly) in the bank (a training image, its duplicate) sits at distance ~0, where the
    expanded form's float32 cancellation, amplified by the square root and the term's scale, made torch and
    ONNX Runtime disagree (issue 18, session 11). The bank is small (images, not patches), so the (N, M, C)
    difference costs little; rows go in chunks of at most ~8 M elements."""
    rows = max(1, 8_000_000 // max(1, int(bank.numel())))
    if g.shape[0] > rows:
        return torch.cat([knn_distance(g[i:i + rows], bank, k, None if exclude is None else exclude[i:i + rows])
                          for i in range(0, g.shape[0], rows)])
    diff = g[:, None, :] - bank[None, :, :]
    d2 = (diff * diff).sum(2)
    if exclude is not None:
        n = exclude.shape[1]
        d2 = torch.cat([d2[:, :n].masked_fill(exclude, float("inf")), d2[:, n:]], dim=1)
        k = min(k, bank.shape[0] - int(exclude.sum(1).max()))
    k = int(min(k, bank.shape[0]))
    if k == 1:
        return d2.amin(dim=1).clamp_min(0.0).sqrt()
    return torch.topk(d2, k, dim=1, largest=False).values.clamp_min(0.0).sqrt().mean(1)


def nn_distance(x: torch.Tensor, bank: torch.Tensor, bank_sq: torch.Tensor | None = None,
                chunk: int = 0) -> torch.Tensor:
    """Euclidean distance of each row of x (M, D) to its nearest row of bank (K, D)."""
    if bank_sq is None:
        bank_sq = (bank * bank).sum(1)
    return nn_distance_t(x, (-2.0 * bank).t().contiguous(), bank_sq, chunk)


def nn_distance_t(x: torch.Tensor, bank_tn2: torch.Tensor, bank_sq: torch.Tensor, chunk: int = 0) -> torch.Tensor:
    """As ``nn_distance`` with the bank given as ``-2 * bank.T`` (D, K) and its squared norms (K,).

    ``d^2 = |x|^2 + min_k (|b_k|^2 - 2 x.b_k)``: one matrix product plus the bank norms
    (exported as MatMul + Add, which ONNX Runtime fuses into one Gemm with the norms as
    its bias) and one ReduceMin over the (M, K) block; ``|x|^2`` is added after the
    minimum (it does not depend on k), so no other pass touches the M x K intermediate.
    """
    if chunk and x.shape[0] > chunk:
        return torch.cat([nn_distance_t(x[i:i + chunk], bank_tn2, bank_sq) for i in range(0, x.shape[0], chunk)])
    m = (x @ bank_tn2 + bank_sq).amin(dim=1)
    return (m + (x * x).sum(1)).clamp_min(0.0).sqrt()


class TwoStageSearch(nn.Module):
    """Nearest-neighbour distance in two stages (see the module docstring): coarse choice in the bank's
    top ``dim`` principal components, exact float32 distance to the chosen entries.

    The coarse score of entry b for a patch x is ``|b'|^2 - 2 P^T x'.P^T b'`` (x' = x - m, b' = b - m,
    m the bank mean, P the top ``dim`` principal axes of the bank): the squared distance in all D
    dimensions without the cross term of the discarded components (a per-patch constant dropped).
    The bank is stored in a random order (``seed``) and padded to a multiple of ``groups x width`` with
    entries that are never chosen; the arg-min is taken in each of ``groups`` consecutive blocks, so
    each patch gets ``groups`` candidates, the best of which (exactly) is kept. ``chunk`` patches at a
    time go through the (chunk x bank) product, so that block stays in cache. ONNX Runtime's ArgMin
    is a plain loop (several times slower than its ReduceMin over the same block), so the arg-min is
    found in two steps: the minimum of each run of ``width`` entries (ReduceMin), the best run (ArgMin
    over bank / width values), then the best entry in that run (ArgMin over ``width``).
    """

    def __init__(self, bank: torch.Tensor, dim: int, groups: int = 1, chunk: int = 128, seed: int = 0,
                 width: int = 32):
        super().__init__()
        bank = bank.float()
        k, d_full = bank.shape
        g = torch.Generator().manual_seed(int(seed) + 17)
        bank = bank[torch.randperm(k, generator=g)]
        self.groups, self.chunk, self.width = int(max(1, groups)), int(chunk), int(width)
        pad = (-k) % (self.groups * self.width)
        center = bank.double().mean(0)
        proj, self.info = pca_projection(bank, dim)
        bc = bank.double() - center
        bp = bc @ proj.double()                                              # (K, d)
        bias = (bc * bc).sum(1)                                              # |b'|^2
        if pad:
            bank = torch.cat([bank, bank[:1].expand(pad, -1)])
            bp = torch.cat([bp, bp[:1].expand(pad, -1)])
            bias = torch.cat([bias, torch.full((pad,), 1e30, dtype=bias.dtype)])
        self.size = k + pad
        self.register_buffer("search_proj", proj.float().contiguous())                       # (D, d)
        self.register_buffer("search_center", (center @ proj.double()).float())             # (d,)
        self.register_buffer("search_bt", (-2.0 * bp).t().float().contiguous())             # (d, K')
        self.register_buffer("search_bias", bias.float())                                   # (K',)
        self.register_buffer("search_bank", bank.contiguous())                              # (K', D)
        self.register_buffer("search_offsets", torch.arange(self.groups) * (self.size // self.groups))
        runs = self.size // (self.groups * self.width)
        self.register_buffer("run_base", (torch.arange(self.chunk * self.groups) * runs).reshape(self.chunk, self.groups),
                             persistent=False)
        self.info = {**self.info, "groups": self.groups, "chunk": self.chunk}

    def candidates(self, x: torch.Tensor) -> torch.Tensor:
        """(M, groups) indices into ``search_bank`` of each patch's coarse nearest entries."""
        xp = x @ self.search_proj - self.search_center
        g, w = self.groups, self.width
        runs = self.size // (g * w)                                  # runs of `width` entries per group
        n = int(x.shape[0])  # python ints: the exported graph (fixed input size) gets constants, no shape ops
        idx = []
        for i in range(0, n, self.chunk):
            m = min(self.chunk, n - i)
            c = (xp[i:i + m] @ self.search_bt + self.search_bias).reshape(m * g * runs, w)
            run = c.amin(dim=1).reshape(m, g, runs).argmin(dim=2)                           # (m, g)
            rows = (self.run_base[:m] + run).reshape(m * g)               # row of c holding each best run
            inner = c.index_select(0, rows).reshape(m, g, w).argmin(dim=2)                 # (m, g)
            idx.append(self.search_offsets + run * w + inner)
        return torch.cat(idx) if len(idx) > 1 else idx[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(M,) float32 distance of each row of x (M, D) to the nearest of its candidates."""
        a = self.candidates(x)
        n, d = int(x.shape[0]), int(x.shape[1])
        nb = self.search_bank.index_select(0, a.reshape(n * self.groups))
        if self.groups == 1:
            df = x - nb
            return (df * df).sum(1).sqrt()
        df = x[:, None, :] - nb.reshape(n, self.groups, d)                 # (M, groups, D)
        return (df * df).sum(2).amin(dim=1).sqrt()


class PatchDiscriminator(nn.Module):
    """SimpleNet-style patch discriminator (issue 18, opt-in): (M, D) patch features -> (M,) score, higher =
    more anomalous. Trained on good patches against the same patches plus Gaussian noise
    (``train_discriminator``); the feature adaptor, the input standardisation and the eval-mode batch norm
    are folded into the first layer, so the graph is MatMul + Add, LeakyRelu, MatMul + Add."""

    def __init__(self, w1t: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor, slope: float = 0.2):
        super().__init__()
        self.register_buffer("disc_w1t", w1t.float().contiguous())       # (D, H)
        self.register_buffer("disc_b1", b1.float())                      # (H,)
        self.register_buffer("disc_w2", w2.float().reshape(-1, 1))       # (H, 1)
        self.register_buffer("disc_b2", b2.float().reshape(1))           # (1,)
        self.slope = float(slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(x @ self.disc_w1t + self.disc_b1, self.slope)
        return (h @ self.disc_w2 + self.disc_b2)[:, 0]


def train_discriminator(x: torch.Tensor, noise: float = 1.0, steps: int = 1200, hidden: int = 256,
                        batch: int = 2048, lr: float = 1e-3, margin: float = 0.5, seed: int = 0
                        ) -> tuple[PatchDiscriminator, dict]:
    """SimpleNet's adaptor + discriminator on good patch features ``x`` (M, D) (Liu et al., CVPR 2023).

    The features are standardised (mean, one rms spread over all dimensions), passed through a linear
    adaptor (identity at start); the discriminator (D -> hidden, batch norm, LeakyReLU, -> 1) learns to tell
    adapted good patches from the same plus Gaussian noise of std ``noise`` (in units of the spread), with
    the truncated L1 loss ``relu(margin - D(a)) + relu(margin + D(a + e))``. Returns the folded
    ``PatchDiscriminator`` (its score is ``-D``) and a summary."""
    g = torch.Generator().manual_seed(int(seed) + 29)
    x = x.float().reshape(-1, x.shape[-1])
    m, d = x.shape
    mean = x.mean(0)
    scale = float(x.var(0).mean().sqrt()) + 1e-12
    with torch.random.fork_rng():
        torch.manual_seed(int(seed) + 31)
        adaptor = nn.Linear(d, d)
        disc = nn.Sequential(nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))
    with torch.no_grad():
        adaptor.weight.copy_(torch.eye(d))
        adaptor.bias.zero_()
    opt = torch.optim.Adam([{"params": adaptor.parameters(), "lr": lr / 2, "weight_decay": 1e-5},
                            {"params": disc.parameters(), "lr": lr, "weight_decay": 1e-5}])
    loss = torch.zeros(())
    with torch.enable_grad():
        for _ in range(int(steps)):
            a = adaptor((x[torch.randint(0, m, (batch,), generator=g)] - mean) / scale)
            out = disc(torch.cat([a, a + torch.randn(a.shape, generator=g) * noise]))[:, 0]
            loss = torch.relu(margin - out[:batch]).mean() + torch.relu(margin + out[batch:]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        lin1, bn, lin2 = disc[0], disc[1], disc[3]
        wa = adaptor.weight.double() / scale                       # a = wa (x - mean) + ba
        ba = adaptor.bias.double() - wa @ mean.double()
        gain = bn.weight.double() / (bn.running_var.double() + bn.eps).sqrt()
        w1 = gain[:, None] * (lin1.weight.double() @ wa)            # (H, D)
        b1 = gain * (lin1.weight.double() @ ba + lin1.bias.double() - bn.running_mean.double()) + bn.bias.double()
        model = PatchDiscriminator(w1.t(), b1, -lin2.weight.double().t(), -lin2.bias.double()).eval()
    return model, {"noise": float(noise), "steps": int(steps), "hidden": int(hidden),
                   "final_loss": float(loss.detach()), "feature_scale": scale}


def pca_projection(x: torch.Tensor, dim: int, max_rows: int = 100_000, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """(D, dim) orthonormal projection onto the top ``dim`` principal axes of the rows of x (N, D).

    Distances between projected rows are the distances within that subspace (a
    lower bound of the full ones that keeps ``explained`` of the variance).
    """
    n, d = x.shape
    if n > max_rows:
        g = torch.Generator().manual_seed(seed)
        x = x[torch.randperm(n, generator=g)[:max_rows]]
    x = x.double()
    xc = x - x.mean(0, keepdim=True)
    cov = xc.t() @ xc / max(1, xc.shape[0] - 1)
    evals, evecs = torch.linalg.eigh(cov)
    order = torch.argsort(evals, descending=True)
    evals, evecs = evals[order].clamp_min(0), evecs[:, order]
    dim = int(min(dim, d))
    explained = float(evals[:dim].sum() / evals.sum().clamp_min(1e-12))
    return evecs[:, :dim].float().contiguous(), {"dim": dim, "from_dim": int(d), "explained_variance": round(explained, 5)}


def ledoit_wolf(x: torch.Tensor) -> dict:
    """Gaussian of the rows of x (n, C) with Ledoit-Wolf shrinkage (``sklearn.covariance.LedoitWolf``'s
    estimate): covariance ``(1 - s) S + s m I`` with S the maximum-likelihood covariance, m = trace(S) / C and
    sklearn's shrinkage s. Returned as the mean, the principal axes ``vt`` (r, C) of S (r = min(n, C), from the
    SVD of the centred rows, so n < C costs no C x C decomposition), their shrunk variances ``ev`` (r,) and the
    isotropic variance ``iso`` = s m of every other direction; float64."""
    from sklearn.covariance import ledoit_wolf_shrinkage

    x = x.double()
    n, c = x.shape
    mean = x.mean(0)
    xc = x - mean
    s = float(ledoit_wolf_shrinkage(xc.numpy(), assume_centered=True))
    _, sv, vt = torch.linalg.svd(xc, full_matrices=False)
    lam = sv * sv / n
    m = float(lam.sum()) / c
    iso = max(s * m, 1e-12)   # identical images (m = 0) would leave no variance at all
    return {"mean": mean, "vt": vt, "ev": (1 - s) * lam + iso, "iso": iso, "shrinkage": s}


def mahalanobis64(fit: dict, y) -> torch.Tensor:
    """Mahalanobis distance of the rows of y under ``ledoit_wolf``'s Gaussian, in float64 (the reference)."""
    yc = torch.as_tensor(y).double() - fit["mean"]
    p = yc @ fit["vt"].t()
    d2 = (p * p / fit["ev"]).sum(1) + ((yc * yc).sum(1) - (p * p).sum(1)) / fit["iso"]
    return d2.clamp_min(0).sqrt()


class GaussTerm(nn.Module):
    """``scale * (mahalanobis(h) - mu)``: the Mahalanobis distance of a descriptor h (N, C) under a Gaussian
    (``ledoit_wolf``), z-scored on held-out good images and weighted, in patch-score units (issue 18).

    The precision matrix of the shrunk covariance is ``I / iso - A A^T`` with ``A = V diag(sqrt(1 / iso -
    1 / ev))`` (C, r), so the squared distance is ``|h - mean|^2 / iso - |(h - mean) A|^2``: the graph holds the
    mean (C,) and A (C x r, r <= the number of good images; 1280 x 200 x 4 B = 1 MB for 200 images), one
    MatMul. The two sums are accumulated in float32 and differ by a few per cent of each (good images lie
    mostly in the top axes), far above float32's resolution."""

    def __init__(self, fit: dict, mu: float = 0.0, scale: float = 1.0):
        super().__init__()
        iso = float(fit["iso"])
        coef = (1.0 / iso - 1.0 / fit["ev"]).clamp_min(0.0).sqrt()
        self.register_buffer("gauss_mean", fit["mean"].float())
        self.register_buffer("gauss_a", (fit["vt"].t() * coef).float().contiguous())     # (C, r)
        self.inv_iso = 1.0 / iso
        self.mu, self.scale = float(mu), float(scale)

    def distance(self, h: torch.Tensor) -> torch.Tensor:
        y = h - self.gauss_mean
        p = y @ self.gauss_a
        return ((y * y).sum(1) * self.inv_iso - (p * p).sum(1)).clamp_min(0.0).sqrt()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.scale * (self.distance(h) - self.mu)


def position_grid(h: int, w: int, weight: float) -> torch.Tensor:
    """(h * w, 2) ``weight x (row, column)`` of each feature cell, row-major: the two position channels that a
    model with ``position`` appends to each patch feature (issue 18, session 15)."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    return float(weight) * torch.stack([yy, xx], -1).reshape(h * w, 2)


def with_position(f: torch.Tensor, weight: float) -> torch.Tensor:
    """(n, h, w, D) patch features -> (n, h, w, D + 2) with the position channels appended."""
    n, h, w, _ = f.shape
    pos = position_grid(h, w, weight).reshape(1, h, w, 2).expand(n, h, w, 2).to(f.dtype)
    return torch.cat([f, pos], dim=-1)


def position_alignment(f_bank: torch.Tensor, f_cal: torch.Tensor, max_queries: int = 2048,
                       max_bank: int = 16384, seed: int = 0) -> tuple[float, float]:
    """How position-bound the good images are (issue 18, session 15): (share, median distance).

    For held-out patches (at most ``max_queries``, at random), the exact nearest patch among the bank images'
    (whole images, at most ``max_bank`` patches): ``share`` = the fraction whose nearest patch lies at the same
    feature cell, ``median`` = the median of those distances. Aligned whole objects (Fashion-MNIST: 0.67-0.92)
    find their match in place; a texture or a part at any position finds it anywhere (chance is 1 / (h w))."""
    g = torch.Generator().manual_seed(int(seed) + 41)
    nb, h, w, d = f_bank.shape
    cells = h * w
    keep = max(1, min(nb, max_bank // cells))
    bank_imgs = torch.randperm(nb, generator=g)[:keep] if keep < nb else torch.arange(nb)
    bank = f_bank[bank_imgs].reshape(-1, d).float()
    q = f_cal.reshape(-1, d).float()
    qi = torch.randperm(q.shape[0], generator=g)[:max_queries]
    bank_sq = (bank * bank).sum(1)
    best, dist = [], []
    for i in range(0, len(qi), 512):
        x = q[qi[i:i + 512]]
        d2 = (x * x).sum(1, keepdim=True) - 2.0 * x @ bank.t() + bank_sq
        m, a = d2.min(dim=1)
        best.append(a)
        dist.append(m.clamp_min(0).sqrt())
    same = (torch.cat(best) % cells) == (qi % cells)
    return float(same.float().mean()), float(torch.cat(dist).median())


class PatchCore(nn.Module):
    """Patch memory bank (+ optionally an image-level kNN term) -> (anomaly map, score).

    With a global bank (``global_bank`` (M, C) of the good images' global descriptors),
    the score is ``max(map) + global_scale * (knn_distance - global_mu)``: the global
    kNN distance standardised on held-out good images and expressed in the units of
    the patch score (so the sum ranks like the sum of the two z-scores). The map
    stays the patch map.
    """

    def __init__(self, features: PatchFeatures, bank: torch.Tensor, sigma: float = 0.5,
                 mu: torch.Tensor | None = None, sd: torch.Tensor | None = None,
                 global_bank: torch.Tensor | None = None, global_k: int = 2, global_mu: float = 0.0,
                 global_scale: float = 0.0, search_dim: int = 0, search_groups: int = 1, seed: int = 0,
                 disc: PatchDiscriminator | None = None, disc_mu: torch.Tensor | None = None,
                 disc_scale: torch.Tensor | None = None, gauss: "GaussTerm | None" = None,
                 position: float = 0.0, map_size: tuple[int, int] | None = None):
        super().__init__()
        # position channels (issue 18, session 15): weight x (row, column) of the cell appended to each patch
        # feature before the search (the bank's entries carry theirs), so a patch finds its match in place
        if position > 0:
            if map_size is None:
                raise ValueError("position channels need the feature map's size")
            self.register_buffer("pos", position_grid(*map_size, position))
        else:
            self.pos = None
        # the Gaussian image-level term (issue 18, session 14): added to the score like the kNN global term
        self.gauss = gauss
        # the discriminator's map (opt-in, issue 18): disc_scale * (score - disc_mu) is added to the z-map,
        # disc_scale = weight / the score's per-position spread on held-out good images
        self.disc = disc
        if disc is not None:
            self.register_buffer("disc_mu", disc_mu.float().reshape(1, 1, *disc_mu.shape[-2:]))
            self.register_buffer("disc_scale", disc_scale.float().reshape(1, 1, *disc_scale.shape[-2:]))
        self.register_buffer("mu", mu.float().reshape(1, 1, *mu.shape[-2:]) if mu is not None
                             else torch.zeros(1, 1, 1, 1))
        self.register_buffer("sd", sd.float().reshape(1, 1, *sd.shape[-2:]) if sd is not None
                             else torch.ones(1, 1, 1, 1))
        self.features = features
        self.register_buffer("bank", bank.float().contiguous())
        if search_dim and search_dim < bank.shape[1]:
            # two-stage search (issue 18): coarse choice in search_dim principal components, exact distance
            self.search = TwoStageSearch(self.bank, search_dim, search_groups, seed=seed)
        else:
            self.search = None
            self.register_buffer("bank_sq", (self.bank * self.bank).sum(1))
            # what the graph multiplies by: -2 * bank^T, contiguous (D, K), so the search is one Gemm + ReduceMin
            self.register_buffer("bank_tn2", (-2.0 * self.bank).t().contiguous())
        self.sigma = float(sigma)
        if sigma > 0:
            self.register_buffer("kernel", gaussian_kernel1d(sigma))
        else:
            self.kernel = None
        if global_bank is not None and features.global_stage:
            self.register_buffer("global_bank", global_bank.float().contiguous())
        else:
            self.global_bank = None
        self.global_k = int(global_k)
        self.global_mu = float(global_mu)
        self.global_scale = float(global_scale)

    def patch_distances(self, f: torch.Tensor) -> torch.Tensor:
        n, h, w, d = f.shape
        x = f.reshape(n * h * w, d)
        if self.pos is not None:
            x = torch.cat([x, self.pos.repeat(n, 1)], dim=1)
            d += 2
        if self.search is not None:
            step = h * w if n == 1 else 8192
            dist = torch.cat([self.search(x[i:i + step]) for i in range(0, x.shape[0], step)])
        else:
            dist = nn_distance_t(x, self.bank_tn2, self.bank_sq, chunk=0 if n == 1 else 8192)
        return dist.reshape(n, 1, h, w)

    def disc_scores(self, f: torch.Tensor) -> torch.Tensor:
        """(N, 1, h, w) discriminator scores of each patch (the model must have a discriminator)."""
        n, h, w, d = f.shape
        return self.disc(f.reshape(n * h * w, d)).reshape(n, 1, h, w)

    def patch_scores(self, image: torch.Tensor) -> torch.Tensor:
        """(N, 1, h, w) nearest-neighbour distances of each patch."""
        return self.patch_distances(self.features(image))

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

    def global_term(self, g: torch.Tensor) -> torch.Tensor:
        return self.global_scale * (knn_distance(g, self.global_bank, self.global_k) - self.global_mu)

    def score_map(self, dist: torch.Tensor, disc_scores: torch.Tensor | None = None) -> torch.Tensor:
        """The smoothed map (N, 1, h, w) from the patches' nearest-neighbour distances and, for a model with a
        discriminator, its scores of the same patches: the position-normalised distance plus the weighted,
        position-normalised discriminator score."""
        z = self.normalized(dist)
        if disc_scores is not None:
            z = z + self.disc_scale * (disc_scores - self.disc_mu)
        return self.smooth(z)

    def score_features(self, f: torch.Tensor, g: torch.Tensor | None,
                       hg: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(smoothed normalised map at feature resolution (N, 1, h, w), score (N,)) from extracted features
        (``hg``: the Gaussian term's descriptor, for a model with one)."""
        m = self.score_map(self.patch_distances(f), self.disc_scores(f) if self.disc is not None else None)
        score = m.flatten(1).max(dim=1).values
        if self.global_bank is not None and g is not None:
            score = score + self.global_term(g)
        if self.gauss is not None and hg is not None:
            score = score + self.gauss(hg)
        return m, score

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m, score = self.score_features(*self.features.extract(image))
        size = (image.shape[-2], image.shape[-1])
        if tuple(m.shape[-2:]) == size:
            return m, score
        # the bilinear upsampling as two matrix products (same weights as F.interpolate, half-pixel centres)
        ah = bilinear_matrix(size[0], m.shape[-2]).to(m)
        aw = bilinear_matrix(size[1], m.shape[-1]).to(m)
        return ah @ m @ aw.t(), score
