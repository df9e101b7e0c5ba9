"""`mama score`: per-frame scores, alarms and events for your own video or camera, as it plays."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mama.config import ScoreOptions
from mama.errors import MamaError

D = ScoreOptions(input=None, checkpoint=Path("."), out=Path("."))  # the defaults


def score(
    input: Optional[str] = typer.Argument(None, help="a video file, a folder of frames, a folder of videos, or a URL (rtsp://, http://)"),
    checkpoint: Path = typer.Option(..., help="final.pt of a `mama train` run (it holds the calibration)"),
    camera: Optional[int] = typer.Option(None, help="score camera N (e.g. 0) instead of INPUT"),
    out: Optional[Path] = typer.Option(None, help="output folder (default: scores_<input name>/)"),
    overlay: Optional[Path] = typer.Option(None, help="also write an mp4 with the score and damaged regions drawn"),
    batch_size: int = typer.Option(D.batch_size, help="frames per batch; a score comes at most this + 1 frames late"),
    device: str = typer.Option(D.device, help="auto | cpu | cuda"),
    motion_weights: Optional[Path] = typer.Option(None, help="FlowNet weight file (default: the weights dir)"),
    label_weights: Optional[Path] = typer.Option(None, help="DeepLabv3 weight file (default: weights dir / torch hub cache)"),
    amp: bool = typer.Option(D.amp, "--amp/--no-amp", help="bf16 autocast (CUDA)"),
    compile: bool = typer.Option(D.compile, "--compile/--no-compile", help="torch.compile the networks (CUDA graphs on CUDA)"),
) -> None:
    """Score every frame as it arrives (online protocol: causal, calibrated on normal training
    video); alarm events are printed as JSON lines the moment they end."""
    from mama.evaluate.score import score_videos

    if (input is None) == (camera is None):
        raise MamaError("give INPUT (a video, a folder or a URL) or --camera N, one of the two")
    if batch_size < 1:
        raise MamaError(f"--batch-size {batch_size} must be a positive whole number")
    name = f"camera{camera}" if camera is not None else (Path(input.split("?")[0].rstrip("/")).stem or "stream")
    out = out or Path(f"scores_{name}")
    opts = ScoreOptions(input, checkpoint, out, camera=camera, overlay=overlay, device=device, batch_size=batch_size,
                        motion_weights=motion_weights, label_weights=label_weights, amp=amp, compile=compile)
    try:
        summary = score_videos(opts)
    except KeyboardInterrupt as stop:
        summary = stop.args[0] if stop.args and isinstance(stop.args[0], dict) else None
        typer.echo(f"interrupted: what was read is scored and written to {out}" if summary else "interrupted", err=True)
        raise typer.Exit(130) from None
    for v in summary["videos"]:
        ev = ", ".join(f"{e['start']}-{e['end']}" for e in v["events"]) or "none"
        typer.echo(f"{v['video']}: {v['frames']} frames at {v['frames_per_second']} frames/s, events above "
                   f"{summary['threshold']:.3f}: {ev}", err=True)
    typer.echo(f"scores: {out / 'scores.csv'}, {out / 'scores.json'}, {out / 'events.jsonl'}"
               + (f"; overlay: {overlay}" if overlay else ""), err=True)
