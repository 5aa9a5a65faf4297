"""LDSE-NET: a lightweight densely connected network with squeeze-excitation for defocus regression.

Architecture (Liu et al., "LDSE-NET", Front. Neurosci. 2023; section 3.2, figures 6-9):

    input N x 3 x 224 x 224, RGB in [0, 1]
    -> exposure normalisation (each patch scaled to the training data's mean brightness; choice 8)
    -> per-channel normalisation (buffers ``mean``/``std``, saved with the weights and in ONNX)
    -> Conv 7x7, stride 2, padding 3 -> BN -> ReLU -> MaxPool 3x3, stride 2     (56 x 56)
    -> [DenseBlock -> Transition] x (len(block_config) - 1) -> DenseBlock          (7 x 7 by default)
    -> BN -> Tanh -> Squeeze-Excitation (Tanh gate)
    -> global average pooling -> Linear(C, 1)  => (N,) signed defocus in um

Dense layer (DenseNet-BC style, "BN, activation, conv" twice): BN -> ReLU -> Conv 1x1
(``bn_size * growth_rate`` channels) -> BN -> Tanh -> Conv 3x3 (``growth_rate`` channels); its
output is concatenated to its input. Transition: BN -> Tanh -> Conv 1x1 (``compression`` x channels)
-> AvgPool 2x2 stride 2 (exactly as the paper's figure 8).

Where the paper is ambiguous and what this module chooses:

1. **Which activations are Tanh** ("some of the activation functions are replaced with Tanh"): the
   activation before each dense layer's 3x3 convolution, the transitions' activation (stated in the
   paper) and the activation before the SE module are Tanh; the bottleneck activations and the stem
   keep ReLU (DenseNet's). Tanh keeps signed responses, which matters for a *signed* regression
   (contrast reversal through focus carries the sign of defocus).
2. **Number of dense blocks and layers per block** ("fewer layers than DenseNet"): four blocks,
   so that the final map is 7 x 7 as in the paper's "7 x 7 global average pooling"; two layers per
   block by default (DenseNet-121 has 6/12/24/16). The default (growth rate 8, stem width 16, about
   17k parameters, a ~110 KB checkpoint) was chosen by a measured sweep on synthetic data: see
   docs/models.md.
3. **Bottleneck**: the paper draws one "BN, activation, conv" composite per layer; we use the
   DenseNet-BC bottleneck (``bn_size``; ``bn_size=0`` gives the single 3x3 composite).
4. **SE gate**: the paper replaces SE's sigmoid by Tanh but multiplies features by the gate, and a
   plain tanh gate lies in (-1, 1): it can zero (or flip) channels, and at initialisation (gate near
   0) it would wipe the features and the gradient with them. We use ``gate = 1 + tanh(.)`` in (0, 2):
   identity at initialisation (residual-style recalibration), still Tanh-shaped, never flips a sign.
   SE reduction ratio: 4 (channels are few; the usual 16 would leave one or two hidden units).
5. **Regression head**: global average pooling then a single Linear to one output (the paper's
   "fully connected + regression layer"); no hidden FC layer, which keeps the model at KB size.
6. **Normalisation**: the paper does not say; we use per-channel mean/std buffers (defaults 0.5 /
   0.25, set from the training data by the trainer) so a checkpoint or ONNX file is self-contained.
7. **Output scale**: the network regresses defocus in um directly, but the last Linear's output is
   multiplied by a fixed ``output_scale_um`` (default 5, about the spread of |z| <= 10 um targets), so
   that unit-sized weights already span the target range; with Adam at lr 1e-3 an unscaled head needs
   hundreds of steps just to grow to +-10 um. The factor is a constant, not a learned parameter.
8. **Exposure normalisation** (not in the paper): each patch is first scaled so that its mean
   brightness equals the training data's (``exposure_norm``, on by default). Defocus lives in
   *relative* contrast (a phase object turns darker or brighter than its background), while
   exposure, lamp power and camera gain differ between slides and microscopes. Measured: on synthetic
   cells whose exposure varies from slide to slide, LDSE-NET without it stayed at chance for the sign
   (50 % after 400 steps of 32 patches, loss at the label variance); with it, 96 % of held-out
   patches had the right sign after the same 400 steps.
9. **Patch stem** (not in the paper; ``stem_patch``, default 0 = the paper's stem): ``stem_patch=k``
   replaces the 7x7 stride-2 convolution and the max pool by one k x k convolution of stride k
   (a "patchify" stem) -> BN -> ReLU, so the map after the stem is 224 / k across. The paper's stem
   makes a 112 x 112 map per channel before pooling it, and on two CPU cores that map and the
   layers at 56 x 56 cost most of a tile's time. Timed on 80 tiles with ONNX Runtime (2 threads,
   untrained weights): the default 84 ms, ``stem_patch=4`` (56 x 56, as the default) 62 ms,
   ``stem_patch=8`` with ``stem_channels=32`` and ``block_config=(2, 2, 2)`` (28 x 28 -> 7 x 7)
   38 ms. The bundled weights use the paper's stem; the patch stems are for training a faster
   model (``docs/models.md``). A patch stem has no padding, so the input normalisation folds into
   it exactly (``_patch_stem``): its convolution reads the [0, 1] input with ``1 / std`` in the
   weights and the exposure scale multiplies its k^2 times smaller output. For the 8 x 8 stem that
   saved 5 ms of 40 on 80 tiles (ONNX Runtime, 2 threads). The paper's padded 7x7 stem cannot fold
   it: the zero padding belongs to the normalised input.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.errors import ModelInputError

DEFAULT_BLOCK_CONFIG: tuple[int, ...] = (2, 2, 2, 2)
INPUT_SIZE: int = 224


def check_model_input(x: object, size: int = INPUT_SIZE) -> None:
    """Raise ModelInputError unless ``x`` is a float32 tensor of shape (N, 3, size, size), N >= 1.

    Shared by every model in the registry so that callers get the same clear message.
    """
    if not isinstance(x, Tensor):
        raise ModelInputError(f"model input must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype != torch.float32:
        raise ModelInputError(
            f"model input must be float32 RGB in [0, 1], got dtype {x.dtype} "
            "(convert uint8 images with x.float() / 255)"
        )
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != size or x.shape[3] != size:
        raise ModelInputError(f"model input must have shape (N, 3, {size}, {size}), got {tuple(x.shape)}")


class DenseLayer(nn.Module):
    """One dense layer: [BN-ReLU-Conv1x1] -> BN-Tanh-Conv3x3, output concatenated to the input."""

    def __init__(self, in_channels: int, growth_rate: int, bn_size: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        mid = in_channels
        if bn_size > 0:
            mid = bn_size * growth_rate
            layers += [
                nn.BatchNorm2d(in_channels),
                nn.ReLU(inplace=True),
                nn.Conv2d(in_channels, mid, kernel_size=1, bias=False),
            ]
        layers += [
            nn.BatchNorm2d(mid),
            nn.Tanh(),
            nn.Conv2d(mid, growth_rate, kernel_size=3, padding=1, bias=False),
        ]
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.body(x)], dim=1)


class DenseBlock(nn.Sequential):
    """``num_layers`` dense layers; output channels = in + num_layers * growth_rate."""

    def __init__(self, num_layers: int, in_channels: int, growth_rate: int, bn_size: int) -> None:
        super().__init__(*[DenseLayer(in_channels + i * growth_rate, growth_rate, bn_size) for i in range(num_layers)])


class Transition(nn.Sequential):
    """BN -> Tanh -> Conv 1x1 -> AvgPool 2x2 (paper, figure 8): halves the map, compresses channels."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.BatchNorm2d(in_channels),
            nn.Tanh(),
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            nn.AvgPool2d(kernel_size=2, stride=2),
        )


