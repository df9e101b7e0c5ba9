"""The networks of a run, from its checkpoint, and the record of what built them.

A checkpoint written by `mama train` records what built it under 'model' (width, label
channels, providers, frame size). A reference-code checkpoint has only the networks: their
sizes are read off the weights; its providers and frame size are the paper's.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from mama.config import FRAME_SIZE
from mama.errors import MamaError
from mama.models.checkpoint import build_destroyer_from_state_dict, build_generator_from_state_dict
from mama.models.deeplab import NUM_CLASSES
from mama.models.generator import INPUT_FRAMES

REFERENCE_LABEL_CHANNELS = INPUT_FRAMES * NUM_CLASSES  # the paper's generator reads 4 x 21 DeepLab logits


def run_meta(payload: dict, source: str | Path) -> dict:
    """What built a run checkpoint's networks (`read_file(path, "run")`): base, label_channels,
    motion, labels, size. Read off the weights for a reference-code checkpoint."""
    meta = dict(payload.get("model") or {})
    if meta:
        return meta
    net_g = payload["net_g"]
    first, label = net_g.get("inc_x.conv.conv.0.weight"), net_g.get("inc_z.conv.conv.0.weight")
    channels = 0 if label is None else int(label.shape[1])
    if first is None or channels != REFERENCE_LABEL_CHANNELS:
        raise MamaError(f"{source} records no providers and is not a paper-size reference generator "
                        f"({channels} label channels, not {REFERENCE_LABEL_CHANNELS}); pass a checkpoint written by `mama train`")
    return {"base": int(first.shape[0]), "label_channels": channels, "motion": "flownet2sd", "labels": "deeplabv3",
            "size": FRAME_SIZE}


def models_from_run(payload: dict, source: str | Path, need_destroyer: bool) -> tuple[nn.Module, nn.Module | None, dict]:
    """(generator, destroyer or None, meta) of a run checkpoint, loaded strictly."""
    net_g = build_generator_from_state_dict(payload["net_g"], str(source))
    net_a = build_destroyer_from_state_dict(payload["net_a"], str(source)) if "net_a" in payload else None
    if need_destroyer and net_a is None:
        raise MamaError(f"{source} holds no destroyer ('net_a'); give a destroyer-stage checkpoint (train with --stage destroyer)")
    return net_g, net_a, run_meta(payload, source)
