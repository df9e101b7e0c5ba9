"""Synthetic surveillance dataset: the embedded default for `mama demo` and `mama data synth`.

A fixed camera looks down on a paved walkway (a building front, a hedge and a lawn with lamp
posts, a bench and a bin beyond it, a strip of grass in front). Pedestrians with swinging arms
and legs, varied clothes and soft shadows walk along the walkway in both directions, enter and
leave the frame and occlude each other (drawn in depth order). Every frame gets mild sensor noise
and every video a slow global lighting drift. Training videos show only that. Each test video
adds at least one anomaly of the kinds found in real benchmarks: a cyclist or a skater (3-4x
walking speed), a runner, an erratic walker zig-zagging over the lawn, a small vehicle, a thrown
box; across the test set every kind appears.

Frames are drawn with OpenCV at twice the output size and area-downsampled (anti-aliasing). The
anomaly mask is painted in the same pass with the same primitives (anomaly pixels 1, anything in
front 0), so a mask pixel is set exactly where an anomaly is visible, and the frame labels in the
.mat file are derived from the masks: they cannot disagree. A seed fixes everything, byte for byte.

Layout written (the community layout, so every reader and metric runs on it unchanged):

    <out_root>/<name>/
        training/frames/01/000.jpg ...
        testing/frames/01/000.jpg ...
        testing/pixel_masks/01.npy    (T, H, W) uint8, 1 where an anomaly is visible
        <name>.mat                    'gt': (1, n_test) object array, each (2, K) int32 [start; end]
                                      rows, 1-based inclusive, one column per abnormal interval
        README.txt
"""
from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from mama.config import SEED_RANGE
from mama.data.datasets import label_intervals
from mama.data.scene import ANOMALY_KINDS, DEFAULT_SIZE, anomaly_plan, make_scene, render_video  # noqa: F401 (ANOMALY_KINDS: the kinds a test video gets)
from mama.errors import MamaError
from mama.io import atomic_path, check_output_folder

# Defaults: small enough that the CPU demo (train a small generator and destroyer, evaluate)
# runs in minutes on 2 cores; the dataset itself is written in a few seconds.
DEFAULT_N_TRAIN = 8
DEFAULT_N_TEST = 6
DEFAULT_FRAMES = 120
MIN_SIZE, MAX_SIZE = 64, 256
MIN_FRAMES = 20  # room for normal frames before and after each anomaly
JPEG_QUALITY = 92


def intervals_from_labels(labels: np.ndarray) -> np.ndarray:
    """(2, K) int32 [start; end] rows, 1-based inclusive, of the runs of True: a .mat 'gt' cell."""
    return np.ascontiguousarray(np.array(label_intervals(labels), dtype=np.int32).reshape(-1, 2).T)


def encode_jpeg(frame: np.ndarray) -> bytes:
    """The exact bytes written for a frame (fixed quality, so a seed gives identical files)."""
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV failed to encode a JPEG frame")
    return buf.tobytes()


def _save_gt(path: Path, gt: np.ndarray) -> None:
    """savemat, with the header's creation time replaced by fixed text (byte-identical files)."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"gt": gt})
    data = bytearray(buf.getvalue())
    data[:116] = b"MATLAB 5.0 MAT-file, written by mama.data.synth".ljust(116, b" ")
    path.write_bytes(bytes(data))


def _check_args(out_root: Path, name: str, seed: int, size: int, n_train: int, n_test: int,
                frames: int) -> None:
    target = out_root / name
    if not name or Path(name).name != name or name in (".", ".."):
        raise MamaError(f"{target}: dataset name {name!r} must be a plain folder name (e.g. 'synth')")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise MamaError(f"{target}: size {size} is out of range; use {MIN_SIZE}..{MAX_SIZE}")
    if not 0 <= seed < SEED_RANGE:
        raise MamaError(f"{target}: seed {seed} must be >= 0 and below 2**32")
    if n_train < 1 or n_test < 1:
        raise MamaError(f"{target}: needs at least 1 training and 1 test video (got {n_train}, {n_test})")
    if frames < MIN_FRAMES:
        raise MamaError(f"{target}: {frames} frames per video is too few; use at least {MIN_FRAMES}")
    if out_root.exists() and not out_root.is_dir():
        raise MamaError(f"{out_root}: output root is a file, not a folder; choose another output folder")
    check_output_folder(out_root, "--out")


def write_dataset(out_root: Path, name: str = "synth", seed: int = 0, size: int = DEFAULT_SIZE,
                  n_train: int | None = None, n_test: int | None = None,
                  frames_per_video: int | None = None, overwrite: bool = False) -> Path:
    """Write the synthetic dataset to <out_root>/<name> (layout in the module docstring); return that path.

    Built in a temporary folder beside the target and renamed into place at the end, so a failure
    leaves nothing behind. Refuses to replace an existing non-empty folder unless overwrite=True.
    """
    out_root, seed, size = Path(out_root), int(seed), int(size)
    n_train = DEFAULT_N_TRAIN if n_train is None else int(n_train)
    n_test = DEFAULT_N_TEST if n_test is None else int(n_test)
    frames = DEFAULT_FRAMES if frames_per_video is None else int(frames_per_video)
    _check_args(out_root, name, seed, size, n_train, n_test, frames)
    target = out_root / name
    if target.exists() and not target.is_dir():
        raise MamaError(f"{target}: exists and is a file; remove it or choose another --name")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise MamaError(f"{target}: dataset folder already exists and is not empty; "
                        "pass overwrite=True (--overwrite) to replace it, or choose another name")

    scene = make_scene(size, seed)
    plan = anomaly_plan(n_test)
    width = max(2, len(str(max(n_train, n_test))))
    frame_width = max(3, len(str(frames - 1)))
    gt = np.empty((1, n_test), dtype=object)
    with atomic_path(target) as tmp:
        for split, count in (("training", n_train), ("testing", n_test)):
            for i in range(count):
                video = f"{i + 1:0{width}d}"
                kinds = plan[i] if split == "testing" else ()
                video_frames, masks = render_video(scene, split, i, frames, kinds, seed)
                folder = tmp / split / "frames" / video
                folder.mkdir(parents=True)
                for t, frame in enumerate(video_frames):
                    (folder / f"{t:0{frame_width}d}.jpg").write_bytes(encode_jpeg(frame))
                if split == "testing":
                    (tmp / split / "pixel_masks").mkdir(exist_ok=True)
                    np.save(tmp / split / "pixel_masks" / f"{video}.npy", masks)
                    gt[0, i] = intervals_from_labels(masks.any(axis=(1, 2)))
        _save_gt(tmp / f"{name}.mat", gt)
        per_video = "; ".join(f"{i + 1:0{width}d}: {', '.join(kinds)}" for i, kinds in enumerate(plan))
        (tmp / "README.txt").write_text(
            f"Synthetic surveillance dataset '{name}' written by mama.data.synth (seed {seed}): "
            f"a fixed camera over a paved walkway, {size}x{size} pixels, {n_train} training and "
            f"{n_test} test videos of {frames} frames (JPEG quality {JPEG_QUALITY}). Training videos "
            f"show only pedestrians walking along the walkway; each test video adds labelled anomalies "
            f"({per_video}). Frame labels in {name}.mat ('gt', [start; end] columns, 1-based "
            f"inclusive) are derived from the per-pixel masks in testing/pixel_masks/<video>.npy "
            f"((T, H, W) uint8, 1 where an anomaly is visible).\n")
    return target
