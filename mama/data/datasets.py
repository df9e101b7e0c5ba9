"""The data layer: find the videos of a dataset, read their frames, cut them into clips.

Pure `make_*_samples` functions list one `VideoRecord` per video (frames, labels); they
never read pixels (`make_folder_samples`, a user's own footage, reads its frames' headers:
check_frame_files). `read_frame` / `load_video_frames` read frames as the reference code
does (OpenCV, BGR, resized, float32 CHW in [-1, 1]; a video file through the one decoder,
mama.data.video); `ClipDataset` serves every window of `clip_len` consecutive frames
(4 inputs + the target frame); `VideoBalancedSampler` walks those clips in the reference
code's endless order (batches of distinct videos, clips balanced per video), resumably.

Layouts understood (labels: uint8 per frame, 1 = abnormal):

    ped1, ped2, avenue, synth (`make_mat_samples(root, name, split)`):
        <root>/<name>/
            training/frames/<video>/<frame>.jpg|png|tif     normal videos (labels all 0)
            testing/frames/<video>/<frame>.jpg|png|tif
            <name>.mat      key 'gt': (1, n_videos) cell of (2, K) [start; end] rows,
                            1-based inclusive (K abnormal intervals; K may be 0), or a
                            plain numeric (2, n_videos) / (n_videos, 2) array (one
                            interval per video)

    shanghai (`make_shanghai_samples(root, split)`), either layout:
        <root>/shanghai/                        <root>/shanghai/   (the paper repo's)
            training/frames/<video>/                training/<video>/
              (or training/videos/<video>.avi)
            testing/frames/01_0014/                 testing/01_0014/
            testing/test_frame_mask/01_0014.npy     testframemask/01_0014.npy
        (testing/testframemask/ is read too)

    folder (`make_folder_samples(path)`): your own footage
        clip.mp4                       one video file (mp4, avi, mov, mkv)
        frames/000.jpg ...             one folder of images = one video
        videos/                        a folder of frame folders and/or video files
            cam1/000.jpg ...
            cam2.mp4
            cam1.npy | cam1.txt        optional labels (one 0/1 per frame) beside a video
            labels/cam2.npy | cam2.txt   ... or in a labels/ folder

Frame files are sorted naturally (2.jpg before 10.jpg).
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import os
import re
import weakref
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import scipy.io
import torch
from torch.utils.data import Dataset, Sampler

from mama.config import FRAME_SIZE
from mama.data.video import VideoFile, changed_video, unreadable_video
from mama.errors import MamaError
from mama.features.clips import CLIP_LEN

SPLITS = ("training", "testing")
MAT_DATASETS = ("ped1", "ped2", "avenue", "synth")
KNOWN_DATASETS = (*MAT_DATASETS, "shanghai", "folder")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv"})
LABEL_SUFFIXES = (".npy", ".txt")
DEFAULT_SIZE = (FRAME_SIZE, FRAME_SIZE)  # (H, W), as the reference code
BACKGROUND_FRAMES = 64  # the most frames the per-pixel median background looks at
SHANGHAI_MASK_DIRS = ("test_frame_mask", "testframemask")  # community / paper repo names
# Where the frame masks are looked for, relative to <root>/shanghai, in this order: the community
# layout, the paper repo's (beside training/ and testing/), and its name under testing/.
SHANGHAI_MASK_PATHS = ("testing/test_frame_mask", "testframemask", "testing/testframemask")


@dataclass(frozen=True, eq=False)
class VideoRecord:
    """One video: its frame files (or a video file), frame count and per-frame labels."""

    name: str
    frames: tuple[Path, ...]  # sorted frame files; empty for a video file
    video_file: Path | None
    num_frames: int
    labels: np.ndarray | None  # uint8 (num_frames,), 1 = abnormal; None when unknown

    @property
    def source(self) -> Path:
        """The folder or file the video is read from (for messages)."""
        return self.video_file if self.video_file is not None else self.frames[0].parent


# ---------------------------------------------------------------------------------------
# Listing videos
# ---------------------------------------------------------------------------------------
def natural_key(path: Path) -> list:
    """Sort key putting numbers in numeric order: frame2 < frame10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _image_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)


def _is_video_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


def count_video_file_frames(path: Path) -> int:
    """Frames in a video file, counted by decoding (the container's count is unreliable)."""
    with VideoFile(path) as video:
        count = video.count()
    if count == 0:
        raise unreadable_video(path)
    return count