class TanhSqueezeExcite(nn.Module):
    """Squeeze-excitation with a Tanh gate: x * (1 + tanh(W2 relu(W1 gap(x)))) (see choice 4 above)."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        s = self.fc2(self.act(self.fc1(s)))
        return x * (1.0 + torch.tanh(s))


class LDSENet(nn.Module):
    """LDSE-NET defocus regressor: (N, 3, 224, 224) float32 RGB in [0, 1] -> (N,) defocus in um.

    Args:
        growth_rate: channels each dense layer adds.
        block_config: dense layers per block; one transition between consecutive blocks.
        stem_channels: output channels of the 7x7 stem convolution.
        bn_size: bottleneck width multiplier (``bn_size * growth_rate``); 0 disables the bottleneck.
        compression: transition output channels = floor(compression * input channels), in (0, 1].
        se_reduction: SE hidden units = channels // se_reduction.
        output_scale_um: constant factor on the head's output (see choice 7 above).
        mean, std: per-channel input normalisation (RGB), stored as buffers.
        exposure_norm: scale each patch to the mean brightness ``sum(mean) / 3`` first (choice 8).
        stem_patch: 0 for the paper's stem (7x7 stride-2 conv, BN, ReLU, 3x3 stride-2 max pool);
            k > 0 for a k x k stride-k patch convolution, BN, ReLU (choice 9); k must divide 224.
    """

    def __init__(
        self,
        growth_rate: int = 8,
        block_config: tuple[int, ...] | list[int] = DEFAULT_BLOCK_CONFIG,
        stem_channels: int = 16,
        bn_size: int = 2,
        compression: float = 0.5,
        se_reduction: int = 4,
        output_scale_um: float = 5.0,
        mean: tuple[float, float, float] | list[float] = (0.5, 0.5, 0.5),
        std: tuple[float, float, float] | list[float] = (0.25, 0.25, 0.25),
        exposure_norm: bool = True,
        stem_patch: int = 0,
    ) -> None:
        super().__init__()
        _check_positive_int("growth_rate", growth_rate)
        _check_positive_int("stem_channels", stem_channels)
        _check_positive_int("se_reduction", se_reduction)
        if not isinstance(bn_size, int) or bn_size < 0:
            raise ValueError(f"bn_size must be an int >= 0 (0 = no bottleneck), got {bn_size!r}")
        if not block_config or any(not isinstance(n, int) or n < 1 for n in block_config):
            raise ValueError(f"block_config must be a non-empty sequence of ints >= 1, got {block_config!r}")
        if not (isinstance(output_scale_um, int | float) and 0.0 < output_scale_um < 1e6):
            raise ValueError(f"output_scale_um must be a positive number, got {output_scale_um!r}")
        if not 0.0 < float(compression) <= 1.0:
            raise ValueError(f"compression must be in (0, 1], got {compression!r}")
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ValueError(f"mean and std need 3 values (RGB), std > 0; got mean={mean!r}, std={std!r}")

        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, 3, 1, 1))
        if not isinstance(exposure_norm, bool):
            raise ValueError(f"exposure_norm must be True or False, got {exposure_norm!r}")
        self.exposure_norm = exposure_norm
        # target brightness of choice 8; derived from ``mean`` (in the config), so not saved twice
        self.register_buffer("exposure_level", torch.tensor(sum(float(m) for m in mean) / 3.0), persistent=False)

        if isinstance(stem_patch, bool) or not isinstance(stem_patch, int) or stem_patch < 0:
            raise ValueError(f"stem_patch must be 0 (the paper's stem) or a patch size >= 1, got {stem_patch!r}")
        if stem_patch and INPUT_SIZE % stem_patch:
            raise ValueError(f"stem_patch must divide the {INPUT_SIZE}-pixel input, got {stem_patch}")
        self.stem_patch = stem_patch
        if stem_patch == 0:
            self.stem = nn.Sequential(
                nn.Conv2d(3, stem_channels, kernel_size=7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(stem_channels),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(3, stem_channels, kernel_size=stem_patch, stride=stem_patch, bias=False),
                nn.BatchNorm2d(stem_channels),
                nn.ReLU(inplace=True),
            )
        stages: list[nn.Module] = []
        channels = stem_channels
        for i, num_layers in enumerate(block_config):
            stages.append(DenseBlock(num_layers, channels, growth_rate, bn_size))
            channels += num_layers * growth_rate
            if i < len(block_config) - 1:
                out = max(1, int(channels * compression))
                stages.append(Transition(channels, out))
                channels = out
        self.features = nn.Sequential(*stages)
        self.final = nn.Sequential(nn.BatchNorm2d(channels), nn.Tanh())
        self.se = TanhSqueezeExcite(channels, se_reduction)
        self.head = nn.Linear(channels, 1)
        self.output_scale_um = float(output_scale_um)
        self.num_features = channels
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
        # the SE gate starts as identity (1 + tanh(0) = 1)
        nn.init.zeros_(self.se.fc2.weight)
        nn.init.zeros_(self.se.fc2.bias)

    def forward(self, x: Tensor) -> Tensor:
        check_model_input(x)
        if self.stem_patch:
            x = self._patch_stem(x)
        else:
            # Exposure and per-channel normalisation folded into one scale and one shift, computed
            # on N x 3 numbers: two passes over the input instead of three (measured: 5 % of inference).
            scale = 1.0 / self.std
            if self.exposure_norm:
                scale = scale * self._exposure_scale(x)
            x = self.stem(x * scale - self.mean / self.std)
        x = self.features(x)
        x = self.se(self.final(x))
        x = x.mean(dim=(2, 3))
        return self.head(x).squeeze(1) * self.output_scale_um

    def _exposure_scale(self, x: Tensor) -> Tensor:
        """(N, 1, 1, 1): the factor that brings each patch's mean brightness to ``exposure_level``."""
        return self.exposure_level / x.mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)

    def _patch_stem(self, x: Tensor) -> Tensor:
        """The patch stem applied to the normalised input without making that tensor (choice 9).

        A k x k stride-k convolution has no padding, so over every window it is linear in its
        input: ``conv(x * s / std - mean / std) = s * conv'(x) - shift``, where ``conv'`` has the
        ``1 / std`` folded into its weights, ``s`` (the patch's exposure scale) multiplies the k^2
        times smaller output, and ``shift`` is the convolution of the constant ``mean / std``. The
        same numbers to float rounding (tested), without two full passes over the input.
        """
        conv, norm, act = self.stem
        weight = conv.weight / self.std
        shift = (conv.weight * (self.mean / self.std)).sum(dim=(1, 2, 3)).view(1, -1, 1, 1)
        y = nn.functional.conv2d(x, weight, stride=self.stem_patch)
        if self.exposure_norm:
            y = y * self._exposure_scale(x)
        return act(norm(y - shift))


def _check_positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
