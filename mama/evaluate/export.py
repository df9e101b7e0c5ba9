"""`mama export`: a run's scoring networks as ONNX, and a Scorer that runs them with ONNX Runtime.

An export is a folder:

    mama.json          format, what built the run (sizes, providers), the stream names, the
                       networks' files and their input / output names, the calibration (stream
                       statistics, fusion weights, smoothing, alarm threshold, map threshold);
                       arrays are named here and kept in calibration.npz
    calibration.npz    the calibration's arrays: the scene background, the per-pixel map
                       statistics, the normal footage's scores
    generator.onnx     the F2LM generator (frames, flows[, labels] -> pred, x4, y4, x_y[, z4, x_z])
    destroyer.onnx     the destroyer (pred -> destroyed), when the run has one
    motion.onnx        FlowNet2-SD's flow before its x4 upsampling (or FlowNet2's), when the run uses it
    labels.onnx        DeepLabv3's stride-8 logits, when the run uses it

`scorer_from_export` makes the same Scorer as a checkpoint gives, with ONNX Runtime sessions
(mama.models.onnx) in place of the networks: the streams, features, fusion and alarms are the
same code. The export is written to a temporary folder and renamed, so a failed export leaves
nothing behind.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mama.errors import MamaError
from mama.evaluate.engine import Scorer
from mama.features.registry import build_extractor
from mama.io import atomic_path, check_output_folder
from mama.models.build import check_calibration, models_from_run
from mama.models.checkpoint import read_file
from mama.models.onnx import OPSET, OrtGenerator, OrtNetwork, export_network, generator_io, onnxruntime

EXPORT_FILE = "mama.json"
ARRAYS_FILE = "calibration.npz"
FORMAT = 1
ROLES = ("motion", "labels")  # the feature providers whose networks are exported, by extractor attribute


def resolve_checkpoint(path: Path) -> Path:
    """A run folder's final.pt, or the checkpoint file given."""
    path = Path(path)
    if path.is_dir():
        if (path / EXPORT_FILE).is_file():
            raise MamaError(f"{path} is already an ONNX export (it holds {EXPORT_FILE}); export a run folder or its "
                            "final.pt / best.pt")
        if not (path / "final.pt").is_file():
            raise MamaError(f"{path} is a folder without final.pt; pass a run folder of `mama train` or a checkpoint "
                            "file (final.pt / best.pt)")
        return path / "final.pt"
    if not path.exists():
        raise MamaError(f"{path} does not exist; pass a run folder of `mama train` or a checkpoint file (final.pt / best.pt)")
    return path


def export_run(source: Path, out: Path, motion_weights: Path | None = None, label_weights: Path | None = None) -> Path:
    """Write the export of a run (a run folder or checkpoint) to `out` (new, or an earlier
    export, which is replaced); returns the checkpoint it came from."""
    out = check_output_folder(out)
    if out.is_dir() and any(out.iterdir()) and not (out / EXPORT_FILE).is_file():
        raise MamaError(f"--out {out} holds other files; give a new folder (or an earlier export, to replace it)")
    checkpoint = resolve_checkpoint(source)
    payload = read_file(checkpoint, "run")
    net_g, net_a, meta = models_from_run(payload, checkpoint, need_destroyer=False)
    extractor = build_extractor(meta["motion"], meta["labels"], "cpu", motion_weights, label_weights)
    calibration = payload.get("calibration")
    if calibration is None:
        raise MamaError(f"{checkpoint} has no calibration (alarm threshold, stream statistics); export the final.pt / "
                        "best.pt of a run that `mama train` finished")
    size = int(meta["size"])
    networks: dict[str, dict] = {}
    with atomic_path(out) as tmp:
        tmp.mkdir()
        inputs, outputs = generator_io(net_g)
        examples = {"frames": torch.zeros(1, net_g.frame_channels, size, size),
                    "flows": torch.zeros(1, net_g.flow_channels, size, size),
                    "labels": torch.zeros(1, net_g.label_channels, size, size)}
        export_network(net_g, tuple(examples[n] for n in inputs), tmp / "generator.onnx", inputs, outputs)
        networks["generator"] = {"file": "generator.onnx", "inputs": inputs, "outputs": outputs}
        if net_a is not None:
            export_network(net_a, (torch.zeros(1, 3, size, size),), tmp / "destroyer.onnx", ["pred"], ["destroyed"])
            networks["destroyer"] = {"file": "destroyer.onnx", "inputs": ["pred"], "outputs": ["destroyed"]}
        for role in ROLES:
            provider = getattr(extractor, role)
            calls = provider.network_calls(size) if provider is not None else {}
            if len(calls) > 1:
                raise MamaError(f"the {role} provider {provider.name!r} runs {len(calls)} networks; export handles one")
            for attr, (method, example) in calls.items():
                try:
                    export_network(provider.networks[attr], (example,), tmp / f"{role}.onnx", ["input"], ["output"],
                                   method)
                except torch.onnx.errors.OnnxExporterError as exc:  # e.g. full FlowNet2's correlation
                    raise MamaError(f"the {role} provider {provider.name!r} cannot be exported to ONNX "
                                    f"({str(exc).splitlines()[0][:120]}); score this run with --engine torch") from None
                networks[role] = {"file": f"{role}.onnx", "attribute": attr, "method": method}
        arrays: dict[str, np.ndarray] = {}
        record = {
            "format": FORMAT, "exported_from": str(checkpoint), "torch": torch.__version__, "opset": OPSET,
            "model": meta, "streams": Scorer(net_g, extractor, net_a, optimize=False).stream_names,
            "networks": networks, "calibration": _split(calibration, "calibration", arrays),
        }
        np.savez(tmp / ARRAYS_FILE, **arrays)
        (tmp / EXPORT_FILE).write_text(json.dumps(record, indent=1))
    return checkpoint


