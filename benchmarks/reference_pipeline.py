"""The paper code's ALGORITHM in plain PyTorch on mama's models: the end-to-end baseline.

Same models, same weights, same inputs as mama's pipeline, but computed the way the
reference code computes them (docs/design.md):
  * every clip's inputs are rebuilt per sample in a Python loop: 4 label passes and 3 flow
    passes per clip, nothing shared between overlapping clips;
  * in training FlowNet's parameters require grad, so a graph is recorded through it and
    the generator's backward runs on into FlowNet; each step runs under
    torch.autograd.set_detect_anomaly(True);
  * the bottleneck sim terms and the destroyer loss are the plain-PyTorch references
    (mama.reference.bottleneck_sim, mama.reference.patch_destroy_loss_loop: one SSIM per
    sample and 32x32 patch), so nothing here uses mama's custom kernels;
  * generator step in the reference order: both losses from the current state, then the
    generator's backward and step, then the discriminator's;
  * evaluation scores a video clip by clip, one frame at a time; eager mode, float32.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from mama import reference
from mama.features.clips import CLIP_LEN, INPUT_FRAMES
from mama.features.extractor import FeatureExtractor
from mama.features.labels import DeepLabLabels
from mama.features.motion import FlowNetFlow, flownet2sd_reference_flow
from mama.models.scores import TRIPLET_MARGIN, frame_sse
from mama.train import losses

MARGIN = TRIPLET_MARGIN
ADV_WEIGHT = 0.05
BACKGROUND_VALUE = -1.0  # the destroyer's background: a black image


class ReferencePipeline:
    """The baseline around an extractor's providers (flow scale and label channels as ours)."""

    def __init__(self, extractor: FeatureExtractor):
        self.motion = extractor.motion
        self.labels = extractor.labels
        self.flow_scale = extractor.flow_scale
        self.flownet = self.motion.net if isinstance(self.motion, FlowNetFlow) else None
        if self.flownet is not None and not self.motion.lowres:
            raise ValueError("the reference pipeline follows the paper: FlowNet2-SD or a weight-free motion provider")

    # ------------------------------------------------------------------ inputs
    def pair_flow(self, prev: Tensor, nxt: Tensor) -> Tensor:
        """(1, 2, H, W) flow of one pair, scaled as the generator consumes it. With FlowNet2-SD
        it is the reference call (eval net on the pair x 255, / 255) under the caller's grad mode."""
        if self.flownet is not None:
            return flownet2sd_reference_flow(self.flownet, prev, nxt)
        return self.motion(prev, nxt) * self.flow_scale

    def frame_labels(self, frame: Tensor, background: Tensor | None) -> Tensor:
        """(1, C, H, W) labels of one frame (DeepLab: the full forward, raw 'out' logits)."""
        with torch.no_grad():
            if isinstance(self.labels, DeepLabLabels):
                return self.labels.model(frame)
            return self.labels(frame, background)

    def clip_inputs(self, clip: Tensor, background: Tensor | None = None):
        """One (5, 3, H, W) clip -> (frames, flows, labels, target), each with batch 1,
        computed from scratch: 3 flow passes and 4 label passes."""
        h, w = clip.shape[-2:]
        frames = [clip[i : i + 1] for i in range(CLIP_LEN)]
        flows = torch.cat([self.pair_flow(frames[i], frames[i + 1]) for i in range(INPUT_FRAMES - 1)], 1)
        labels = None
        if self.labels is not None:
            bg = None if background is None else background.reshape(1, 3, h, w)
            labels = torch.cat([self.frame_labels(frames[i], bg) for i in range(INPUT_FRAMES)], 1)
        return torch.cat(frames[:INPUT_FRAMES], 1), flows, labels, frames[-1]

    def batch_inputs(self, clips: Tensor, background: Tensor | None = None):
        """(B, 5, 3, H, W) clips -> batched inputs, sample by sample (the reference's loop)."""
        per_sample = [self.clip_inputs(clips[i], None if background is None else background[i])
                      for i in range(clips.shape[0])]
        return tuple(None if parts[0] is None else torch.cat(parts) for parts in zip(*per_sample))

    # ------------------------------------------------------------------ training
    def generator_step(self, net_g: nn.Module, net_d: nn.Module, opt_g, opt_d, batch: dict) -> dict[str, float]:
        """One generator-stage step on `batch` (ClipDataset items collated)."""
        flownet_grad = self.flownet is not None
        if flownet_grad:  # the reference records a graph through FlowNet
            self.flownet.requires_grad_(True)
        try:
            with torch.autograd.set_detect_anomaly(True):
                net_g.train()
                net_d.train()
                x, flows, labels, target = self.batch_inputs(batch["clip"], batch.get("background"))
                out = net_g(x, flows, labels)
                pred = out.pred
                inte = losses.intensity_loss(pred, target)
                grad = losses.gradient_loss(pred, target)
                adv = losses.generator_adversarial_loss(net_d(pred))
                z4, x_z = (out.z4, out.x_z) if out.z4 is not None else (out.y4, out.x_y)
                sim_m, sim_l = reference.bottleneck_sim(out.x4, out.y4, out.x_y, z4, x_z, MARGIN)
                sim = sim_m.mean() + (sim_l.mean() if out.z4 is not None else 0.0)
                g_loss = inte + grad + ADV_WEIGHT * adv + sim
                d_loss = losses.discriminator_loss(net_d(target), net_d(pred.detach()))
                opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
                opt_g.step()
                opt_d.zero_grad(set_to_none=True)  # drops what g_loss put into D
                d_loss.backward()
                opt_d.step()
        finally:
            if flownet_grad:
                self.flownet.requires_grad_(False)
                self.flownet.zero_grad(set_to_none=True)
        return {"loss/g_total": float(g_loss.detach()), "loss/intensity": float(inte.detach()), "loss/gradient": float(grad.detach()),
                "loss/adversarial": float(adv.detach()), "loss/sim_motion": float(sim_m.detach().mean()),
                "loss/sim_label": float(sim_l.detach().mean()) if out.z4 is not None else 0.0, "loss/d": float(d_loss.detach()),
                "train/psnr": float(losses.psnr(pred.detach(), target).mean())}

    def destroyer_step(self, net_g: nn.Module, net_a: nn.Module, opt_a, batch: dict, damage,
                       patch: int = 32, ld: float = 4.0) -> dict[str, float]:
        """One destroyer-stage step: the frozen generator's prediction of every clip (inputs
        rebuilt per sample), `damage(pred)`, the destroyer, the per-patch loop loss."""
        with torch.autograd.set_detect_anomaly(True):
            net_g.eval()
            net_a.train()
            with torch.no_grad():
                x, flows, labels, target = self.batch_inputs(batch["clip"], batch.get("background"))
                pred = net_g(x, flows, labels).pred
            damaged = damage(pred)
            out = net_a(damaged)
            bg = torch.full_like(pred, BACKGROUND_VALUE)
            # A = the clean prediction, N = the damaged one, as the reference calls its loss.
            loss = reference.patch_destroy_loss_loop(pred, damaged, target, out, bg, patch, ld)
            opt_a.zero_grad(set_to_none=True)
            loss.backward()
            opt_a.step()
        return {"loss/destroy": float(loss.detach())}

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def video_streams(self, net_g: nn.Module, frames, background=None, net_a: nn.Module | None = None) -> dict[str, np.ndarray]:
        """Streams of targets 4..T-1 of one video (T, 3, H, W), every clip on its own, batch 1."""
        frames = torch.as_tensor(frames, dtype=torch.float32)
        bg = None if background is None else torch.as_tensor(background, dtype=torch.float32)
        net_g.eval()
        if net_a is not None:
            net_a.eval()
        out: dict[str, list[float]] = {}
        for t in range(INPUT_FRAMES, frames.shape[0]):
            x, flows, labels, target = self.clip_inputs(frames[t - INPUT_FRAMES : t + 1], bg)
            g = net_g(x, flows, labels)
            row = {"sse": frame_sse(g.pred, target)}
            z4, x_z = (g.z4, g.x_z) if g.z4 is not None else (g.y4, g.x_y)
            sim_m, sim_l = reference.bottleneck_sim(g.x4, g.y4, g.x_y, z4, x_z, MARGIN)
            row["sim_motion"] = sim_m
            if g.z4 is not None:
                row["sim_label"] = sim_l
            if net_a is not None:
                row["destroyer_sse"] = frame_sse(net_a(g.pred), target)
            for k, v in row.items():
                out.setdefault(k, []).append(float(v))
        return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}
