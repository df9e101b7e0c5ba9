"""`mama score`: per-frame scores, alarms and events for your own video."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mama.config import ScoreOptions

D = ScoreOptions(input=Path("."), checkpoint=Path("."), out=Path("."))  # the defaults


def score(
    input: Path = typer.Argument(..., help="a video file, a folder of frames, or a folder of videos"),
    checkpoint: Path = typer.Option(..., help="final.pt of a `mama train` run (it holds the calibration)"),
    out: Optional[Path] = typer.Option(None, help="output folder (default: scores_<input name>/)"),
    overlay: Optional[Path] = typer.Option(None, help="also write an mp4 with the score and damaged regions drawn"),
    batch_size: int = typer.Option(D.batch_size),
    device: str = typer.Option(D.device, help="auto | cpu | cuda"),
    motion_weights: Optional[Path] = typer.Option(None, help="FlowNet weight file (default: the weights dir)"),
    label_weights: Optional[Path] = typer.Option(None, help="DeepLabv3 weight file (default: weights dir / torch hub cache)"),
) -> None:
    """Score every frame (online protocol: causal, calibrated on normal training video)."""
    from mama.evaluate.score import score_videos

    out = out or Path(f"scores_{input.stem or input.name}")
    summary = score_videos(ScoreOptions(input, checkpoint, out, overlay=overlay, device=device, batch_size=batch_size,
                                        motion_weights=motion_weights, label_weights=label_weights))
    for v in summary["videos"]:
        ev = ", ".join(f"{e['start']}-{e['end']}" for e in v["events"]) or "none"
        typer.echo(f"{v['video']}: {v['frames']} frames, events above {summary['threshold']:.3f}: {ev}")
    typer.echo(f"scores: {out / 'scores.csv'}, {out / 'scores.json'}" + (f"; overlay: {overlay}" if overlay else ""))
