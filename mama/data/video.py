"""The one video-file decoder: every frame of a video file that mama reads comes through here.

`VideoFile(path)` opens the file (OpenCV, FFmpeg behind it) and states its metadata: `fps` (as
the container states it, None when it states none or an absurd one) and, once a frame is read,
`native` (H, W). `frames()` is a generator of the frames in order, each uint8 BGR at the file's
own size with its timestamp; the file is closed when the generator ends or is closed, and by
`close()` / the `with` block. A video file's two errors are said here, once each.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mama.errors import MamaError


def unreadable_video(path) -> MamaError:
    """A video file OpenCV opens no frame of."""
    return MamaError(f"{path}: cannot read this video file; re-encode it (e.g. ffmpeg -i in -c:v libx264 out.mp4) "
                     "or pass a folder of frames")


def changed_video(path, decoded: int, listed: int) -> MamaError:
    """A video file that no longer decodes to the frame count it was listed with."""
    return MamaError(f"{path}: decoded {decoded} frames, listed {listed}; the file changed, list the dataset again")


def capture_fps(capture: cv2.VideoCapture) -> float | None:
    """The frame rate an opened capture states; None when it states none or an absurd one."""
    fps = capture.get(cv2.CAP_PROP_FPS)
    return float(fps) if fps and np.isfinite(fps) and 0 < fps < 1000 else None


@dataclass
class DecodedFrame:
    index: int  # 0-based in the file
    image: np.ndarray  # uint8 BGR (H, W, 3) at the file's own size
    seconds: float | None  # the container's timestamp of the frame; None where it gives none


class VideoFile:
    """A video file opened for decoding in order (see the module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._capture = cv2.VideoCapture(str(path))
        self.fps = capture_fps(self._capture)
        self.native: tuple[int, int] | None = None

    def __enter__(self) -> "VideoFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._capture.release()

    def frames(self) -> Iterator[DecodedFrame]:
        """The frames from the current position to the end; the file is closed when this ends."""
        capture = self._capture
        try:
            index = 0
            while capture.isOpened():
                ok, image = capture.read()
                if not ok:
                    return
                self.native = image.shape[:2]
                ms = capture.get(cv2.CAP_PROP_POS_MSEC)
                yield DecodedFrame(index, image, ms / 1000 if ms and ms > 0 else None)
                index += 1
        finally:
            capture.release()

    def read(self) -> np.ndarray | None:
        """The next frame alone; None where there is none."""
        ok, image = self._capture.read()
        if not ok:
            return None
        self.native = image.shape[:2]
        return image

    def frame(self, index: int) -> np.ndarray | None:
        """Frame `index` alone (a seek, then one decode); None where there is none."""
        self._capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        return self.read()

    def count(self) -> int:
        """Frames from the current position to the end, counted by demuxing (grab: nothing is
        decoded into pixels; the container's own count is unreliable)."""
        count = 0
        while self._capture.isOpened() and self._capture.grab():
            count += 1
        return count
