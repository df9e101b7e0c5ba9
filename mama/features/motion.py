"""Motion providers: `provider(prev, nxt) -> (N, 2, H, W)` flow from `prev` to `nxt` in pixels,
channel 0 = x, 1 = y.

    flownet2sd, flownet2   the FlowNet2 family (weights needed, mama.models.flownet2), fed as
                           the F2LM reference code feeds FlowNet2-SD (below)
    dis, farneback         OpenCV, weight-free, on the CPU on grayscale uint8 frames

The reference code's FlowNet2-SD convention (docs/design.md): the [-1, 1] BGR pair times 255 goes
in, and the flow that comes out is divided by 255 before the generator reads it. The
division is the extractor's `flow_scale` (mama.features.extractor), applied in one place.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import torch
from torch import nn

from mama.features.base import MotionProvider
from mama.models import flownet2

REFERENCE_SCALE = 255.0  # [-1, 1] frames times 255 in, flow divided by 255 out


def reference_pair(frame_a: torch.Tensor, frame_b: torch.Tensor) -> torch.Tensor:
    """Two (B, 3, H, W) frames in [-1, 1] (BGR as read) -> the net input (B, 3, 2, H, W) in
    [-255, 255], as the reference code feeds FlowNet2-SD."""
    return torch.stack((frame_a, frame_b), dim=2) * REFERENCE_SCALE


def flownet2sd_reference_lowres(model: flownet2.FlowNet2SD, frame_a: torch.Tensor, frame_b: torch.Tensor) -> torch.Tensor:
    """The exact cache point (docs/design.md): flow2 * div_flow, (B, 2, H/4, W/4), unscaled."""
    return model.forward_lowres(reference_pair(frame_a, frame_b))


def flownet2sd_reference_flow_from_lowres(lowres: torch.Tensor) -> torch.Tensor:
    """Finish a cached low-resolution flow: x4 bilinear, then / 255 as the reference does."""
    return flownet2.FlowNet2SD.upsample_flow(lowres) / REFERENCE_SCALE


def flownet2sd_reference_flow(model: flownet2.FlowNet2SD, frame_a: torch.Tensor, frame_b: torch.Tensor) -> torch.Tensor:
    """The flow the F2LM reference code uses for a pair: model.eval()(pair * 255) / 255,
    (B, 2, H, W), whatever the module's train/eval flag, under the caller's grad mode."""
    return flownet2sd_reference_flow_from_lowres(flownet2sd_reference_lowres(model, frame_a, frame_b))


# ---------------------------------------------------------------------------------------
# OpenCV (weight-free, CPU)
# ---------------------------------------------------------------------------------------
def to_gray_uint8(frames: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) BGR [-1, 1] -> (N, H, W) uint8 grayscale (ITU-R 601 luma, as cv2)."""
    bgr = (frames.detach().float().clamp(-1, 1) + 1) * 127.5
    luma = 0.114 * bgr[:, 0] + 0.587 * bgr[:, 1] + 0.299 * bgr[:, 2]
    return luma.round().to(torch.uint8).cpu().numpy()


class OpenCVFlow(MotionProvider):
    """Dense flow per frame pair with an OpenCV method, pairs spread over a thread pool
    (OpenCV releases the GIL, so threads run the pairs in parallel)."""

    def __init__(self, workers: int | None = None):
        self.workers = workers or min(8, os.cpu_count() or 1)
        self._local = threading.local()

    def pair_flow(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """(H, W) uint8 x2 -> (H, W, 2) float32 flow in pixels."""
        raise NotImplementedError

    def coarse(self, prev: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        a, b = to_gray_uint8(prev), to_gray_uint8(nxt)
        if len(a) > 1 and self.workers > 1:
            with ThreadPoolExecutor(min(self.workers, len(a))) as pool:
                flows = list(pool.map(self.pair_flow, a, b))
        else:
            flows = [self.pair_flow(x, y) for x, y in zip(a, b)]
        flow = torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).contiguous()
        return flow.to(prev.device)


class DISFlow(OpenCVFlow):
    """cv2.DISOpticalFlow (Kroeger et al. 2016), PRESET_MEDIUM by default."""

    name = "dis"

    def __init__(self, preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, workers: int | None = None):
        super().__init__(workers)
        self.preset = preset

    def pair_flow(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        dis = getattr(self._local, "dis", None)
        if dis is None:  # a DIS object keeps state between calls: one per thread
            dis = self._local.dis = cv2.DISOpticalFlow_create(self.preset)
        return dis.calc(prev, nxt, None)


class FarnebackFlow(OpenCVFlow):
    """cv2.calcOpticalFlowFarneback (polynomial expansion), a 3-level pyramid."""

    name = "farneback"

    def __init__(self, levels: int = 3, winsize: int = 15, iterations: int = 3, workers: int | None = None):
        super().__init__(workers)
        self.levels, self.winsize, self.iterations = levels, winsize, iterations

    def pair_flow(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        return cv2.calcOpticalFlowFarneback(prev, nxt, None, pyr_scale=0.5, levels=self.levels,
                                            winsize=self.winsize, iterations=self.iterations,
                                            poly_n=5, poly_sigma=1.1, flags=0)


# ---------------------------------------------------------------------------------------
# FlowNet2 (weights needed)
# ---------------------------------------------------------------------------------------
class FlowNetFlow(MotionProvider):
    """A FlowNet2-family network fed as the reference feeds FlowNet2-SD: the [-1, 1] pair
    times 255. FlowNet2-SD is cached before its x4 upsampling; full FlowNet2 (several stages,
    no single low-res output) at full size. Its output is flow in pixels times 255's worth of
    input range: the extractor's flow_scale (1/255) finishes it."""

    def __init__(self, name: str, net: nn.Module):
        self.name = name
        self.net = net
        self.lowres = name == "flownet2sd"

    @property
    def networks(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    @torch.no_grad()
    def coarse(self, prev: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        if self.lowres:
            return flownet2sd_reference_lowres(self.net, prev, nxt)
        return self.net(reference_pair(prev, nxt))

    def network_calls(self, size: int) -> dict[str, tuple[str, torch.Tensor]]:
        frame = torch.zeros(1, 3, size, size)
        return {"net": ("forward_lowres" if self.lowres else "forward", reference_pair(frame, frame))}

    def expand(self, coarse: torch.Tensor, size) -> torch.Tensor:
        return flownet2.upsample_flow(coarse, "bilinear") if self.lowres else coarse
