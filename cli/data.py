"""`mama data ...`: check a dataset on disk (`verify`) and write the synthetic one (`synth`)."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from mama.data.datasets import (
    KNOWN_DATASETS,
    SPLITS,
    VideoRecord,
    check_frame_shape,
    count_video_file_frames,
    decode_image,
    label_intervals,
    make_mat_samples,
    make_samples,
)
from mama.config import FRAME_SIZE, size_problem
from mama.errors import MamaError

app = typer.Typer(no_args_is_help=True, help="Check datasets and write the synthetic one.")


class SplitChoice(str, Enum):
    testing = "testing"
    training = "training"
    both = "both"


def _check_readable(videos: list[VideoRecord], split: str, progress: Progress) -> None:
    """Decode every frame (frame folders) or the whole file (video files) once; every frame of
    a video must have its first frame's size (a stray frame would be stretched silently)."""
    task = progress.add_task(f"{split}: decoding", total=sum(v.num_frames for v in videos))
    for video in videos:
        if video.video_file is not None:
            if count_video_file_frames(video.video_file) != video.num_frames:
                raise MamaError(f"{video.video_file}: frame count changed while checking; is the file still being written?")
            progress.advance(task, video.num_frames)
            continue
        shape = None
        for frame in video.frames:
            image = decode_image(frame)
            shape = shape or image.shape[:2]
            check_frame_shape(frame, image, video.frames[0], shape)
            progress.advance(task)


def _intervals_text(video: VideoRecord) -> str:
    if video.labels is None:
        return "unknown"
    return ", ".join(f"{s}-{e}" for s, e in label_intervals(video.labels)) or "-"


@app.command()
def verify(
    dataset: str = typer.Option(..., "--dataset", help=f"one of: {', '.join(KNOWN_DATASETS)}"),
    data_root: Path = typer.Option(..., "--data-root", help="folder holding <dataset>/ (for `folder`: the video file or folder itself)"),
    split: SplitChoice = typer.Option(SplitChoice.testing, "--split", help="which split to check"),
) -> None:
    """Check layout, frame counts against labels and that every frame decodes; print a summary."""
    splits = SPLITS if split is SplitChoice.both else (split.value,)
    if dataset == "folder":
        splits = ("folder",)  # a folder of videos has no splits
    console = Console()
    listed = [(name, make_samples(dataset, data_root, name)) for name in splits]  # layout, counts, labels
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=True) as progress:
        for name, videos in listed:
            _check_readable(videos, name, progress)

    table = Table(title=f"{dataset} at {data_root}")
    for column, justify in (("split", "left"), ("video", "left"), ("frames", "right"), ("abnormal", "right"), ("intervals (1-based)", "left")):
        table.add_column(column, justify=justify)
    total_frames = total_abnormal = total_videos = 0
    for name, videos in listed:
        for video in videos:
            abnormal = "?" if video.labels is None else str(int(video.labels.sum()))
            table.add_row(name, video.name, str(video.num_frames), abnormal, _intervals_text(video))
            total_frames += video.num_frames
            total_abnormal += 0 if video.labels is None else int(video.labels.sum())
        total_videos += len(videos)
    table.add_section()
    table.add_row("total", f"{total_videos} videos", str(total_frames), str(total_abnormal), "")
    console.print(table)
    console.print(f"ok: {total_videos} videos, {total_frames} frames, every frame decodes")


@app.command()
def prepare(
    dataset: str = typer.Option(..., "--dataset", help=f"one of: {', '.join(KNOWN_DATASETS)}"),
    data_root: Path = typer.Option(..., "--data-root", help="folder holding <dataset>/ (for `folder`: the video file or folder itself)"),
    size: int = typer.Option(FRAME_SIZE, "--size", help="the frame size training and scoring will read"),
    split: SplitChoice = typer.Option(SplitChoice.both, "--split", help="which split to prepare"),
) -> None:
    """Decode each video file once into uint8 frames at SIZE x SIZE on disk ($MAMA_CACHE/frames),
    which training and evaluation then read a few frames at a time (never a whole video in
    memory). Frame folders are read as they are. Training prepares what it needs by itself;
    this does it ahead of time and says what it costs on disk."""
    from mama.data.datasets import prepare_video

    if (problem := size_problem(size)) is not None:
        raise MamaError(f"--size {size} {problem}; e.g. --size {FRAME_SIZE}")
    splits = ("folder",) if dataset == "folder" else (SPLITS if split is SplitChoice.both else (split.value,))
    files = [v for name in splits for v in make_samples(dataset, data_root, name) if v.video_file is not None]
    total_bytes = total_frames = 0
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("preparing", total=len(files))
        for video in files:
            path = prepare_video(video, (size, size))
            total_bytes += path.stat().st_size
            total_frames += video.num_frames
            progress.advance(task)
    if not files:
        print(f"nothing to prepare: the videos of {dataset} at {data_root} are frame folders, read as they are")
        return
    print(f"prepared {len(files)} video files, {total_frames} frames at {size}x{size}: {total_bytes / 2**20:.1f} MiB on disk "
          f"({total_bytes / total_frames * 1000 / 2**20:.1f} MiB per 1000 frames)")


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", help="folder to write <name>/ into"),
    seed: int = typer.Option(0, "--seed", help="random seed (same seed, same dataset)"),
    size: int = typer.Option(128, "--size", help="frame side in pixels"),
    name: str = typer.Option("synth", "--name", help="dataset folder name"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing dataset folder"),
    train_videos: Optional[int] = typer.Option(None, "--train-videos", help="training videos (default 8)"),
    test_videos: Optional[int] = typer.Option(None, "--test-videos", help="test videos (default 6)"),
    frames: Optional[int] = typer.Option(None, "--frames", help="frames per video (default 120)"),
) -> None:
    """Write the synthetic dataset (ped2 layout plus pixel masks) and summarise it."""
    from mama.data.synth import write_dataset

    dataset_dir = write_dataset(out, name=name, seed=seed, size=size, n_train=train_videos, n_test=test_videos,
                                frames_per_video=frames, overwrite=overwrite)
    train = make_mat_samples(out, name, "training")
    test = make_mat_samples(out, name, "testing")
    abnormal = sum(int(v.labels.sum()) for v in test)
    print(
        f"wrote {dataset_dir}: {len(train)} training videos ({sum(v.num_frames for v in train)} frames), "
        f"{len(test)} testing videos ({sum(v.num_frames for v in test)} frames, {abnormal} abnormal), {size}x{size}, seed {seed}"
    )
