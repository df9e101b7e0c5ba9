"""The networks of a run, from its checkpoint, and the record of what built them.

A checkpoint written by `mama train` records what built it under 'model' (width, label
channels, providers, frame size). A reference-code checkpoint has only the networks: their
sizes are read off the weights; its providers and frame size are the paper's.
"""
from __future__ import annotations

import math
from pathlib import Path

from torch import Tensor, nn

from mama.config import FRAME_SIZE, base_problem, size_problem
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
        check_meta(meta, source)
        return meta
    net_g = payload["net_g"]
    first, label = net_g.get("inc_x.conv.conv.0.weight"), net_g.get("inc_z.conv.conv.0.weight")
    channels = 0 if label is None else int(label.shape[1])
    if first is None or channels != REFERENCE_LABEL_CHANNELS:
        raise MamaError(f"{source} records no providers and is not a paper-size reference generator "
                        f"({channels} label channels, not {REFERENCE_LABEL_CHANNELS}); pass a checkpoint written by `mama train`")
    return {"base": int(first.shape[0]), "label_channels": channels, "motion": "flownet2sd", "labels": "deeplabv3",
            "size": FRAME_SIZE}


def _damaged(source, what: str) -> MamaError:
    return MamaError(f"{source}: {what}; the file is damaged or was not written by mama: "
                     "use a final.pt / best.pt written by `mama train`")


def check_meta(meta: dict, source: str | Path) -> None:
    """The settings a checkpoint records are checked as strictly as the flags that made them
    (mama.config's bounds): a damaged file must not make OpenCV allocate 30 GB. (Its providers
    are checked where they are built, mama.features.registry, a layer above this one.)"""
    for name, problem in (("size", size_problem), ("base", base_problem)):
        if (text := problem(meta.get(name))) is not None:
            raise _damaged(source, f"its recorded {name} {meta.get(name)!r} {text}")


def _finite(value) -> bool:
    if isinstance(value, Tensor):
        return value.numel() == 1 and math.isfinite(float(value))
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_calibration(calib, source: str | Path, size: int | None = None) -> None:
    """A checkpoint's calibration (mama.evaluate.calibrate) can be used: a finite alarm threshold,
    a smoothing sigma >= 0, finite stream statistics with positive spreads and finite weights.
    `models_from_run` calls it on every run checkpoint that has one, so `mama score` and the
    online protocol never run with an alarm that cannot fire."""
    if not isinstance(calib, dict):
        raise _damaged(source, f"its calibration is a {type(calib).__name__}, not a dict")
    threshold, sigma = calib.get("threshold"), calib.get("sigma", 0.0)
    if not _finite(threshold):
        raise _damaged(source, f"its calibrated alarm threshold is {threshold!r}, not a finite number "
                               "(no alarm could ever fire)")
    if not _finite(sigma) or float(sigma) < 0:
        raise _damaged(source, f"its calibrated smoothing sigma is {sigma!r}, not a number >= 0")
    stats, weights = calib.get("stats"), calib.get("weights")
    if not (isinstance(stats, dict) and isinstance(stats.get("mean"), dict) and isinstance(stats.get("std"), dict)):
        raise _damaged(source, "its calibration has no stream statistics (stats: mean, std)")
    for name, mean in stats["mean"].items():
        std = stats["std"].get(name)
        if not (_finite(mean) and _finite(std) and float(std) > 0):
            raise _damaged(source, f"its calibrated statistics of stream {name} are mean {mean!r}, std {std!r} "
                                   "(finite, std > 0 expected)")
    if not (isinstance(weights, dict) and weights and all(_finite(w) and float(w) >= 0 for w in weights.values())):
        raise _damaged(source, f"its calibrated fusion weights {weights!r} are not finite numbers >= 0")
    background = calib.get("background")
    if background is not None and size is not None:
        if not (isinstance(background, Tensor) and tuple(background.shape) == (3, size, size)
                and bool(background.isfinite().all())):
            shape = tuple(background.shape) if isinstance(background, Tensor) else type(background).__name__
            raise _damaged(source, f"its calibrated scene background is {shape}, not a finite (3, {size}, {size}) image")


def models_from_run(payload: dict, source: str | Path, need_destroyer: bool) -> tuple[nn.Module, nn.Module | None, dict]:
    """(generator, destroyer or None, meta) of a run checkpoint, loaded strictly; its recorded
    settings and calibration (when it has one) checked."""
    meta = run_meta(payload, source)
    if payload.get("calibration") is not None:
        check_calibration(payload["calibration"], source, meta["size"])
    net_g = build_generator_from_state_dict(payload["net_g"], str(source))
    net_a = build_destroyer_from_state_dict(payload["net_a"], str(source)) if "net_a" in payload else None
    if need_destroyer and net_a is None:
        raise MamaError(f"{source} holds no destroyer ('net_a'); give a destroyer-stage checkpoint (train with --stage destroyer)")
    return net_g, net_a, meta
