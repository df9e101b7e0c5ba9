"""`mama export`: a run's scoring networks as ONNX, for `mama score --engine onnxruntime`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def export(
    run: Path = typer.Argument(..., help="a `mama train` run folder (its final.pt) or a checkpoint file"),
    out: Path = typer.Option(..., help="folder to write (new, or an earlier export, which is replaced)"),
    motion_weights: Optional[Path] = typer.Option(None, help="FlowNet weight file (default: the weights dir)"),
    label_weights: Optional[Path] = typer.Option(None, help="DeepLabv3 weight file (default: weights dir / torch hub cache)"),
) -> None:
    """Write the generator, destroyer and the run's FlowNet / DeepLab as ONNX, with mama.json
    (sizes, providers, streams, calibration, fusion, threshold)."""
    from mama.evaluate.export import EXPORT_FILE, export_run

    checkpoint = export_run(run, out, motion_weights, label_weights)
    files = sorted(p.name for p in out.iterdir())
    typer.echo(f"exported {checkpoint} to {out}: {', '.join(files)}; score with "
               f"`mama score INPUT --engine onnxruntime --checkpoint {out}` (reads {EXPORT_FILE})", err=True)