def video_fps(video: "VideoRecord") -> float | None:
    """A video file's frame rate as its container states it; None for a folder of frames."""
    if video.video_file is None:
        return None
    with VideoFile(video.video_file) as decoder:
        return decoder.fps


def _frame_folder_record(folder: Path, labels: np.ndarray | None = None) -> VideoRecord:
    frames = _image_files(folder)
    if len(frames) < CLIP_LEN:
        raise MamaError(f"{folder}: {len(frames)} frames, a video needs at least {CLIP_LEN}; add frames or remove the folder")
    return VideoRecord(folder.name, tuple(frames), None, len(frames), labels)


def _video_file_record(path: Path) -> VideoRecord:
    num_frames = count_video_file_frames(path)
    if num_frames < CLIP_LEN:
        raise MamaError(f"{path}: {num_frames} frames, a video needs at least {CLIP_LEN}; use a longer video")
    return VideoRecord(path.stem, (), path, num_frames, None)


def _list_videos(folder: Path, skip: tuple[str, ...] = ()) -> list[VideoRecord]:
    """One record per frame folder or video file directly inside `folder`, natural order."""
    entries = sorted((p for p in folder.iterdir() if p.name not in skip and not p.name.startswith(".")), key=natural_key)
    records = [_frame_folder_record(p) if p.is_dir() else _video_file_record(p) for p in entries if p.is_dir() or _is_video_file(p)]
    if not records:
        raise MamaError(f"{folder}: no videos found; expected one folder of frames (or one video file) per video")
    return records


def _with_labels(record: VideoRecord, labels: np.ndarray) -> VideoRecord:
    return VideoRecord(record.name, record.frames, record.video_file, record.num_frames, labels)


def _normal_labels(records: list[VideoRecord]) -> list[VideoRecord]:
    """Training videos are normal: labels all zero."""
    return [_with_labels(r, np.zeros(r.num_frames, np.uint8)) for r in records]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise MamaError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")


