"""Score streams for a list of videos (with a progress bar), the building block of
evaluation, validation and calibration. A Scorer with a `feature_dir` reads each video's
features from the disk store when an earlier evaluation (or stage) wrote them."""
from __future__ import annotations

import itertools

import numpy as np
import torch
from rich.progress import Progress

from mama.data.datasets import VideoRecord, iter_video_frames, read_background
from mama.evaluate.engine import Scorer
from mama.features.clips import INPUT_FRAMES
from mama.features.store import record_key


def video_streams(
    scorer: Scorer,
    videos: list[VideoRecord],
    size: int,
    background: np.ndarray | None = None,
    progress: bool = True,
    description: str = "scoring",
    max_frames: int | None = None,
    on_maps=None,
) -> list[dict[str, np.ndarray]]:
    """Streams of every video, its frames read as they are scored. `background`: a fixed camera
    background (online protocol); None means each video's own median background (offline) when
    the labels need one (read first, from <= 64 evenly spaced frames). `on_maps` as in
    Scorer.frame_streams."""
    out = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(description, total=len(videos))
        for v in videos:
            frames, bg, key = scoring_inputs(scorer, v, size, background, max_frames)
            out.append(scorer.frame_streams(frames, bg, key=key, size=size, on_maps=on_maps))
            bar.advance(task)
    return out


def scoring_inputs(scorer: Scorer, video: VideoRecord, size: int, background: np.ndarray | None = None,
                   max_frames: int | None = None):
    """(frames, background, key) of one video for `Scorer.frame_streams`: its frames read one at
    a time, the background its labels need (`background`, else the video's median) and its name
    in the disk store."""
    count = video.num_frames if max_frames is None else min(video.num_frames, max_frames + INPUT_FRAMES)
    bg = None
    if scorer.extractor.needs_background:
        bg = background if background is not None else read_background(video, (size, size), count)
    frames = (torch.from_numpy(f) for f in itertools.islice(iter_video_frames(video, (size, size)), count))
    return frames, bg, record_key(video, count)


def sharded_video_streams(rt, scorer: Scorer, videos: list[VideoRecord], size: int, background=None,
                          description: str = "scoring") -> list[dict[str, np.ndarray]]:
    """`video_streams` under torchrun: rank r scores videos r, r + world, ...; every rank gets
    all the streams back, in the videos' order (one process: the same as video_streams)."""
    if not rt.distributed:
        return video_streams(scorer, videos, size, background, description=description)
    import torch.distributed as dist

    mine = list(range(rt.rank, len(videos), rt.world_size))
    local = video_streams(scorer, [videos[i] for i in mine], size, background, progress=rt.is_main,
                          description=f"{description} (rank {rt.rank})")
    gathered: list = [None] * rt.world_size
    dist.all_gather_object(gathered, list(zip(mine, local)))
    by_index = dict(pair for part in gathered for pair in part)
    return [by_index[i] for i in range(len(videos))]
