"""Inference copies of the networks: the same function, less arithmetic and memory traffic.

Scoring runs every network in eval mode with frozen weights, so three rewrites are exact up
to float rounding (tests/models/test_inference.py bounds the difference):

  * BatchNorm folded into the convolution before it (eval BN is an affine map per channel);
  * channels_last weights, so oneDNN runs its NHWC convolution kernels on CPU (and cuDNN its
    tensor-core ones on CUDA);
  * on CPU, the wide 3x3 convolutions computed with Winograd's F(4x4, 3x3) minimal
    filtering (mama::winograd_conv3x3): 36 multiplications per 4x4 output tile instead of 144,
    the rest being additions. oneDNN uses Winograd only on AVX-512 machines, so on AVX2 CPUs
    (like this project's) every convolution would otherwise run directly. Where the tile
    transforms cost more than they save (few channels) the direct convolution is kept: see
    `use_winograd`, whose thresholds come from benchmarks/bench_inference.py.

`prepare_for_inference(model)` returns such a copy and never touches `model` (training keeps
its BN layers and its memory format).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from mama import ops

# F(4x4, 3x3): 36 products per 16 outputs instead of 144 (4x fewer multiply-adds; float32
# error ~7e-6 of the output scale against ~2e-6 for the direct convolution). Below these
# widths the transforms' memory traffic outweighs the saving (measured on a 2-core AVX2 EPYC,
# benchmarks/bench_inference.py: 64 -> 64 channels at 128x128 gained nothing).
WINOGRAD_TILE = 4
WINOGRAD_MIN_IN_CHANNELS = 128
WINOGRAD_MIN_OUT_CHANNELS = 64


# Output tiles of t x t pixels (spaced d apart with dilation d) overhang small maps; where
# most of their pixels fall outside (DeepLab's ASPP: d = 12..36 on 16x16 maps, or maps of a
# few pixels) the direct convolution runs instead.
MIN_TILES_USED = 0.75


def tiles_used(h: int, w: int, dilation: int, tile: int = WINOGRAD_TILE) -> float:
    """Fraction of the Winograd tiles' output pixels that lie inside an h x w map."""
    d = dilation
    tiles = d * d * -(-(-(-h // d)) // tile) * -(-(-(-w // d)) // tile)
    return h * w / (tile * tile * tiles)


class WinogradConv2d(nn.Module):
    """A frozen 3x3, stride-1 convolution (zero padding == dilation) run by the
    mama::winograd_conv3x3 op on CPU float32, optionally with the ReLU that follows it fused.
    Anywhere else (CUDA, another dtype, gradients on) it runs F.conv2d."""

    def __init__(self, conv: nn.Conv2d, relu: bool = False):
        super().__init__()
        if not is_winograd_shape(conv):
            raise ValueError(f"WinogradConv2d needs a 3x3 stride-1 ungrouped conv with padding == dilation, got {conv}")
        self.dilation = conv.dilation[0]
        self.relu = relu
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        self.register_buffer("u", ops.winograd_filter(conv.weight, WINOGRAD_TILE), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
                and tiles_used(x.shape[-2], x.shape[-1], self.dilation) >= MIN_TILES_USED):
            return ops.winograd_conv3x3(x, self.u, self.bias, self.dilation, self.relu)
        y = F.conv2d(x, self.weight, self.bias, padding=self.dilation, dilation=self.dilation)
        return torch.relu(y) if self.relu else y

    def extra_repr(self) -> str:
        k, c = self.weight.shape[:2]
        return f"{c}, {k}, kernel_size=3, dilation={self.dilation}, bias={self.bias is not None}, relu={self.relu}"


def is_winograd_shape(conv: nn.Module) -> bool:
    """Whether `conv` is a 3x3, stride-1, ungrouped conv whose zero padding equals its dilation."""
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and conv.dilation[0] == conv.dilation[1]
        and conv.padding == conv.dilation
    )


def use_winograd(conv: nn.Module) -> bool:
    """Whether F(4x4, 3x3) pays for `conv` on CPU: a Winograd shape and wide enough."""
    return (
        is_winograd_shape(conv)
        and conv.out_channels >= WINOGRAD_MIN_OUT_CHANNELS
        and conv.in_channels >= WINOGRAD_MIN_IN_CHANNELS
    )


def _is_torchvision(module: nn.Module, *names: str) -> bool:
    return type(module).__name__ in names and type(module).__module__.startswith("torchvision.")


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every eval BatchNorm2d into the Conv2d that feeds it, in place; returns how many.

    Only pairs whose data flow is certain are folded: consecutive entries of an nn.Sequential
    (or of torchvision's IntermediateLayerGetter) and torchvision ResNet blocks' (convN, bnN).
    Folded BNs become nn.Identity.
    """
    folded = 0
    for module in model.modules():
        pairs: list[tuple[str, str]] = []
        if isinstance(module, nn.Sequential) or _is_torchvision(module, "IntermediateLayerGetter"):
            # Children run in registration order (IntermediateLayerGetter: ResNet's stem).
            names = [name for name, _ in module.named_children()]
            pairs = list(zip(names, names[1:]))
        elif _is_torchvision(module, "Bottleneck", "BasicBlock"):
            pairs = [(f"conv{i}", f"bn{i}") for i in (1, 2, 3) if hasattr(module, f"conv{i}")]
        for conv_name, bn_name in pairs:
            conv, bn = getattr(module, conv_name), getattr(module, bn_name)
            if type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats:
                setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
                folded += 1
    return folded


def swap_winograd(model: nn.Module) -> int:
    """Replace every convolution for which `use_winograd` holds by a WinogradConv2d, in place.
    Inside an nn.Sequential, a ReLU right after it (past folded-BN Identities) is fused."""
    swapped = 0
    for module in list(model.modules()):
        children = list(module.named_children())
        for pos, (name, child) in enumerate(children):
            if not use_winograd(child):
                continue
            relu_name = None
            if isinstance(module, nn.Sequential):
                following = children[pos + 1 :]
                while following and type(following[0][1]) is nn.Identity:
                    following.pop(0)
                if following and type(following[0][1]) is nn.ReLU:
                    relu_name = following[0][0]
            setattr(module, name, WinogradConv2d(child, relu=relu_name is not None))
            if relu_name is not None:
                setattr(module, relu_name, nn.Identity())
            swapped += 1
    return swapped


def copies_pay(device: torch.device | str) -> bool:
    """Whether scoring on `device` should run inference copies. Measured: on CPU they pay
    (evaluation 1.6-2x); on an H200 they were 9% slower in float32 and no faster in bf16
    (benchmarks/README.md), so CUDA runs the models as they are."""
    return torch.device(device).type == "cpu"


def prepare_for_inference(model: nn.Module, device: torch.device | str | None = None,
                          winograd: bool | None = None) -> nn.Module:
    """A frozen eval copy of `model` for scoring: BN folded, channels_last, and on CPU
    Winograd for the wide 3x3 convolutions (`winograd=None`: on CPU only). `model` is untouched;
    a model that already is such a copy is returned as it is."""
    if getattr(model, "is_inference_copy", False):
        return model
    param = next(model.parameters(), None)
    device = torch.device(device) if device is not None else (param.device if param is not None else torch.device("cpu"))
    prepared = copy.deepcopy(model).eval().requires_grad_(False)
    fold_batchnorm(prepared)
    if winograd if winograd is not None else device.type == "cpu":
        swap_winograd(prepared)
    prepared.is_inference_copy = True
    return prepared.to(device=device, memory_format=torch.channels_last)