def _dataset_dir(root: str | Path, name: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise MamaError(f"{root}: data root not found; pass the folder that holds {name}/ (e.g. --data-root /data)")
    folder = root / name
    if not folder.is_dir():
        raise MamaError(f"{folder}: dataset folder not found; put {name}/ under {root} or pass the right --data-root")
    return folder


def _split_dir(dataset_dir: Path, split: str) -> Path:
    folder = dataset_dir / split
    if not folder.is_dir():
        raise MamaError(f"{folder}: no {split} split; expected {split}/frames/<video>/<frame>.jpg inside {dataset_dir}")
    return folder


def _load_label_file(path: Path, num_frames: int) -> np.ndarray:
    """A per-frame 0/1 label file (.npy or .txt), checked against the video's length."""
    try:
        values = np.load(path, allow_pickle=False) if path.suffix == ".npy" else np.loadtxt(path, ndmin=1)
    except (OSError, ValueError, EOFError, SyntaxError) as exc:  # EOFError: an empty .npy
        reason = str(exc) or ("an empty file" if path.stat().st_size == 0 else type(exc).__name__)
        raise MamaError(f"{path}: cannot read labels ({reason}); write one 0/1 per frame (.npy array or .txt)") from None
    values = np.asarray(values).ravel()
    if values.size and not np.isin(values, (0, 1)).all():
        raise MamaError(f"{path}: labels must be 0 (normal) or 1 (abnormal), one per frame")
    if values.size != num_frames:
        raise MamaError(f"{path}: {values.size} labels for a video of {num_frames} frames; write one label per frame")
    return values.astype(np.uint8)


# ---------------------------------------------------------------------------------------
# ped1 / ped2 / avenue / synth: frame folders + <name>.mat
# ---------------------------------------------------------------------------------------
def _gt_intervals(mat_path: Path, num_videos: int) -> list[np.ndarray]:
    """The 'gt' of a .mat file as one (K, 2) int array of [start, end] rows per video."""
    try:
        gt = scipy.io.loadmat(str(mat_path))["gt"]
    except KeyError:
        raise MamaError(f"{mat_path}: no 'gt' variable; save the ground truth under the name 'gt'") from None
    except (OSError, ValueError, NotImplementedError, TypeError, scipy.io.matlab.MatReadError) as exc:
        raise MamaError(f"{mat_path}: cannot read this .mat file ({exc}); save it with MATLAB -v7 or scipy.io.savemat") from None
    if gt.dtype == object:  # a cell: one (2, K) [start; end] array per video
        cells = list(gt.ravel())
        if len(cells) != num_videos:
            raise MamaError(f"{mat_path}: 'gt' lists {len(cells)} videos but the testing folder has {num_videos}; use the .mat that belongs to these videos")
        intervals = []
        for cell in cells:
            cell = np.asarray(cell, dtype=np.int64)
            if cell.size == 0:
                intervals.append(np.zeros((0, 2), np.int64))
            elif cell.ndim == 1 and cell.size == 2:
                intervals.append(cell.reshape(1, 2))
            elif cell.ndim == 2 and cell.shape[0] == 2:
                intervals.append(cell.T)
            else:
                raise MamaError(f"{mat_path}: a 'gt' cell has shape {cell.shape}; each cell must be a (2, K) array of [start; end] rows")
        return intervals
    gt = np.asarray(gt, dtype=np.int64)  # plain numeric: one interval per video
    if gt.ndim == 2 and gt.shape == (2, num_videos):  # one [start; end] column per video (preferred)
        return [column.reshape(1, 2) for column in gt.T]
    if gt.ndim == 2 and gt.shape == (num_videos, 2):
        return [row.reshape(1, 2) for row in gt]
    raise MamaError(f"{mat_path}: 'gt' of shape {gt.shape} does not list the {num_videos} videos of the testing folder; use the .mat that belongs to these videos")


def _interval_labels(mat_path: Path, video: VideoRecord, intervals: np.ndarray) -> np.ndarray:
    labels = np.zeros(video.num_frames, np.uint8)
    for start, end in intervals:
        if not 1 <= start <= end <= video.num_frames:
            raise MamaError(
                f"{mat_path}: interval [{start}, {end}] of video {video.name} does not fit its {video.num_frames} frames; "
                f"intervals are 1-based inclusive with 1 <= start <= end <= {video.num_frames}"
            )
        labels[start - 1 : end] = 1
    return labels


def make_mat_samples(root: str | Path, name: str, split: str) -> list[VideoRecord]:
    """ped1 / ped2 / avenue / synth: one record per video of `<root>/<name>/<split>/frames/`."""
    _check_split(split)
    dataset_dir = _dataset_dir(root, name)
    frames_dir = _split_dir(dataset_dir, split) / "frames"
    if not frames_dir.is_dir():
        raise MamaError(f"{frames_dir}: folder not found; put one folder of frames per video in {split}/frames/")
    videos = _list_videos(frames_dir)
    if split == "training":
        return _normal_labels(videos)
    mat_path = dataset_dir / f"{name}.mat"
    if not mat_path.is_file():
        raise MamaError(f"{mat_path}: ground truth not found; put {name}.mat (key 'gt', [start; end] 1-based per test video) there")
    intervals = _gt_intervals(mat_path, len(videos))
    return [_with_labels(v, _interval_labels(mat_path, v, iv)) for v, iv in zip(videos, intervals)]


# ---------------------------------------------------------------------------------------
# ShanghaiTech: frame folders + per-video frame masks
# ---------------------------------------------------------------------------------------
def make_shanghai_samples(root: str | Path, split: str) -> list[VideoRecord]:
    """ShanghaiTech in the community layout (frames/, test_frame_mask/) or the paper repo's."""
    _check_split(split)
    dataset_dir = _dataset_dir(root, "shanghai")
    split_dir = _split_dir(dataset_dir, split)
    if (split_dir / "frames").is_dir():
        videos = _list_videos(split_dir / "frames")
    elif (split_dir / "videos").is_dir():
        videos = _list_videos(split_dir / "videos")
    else:
        videos = _list_videos(split_dir, skip=SHANGHAI_MASK_DIRS)
    if split == "training":
        return _normal_labels(videos)
    mask_dirs = [dataset_dir / d for d in SHANGHAI_MASK_PATHS if (dataset_dir / d).is_dir()]
    if not mask_dirs:
        raise MamaError(f"{dataset_dir}: no frame masks; put <video>.npy (0/1 per frame) in "
                        f"{dataset_dir / SHANGHAI_MASK_PATHS[0]} (or {dataset_dir / SHANGHAI_MASK_PATHS[1]})")
    labelled = []
    for video in videos:
        mask = mask_dirs[0] / f"{video.name}.npy"
        if not mask.is_file():
            raise MamaError(f"{mask}: frame mask not found; every test video needs <video>.npy with one 0/1 per frame")
        labelled.append(_with_labels(video, _load_label_file(mask, video.num_frames)))
    return labelled


# ---------------------------------------------------------------------------------------
# A user's own footage: a video file, a folder of images, or a folder of videos
# ---------------------------------------------------------------------------------------
def _find_labels(record: VideoRecord, folder: Path) -> np.ndarray | None:
    """Labels `<video>.npy|txt` beside the video in `folder` or in `folder/labels/`."""
    for directory in (folder, folder / "labels"):
        for suffix in LABEL_SUFFIXES:
            path = directory / f"{record.name}{suffix}"
            if path.is_file():
                return _load_label_file(path, record.num_frames)
    return None


def make_folder_samples(path: str | Path) -> list[VideoRecord]:
    """A video file, a folder of images (one video) or a folder of frame folders / video files."""
    path = Path(path)
    if not path.exists():
        raise MamaError(f"{path}: not found; pass a video file, a folder of frames or a folder of videos")
    if not (path.is_file() or path.is_dir()):
        raise MamaError(f"{path}: not a regular file or folder (a pipe, socket or device); save the video to a file, "
                        "or pass a stream by its URL (rtsp://, http://)")
    if path.is_file():
        if not _is_video_file(path):
            raise MamaError(f"{path}: not a video file; pass a {'/'.join(sorted(s[1:] for s in VIDEO_SUFFIXES))} file or a folder of frames")
        records, folder = [_video_file_record(path)], path.parent
    elif _image_files(path):
        records, folder = [_frame_folder_record(path)], path.parent
    else:
        records, folder = _list_videos(path, skip=("labels",)), path
    records = [_with_labels(r, labels) if (labels := _find_labels(r, folder)) is not None else r for r in records]
    # A user's own footage is checked from its frames' headers when listed, so `mama score` refuses
    # a bad frame before it opens its outputs.
    check_frame_files(records)
    return records


def make_samples(dataset: str, root: str | Path, split: str) -> list[VideoRecord]:
    """Dispatch by dataset name; for `folder`, `root` is the video file or folder itself."""
    if dataset in MAT_DATASETS:
        return make_mat_samples(root, dataset, split)
    if dataset == "shanghai":
        return make_shanghai_samples(root, split)
    if dataset == "folder":
        return make_folder_samples(root)
    raise MamaError(f"unknown dataset {dataset!r}; use one of {', '.join(KNOWN_DATASETS)}")


def label_intervals(labels: np.ndarray) -> list[tuple[int, int]]:
    """The runs of 1 (True) in a 0/1 vector as 1-based inclusive (start, end) pairs: the abnormal
    intervals of a video's labels, of a mask's frames, or of the frames above an alarm threshold."""
    padded = np.concatenate([[0], np.asarray(labels, np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return [(int(s) + 1, int(e)) for s, e in zip(edges[::2], edges[1::2])]


# ---------------------------------------------------------------------------------------
# Reading frames (as the reference code: OpenCV BGR, resized, [-1, 1], CHW)
# ---------------------------------------------------------------------------------------
def resize_frame(image_bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A decoded uint8 BGR image (H0, W0, 3) -> uint8 (H, W, 3), resized as the reference."""
    height, width = size
    return cv2.resize(image_bgr, (width, height))  # cv2 wants (W, H); bilinear as the reference


def uint8_to_model_range(frames: np.ndarray) -> np.ndarray:
    """uint8 BGR (..., H, W, 3) -> float32 (..., 3, H, W) in [-1, 1] (mama.data.resident does
    the same on the device, to the same bits)."""
    return np.moveaxis(frames.astype(np.float32) / 127.5 - 1.0, -1, -3)


def frame_to_model_range(image_bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A decoded uint8 BGR image (H0, W0, 3) -> float32 (3, H, W) in [-1, 1], resized as the reference."""
    return uint8_to_model_range(resize_frame(image_bgr, size))


def decode_image(path: str | Path) -> np.ndarray:
    """Decode an image file to uint8 BGR (H, W, 3); a truncated or unreadable file is a MamaError."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise MamaError(f"{path}: cannot read this frame ({exc.strerror}); check the file's permissions") from None
    # cv2.imread decodes a truncated JPEG with a mere warning (imdecode may too, by version):
    # check the end-of-image marker so none slips through.
    is_jpeg = data[:2].tobytes() == b"\xff\xd8"
    truncated = is_jpeg and data.tobytes().rstrip(b"\x00\r\n ")[-2:] != b"\xff\xd9"
    image = None if truncated or data.size == 0 else cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise _undecodable(path)
    return image


def read_frame(path: str | Path, size: tuple[int, int] = DEFAULT_SIZE) -> np.ndarray:
    """One frame as float32 (3, H, W), BGR, scaled to [-1, 1]."""
    return frame_to_model_range(decode_image(path), size)


def check_frame_shape(path: Path, image: np.ndarray, first: Path, first_shape: tuple[int, int]) -> np.ndarray:
    """A video's frames all have its first frame's size: a frame of another size is bad input (it
    would be stretched silently), said in one line naming both files. Returns `image`."""
    _check_shape(path, tuple(image.shape[:2]), first, first_shape)
    return image


def _check_shape(path: Path, shape: tuple[int, int], first: Path, first_shape: tuple[int, int]) -> None:
    if tuple(shape) != tuple(first_shape):
        raise MamaError(f"{path}: {shape[1]}x{shape[0]} pixels, but the video's first frame {first.name} is "
                        f"{first_shape[1]}x{first_shape[0]}; replace it with a frame of the camera's size or remove it")


def _undecodable(path: Path) -> MamaError:
    return MamaError(f"{path}: cannot decode this frame (truncated or not an image); replace it or remove it from the video")


def check_frame_files(videos: list["VideoRecord"]) -> None:
    """Every frame file of the frame-folder videos is an image whose header gives the video's first
    frame's size, and a JPEG ends with its end marker: read from the files' headers and tails (no
    pixel is decoded; ~0.2 ms a frame), so a bad frame is found before anything is computed or
    written, not at the end of an hour of scoring. Video files are read as they are."""
    from PIL import Image, UnidentifiedImageError

    for video in videos:
        if video in _frames_checked:
            continue
        first_shape = None
        for path in video.frames:
            try:
                with Image.open(path) as image:
                    shape = (image.height, image.width)
                with open(path, "rb") as f:
                    head = f.read(2)
                    f.seek(max(0, path.stat().st_size - 64))
                    tail = f.read()
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
                raise _undecodable(path) from None
            if head == b"\xff\xd8" and tail.rstrip(b"\x00\r\n ")[-2:] != b"\xff\xd9":
                raise _undecodable(path)
            first_shape = first_shape or shape
            _check_shape(path, shape, video.frames[0], first_shape)
        _frames_checked.add(video)


_frames_checked: "weakref.WeakSet[VideoRecord]" = weakref.WeakSet()  # records check_frame_files passed


@functools.lru_cache(maxsize=4096)
def _first_frame_shape(path: str) -> tuple[int, int]:
    return tuple(decode_image(path).shape[:2])


def decode_video_frame(video: "VideoRecord", index: int) -> np.ndarray:
    """Frame `index` of a video, decoded (uint8 BGR) at its own size; a frame folder's checked
    to have the size of its first frame (check_frame_shape)."""
    if video.video_file is not None:
        with VideoFile(video.video_file) as decoder:
            image = decoder.frame(index)
        if image is None:
            raise MamaError(f"{video.video_file}: cannot read frame {index}; the file changed, list the dataset again")
        return image
    path, first = video.frames[index], video.frames[0]
    image = decode_image(path)
    return check_frame_shape(path, image, first, image.shape[:2] if index == 0 else _first_frame_shape(str(first)))


def read_video_frame(video: "VideoRecord", index: int, size: tuple[int, int] = DEFAULT_SIZE) -> np.ndarray:
    """Frame `index` of a frame-folder video as float32 (3, H, W), BGR in [-1, 1], its size checked."""
    return frame_to_model_range(decode_video_frame(video, index), size)


def iter_video_frames(video: VideoRecord, size: tuple[int, int] = DEFAULT_SIZE):
    """The frames of a video one at a time, float32 (3, H, W) BGR in [-1, 1], decoded as they
    are read (a video file is never held whole)."""
    if video.video_file is None:
        for index in range(video.num_frames):
            yield read_video_frame(video, index, size)
        return
    count = 0
    with VideoFile(video.video_file) as decoder:  # a reader that stops early closes the file now
        for frame in decoder.frames():
            count += 1
            yield frame_to_model_range(frame.image, size)
    if count != video.num_frames:
        raise changed_video(video.video_file, count, video.num_frames)


# ---------------------------------------------------------------------------------------
# Prepared frames: a video file decoded once into uint8 frames at the training size
# ---------------------------------------------------------------------------------------
def prepared_path(video: VideoRecord, size: tuple[int, int]) -> Path:
    """Where a video file's prepared frames live: $MAMA_CACHE/frames/<name>-<digest>-<H>x<W>.npy."""
    from mama.io import cache_folder

    source = Path(video.source).resolve()
    st = source.stat()
    digest = hashlib.sha1(f"{source}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_folder("frames") / f"{video.name}-{digest}-{size[0]}x{size[1]}.npy"


def _npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of a C-order .npy whose size fits its header; ValueError if not."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    if fortran:
        raise ValueError("Fortran order")
    if path.stat().st_size != offset + int(np.prod(shape)) * dtype.itemsize:
        raise ValueError("size does not fit the header (truncated?)")
    return shape, dtype, offset


def prepare_video(video: VideoRecord, size: tuple[int, int] = DEFAULT_SIZE) -> Path:
    """Decode a video file once, frame by frame, into (T, H, W, 3) uint8 BGR frames resized as
    the reader resizes them, written atomically as .npy; returns its path (kept if it exists).
    The cache entry is held while it is written (mama.cache)."""
    from mama.cache import hold

    path = prepared_path(video, size)
    with hold(path):
        _write_prepared(video, size, path)
    return path


def open_prepared(video: VideoRecord, size: tuple[int, int] = DEFAULT_SIZE) -> "PreparedFrames":
    """A video file's prepared frames (prepared first if needed), held in use for as long as the
    returned reader lives, so `mama cache clear` leaves them alone."""
    from mama.cache import hold

    path = prepared_path(video, size)
    entry = hold(path)
    try:
        _write_prepared(video, size, path)
        return PreparedFrames(path, entry)
    except BaseException:
        entry.close()
        raise


def _write_prepared(video: VideoRecord, size: tuple[int, int], path: Path) -> None:
    from mama.io import atomic_path

    height, width = size
    if path.is_file():
        try:
            shape, dtype, _ = _npy_layout(path)
            if shape == (video.num_frames, height, width, 3) and dtype == np.uint8:
                return
        except (OSError, ValueError, SyntaxError):  # zeroed, truncated or not an .npy: prepared again
            pass
    with atomic_path(path, suffix=".npy") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(video.num_frames, height, width, 3))
        count = 0
        with VideoFile(video.video_file) as decoder:  # the listed frames and no more: one past them is not decoded
            for frame in itertools.islice(decoder.frames(), video.num_frames):
                out[count] = resize_frame(frame.image, size)
                count += 1
        out.flush()
        del out
        if count != video.num_frames:
            raise changed_video(video.video_file, count, video.num_frames)


class PreparedFrames:
    """Read frames of a prepared .npy by offset (os.pread): nothing is mapped or kept, so
    memory does not grow with the video's length however much of it is read. `hold`, when
    given, is the cache entry's hold (mama.cache), kept as long as the reader lives."""

    def __init__(self, path: Path, hold=None):
        self._hold = hold
        try:
            shape, dtype, self.offset = _npy_layout(path)
        except (OSError, ValueError, SyntaxError):
            shape, dtype = (), None
        if dtype != np.uint8 or len(shape) != 4:
            raise MamaError(f"{path}: not prepared frames (uint8 (T, H, W, 3)); delete it and it is prepared again")
        self.path, self.shape = path, shape
        self.frame_bytes = int(np.prod(shape[1:]))
        self._fd = None

    def __enter__(self) -> "PreparedFrames":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self):  # DataLoader workers open their own descriptor; the parent holds the entry
        return {**self.__dict__, "_fd": None, "_hold": None}

    def close(self) -> None:
        """Close the descriptor and let go of the cache entry."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._hold is not None:
            self._hold.close()
            self._hold = None

    def read_uint8(self, indices) -> np.ndarray:
        """uint8 (N, H, W, 3) BGR of frames `indices`, as stored."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        out = np.empty((len(indices), *self.shape[1:]), np.uint8)
        for j, i in enumerate(indices):
            out[j] = np.frombuffer(os.pread(self._fd, self.frame_bytes, self.offset + int(i) * self.frame_bytes),
                                   np.uint8).reshape(self.shape[1:])
        return out

    def read(self, indices) -> np.ndarray:
        """float32 (N, 3, H, W) BGR in [-1, 1] of frames `indices`."""
        return uint8_to_model_range(self.read_uint8(indices))


def load_video_frames(video: VideoRecord, size: tuple[int, int] = DEFAULT_SIZE) -> np.ndarray:
    """All frames of a video as float32 (T, 3, H, W), BGR, in [-1, 1]."""
    if video.video_file is not None:
        with VideoFile(video.video_file) as decoder:
            frames = [frame_to_model_range(frame.image, size) for frame in decoder.frames()]
        if not frames:
            raise unreadable_video(video.video_file)
        if len(frames) != video.num_frames:
            raise changed_video(video.video_file, len(frames), video.num_frames)
        return np.stack(frames)
    return np.stack([read_video_frame(video, i, size) for i in range(video.num_frames)])


def read_video_frames(video: VideoRecord, indices, size: tuple[int, int] = DEFAULT_SIZE) -> np.ndarray:
    """Frames `indices` of a video as float32 (N, 3, H, W): a frame folder reads only those
    files, a video file its prepared frames (prepare_video, done once)."""
    indices = np.asarray(indices, dtype=np.int64)
    if video.video_file is not None:
        with open_prepared(video, size) as prepared:
            return prepared.read(indices)
    return np.stack([read_video_frame(video, int(i), size) for i in indices])


def background_indices(num_frames: int) -> np.ndarray:
    """At most BACKGROUND_FRAMES evenly spaced frame indices."""
    return np.unique(np.linspace(0, num_frames - 1, min(num_frames, BACKGROUND_FRAMES)).round().astype(np.int64))


def video_background(frames: np.ndarray) -> np.ndarray:
    """A fixed camera's background (3, H, W): the per-pixel median over <= 64 evenly spaced frames."""
    frames = np.asarray(frames)
    return np.median(frames[background_indices(len(frames))], axis=0).astype(np.float32)


def read_background(video: VideoRecord, size: tuple[int, int], count: int | None = None) -> np.ndarray:
    """`video_background` of a video on disk (of its first `count` frames; None: all), reading
    only the <= 64 frames it uses."""
    frames = read_video_frames(video, background_indices(video.num_frames if count is None else count), size)
    return video_background(frames)


# ---------------------------------------------------------------------------------------
# Clips
# ---------------------------------------------------------------------------------------
class ClipDataset(Dataset):
    """Every window of `clip_len` consecutive frames of every video, video by video.

    Item i: {"clip": float32 (clip_len, 3, H, W), "video": index into `videos`, "target":
    index of the clip's last frame in its video}; `frames(video, indices)` and
    `background(video)` read any frames and a video's median background.
    The first clip of a video targets frame clip_len - 1, so a video of T frames gives
    T - clip_len + 1 clips. Frame folders are read on demand; a video file is decoded once into
    prepared uint8 frames on disk (prepare_video) and read from there, never held whole.
    """

    def __init__(self, videos: list[VideoRecord], size: tuple[int, int] = DEFAULT_SIZE, clip_len: int = CLIP_LEN):
        if not videos:
            raise MamaError("no videos to make clips from; check the dataset path and split")
        if clip_len < 1:
            raise ValueError(f"clip_len must be >= 1, got {clip_len}")
        for video in videos:
            if video.num_frames < clip_len:
                raise MamaError(f"{video.source}: {video.num_frames} frames, clips of {clip_len} need at least {clip_len}; add frames or drop the video")
        self.videos = list(videos)
        self.size = tuple(size)
        self.clip_len = clip_len
        self.clips_per_video = np.array([v.num_frames - clip_len + 1 for v in self.videos])
        self._starts = np.concatenate([[0], np.cumsum(self.clips_per_video)])  # first clip index of each video
        self._prepared: dict[int, PreparedFrames] = {}  # video index -> its prepared frames, video files only
        self._backgrounds: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def first_clips(self) -> np.ndarray:
        """Index of each video's first clip."""
        return self._starts[:-1]

    def locate(self, index: int) -> tuple[int, int]:
        """(video index, target frame index) of clip `index`."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"clip index {index} out of range for {len(self)} clips")
        video = int(np.searchsorted(self._starts, index, side="right")) - 1
        return video, int(index - self._starts[video]) + self.clip_len - 1

    def frames_uint8(self, video: int, indices) -> np.ndarray:
        """Frames `indices` of video `video` as decoded and resized, uint8 (N, H, W, 3) BGR."""
        record = self.videos[video]
        if record.video_file is not None:
            if video not in self._prepared:
                self._prepared[video] = open_prepared(record, self.size)
            return self._prepared[video].read_uint8(list(indices))
        return np.stack([resize_frame(decode_video_frame(record, int(i)), self.size) for i in indices])

    def frames(self, video: int, indices) -> np.ndarray:
        """Frames `indices` of video `video`, float32 (N, 3, H, W) in [-1, 1] at the dataset's size."""
        return uint8_to_model_range(self.frames_uint8(video, indices))

    def background(self, video: int) -> np.ndarray:
        """The video's median background (3, H, W), computed once."""
        if video not in self._backgrounds:
            indices = background_indices(self.videos[video].num_frames)
            self._backgrounds[video] = video_background(self.frames(video, indices))  # already evenly spaced
        return self._backgrounds[video]

    def __getitem__(self, index: int) -> dict:
        video, target = self.locate(index)
        clip = self.frames(video, range(target - self.clip_len + 1, target + 1))
        return {"clip": torch.from_numpy(np.ascontiguousarray(clip)), "video": video, "target": target}


class VideoBalancedSampler(Sampler[int]):
    """The reference code's clip order: batches of distinct videos, clips balanced per video.

    The videos are shuffled once per round and cut into batches of `batch_size` distinct
    videos (a round's last, incomplete batch is dropped, as the reference's DataLoader
    over videos drops it); each time a video is drawn, it gives its next clip from its own
    shuffled list of clips, which is reshuffled when used up. So every video contributes
    equally whatever its length, and no clip repeats before its video's list is exhausted.
    With fewer videos than `batch_size`, the rounds are concatenated and a batch may hold a
    video twice.

    Yields clip indices of a ClipDataset, `batch_size` consecutive ones per batch, forever.
    The order is a pure function of (seed, samples consumed): a DataLoader with workers may
    draw ahead, so resume with `resume_at(samples actually used)`.
    """

    def __init__(self, dataset: "ClipDataset", batch_size: int, seed: int = 0):
        self.clip_counts = [int(n) for n in dataset.clips_per_video]
        self.starts = [int(s) for s in dataset.first_clips]
        if not self.clip_counts or min(self.clip_counts) < 1:
            raise MamaError("no clips to sample; check the dataset path and split")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.seed = seed
        self.start = 0  # samples consumed before iteration (re)starts

    @property
    def num_videos(self) -> int:
        return len(self.clip_counts)

    def video_round(self, r: int) -> np.ndarray:
        """The videos drawn in round r, in order (a permutation, trimmed to whole batches)."""
        order = np.random.default_rng([self.seed, 0, r]).permutation(self.num_videos)
        if self.num_videos >= self.batch_size:
            order = order[: self.num_videos // self.batch_size * self.batch_size]
        return order

    def clip_round(self, video: int, r: int) -> np.ndarray:
        """The order of video `video`'s clips in its r-th pass over them."""
        return np.random.default_rng([self.seed, 1, video, r]).permutation(self.clip_counts[video])

    def _videos(self):
        r = 0
        while True:
            yield from (int(v) for v in self.video_round(r))
            r += 1

    def __iter__(self):
        drawn = [0] * self.num_videos  # clips each video has given so far
        passes: dict[int, tuple[int, np.ndarray]] = {}  # video -> (pass number, clip order)
        for i, video in enumerate(self._videos()):
            k = drawn[video]
            drawn[video] += 1
            if i < self.start:  # replay what was consumed before a resume (indices are cheap)
                continue
            n = self.clip_counts[video]
            r = k // n
            if passes.get(video) is None or passes[video][0] != r:
                passes[video] = (r, self.clip_round(video, r))
            yield self.starts[video] + int(passes[video][1][k % n])

    def resume_at(self, consumed: int) -> None:
        """Start the next iteration after the first `consumed` samples of the order."""
        self.start = int(consumed)

    def state_dict(self, consumed: int) -> dict:
        return {"consumed": int(consumed), "seed": self.seed, "batch_size": self.batch_size,
                "clip_counts": list(self.clip_counts)}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state`; the dataset and batch size must be those it was saved with."""
        if list(state.get("clip_counts", self.clip_counts)) != self.clip_counts:
            raise MamaError("sampler state is for another set of training videos; resume with the same dataset")
        if int(state.get("batch_size", self.batch_size)) != self.batch_size:
            raise MamaError(f"sampler state is for batch size {state['batch_size']}, this run has {self.batch_size}; "
                            "resume with the same --batch-size (and number of processes)")
        self.seed = int(state.get("seed", self.seed))
        self.resume_at(state["consumed"])
