"""ResNet-50 (He et al. 2016) as a defocus regressor: the paper's heavyweight baseline.

The architecture is torchvision's ``resnet50`` (ResNet v1.5: the stride sits on the 3x3 convolution
of each stage's first bottleneck), written here because torchvision is not a dependency. With
``num_outputs=1000`` the model has exactly the published 25,557,032 parameters (the test checks it);
the default ``num_outputs=1`` is the regression head: forward returns (N,) defocus in um.
Input: (N, 3, 224, 224) float32 RGB in [0, 1], normalised inside by ``mean``/``std`` buffers
(ImageNet statistics by default).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.ldsenet import check_model_input

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
RESNET50_LAYERS: tuple[int, int, int, int] = (3, 4, 6, 3)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (stride) -> 1x1 expand (x4), with an identity or projection shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
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
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def projection_shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """1x1 convolution + BN that matches the residual branch's channels and stride."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


def resnet_stem() -> nn.Sequential:
    """7x7/2 convolution (64) -> BN -> ReLU -> 3x3/2 max pool: 224 -> 56."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
    )


def make_stage(in_channels: int, width: int, blocks: int, stride: int) -> nn.Sequential:
    """``blocks`` bottlenecks; the first one strides and projects."""
    layers = [Bottleneck(in_channels, width, stride)]
    layers += [Bottleneck(width * Bottleneck.expansion, width) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class RegressionHead(nn.Module):
    """Global average pooling -> Linear; (N,) when there is one output, else (N, num_outputs)."""

    def __init__(self, in_features: int, num_outputs: int) -> None:
        super().__init__()
        if not isinstance(num_outputs, int) or num_outputs < 1:
            raise ValueError(f"num_outputs must be an int >= 1, got {num_outputs!r}")
        self.fc = nn.Linear(in_features, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        out = self.fc(x.mean(dim=(2, 3)))
        return out.squeeze(1) if out.shape[1] == 1 else out


class NormalizedInput(nn.Module):
    """Checks the input contract and applies per-channel normalisation held in buffers."""

    def __init__(self, mean: tuple[float, ...] | list[float], std: tuple[float, ...] | list[float]) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ValueError(f"mean and std need 3 values (RGB), std > 0; got mean={mean!r}, std={std!r}")
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        check_model_input(x)
        return (x - self.mean) / self.std


def init_resnet_weights(model: nn.Module) -> None:
    """He init for convolutions, BN to identity, zero-init the last BN of each residual branch."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in model.modules():
        if isinstance(m, Bottleneck):
            nn.init.zeros_(m.bn3.weight)


class ResNet50(nn.Module):
    """ResNet-50 regressor: (N, 3, 224, 224) float32 in [0, 1] -> (N,) defocus in um.

    Args:
        num_outputs: 1 for defocus regression; 1000 reproduces the ImageNet architecture.
        mean, std: per-channel input normalisation (RGB), stored as buffers.
    """

    def __init__(
        self,
        num_outputs: int = 1,
        mean: tuple[float, float, float] | list[float] = IMAGENET_MEAN,
        std: tuple[float, float, float] | list[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.input = NormalizedInput(mean, std)
        self.stem = resnet_stem()
        channels = 64
        stages = []
        for i, (width, blocks) in enumerate(zip((64, 128, 256, 512), RESNET50_LAYERS, strict=True)):
            stages.append(make_stage(channels, width, blocks, stride=1 if i == 0 else 2))
            channels = width * Bottleneck.expansion
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.head = RegressionHead(channels, num_outputs)
        init_resnet_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(self.input(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.head(x)
