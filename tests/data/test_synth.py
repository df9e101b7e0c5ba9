"""The synthetic surveillance dataset: layout, labels derived from masks, determinism, motion, errors.

Everything written is read back with cv2 / scipy / numpy directly (not through mama's readers).
Datasets are small (64x64, 2 + 2 videos of 30 frames) so the file runs in seconds.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from mama.data import synth
from mama.errors import MamaError

SIZE, N_TRAIN, N_TEST, FRAMES, SEED = 64, 2, 2, 30, 3


def _write(root: Path, seed: int = SEED, **kw) -> Path:
    return synth.write_dataset(root, seed=seed, size=SIZE, n_train=N_TRAIN, n_test=N_TEST,
                               frames_per_video=FRAMES, **kw)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return _write(tmp_path_factory.mktemp("synth"))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _labels_from_gt(intervals: np.ndarray, n_frames: int) -> np.ndarray:
    labels = np.zeros(n_frames, bool)
    for start, end in intervals.T:
        labels[start - 1:end] = True
    return labels


def test_layout_and_file_counts(dataset):
    assert dataset.name == "synth"
    for split, count in (("training", N_TRAIN), ("testing", N_TEST)):
        videos = sorted(p.name for p in (dataset / split / "frames").iterdir())
        assert videos == [f"{i + 1:02d}" for i in range(count)]
        for video in videos:
            names = sorted(p.name for p in (dataset / split / "frames" / video).iterdir())
            assert names == [f"{t:03d}.jpg" for t in range(FRAMES)]
            frame = cv2.imread(str(dataset / split / "frames" / video / "000.jpg"))
            assert frame.shape == (SIZE, SIZE, 3) and frame.dtype == np.uint8
    masks = sorted(p.name for p in (dataset / "testing" / "pixel_masks").iterdir())
    assert masks == ["01.npy", "02.npy"]
    for name in masks:
        m = np.load(dataset / "testing" / "pixel_masks" / name)
        assert m.shape == (FRAMES, SIZE, SIZE) and m.dtype == np.uint8
        assert set(np.unique(m)) <= {0, 1}
    gt = scipy.io.loadmat(dataset / "synth.mat")["gt"]
    assert gt.shape == (1, N_TEST) and gt.dtype == object
    readme = (dataset / "README.txt").read_text()
    assert f"seed {SEED}" in readme and "64x64" in readme
    for kinds in synth.anomaly_plan(N_TEST):
        assert ", ".join(kinds) in readme
    assert not list(dataset.parent.glob(".synth.*")), "temporary folder left behind"


def test_gt_intervals_equal_mask_labels(dataset):
    gt = scipy.io.loadmat(dataset / "synth.mat")["gt"]
    for i in range(N_TEST):
        masks = np.load(dataset / "testing" / "pixel_masks" / f"{i + 1:02d}.npy")
        intervals = gt[0, i]
        assert intervals.ndim == 2 and intervals.shape[0] == 2 and intervals.shape[1] >= 1
        starts, ends = intervals
        assert np.all(1 <= starts) and np.all(starts <= ends) and np.all(ends <= FRAMES)
        assert np.all(starts[1:] > ends[:-1] + 1), "intervals must be sorted, disjoint and not touching"
        labels = masks.any(axis=(1, 2))
        np.testing.assert_array_equal(_labels_from_gt(intervals, FRAMES), labels)
        assert 0 < labels.sum() < FRAMES, "a test video needs both normal and abnormal frames"


def test_same_seed_is_byte_identical_and_another_seed_differs(dataset, tmp_path):
    again = _files(_write(tmp_path / "again"))
    assert again == _files(dataset)
    other = _files(_write(tmp_path / "other", seed=SEED + 1))
    assert other.keys() == again.keys()
    frames = [k for k in again if k.endswith(".jpg")]
    assert sum(other[k] != again[k] for k in frames) > 0.9 * len(frames)


def test_training_videos_rerender_to_the_written_bytes_with_empty_masks(dataset):
    scene = synth.make_scene(SIZE, SEED)
    for i in range(N_TRAIN):
        frames, masks = synth.render_video(scene, "training", i, FRAMES, (), SEED)
        folder = dataset / "training" / "frames" / f"{i + 1:02d}"
        for t in range(FRAMES):
            assert synth.encode_jpeg(frames[t]) == (folder / f"{t:03d}.jpg").read_bytes()
        assert masks.shape == (FRAMES, SIZE, SIZE) and not masks.any()


def test_test_videos_rerender_to_the_written_frames_and_masks(dataset):
    scene = synth.make_scene(SIZE, SEED)
    for i, kinds in enumerate(synth.anomaly_plan(N_TEST)):
        frames, masks = synth.render_video(scene, "testing", i, FRAMES, kinds, SEED)
        written = np.load(dataset / "testing" / "pixel_masks" / f"{i + 1:02d}.npy")
        np.testing.assert_array_equal(masks, written)
        folder = dataset / "testing" / "frames" / f"{i + 1:02d}"
        for t in (0, FRAMES // 2, FRAMES - 1):
            assert synth.encode_jpeg(frames[t]) == (folder / f"{t:03d}.jpg").read_bytes()


def test_anomaly_plan_covers_every_kind():
    for n_test in (1, 2, 4, 6, 9):
        plan = synth.anomaly_plan(n_test)
        assert len(plan) == n_test and all(len(kinds) >= 1 for kinds in plan)
        assert {k for kinds in plan for k in kinds} == set(synth.ANOMALY_KINDS)
    assert synth.anomaly_plan(6) == [(k,) for k in synth.ANOMALY_KINDS]


@pytest.mark.parametrize("kind", synth.ANOMALY_KINDS)
def test_each_anomaly_kind_is_visible_where_its_mask_is(kind):
    # Masked pixels show the anomaly, so they differ clearly from the empty background there.
    scene = synth.make_scene(SIZE, 5)
    frames, masks = synth.render_video(scene, "testing", 0, 40, (kind,), 5)
    assert masks.any(axis=(1, 2)).sum() >= 3, f"{kind} visible in too few frames"
    inside = masks.astype(bool)
    background = cv2.resize(scene.background, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    diff = np.abs(frames.astype(np.int16) - background.astype(np.int16)).max(axis=3)
    assert np.median(diff[inside]) > 20, f"{kind}: masked pixels look like the empty background"


def test_motion_is_real_and_background_static(dataset):
    frames = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
                       for p in sorted((dataset / "training" / "frames" / "01").iterdir())]).astype(np.int16)
    step = np.abs(np.diff(frames, axis=0))
    assert np.median(step) <= 4, "the background should be nearly static between frames"
    assert step.max() >= 80, "pedestrians should change the frame where they move"
    moving_per_pair = (step > 40).sum(axis=(1, 2))
    assert np.all(moving_per_pair > 0), "something moves between every pair of frames"
    assert np.all(moving_per_pair < 0.25 * SIZE * SIZE), "most of the frame should stay put"


@pytest.mark.parametrize("size", [64, 160, 256])
def test_other_sizes_scale_the_scene(size):
    scene = synth.make_scene(size, 0)
    frames, masks = synth.render_video(scene, "testing", 0, 24, ("cart",), 0)
    assert frames.shape == (24, size, size, 3) and masks.shape == (24, size, size)
    # The cart covers about the same fraction of the frame at every size.
    peak_fraction = masks.reshape(24, -1).mean(axis=1).max()
    assert 0.02 < peak_fraction < 0.12


def test_intervals_from_labels_round_trip():
    rng = np.random.default_rng(11)
    for _ in range(20):
        labels = rng.random(int(rng.integers(1, 60))) < rng.uniform(0.1, 0.9)
        intervals = synth.intervals_from_labels(labels)
        assert intervals.shape[0] == 2 and intervals.dtype == np.int32
        np.testing.assert_array_equal(_labels_from_gt(intervals, len(labels)), labels)
    assert synth.intervals_from_labels(np.zeros(5, bool)).shape == (2, 0)
    np.testing.assert_array_equal(synth.intervals_from_labels(np.ones(5, bool)), [[1], [5]])


def test_refuses_to_overwrite_unless_asked(tmp_path):
    target = tmp_path / "synth"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    message = r"synth: dataset folder already exists and is not empty; pass overwrite=True"
    with pytest.raises(MamaError, match=message):
        _write(tmp_path)
    assert (target / "keep.txt").read_text() == "mine"
    _write(tmp_path, overwrite=True)
    assert not (target / "keep.txt").exists() and (target / "synth.mat").is_file()


def test_empty_existing_folder_is_filled(tmp_path):
    (tmp_path / "synth").mkdir()
    assert (_write(tmp_path) / "README.txt").is_file()


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    real, calls = synth.render_video, []

    def failing(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return real(*args, **kw)

    monkeypatch.setattr(synth, "render_video", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        _write(tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("kw, message", [
    ({"size": 32}, r"size 32 is out of range; use 64\.\.256"),
    ({"frames_per_video": 5}, r"5 frames per video is too few; use at least 20"),
    ({"n_test": 0}, r"needs at least 1 training and 1 test video"),
    ({"name": "a/b"}, r"must be a plain folder name"),
    ({"seed": -1}, r"seed -1 must be >= 0"),
])
def test_bad_arguments_raise_one_line_errors(tmp_path, kw, message):
    args = {"seed": SEED, "size": SIZE, "n_train": N_TRAIN, "n_test": N_TEST, "frames_per_video": FRAMES}
    args.update(kw)
    with pytest.raises(MamaError, match=message):
        synth.write_dataset(tmp_path, **args)
    assert list(tmp_path.iterdir()) == []


def test_output_root_that_is_a_file_is_refused(tmp_path):
    root = tmp_path / "file"
    root.write_text("x")
    with pytest.raises(MamaError, match=r"output root is a file, not a folder"):
        _write(root)