def _split(value, key: str, arrays: dict):
    """`value` as JSON, its tensors and arrays moved to `arrays` under their key path."""
    if isinstance(value, dict):
        return {k: _split(v, f"{key}/{k}", arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_split(v, f"{key}/{i}", arrays) for i, v in enumerate(value)]
    if isinstance(value, (torch.Tensor, np.ndarray)):
        arrays[key] = value.numpy() if isinstance(value, torch.Tensor) else value
        return {"array": key}
    if isinstance(value, float) and not math.isfinite(value):
        raise MamaError(f"the checkpoint's {key} is {value}, which JSON cannot hold; recalibrate the run")
    return value


def _join(value, arrays):
    if isinstance(value, dict):
        if set(value) == {"array"}:
            return arrays[value["array"]]
        return {k: _join(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_join(v, arrays) for v in value]
    return value


@dataclass
class Export:
    """A folder written by `mama export`, read back (mama.json, the calibration's arrays)."""

    folder: Path
    record: dict
    calibration: dict

    @property
    def meta(self) -> dict:
        return self.record["model"]

    @property
    def size(self) -> int:
        return int(self.meta["size"])

    def file(self, network: str) -> Path | None:
        spec = self.record["networks"].get(network)
        return None if spec is None else self.folder / spec["file"]


def read_export(folder: Path) -> Export:
    """An export folder, checked: onnxruntime installed, the files present, the calibration usable."""
    onnxruntime()  # before anything: without the extra nothing here can run
    folder = Path(folder)
    hint = f"run `mama export RUN --out {folder}` and pass that folder"
    if not (folder / EXPORT_FILE).is_file():
        what = "does not exist" if not folder.exists() else f"holds no {EXPORT_FILE}"
        raise MamaError(f"--engine onnxruntime scores an ONNX export, but {folder} {what}; {hint}")
    try:
        record = json.loads((folder / EXPORT_FILE).read_text())
        with np.load(folder / ARRAYS_FILE) as npz:
            arrays = {k: npz[k] for k in npz.files}
        calibration = _join(record["calibration"], arrays)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MamaError(f"{folder}: its {EXPORT_FILE} / {ARRAYS_FILE} cannot be read ({exc}); {hint}") from None
    if record.get("format") != FORMAT:
        raise MamaError(f"{folder}: export format {record.get('format')!r}, this mama reads {FORMAT}; {hint}")
    for spec in record["networks"].values():
        if not (folder / spec["file"]).is_file():
            raise MamaError(f"{folder}: {spec['file']} is missing; {hint}")
    if isinstance(calibration.get("background"), np.ndarray):
        calibration["background"] = torch.from_numpy(calibration["background"])
    check_calibration(calibration, folder / EXPORT_FILE, int(record["model"]["size"]))
    return Export(folder, record, calibration)


def scorer_from_export(export: Export, batch_size: int, threads: int | None = None,
                       optimization: str = "all") -> Scorer:
    """The Scorer of an export: ONNX Runtime sessions (`threads` intra-op threads, graph
    `optimization` level: mama.models.onnx.session_options) for every exported network, on the CPU."""
    record, meta = export.record, export.meta
    session = {"threads": threads, "optimization": optimization}
    provider_networks = {}
    for role in ROLES:
        spec = record["networks"].get(role)
        if spec is not None:
            net = OrtNetwork(export.file(role), spec["method"], **session)
            provider_networks[role] = ({spec["attribute"]: net}, export.file(role))
    motion, motion_file = provider_networks.get("motion", (None, None))
    labels, label_file = provider_networks.get("labels", (None, None))
    extractor = build_extractor(meta["motion"], meta["labels"], "cpu", motion_file, label_file, motion, labels)
    destroyer = export.file("destroyer")
    return Scorer(OrtGenerator(export.file("generator"), **session), extractor,
                  OrtNetwork(destroyer, **session) if destroyer is not None else None, torch.device("cpu"),
                  batch_size=batch_size, optimize=False)
