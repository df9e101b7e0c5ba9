"""The FlowNet 2.0 family (Ilg et al., "FlowNet 2.0: Evolution of Optical Flow Estimation
with Deep Networks", CVPR 2017), laid out exactly as NVIDIA's flownet2-pytorch so its
published checkpoints load without renaming.

Building blocks (the batchNorm=False convention of the checkpoints: every conv has a bias
and is followed by LeakyReLU(0.1); `i_conv` and `predict_flow` have no activation):

    FlowNetC       two-stream encoder + correlation (cost volume, mama.ops.correlation)
    FlowNetS       one-stream encoder; 6 input channels standalone, 12 inside the stacks
    FlowNetSD      small-displacement net (stride-1 first conv, inter_conv before predict)
    FlowNetFusion  fuses the large- and small-displacement flows at full resolution

The bare networks take the normalised 6-channel pair and return (flow2, ..., flow6) in
training mode and (flow2,) in eval mode, as flownet2-pytorch does. The `FlowNet2*` models
take a raw pair (B, 3, 2, H, W) with values in [0, rgb_max], subtract the per-channel mean
over both frames and divide by rgb_max:

    FlowNet2C / FlowNet2S / FlowNet2SD  train: (flow2, ..., flow6); eval: x4 bilinear
                                        upsampling of flow2 * div_flow (B, 2, H, W)
    FlowNet2CS / FlowNet2CSS / FlowNet2 the stacked nets; the final flow in both modes

Between stages the second image is warped by the current flow and the per-pixel L2 norm of
the residual is fed on (FlowNet2's Resample2d + ChannelNorm, fused in mama.ops.warp_residual).
H and W must be multiples of 64 (six stride-2 levels).

`load_flownet` builds a model and loads a flownet2-pytorch checkpoint into it strictly. How
the F2LM reference code feeds FlowNet2-SD is the motion provider's (mama.features.motion);
where the files are found is mama.weights'.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mama import ops
from mama.errors import MamaError
from mama.models.checkpoint import read_file, state_dict_mismatch

DIV_FLOW = 20.0  # the nets predict flow / 20
RGB_MAX = 255.0  # input pixel range the checkpoints were trained with


# =============================== building blocks ===============================


def conv(in_planes: int, out_planes: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv (with bias, 'same' padding) + LeakyReLU(0.1); keys `<name>.0.weight/bias`."""
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size, stride, (kernel_size - 1) // 2, bias=True),
        nn.LeakyReLU(0.1, inplace=True),
    )


def i_conv(in_planes: int, out_planes: int) -> nn.Sequential:
    """3x3 conv without activation, wrapped in a Sequential for the `<name>.0.*` keys."""
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 3, 1, 1, bias=True))


def predict_flow(in_planes: int) -> nn.Conv2d:
    """3x3 conv to the 2 flow channels (x, y)."""
    return nn.Conv2d(in_planes, 2, 3, 1, 1, bias=True)


