"""BoTNet-50 (Srinivas et al., "Bottleneck Transformers for Visual Recognition", CVPR 2021) as a regressor.

ResNet-50 whose last stage (c5: three bottlenecks) replaces each 3x3 convolution by multi-head
self-attention (MHSA) over the whole feature map with 2-D relative position logits:

    logits[i, j] = q_i . k_j + q_i . r^h[row_j - row_i] + q_i . r^w[col_j - col_i]

with q pre-scaled by 1/sqrt(d_head), 4 heads, learned relative embeddings of shape (2H-1, d_head)
and (2W-1, d_head) shared by the heads (as the paper's reference implementation). The first c5
block keeps ResNet's stride 2 as a 2x2 average pool after the MHSA (the paper's choice), so the
attention runs on 14x14 in the first block and 7x7 in the other two at 224 input. q, k, v come from
one 1x1 convolution without bias.

With ``num_outputs=1000`` the model has 20,852,008 parameters (the paper reports 20.8M for BoT50);
the default ``num_outputs=1`` is the regression head: forward returns (N,) defocus in um.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.resnet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Bottleneck,
    NormalizedInput,
    RegressionHead,
    init_resnet_weights,
    make_stage,
    projection_shortcut,
    resnet_stem,
)

INPUT_SIZE: int = 224


class RelativePositionLogits(nn.Module):
    """2-D relative position logits for a fixed (height, width) feature map."""

    def __init__(self, height: int, width: int, dim_head: int) -> None:
        super().__init__()
        self.height, self.width = height, width
        scale = dim_head**-0.5
        self.rel_height = nn.Parameter(torch.randn(2 * height - 1, dim_head) * scale)
        self.rel_width = nn.Parameter(torch.randn(2 * width - 1, dim_head) * scale)
        # index[i, j] = j - i + (L - 1): position of the offset (key j relative to query i) in the table
        self.register_buffer("index_h", _relative_index(height), persistent=False)
        self.register_buffer("index_w", _relative_index(width), persistent=False)

    def forward(self, q: Tensor) -> Tensor:
        """q: (B, H*W, d) -> logits (B, H*W, H*W)."""
        b = q.shape[0]
        h, w = self.height, self.width
        q2 = q.reshape(b, h, w, -1)
        # (B, H, W, 2W-1) -> gather the key column for each query column -> (B, H, Wq, Wk)
        lw = q2 @ self.rel_width.t()
        lw = torch.gather(lw, 3, self.index_w.expand(b, h, w, w))
        # (B, H, W, 2H-1) -> per query row -> (B, Hq, W, Hk)
        lh = q2 @ self.rel_height.t()
        lh = torch.gather(lh, 3, self.index_h.view(1, h, 1, h).expand(b, h, w, h))
        logits = lh.unsqueeze(4) + lw.unsqueeze(3)  # (B, Hq, Wq, Hk, Wk)
        return logits.reshape(b, h * w, h * w)


def _relative_index(length: int) -> Tensor:
    pos = torch.arange(length)
    return pos.view(1, -1) - pos.view(-1, 1) + (length - 1)


class MHSA(nn.Module):
    """All-to-all multi-head self-attention on a (height x width) map with relative positions."""

    def __init__(self, channels: int, height: int, width: int, heads: int = 4) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.dim_head = channels // heads
        self.scale = self.dim_head**-0.5
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=False)
        self.pos = RelativePositionLogits(height, width, self.dim_head)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(x).reshape(b * self.heads, 3, self.dim_head, h * w)
        q, k, v = (qkv[:, i].transpose(1, 2) for i in range(3))  # (B*heads, HW, d)
        q = q * self.scale
        attn = (q @ k.transpose(1, 2) + self.pos(q)).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2)  # (B*heads, d, HW)
        return out.reshape(b, c, h, w)


class BottleneckTransformer(nn.Module):
    """ResNet bottleneck with the 3x3 convolution replaced by MHSA (+ 2x2 avg pool when striding)."""

    def __init__(self, in_channels: int, width: int, size: int, stride: int = 1, heads: int = 4) -> None:
        super().__init__()
        out_channels = width * Bottleneck.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.mhsa = MHSA(width, size, size, heads)
        self.pool: nn.Module = nn.AvgPool2d(2, 2) if stride == 2 else nn.Identity()
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = projection_shortcut(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.pool(self.mhsa(out))))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class BotNet50(nn.Module):
    """BoTNet-50 regressor: (N, 3, 224, 224) float32 in [0, 1] -> (N,) defocus in um.

    Args:
        num_outputs: 1 for defocus regression; 1000 reproduces the ImageNet architecture.
        heads: attention heads in c5 (paper: 4).
        mean, std: per-channel input normalisation (RGB), stored as buffers.
    """

    def __init__(
        self,
        num_outputs: int = 1,
        heads: int = 4,
        mean: tuple[float, float, float] | list[float] = IMAGENET_MEAN,
        std: tuple[float, float, float] | list[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.input = NormalizedInput(mean, std)
        self.stem = resnet_stem()
        self.layer1 = make_stage(64, 64, 3, stride=1)
        self.layer2 = make_stage(256, 128, 4, stride=2)
        self.layer3 = make_stage(512, 256, 6, stride=2)
        c4_size = INPUT_SIZE // 16  # 14 at 224 input
        self.layer4 = nn.Sequential(
            BottleneckTransformer(1024, 512, c4_size, stride=2, heads=heads),
            BottleneckTransformer(2048, 512, c4_size // 2, heads=heads),
            BottleneckTransformer(2048, 512, c4_size // 2, heads=heads),
        )
        self.head = RegressionHead(2048, num_outputs)
        init_resnet_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(self.input(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.head(x)
