"""Writing pictures out: a JPEG snapshot, the overlay video (frames drawn by
mama.evaluate.picture.draw_frame)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mama.errors import MamaError
from mama.io import atomic_path


def write_jpeg(path: Path, image: np.ndarray) -> Path:
    """An image written atomically as JPEG (a reader never sees half of it)."""
    with atomic_path(path, suffix=".jpg") as tmp:
        if not cv2.imwrite(str(tmp), image, [cv2.IMWRITE_JPEG_QUALITY, 90]):
            raise MamaError(f"cannot write {path}; check the folder is writable")
    return path


class OverlayVideo:
    """The overlay video, written frame by frame at the source's resolution; atomically: the
    file appears when closed with `ok`."""

    def __init__(self, path: Path, fps: float | None):
        self.path, self.fps = path, fps or 10.0
        self._atomic = atomic_path(path, suffix=path.suffix)
        self.tmp = self._atomic.__enter__()
        self.writer = None
        self.frames = 0

    def add(self, img: np.ndarray) -> None:
        if self.writer is None:
            codec = "mp4v" if self.path.suffix.lower() == ".mp4" else "MJPG"
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*codec), self.fps,
                                          (img.shape[1], img.shape[0]))
            if not self.writer.isOpened():
                raise MamaError(f"cannot write the overlay video {self.path}; give a path ending in .mp4 in a writable folder")
        self.writer.write(img)
        self.frames += 1

    def close(self, ok: bool) -> None:
        if self.writer is not None:
            self.writer.release()
        if ok and self.frames:
            self._atomic.__exit__(None, None, None)
        else:
            self._atomic.__exit__(RuntimeError, RuntimeError("no overlay"), None)