def deconv(in_planes: int, out_planes: int) -> nn.Sequential:
    """x2 transposed conv + LeakyReLU(0.1)."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_planes, out_planes, 4, 2, 1, bias=True),
        nn.LeakyReLU(0.1, inplace=True),
    )


def upsampled_flow(bias: bool) -> nn.ConvTranspose2d:
    """x2 learned upsampling of a flow (FlowNetS's has no bias, the others do)."""
    return nn.ConvTranspose2d(2, 2, 4, 2, 1, bias=bias)


def init_weights(module: nn.Module) -> None:
    """flownet2-pytorch's initialisation: Xavier-uniform weights, U(0, 1) biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.uniform_(m.bias)


def channel_norm(x: Tensor) -> Tensor:
    """FlowNet2's ChannelNorm: per-pixel L2 norm over channels, (B, 1, H, W)."""
    return torch.linalg.vector_norm(x, ord=2, dim=1, keepdim=True)


def upsample_flow(flow: Tensor, mode: str = "bilinear") -> Tensor:
    """x4 upsampling as nn.Upsample(scale_factor=4, mode): 'bilinear' (align_corners=False,
    today's nn.Upsample default) or 'nearest'."""
    if mode == "nearest":
        return F.interpolate(flow, scale_factor=4, mode="nearest")
    return F.interpolate(flow, scale_factor=4, mode="bilinear", align_corners=False)


def normalize_pair(inputs: Tensor, rgb_max: float) -> Tensor:
    """(B, 3, 2, H, W) raw pair -> (B, 6, H, W): minus the per-channel mean over both frames
    and all pixels, divided by rgb_max, frames concatenated along channels."""
    if inputs.dim() != 5 or inputs.shape[1] != 3 or inputs.shape[2] != 2:
        raise MamaError(
            f"FlowNet2 input has shape {tuple(inputs.shape)}; stack the two frames as "
            "(B, 3, 2, H, W), e.g. torch.stack((frame_a, frame_b), dim=2)"
        )
    height, width = inputs.shape[-2:]
    if height % 64 or width % 64:
        raise MamaError(
            f"FlowNet2 input is {height}x{width}; resize the frames so height and width are "
            "multiples of 64 (e.g. 256x256)"
        )
    mean = inputs.mean(dim=(2, 3, 4), keepdim=True)
    x = (inputs - mean) / rgb_max
    return torch.cat((x[:, :, 0], x[:, :, 1]), dim=1)


def _refine(net: nn.Module, features: list[Tensor], inter: bool) -> tuple[Tensor, ...]:
    """The coarse-to-fine decoder shared by FlowNetC/S/SD.

    `features` are the encoder outputs at strides 4, 8, 16, 32, 64 (conv2 .. conv6). At each
    level the flow is predicted (from an inter_conv of the concat for SD), upsampled x2 and
    concatenated with the deconvolved features and the next finer encoder output.
    Returns (flow2, flow3, flow4, flow5, flow6), finest first.
    """
    skips, top = features[:-1], features[-1]
    flow = net.predict_flow6(top)
    flows = [flow]
    concat = top
    for level in (5, 4, 3, 2):
        flow_up = getattr(net, f"upsampled_flow{level + 1}_to_{level}")(flow)
        deconvolved = getattr(net, f"deconv{level}")(concat)
        concat = torch.cat((skips[level - 2], deconvolved, flow_up), dim=1)
        head = getattr(net, f"inter_conv{level}")(concat) if inter else concat
        flow = getattr(net, f"predict_flow{level}")(head)
        flows.append(flow)
    return tuple(reversed(flows))


def _decoder(net: nn.Module, flow_channels: tuple[int, ...], upsample_bias: bool) -> None:
    """Add the deconv / predict_flow / upsampled_flow layers shared by FlowNetC/S/SD.

    flow_channels: input channels of predict_flow6 .. predict_flow2.
    """
    net.deconv5 = deconv(1024, 512)
    net.deconv4 = deconv(1026, 256)
    net.deconv3 = deconv(770, 128)
    net.deconv2 = deconv(386, 64)
    for level, channels in zip((6, 5, 4, 3, 2), flow_channels):
        setattr(net, f"predict_flow{level}", predict_flow(channels))
    for level in (6, 5, 4, 3):
        setattr(net, f"upsampled_flow{level}_to_{level - 1}", upsampled_flow(upsample_bias))


def _outputs(module: nn.Module, flows: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """All five scales in training mode (multiscale loss), only flow2 in eval mode."""
    return flows if module.training else flows[:1]


# =============================== the four networks ===============================


class FlowNetC(nn.Module):
    """FlowNetC: a shared 3-conv encoder on each image, their correlation at stride 8, then
    the FlowNetS trunk. Input: the normalised pair (B, 6, H, W)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = conv(3, 64, kernel_size=7, stride=2)
        self.conv2 = conv(64, 128, kernel_size=5, stride=2)
        self.conv3 = conv(128, 256, kernel_size=5, stride=2)
        self.conv_redir = conv(256, 32, kernel_size=1)
        self.conv3_1 = conv(473, 256)  # 32 redirected + 441 correlation channels
        self.conv4 = conv(256, 512, stride=2)
        self.conv4_1 = conv(512, 512)
        self.conv5 = conv(512, 512, stride=2)
        self.conv5_1 = conv(512, 512)
        self.conv6 = conv(512, 1024, stride=2)
        self.conv6_1 = conv(1024, 1024)
        _decoder(self, (1024, 1026, 770, 386, 194), upsample_bias=True)
        init_weights(self)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        conv2a = self.conv2(self.conv1(x[:, :3]))
        conv3a = self.conv3(conv2a)
        conv3b = self.conv3(self.conv2(self.conv1(x[:, 3:])))
        # 21x21 displacements (max 20 px at stride 2) with the LeakyReLU(0.1) fused in.
        corr = ops.correlation(
            conv3a,
            conv3b,
            pad=20,
            kernel_size=1,
            max_disp=20,
            stride1=1,
            stride2=2,
            negative_slope=0.1,
        )
        conv3 = self.conv3_1(torch.cat((self.conv_redir(conv3a), corr), dim=1))
        conv4 = self.conv4_1(self.conv4(conv3))
        conv5 = self.conv5_1(self.conv5(conv4))
        conv6 = self.conv6_1(self.conv6(conv5))
        return _outputs(self, _refine(self, [conv2a, conv3, conv4, conv5, conv6], inter=False))


class FlowNetS(nn.Module):
    """FlowNetS: one encoder on the stacked input (6 channels for a pair, 12 inside FlowNet2:
    pair, warped second image, flow / div_flow, residual norm)."""

    def __init__(self, input_channels: int = 12) -> None:
        super().__init__()
        self.conv1 = conv(input_channels, 64, kernel_size=7, stride=2)
        self.conv2 = conv(64, 128, kernel_size=5, stride=2)
        self.conv3 = conv(128, 256, kernel_size=5, stride=2)
        self.conv3_1 = conv(256, 256)
        self.conv4 = conv(256, 512, stride=2)
        self.conv4_1 = conv(512, 512)
        self.conv5 = conv(512, 512, stride=2)
        self.conv5_1 = conv(512, 512)
        self.conv6 = conv(512, 1024, stride=2)
        self.conv6_1 = conv(1024, 1024)
        _decoder(self, (1024, 1026, 770, 386, 194), upsample_bias=False)
        init_weights(self)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        conv2 = self.conv2(self.conv1(x))
        conv3 = self.conv3_1(self.conv3(conv2))
        conv4 = self.conv4_1(self.conv4(conv3))
        conv5 = self.conv5_1(self.conv5(conv4))
        conv6 = self.conv6_1(self.conv6(conv5))
        return _outputs(self, _refine(self, [conv2, conv3, conv4, conv5, conv6], inter=False))


class FlowNetSD(nn.Module):
    """FlowNet-SD: small displacements; 3x3 convs only, a stride-1 conv0, and an inter_conv
    before each flow prediction. Input: the normalised pair (B, 6, H, W)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = conv(6, 64)
        self.conv1 = conv(64, 64, stride=2)
        self.conv1_1 = conv(64, 128)
        self.conv2 = conv(128, 128, stride=2)
        self.conv2_1 = conv(128, 128)
        self.conv3 = conv(128, 256, stride=2)
        self.conv3_1 = conv(256, 256)
        self.conv4 = conv(256, 512, stride=2)
        self.conv4_1 = conv(512, 512)
        self.conv5 = conv(512, 512, stride=2)
        self.conv5_1 = conv(512, 512)
        self.conv6 = conv(512, 1024, stride=2)
        self.conv6_1 = conv(1024, 1024)
        _decoder(self, (1024, 512, 256, 128, 64), upsample_bias=True)
        self.inter_conv5 = i_conv(1026, 512)
        self.inter_conv4 = i_conv(770, 256)
        self.inter_conv3 = i_conv(386, 128)
        self.inter_conv2 = i_conv(194, 64)
        init_weights(self)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        conv1 = self.conv1_1(self.conv1(self.conv0(x)))
        conv2 = self.conv2_1(self.conv2(conv1))
        conv3 = self.conv3_1(self.conv3(conv2))
        conv4 = self.conv4_1(self.conv4(conv3))
        conv5 = self.conv5_1(self.conv5(conv4))
        conv6 = self.conv6_1(self.conv6(conv5))
        return _outputs(self, _refine(self, [conv2, conv3, conv4, conv5, conv6], inter=True))


class FlowNetFusion(nn.Module):
    """Fusion net: full-resolution flow from img0 (3), the SD and CSS flows (2 + 2), their
    norms (1 + 1) and the two warping residual norms (1 + 1) = 11 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = conv(11, 64)
        self.conv1 = conv(64, 64, stride=2)
        self.conv1_1 = conv(64, 128)
        self.conv2 = conv(128, 128, stride=2)
        self.conv2_1 = conv(128, 128)
        self.deconv1 = deconv(128, 32)
        self.deconv0 = deconv(162, 16)
        self.inter_conv1 = i_conv(162, 32)
        self.inter_conv0 = i_conv(82, 16)
        self.predict_flow2 = predict_flow(128)
        self.predict_flow1 = predict_flow(32)
        self.predict_flow0 = predict_flow(16)
        self.upsampled_flow2_to_1 = upsampled_flow(bias=True)
        self.upsampled_flow1_to_0 = upsampled_flow(bias=True)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        conv0 = self.conv0(x)
        conv1 = self.conv1_1(self.conv1(conv0))
        conv2 = self.conv2_1(self.conv2(conv1))
        flow2 = self.predict_flow2(conv2)
        concat1 = torch.cat((conv1, self.deconv1(conv2), self.upsampled_flow2_to_1(flow2)), dim=1)
        flow1 = self.predict_flow1(self.inter_conv1(concat1))
        concat0 = torch.cat((conv0, self.deconv0(concat1), self.upsampled_flow1_to_0(flow1)), dim=1)
        return self.predict_flow0(self.inter_conv0(concat0))


# =============================== the FlowNet2 models ===============================


class _SingleNet:
    """Mixin for FlowNet2C/S/SD: a raw pair in, the eval flow at full resolution out.

    The module itself is the bare network (its keys have no prefix in the checkpoints).
    """

    rgb_max: float
    div_flow: float

    def forward(self, inputs: Tensor) -> Tensor | tuple[Tensor, ...]:
        flows = super().forward(normalize_pair(inputs, self.rgb_max))
        if self.training:
            return flows
        return self.upsample_flow(flows[0] * self.div_flow)

    def forward_lowres(self, inputs: Tensor) -> Tensor:
        """flow2 * div_flow, (B, 2, H/4, W/4): the eval output before its x4 upsampling."""
        return super().forward(normalize_pair(inputs, self.rgb_max))[0] * self.div_flow

    @staticmethod
    def upsample_flow(flow: Tensor) -> Tensor:
        """The eval head's x4 bilinear upsampling (exact: forward = upsample(lowres))."""
        return upsample_flow(flow, "bilinear")


class FlowNet2C(_SingleNet, FlowNetC):
    """FlowNetC on a raw pair (B, 3, 2, H, W) in [0, rgb_max]."""

    def __init__(self, rgb_max: float = RGB_MAX, div_flow: float = DIV_FLOW) -> None:
        super().__init__()
        self.rgb_max, self.div_flow = rgb_max, div_flow


class FlowNet2S(_SingleNet, FlowNetS):
    """FlowNetS on a raw pair (B, 3, 2, H, W) in [0, rgb_max] (6 input channels)."""

    def __init__(self, rgb_max: float = RGB_MAX, div_flow: float = DIV_FLOW) -> None:
        super().__init__(input_channels=6)
        self.rgb_max, self.div_flow = rgb_max, div_flow


class FlowNet2SD(_SingleNet, FlowNetSD):
    """FlowNet-SD on a raw pair (B, 3, 2, H, W) in [0, rgb_max]."""

    def __init__(self, rgb_max: float = RGB_MAX, div_flow: float = DIV_FLOW) -> None:
        super().__init__()
        self.rgb_max, self.div_flow = rgb_max, div_flow


def _next_stage(net: FlowNetS, x: Tensor, flow: Tensor, div_flow: float) -> Tensor:
    """One stacked FlowNetS: warp img1 by the current flow, feed the pair, the warped image,
    the scaled flow and the residual norm; return its flow2 * div_flow (stride 4)."""
    warped, residual = ops.warp_residual(x[:, :3], x[:, 3:], flow)
    stacked = torch.cat((x, warped, flow / div_flow, residual), dim=1)
    return net(stacked)[0] * div_flow


class FlowNet2CS(nn.Module):
    """FlowNetC then one FlowNetS refinement; the final flow (bilinear x4) in both modes."""

    def __init__(self, rgb_max: float = RGB_MAX, div_flow: float = DIV_FLOW) -> None:
        super().__init__()
        self.rgb_max, self.div_flow = rgb_max, div_flow
        self.flownetc = FlowNetC()
        self.flownets_1 = FlowNetS(input_channels=12)

    def _cs(self, x: Tensor) -> Tensor:
        flow_c = upsample_flow(self.flownetc(x)[0] * self.div_flow, "bilinear")
        return upsample_flow(_next_stage(self.flownets_1, x, flow_c, self.div_flow), "bilinear")

    def forward(self, inputs: Tensor) -> Tensor:
        return self._cs(normalize_pair(inputs, self.rgb_max))


class FlowNet2CSS(FlowNet2CS):
    """FlowNet2-CS plus a second FlowNetS; its flow is upsampled with nearest (as published)."""

    def __init__(self, rgb_max: float = RGB_MAX, div_flow: float = DIV_FLOW) -> None:
        super().__init__(rgb_max, div_flow)
        self.flownets_2 = FlowNetS(input_channels=12)

    def _css(self, x: Tensor) -> Tensor:
        return upsample_flow(_next_stage(self.flownets_2, x, self._cs(x), self.div_flow), "nearest")

    def forward(self, inputs: Tensor) -> Tensor:
        return self._css(normalize_pair(inputs, self.rgb_max))


class FlowNet2(FlowNet2CSS):
    """The full FlowNet 2.0: CSS for large displacements, SD for small ones, Fusion."""

    def __init__(self, rgb_max: float = RGB_MAX, div_flow: float = DIV_FLOW) -> None:
        super().__init__(rgb_max, div_flow)
        self.flownets_d = FlowNetSD()
        self.flownetfusion = FlowNetFusion()

    def forward(self, inputs: Tensor) -> Tensor:
        x = normalize_pair(inputs, self.rgb_max)
        img0, img1 = x[:, :3], x[:, 3:]
        flow_css = self._css(x)
        # The published model divides SD's flow by div_flow here (where the other stages
        # multiply); the fusion weights were converted with exactly this, so keep it.
        flow_sd = upsample_flow(self.flownets_d(x)[0] / self.div_flow, "nearest")
        _, residual_css = ops.warp_residual(img0, img1, flow_css)
        _, residual_sd = ops.warp_residual(img0, img1, flow_sd)
        fused = torch.cat(
            (
                img0,
                flow_sd,
                flow_css,
                channel_norm(flow_sd),
                channel_norm(flow_css),
                residual_sd,
                residual_css,
            ),
            dim=1,
        )
        return self.flownetfusion(fused)


# =============================== loading checkpoints ===============================

MODELS: dict[str, type[nn.Module]] = {
    "FlowNetC": FlowNetC,
    "FlowNetS": FlowNetS,
    "FlowNetSD": FlowNetSD,
    "FlowNetFusion": FlowNetFusion,
    "FlowNet2C": FlowNet2C,
    "FlowNet2S": FlowNet2S,
    "FlowNet2SD": FlowNet2SD,
    "FlowNet2CS": FlowNet2CS,
    "FlowNet2CSS": FlowNet2CSS,
    "FlowNet2": FlowNet2,
}

def model_name(name: str) -> str:
    """Canonical model name: 'flownet2sd', 'FlowNet2-SD' and 'FlowNet2SD' all give 'FlowNet2SD'."""
    key = name.replace("-", "").replace("_", "").lower()
    for canonical in MODELS:
        if canonical.lower() == key:
            return canonical
    raise MamaError(f"unknown FlowNet model {name!r}; use one of {', '.join(MODELS)}")


def check_state_dict(model: nn.Module, state: dict[str, Tensor], path: Path, name: str) -> None:
    """Raise MamaError naming `path` unless `state` has exactly the model's keys and shapes."""
    mismatch = state_dict_mismatch(model, state)
    if mismatch:
        raise MamaError(
            f"{path}: not a {name} checkpoint ({mismatch}); pass the flownet2-pytorch "
            f"checkpoint made for {name} (`mama weights` lists the files)"
        )


def load_flownet(
    name: str,
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    frozen: bool = True,
) -> nn.Module:
    """Build model `name` (see MODELS; case and '-' ignored) and load the checkpoint at `path`
    (mama.models.checkpoint.read_file, kind "flownet") strictly.

    Returns the model on `device` in eval mode; with `frozen` its parameters do not require
    grad (no graph is recorded through the flow net when it only provides inputs).
    """
    name = model_name(name)
    path = Path(path).expanduser()
    state = read_file(path, "flownet")
    with torch.device("meta"):  # no random init of weights that are overwritten anyway
        model = MODELS[name]()
    check_state_dict(model, state, path, name)
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    model.load_state_dict({k: v.to(dtypes[k]) for k, v in state.items()}, strict=True, assign=True)
    model.to(device).eval()
    if frozen:
        model.requires_grad_(False)
    return model
