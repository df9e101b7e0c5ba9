"""F2LM generator: future-frame prediction from frames, flow and labels.

"Making Anomalies More Anomalous: Video Anomaly Detection using New Generator and
Destroyer", Hong, Ahn, Jo, Park, IEEE Access 2024 (docs/design.md).

From 4 past frames the generator predicts frame 5. Three U-Net encoders read the frames
(12 ch), the flow of the 3 frame pairs (6 ch) and the label maps of the 4 frames
(4 x 21 DeepLab logits = 84 ch, or 4 foreground maps, or none). At the bottleneck two
transforms map the frame feature x4 to a motion-like x_y and a label-like x_z; the
triplet losses pull them toward the real motion / label features y4 / z4. The decoder
reads cat[x4, x_y, x_z] (fused, SE-gated) with skips from the frame encoder only.

Module (state-dict) layout, the same as the reference code's 'net_g' (base b = 64 there):

    inc_x, down1_x, down2_x, down3_x      frame encoder    12 -> b, 2b, 4b, 8b
    inc_y, down1_y, down2_y, down3_y      flow encoder      6 -> b .. 8b
    inc_z, down1_z, down2_z, down3_z      label encoder    84 -> b .. 8b  (absent if no labels)
    transform_xtoy, transform_xtoz        DoubleConv 8b -> 8b
    fusion_conv                           DoubleConv 3*8b (2*8b without labels) -> 8b
    se                                    SqueezeExcite(8b, reduction 8)
    up1, up2, up3                         UpBlock 8b->4b, 4b->2b, 2b->b
    outc                                  Conv2d b -> 3, 3x3 (pad 1, bias), then tanh
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mama.config import INPUT_FRAMES  # frames the generator reads; it predicts the next one
from mama.models.layers import DoubleConv, SqueezeExcite, decoder_stages, encoder_stages

FRAME_CHANNELS = 3  # BGR


class GeneratorOutput(NamedTuple):
    """The prediction and the bottleneck features, each (B, 8b, H/8, W/8), unit-norm over channels."""

    pred: Tensor  # (B, 3, H, W) in [-1, 1]
    x4: Tensor  # frame feature
    y4: Tensor  # flow (motion) feature
    x_y: Tensor  # frame feature transformed toward motion
    z4: Tensor | None  # label feature; None without a label branch
    x_z: Tensor | None  # frame feature transformed toward labels; None without a label branch


class F2LMGenerator(nn.Module):
    """The F2LM generator (frames + flow + labels -> next frame and bottleneck features)."""

    def __init__(
        self,
        num_frames: int = INPUT_FRAMES,
        flow_channels: int = 6,
        label_channels: int = 84,
        out_channels: int = 3,
        base: int = 64,
    ) -> None:
        super().__init__()
        if num_frames < 1 or flow_channels < 1 or label_channels < 0 or out_channels < 1 or base < 1:
            raise ValueError(
                f"F2LMGenerator: bad sizes num_frames={num_frames} flow_channels={flow_channels} "
                f"label_channels={label_channels} out_channels={out_channels} base={base}"
            )
        self.num_frames = num_frames
        self.frame_channels = num_frames * FRAME_CHANNELS
        self.flow_channels = flow_channels
        self.label_channels = label_channels
        self.out_channels = out_channels
        self.base = base
        width = 8 * base  # bottleneck width

        # Registration order follows the reference, so state-dict key order matches too.
        self.inc_x, self.down1_x, self.down2_x, self.down3_x = encoder_stages(self.frame_channels, base)
        self.inc_y, self.down1_y, self.down2_y, self.down3_y = encoder_stages(flow_channels, base)
        if label_channels:
            self.inc_z, self.down1_z, self.down2_z, self.down3_z = encoder_stages(label_channels, base)
        self.transform_xtoy = DoubleConv(width, width)
        if label_channels:
            self.transform_xtoz = DoubleConv(width, width)
        num_fused = 3 if label_channels else 2
        self.fusion_conv = DoubleConv(num_fused * width, width)
        self.se = SqueezeExcite(width, reduction=8)
        self.up1, self.up2, self.up3 = decoder_stages(base)
        self.outc = nn.Conv2d(base, out_channels, 3, padding=1)

        self.apply(_init_weights)

    @property
    def has_labels(self) -> bool:
        return self.label_channels > 0

    def forward(self, frames: Tensor, flows: Tensor, labels: Tensor | None = None) -> GeneratorOutput:
        """frames (B, 3*num_frames, H, W), flows (B, flow_channels, H, W), labels (B, L, H, W) or None."""
        self._check_inputs(frames, flows, labels)
        x1 = self.inc_x(frames)
        x2 = self.down1_x(x1)
        x3 = self.down2_x(x2)
        x4 = self.down3_x(x3)

        y4 = self.down3_y(self.down2_y(self.down1_y(self.inc_y(flows))))
        x_y = self.transform_xtoy(x4)
        if self.has_labels:
            z4 = self.down3_z(self.down2_z(self.down1_z(self.inc_z(labels))))
            x_z = self.transform_xtoz(x4)
            fused = torch.cat([x4, x_y, x_z], dim=1)
        else:
            z4 = x_z = None
            fused = torch.cat([x4, x_y], dim=1)
        fused = self.se(self.fusion_conv(fused))

        x = self.up1(fused, x3)
        x = self.up2(x, x2)
        x = self.up3(x, x1)
        pred = torch.tanh(self.outc(x))

        def unit(t: Tensor | None) -> Tensor | None:
            return None if t is None else F.normalize(t, p=2, dim=1)

        return GeneratorOutput(pred, unit(x4), unit(y4), unit(x_y), unit(z4), unit(x_z))

    def _check_inputs(self, frames: Tensor, flows: Tensor, labels: Tensor | None) -> None:
        if frames.dim() != 4 or frames.shape[1] != self.frame_channels:
            raise ValueError(f"F2LMGenerator: frames must be (B, {self.frame_channels}, H, W), got {tuple(frames.shape)}")
        if flows.dim() != 4 or flows.shape[1] != self.flow_channels or flows.shape[-2:] != frames.shape[-2:]:
            raise ValueError(
                f"F2LMGenerator: flows must be (B, {self.flow_channels}, H, W) like the frames "
                f"{tuple(frames.shape)}, got {tuple(flows.shape)}"
            )
        if self.has_labels:
            if labels is None or labels.dim() != 4 or labels.shape[1] != self.label_channels or labels.shape[-2:] != frames.shape[-2:]:
                got = None if labels is None else tuple(labels.shape)
                raise ValueError(f"F2LMGenerator: labels must be (B, {self.label_channels}, H, W), got {got}")
        elif labels is not None:
            raise ValueError("F2LMGenerator: built with label_channels=0, so labels must be None")


def _init_weights(module: nn.Module) -> None:
    """The reference's generator init: trunc-normal(std 0.02) conv/linear weights, zero biases.

    As in the reference, transposed convs keep PyTorch's default init (they are not
    nn.Conv2d) and BatchNorm keeps weight 1, bias 0.
    """
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def checkpoint_filter_fn(state_dict: dict, model: F2LMGenerator | None = None) -> dict:
    """Turn a foreign checkpoint into this model's state dict.

    Recognised: a reference-code training checkpoint (a dict holding 'net_g', plus 'net_d',
    optimiser states, 'step', ...) -> its 'net_g'. The reference's module names are this
    model's, so no key is renamed; the caller loads the result strictly. (Files are read, and
    DataParallel's `module.` prefix stripped, by mama.models.checkpoint.read_file.)
    """
    return state_dict["net_g"] if "net_g" in state_dict else state_dict
