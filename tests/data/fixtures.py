"""Helpers that write tiny datasets, in every layout and ground-truth format the data layer
reads, into a test's tmp_path. Frames are small random images from a seeded generator."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import scipy.io

FRAME_HW = (24, 32)  # (H, W) of the tiny frames


def random_image(rng: np.random.Generator, hw: tuple[int, int] = FRAME_HW) -> np.ndarray:
    return rng.integers(0, 256, size=(*hw, 3), dtype=np.uint8)


def write_frames(folder: Path, count: int, rng: np.random.Generator, suffix: str = ".png", start: int = 0) -> list[Path]:
    """`count` random frames named <start>.png ... without zero padding (tests natural order)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        path = folder / f"{i}{suffix}"
        assert cv2.imwrite(str(path), random_image(rng))
        paths.append(path)
    return paths


def write_video_file(path: Path, count: int, rng: np.random.Generator, fps: float = 10.0) -> Path:
    """An mp4 (mp4v codec) of `count` random frames, written with cv2.VideoWriter."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = FRAME_HW
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened()
    for _ in range(count):
        writer.write(random_image(rng))
    writer.release()
    return path


def cell_gt(intervals_per_video: list[list[tuple[int, int]]]) -> np.ndarray:
    """A MATLAB cell (1, n) of (2, K) [start; end] arrays, as ped1/ped2/avenue ship it."""
    gt = np.empty((1, len(intervals_per_video)), dtype=object)
    for i, intervals in enumerate(intervals_per_video):
        gt[0, i] = np.array(intervals, dtype=np.float64).reshape(-1, 2).T
    return gt


def write_mat_dataset(
    root: Path,
    name: str,
    test_frames: list[int],
    gt: np.ndarray | None,
    train_frames: tuple[int, ...] = (6, 7),
    seed: int = 0,
) -> Path:
    """<root>/<name>/{training,testing}/frames/<video>/ and <name>.mat holding `gt`."""
    rng = np.random.default_rng(seed)
    dataset = root / name
    for split, counts in (("training", train_frames), ("testing", test_frames)):
        for v, count in enumerate(counts, start=1):
            write_frames(dataset / split / "frames" / f"{v:02d}", count, rng, suffix=".jpg")
    if gt is not None:
        scipy.io.savemat(dataset / f"{name}.mat", {"gt": gt})
    return dataset


def write_shanghai(root: Path, layout: str, masks: dict[str, np.ndarray], train_frames: tuple[int, ...] = (6,), seed: int = 0) -> Path:
    """ShanghaiTech: layout 'community' (testing/frames/, testing/test_frame_mask/) or 'paper' (the
    paper repo's: testing/<video>/ and the masks in testframemask/ beside training/ and testing/)."""
    rng = np.random.default_rng(seed)
    dataset = root / "shanghai"
    if layout == "community":
        train_dir, test_dir, mask_dir = dataset / "training" / "frames", dataset / "testing" / "frames", dataset / "testing" / "test_frame_mask"
    elif layout == "paper":
        train_dir, test_dir, mask_dir = dataset / "training", dataset / "testing", dataset / "testframemask"
    else:
        raise ValueError(layout)
    for v, count in enumerate(train_frames, start=1):
        write_frames(train_dir / f"{v:02d}_{v:03d}", count, rng, suffix=".jpg")
    mask_dir.mkdir(parents=True, exist_ok=True)
    for video, mask in masks.items():
        write_frames(test_dir / video, len(mask), rng, suffix=".jpg")
        np.save(mask_dir / f"{video}.npy", mask)
    return dataset


def write_folder_source(root: Path, seed: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    """A folder of two frame folders and one mp4: labels as .npy beside cam1, .txt in labels/
    for cam2, none for the mp4. Returns the folder and the labels written."""
    rng = np.random.default_rng(seed)
    folder = root / "videos"
    labels = {"cam1": (rng.random(7) < 0.5).astype(np.uint8), "cam2": (rng.random(9) < 0.5).astype(np.uint8)}
    write_frames(folder / "cam1", 7, rng)
    write_frames(folder / "cam2", 9, rng, suffix=".jpg")
    np.save(folder / "cam1.npy", labels["cam1"])
    (folder / "labels").mkdir()
    np.savetxt(folder / "labels" / "cam2.txt", labels["cam2"], fmt="%d")
    write_video_file(folder / "cam3.mp4", 6, rng)
    return folder, labels
