"""Score streams for a list of videos (with a progress bar), the building block of
evaluation, validation and calibration."""
from __future__ import annotations

import numpy as np
from rich.progress import Progress

from mama.data.datasets import VideoRecord, load_video_frames, video_background
from mama.evaluate.engine import Scorer
from mama.features.clips import INPUT_FRAMES


def video_streams(
    scorer: Scorer,
    videos: list[VideoRecord],
    size: int,
    background: np.ndarray | None = None,
    progress: bool = True,
    description: str = "scoring",
    max_frames: int | None = None,
) -> list[dict[str, np.ndarray]]:
    """Streams of every video. `background`: a fixed camera background (online protocol);
    None means each video's own median background (offline) when the labels need one."""
    out = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(description, total=len(videos))
        for v in videos:
            frames = load_video_frames(v, (size, size))
            if max_frames is not None:
                frames = frames[: max_frames + INPUT_FRAMES]
            bg = None
            if scorer.extractor.needs_background:
                bg = background if background is not None else video_background(frames)
            out.append(scorer.video_streams(frames, bg))
            bar.advance(task)
    return out
