"""The segmentation network: the ImageNet EfficientNet-Lite0 trunk as encoder and a light FPN decoder.

The decoder takes the stride-4 (stage2, 24 ch), stride-8 (stage3, 40 ch) and stride-16
features: ``deep_stage`` stage4 (80 ch, blocks 5-7; the default) or stage5 (112 ch, blocks 8-10:
three blocks more); each gets a 1x1 lateral projection to ``width`` channels, the
coarser level is upsampled (bilinear) and added, and each level is smoothed by a
depthwise-separable 3x3 block (BN + ReLU). A 1x1 head gives K + 1 logits at stride 4,
upsampled bilinearly to the input size. The trunk stops after the deep stage: the later
blocks, stages 6-7 and the 1280-channel head are never built, run or exported.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import build_backbone, stage_channels

#: the stride-16 stages the decoder can take as its deepest feature
DEEP_STAGES = ("stage4", "stage5")


def features(deep_stage: str = "stage4") -> tuple[str, str, str]:
    """The three stages the decoder reads: stride 4, 8 and ``deep_stage`` (stride 16)."""
    if deep_stage not in DEEP_STAGES:
        raise ValueError(f"unknown deep stage {deep_stage!r}; choose from {list(DEEP_STAGES)}")
    return ("stage2", "stage3", deep_stage)


class SepConv(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.pw = nn.Conv2d(c, c, 1, bias=False)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.pw(self.dw(x))))


class SegNet(nn.Module):
    def __init__(self, n_out: int, width: int = 64, pretrained: bool = True, aux: bool = False,
                 deep_stage: str = "stage4"):
        super().__init__()
        self.n_out = n_out
        self.features = features(deep_stage)
        self.encoder = build_backbone(pretrained=pretrained)
        # the parts the decoder never uses: keep the module light (and the optimiser's state small)
        del self.encoder._blocks[self.encoder.stage_end(deep_stage):]
        self.encoder._conv_head = nn.Identity()
        self.encoder._bn1 = nn.Identity()
        self.encoder._fc = nn.Identity()
        c4, c8, c16 = (stage_channels(n) for n in self.features)
        self.lat4 = nn.Conv2d(c4, width, 1)
        self.lat8 = nn.Conv2d(c8, width, 1)
        self.lat16 = nn.Conv2d(c16, width, 1)
        self.smooth16 = SepConv(width)
        self.smooth8 = SepConv(width)
        self.smooth4 = nn.Sequential(SepConv(width), SepConv(width))
        self.head = nn.Conv2d(width, n_out, 1)
        # deep supervision (training only): 1x1 heads on the stride-8 and stride-16 maps; never exported
        self.aux_heads = nn.ModuleList([nn.Conv2d(width, n_out, 1), nn.Conv2d(width, n_out, 1)]) if aux else None
        self._aux_out: list[torch.Tensor] = []
        with torch.no_grad():  # start from "background almost everywhere" (p ~ 0.95), as the data are
            self.head.bias.zero_()
            self.head.bias[0] = 3.0 + float(torch.log(torch.tensor(max(1, n_out - 1), dtype=torch.float32)))

    def encoder_parameters(self):
        return [p for p in self.encoder.parameters() if p.requires_grad]

    def aux_logits(self) -> list[torch.Tensor]:
        """The stride-8 and stride-16 logits of the last training-mode forward (with ``aux``), else []."""
        out, self._aux_out = self._aux_out, []
        return out

    def decoder_parameters(self):
        enc = {id(p) for p in self.encoder.parameters()}
        return [p for p in self.parameters() if id(p) not in enc]

    def freeze_early(self, blocks: int) -> None:
        """Freeze the stem and the first ``blocks`` MBConv blocks (high resolution, generic edges)."""
        for m in [self.encoder._conv_stem, self.encoder._bn0] + list(self.encoder._blocks[:blocks]):
            for p in m.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        # few images, small batches: the encoder's BatchNorm keeps its ImageNet statistics
        for m in self.encoder.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def forward(self, x: torch.Tensor, upsample: bool = True) -> torch.Tensor:
        """Logits at the input's size, or at stride 4 (``upsample=False``)."""
        f = self.encoder.stages(x, self.features)
        p16 = self.smooth16(self.lat16(f[self.features[2]]))
        f8 = self.lat8(f["stage3"])
        p8 = self.smooth8(f8 + F.interpolate(p16, size=f8.shape[-2:], mode="bilinear", align_corners=False))
        f4 = self.lat4(f["stage2"])
        p4 = self.smooth4(f4 + F.interpolate(p8, size=f4.shape[-2:], mode="bilinear", align_corners=False))
        logits = self.head(p4)
        if self.aux_heads is not None and self.training:
            self._aux_out = [self.aux_heads[0](p8), self.aux_heads[1](p16)]
        if not upsample:
            return logits
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class ProbGraph(nn.Module):
    """What is exported: image -> per-pixel softmax probabilities [N, K + 1, H / s, W / s].

    ``stride`` 1: at the input's size (logits upsampled bilinearly, then softmax); ``stride`` 4: at the
    logits' own stride; the runtime upsamples the probabilities bilinearly to the image (OpenCV), which
    saves the graph a full-size resize and softmax (about a third of its time on a CPU)."""

    def __init__(self, net: SegNet, stride: int = 1):
        super().__init__()
        self.net = net
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x, upsample=self.stride == 1), dim=1)


def probabilities(net: SegNet, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """What the runtime sees, at the input's size: the exported graph's output, upsampled as the runtime does."""
    p = ProbGraph(net, stride)(x)
    if p.shape[-2:] != x.shape[-2:]:
        p = F.interpolate(p, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return p
