"""`mama serve`: several cameras scored at once, a page to watch them and an API (mama.live.serve)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mama.config import ScoreOptions

D = ScoreOptions(input=None, checkpoint=Path("."), out=Path("."))  # the defaults


def serve(
    source: Optional[List[str]] = typer.Option(None, help="NAME=URL_OR_FILE_OR_CAMERA (a URL, a video or frame folder, or a camera index); repeat for each camera"),
    checkpoint: Optional[Path] = typer.Option(None, help="final.pt of a `mama train` run (it holds the calibration); for every --source"),
    config: Optional[Path] = typer.Option(None, help="cameras.toml: a \\[cameras.NAME] table per camera (source, checkpoint, threshold, ignore, webhook, ...) instead of --source"),
    out: Path = typer.Option(Path("serve_out"), help="folder for each camera's scores, events and snapshots (OUT/NAME/)"),
    host: str = typer.Option("127.0.0.1", help="address to listen on; anything but this machine needs --token"),
    port: int = typer.Option(8080, help="port to listen on (0: any free one)"),
    token: Optional[str] = typer.Option(None, help="bearer token every request must carry (Authorization: Bearer T, or ?token=T)"),
    threshold: Optional[float] = typer.Option(None, help="alarm threshold (default: the checkpoint's calibration)"),
    false_alarms_per_hour: Optional[float] = typer.Option(None, help="set the threshold so the calibration footage raises this many events per hour"),
    min_duration: int = typer.Option(D.min_duration, help="frames above the threshold before an event opens"),
    merge_gap: int = typer.Option(D.merge_gap, help="frames below the threshold before an event ends"),
    update_interval: float = typer.Option(D.update_interval, help="seconds between `update` lines of an open event"),
    webhook: Optional[str] = typer.Option(None, help="POST every event as JSON to this http(s) URL"),
    max_lag: float = typer.Option(D.max_lag, help="seconds a live source may fall behind before its backlog is dropped"),
    reconnect: int = typer.Option(D.reconnect, help="tries to reopen a live source that drops, before it is retried later"),
    batch_size: int = typer.Option(D.batch_size, help="the most frames scored at once per camera"),
    device: str = typer.Option(D.device, help="auto | cpu | cuda"),
) -> None:
    """Score cameras and serve a page to watch them, with an API for their state and alarms.

    Each camera behaves as `mama score` (events, snapshots, drop policy, reconnect) and writes
    under OUT/NAME/; one that fails is shown as failed and tried again. Stop with Ctrl-C."""
    from mama.errors import MamaError
    from mama.live.serve import cameras_from_flags, check_cameras, read_config, serve as run_server

    if (config is None) == (not source):
        raise MamaError("give --source NAME=URL_OR_FILE_OR_CAMERA (with --checkpoint), or --config cameras.toml; one of the two")
    if config is not None:
        cameras, origin = read_config(config), f"--config {config}"
    else:
        if checkpoint is None:
            raise MamaError("--source needs --checkpoint (the run every camera is scored with)")
        options = dict(checkpoint=checkpoint, device=device, batch_size=batch_size, threshold=threshold,
                       false_alarms_per_hour=false_alarms_per_hour, min_duration=min_duration, merge_gap=merge_gap,
                       update_interval=update_interval, webhook=webhook, max_lag=max_lag, reconnect=reconnect)
        cameras, origin = cameras_from_flags(source, options), "--source"
    check_cameras(cameras, out, origin)  # every camera's settings, before anything starts

    def ready(hub, server) -> None:
        typer.echo(f"serving {len(hub.cameras)} camera(s) on http://{host}:{port}/ (Ctrl-C stops)", err=True)

    run_server(cameras, out, host, port, token, ready=ready)
