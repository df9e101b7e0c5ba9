"""Building the models and feature extractor of a run, from a config or from a checkpoint.

A checkpoint written by `mama train` records what built it under 'model' (width, label
channels, providers, frame size). A reference-code checkpoint has only 'net_g' (and 'net_a',
'net_d'): its sizes are read off the weights and its providers are the paper's.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from mama.errors import MamaError
from mama.models.checkpoint import build_destroyer_from_state_dict, build_generator_from_state_dict
from mama.models.discriminator import PatchDiscriminator
from mama.models.generator import F2LMGenerator
from mama.models.providers import FeatureExtractor, build_label_provider, build_motion_provider

CLIP_INPUT_FRAMES = 4


def build_extractor(motion: str, labels: str, device, motion_weights=None, label_weights=None) -> FeatureExtractor:
    return FeatureExtractor(
        build_motion_provider(motion, device=device, weights=motion_weights),
        build_label_provider(labels, device=device, weights=label_weights),
    )


def disc_widths(base: int) -> tuple[int, ...]:
    return tuple(w * base // 64 for w in (128, 256, 512, 512))


def build_stage_models(cfg, extractor: FeatureExtractor, with_discriminator: bool):
    """A fresh generator (+ discriminator) sized for the extractor's label channels."""
    label_channels = CLIP_INPUT_FRAMES * (extractor.labels.channels if extractor.labels is not None else 0)
    net_g = F2LMGenerator(label_channels=label_channels, base=cfg.base)
    # The discriminator's widths scale with the generator's (paper: base 64 -> 128-256-512-512).
    net_d = PatchDiscriminator(widths=disc_widths(cfg.base)) if with_discriminator else None
    meta = {"base": cfg.base, "label_channels": label_channels, "motion": cfg.motion,
            "labels": cfg.labels, "size": cfg.size, "dataset": cfg.dataset}
    return net_g, net_d, meta


def build_models_from_checkpoint(payload: dict, path: str | Path, need_destroyer: bool) -> tuple[nn.Module, nn.Module | None, dict]:
    """(generator, destroyer or None, meta) from a mama or reference-code checkpoint payload."""
    net_g = build_generator_from_state_dict(payload["net_g"], str(path))
    net_a = build_destroyer_from_state_dict(payload["net_a"], str(path)) if "net_a" in payload else None
    if need_destroyer and net_a is None:
        raise MamaError(f"{path} holds no destroyer ('net_a'); give a destroyer-stage checkpoint (train with --stage destroyer)")
    meta = dict(payload.get("model") or {})
    if not meta:  # a reference-code checkpoint: the paper's providers and frame size
        labels = "deeplabv3" if net_g.label_channels == CLIP_INPUT_FRAMES * 21 else (
            "foreground" if net_g.label_channels == CLIP_INPUT_FRAMES else "none")
        meta = {"base": net_g.base, "label_channels": net_g.label_channels, "motion": "flownet2sd",
                "labels": labels, "size": 256}
    return net_g, net_a, meta
