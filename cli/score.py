"""`mama score`: per-frame scores, alarms and events for your own video or camera, as it plays."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mama.config import ScoreOptions, score_out
from mama.errors import MamaError

D = ScoreOptions(input=None, checkpoint=Path("."), out=Path("."))  # the defaults


def score(
    input: Optional[str] = typer.Argument(None, help="a video file, a folder of frames, a folder of videos, or a URL (rtsp://, http://)"),
    checkpoint: Path = typer.Option(..., help="final.pt of a `mama train` run (it holds the calibration); with --engine onnxruntime, a `mama export` folder"),
    camera: Optional[int] = typer.Option(None, help="score camera N (e.g. 0) instead of INPUT"),
    out: Optional[Path] = typer.Option(None, help="output folder (default: scores_<input name>/)"),
    overlay: Optional[Path] = typer.Option(None, help="also write a video (.mp4/.avi) at the source's resolution with the anomaly map, boxes and score drawn"),
    threshold: Optional[float] = typer.Option(None, help="alarm threshold on the online score (default: the checkpoint's calibration)"),
    false_alarms_per_hour: Optional[float] = typer.Option(None, help="set the threshold so the normal calibration footage raises this many events per hour"),
    calibrate_on: Optional[Path] = typer.Option(None, help="normal footage of this camera (video or folder) to calibrate on instead of the checkpoint's"),
    min_duration: int = typer.Option(D.min_duration, help="frames above the threshold before an event opens (`new`)"),
    merge_gap: int = typer.Option(D.merge_gap, help="frames below the threshold before an event ends (closer runs are one event)"),
    update_interval: float = typer.Option(D.update_interval, help="seconds between `update` lines of an open event"),
    ignore: Optional[Path] = typer.Option(None, help="mask image at the source's resolution: white pixels never alarm"),
    webhook: Optional[str] = typer.Option(None, help="POST every event as JSON to this http(s) URL"),
    max_lag: float = typer.Option(D.max_lag, help="seconds a live source may fall behind before its backlog is dropped"),
    reconnect: int = typer.Option(D.reconnect, help="tries to reopen a live source that drops (0: none)"),
    fps: Optional[float] = typer.Option(None, help="frame rate for media time when the source states none (default 25)"),
    append: bool = typer.Option(D.append, "--append", help="add this run to an --out that holds an earlier run"),
    batch_size: int = typer.Option(D.batch_size, help="the most frames scored at once (a live source: what has arrived)"),
    device: str = typer.Option(D.device, help="auto | cpu | cuda"),
    motion_weights: Optional[Path] = typer.Option(None, help="FlowNet weight file (default: the weights dir)"),
    label_weights: Optional[Path] = typer.Option(None, help="DeepLabv3 weight file (default: weights dir / torch hub cache)"),
    amp: bool = typer.Option(D.amp, "--amp/--no-amp", help="bf16 autocast (CUDA)"),
    compile: bool = typer.Option(D.compile, "--compile/--no-compile", help="torch.compile the networks (CUDA graphs on CUDA)"),
    engine: str = typer.Option(D.engine, help="torch | onnxruntime: the networks of a `mama export` folder run by ONNX Runtime (pip install \"mama[onnx]\")"),
) -> None:
    """Score every frame as it arrives; alarms (new / update / end) say when and where.

    Online protocol: causal, calibrated on normal training video. Alarms are JSON lines on
    standard output (new / update / end, gap), the moment each happens, with the boxes and a
    snapshot of where."""
    from mama.live.score import score_videos

    if (input is None) == (camera is None):
        raise MamaError("give INPUT (a video, a folder or a URL) or --camera N, one of the two")
    out = out or score_out(input, camera)
    opts = ScoreOptions(input, checkpoint, out, camera=camera, overlay=overlay, device=device, batch_size=batch_size,
                        motion_weights=motion_weights, label_weights=label_weights, amp=amp, compile=compile,
                        threshold=threshold, false_alarms_per_hour=false_alarms_per_hour, calibrate_on=calibrate_on,
                        min_duration=min_duration, merge_gap=merge_gap, update_interval=update_interval, ignore=ignore,
                        webhook=webhook, max_lag=max_lag, reconnect=reconnect, fps=fps, append=append, engine=engine)
    summary = score_videos(opts)
    for v in summary["videos"]:
        spans = ", ".join(f"{e['start_frame']}-{e['end_frame']}" for e in v["events"]) or "none"
        dropped = f", {v['dropped']} dropped to keep up" if v["live"] else ""
        typer.echo(f"{v['video']}: {v['frames_scored']} of {v['frames']} frames scored at {v['frames_per_second']} "
                   f"frames/s{dropped}, lag p50 {v['lag_seconds'].get('p50', 0):.2f} s; events above "
                   f"{summary['threshold']:.3f} ({summary['threshold_from']}): {spans}", err=True)
    if summary["webhook"]:
        w = summary["webhook"]
        typer.echo(f"webhook {w['url']}: {w['sent']} sent, {w['failed']} failed", err=True)
    typer.echo(f"scores: {out / 'scores.csv'}, {out / 'scores.json'}, {out / 'events.jsonl'}"
               + (f"; overlay: {overlay}" if overlay else ""), err=True)
    lost = [v["video"] for v in summary["videos"] if v.get("lost")]
    if lost and not summary["interrupted"]:  # a supervisor (systemd, docker) should restart it
        typer.echo(f"error: {', '.join(lost)}: the source stopped sending and did not come back after --reconnect "
                   f"{opts.reconnect} tries; what was read is scored and written to {out}", err=True)
        raise typer.Exit(1)
    if summary["interrupted"]:
        typer.echo(f"interrupted: what was read is scored and written to {out}", err=True)
        raise typer.Exit(143 if summary["stopped_by"] == "SIGTERM" else 130)
