"""Providers by name: the one table that configs, checkpoints and the command line refer to.

Each entry builds its provider on a device; the ones that need pretrained weights take a file
(else the weights dir and the torch hub cache are searched, mama.weights) and fail with one
line naming the file, where to put it and where to get it. Given `networks` (an ONNX export's
sessions, mama.models.onnx) they run those instead, and `weights` only names them. Builders import their provider
when called, so reading the names costs nothing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from mama.errors import MamaError


def _named(provider, path=None):
    """Record what the provider computes with: its weight file (name, size, modification time),
    or "none" for a weight-free one (the feature store's disk folders are named by it)."""
    if path is None:
        provider.weights_id = "none"
    else:
        st = Path(path).stat()
        provider.weights_id = f"{Path(path).name}|{st.st_size}|{st.st_mtime_ns}"
    return provider


def _dis(device, weights, networks=None):
    from mama.features.motion import DISFlow

    return _named(DISFlow())


def _farneback(device, weights, networks=None):
    from mama.features.motion import FarnebackFlow

    return _named(FarnebackFlow())


def _flownet(name: str) -> Callable:
    def build(device, weights, networks=None):
        from mama.features.motion import FlowNetFlow
        from mama.models.flownet2 import load_flownet
        from mama.weights import resolve_weights

        if networks is not None:
            return _named(FlowNetFlow(name, networks["net"]), weights)
        path = resolve_weights(name, weights)
        return _named(FlowNetFlow(name, load_flownet(name, path, device)), path)

    return build


def _deeplab(device, weights, networks=None):
    from mama.features.labels import DeepLabLabels
    from mama.models.deeplab import build_deeplabv3
    from mama.weights import resolve_weights

    if networks is not None:
        return _named(DeepLabLabels(networks["model"]), weights)
    path = resolve_weights("deeplabv3_resnet101", weights)
    return _named(DeepLabLabels(build_deeplabv3(path, device)), path)


def _foreground(device, weights, networks=None):
    from mama.features.labels import ForegroundLabels

    return _named(ForegroundLabels())


def _no_labels(device, weights, networks=None):
    from mama.features.labels import NoLabels

    return _named(NoLabels())


# name -> (build(device, weights, networks=None), needs pretrained weights)
MOTION: dict[str, tuple[Callable, bool]] = {
    "flownet2sd": (_flownet("flownet2sd"), True),
    "flownet2": (_flownet("flownet2"), True),
    "dis": (_dis, False),
    "farneback": (_farneback, False),
}
LABELS: dict[str, tuple[Callable, bool]] = {
    "deeplabv3": (_deeplab, True),
    "foreground": (_foreground, False),
    "none": (_no_labels, False),
}
MOTION_PROVIDERS = tuple(MOTION)
LABEL_PROVIDERS = tuple(LABELS)


def _build(table: dict, kind: str, flag: str, name: str, device, weights, networks=None):
    if name not in table:
        raise MamaError(f"unknown {kind} provider {name!r}; choose one of: {', '.join(table)}")
    build, needs_weights = table[name]
    if weights is not None and not needs_weights:
        raise MamaError(f"{flag} {weights}: the {kind} provider {name!r} uses no weights; drop {flag}")
    return build(device, weights, networks)


def build_motion_provider(name: str, device="cpu", weights=None, networks=None):
    """A MotionProvider (mama.features.base) by name."""
    return _build(MOTION, "motion", "--motion-weights", name, device, weights, networks)


def build_label_provider(name: str, device="cpu", weights=None, networks=None):
    """A LabelProvider (mama.features.base) by name."""
    return _build(LABELS, "label", "--label-weights", name, device, weights, networks)


def build_extractor(motion: str, labels: str, device="cpu", motion_weights=None, label_weights=None,
                    motion_networks=None, label_networks=None):
    """A FeatureExtractor (mama.features.extractor) of the named providers (running the given
    networks, by attribute name, instead of loading their weights: module docstring)."""
    from mama.features.extractor import FeatureExtractor

    return FeatureExtractor(build_motion_provider(motion, device, motion_weights, motion_networks),
                            build_label_provider(labels, device, label_weights, label_networks))
