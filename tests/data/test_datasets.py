"""The data layer: listing videos in every layout, reading frames, clips, labels, sampler."""
from __future__ import annotations

import os
import shutil

import cv2
import numpy as np
import pytest
import scipy.io
import torch
from torch.utils.data import DataLoader

import mama.data.datasets as ds
from mama.data.datasets import (
    ClipDataset,
    VideoBalancedSampler,
    VideoRecord,
    label_intervals,
    load_video_frames,
    make_folder_samples,
    make_mat_samples,
    make_samples,
    make_shanghai_samples,
    read_frame,
    video_background,
)
from mama.errors import MamaError
from tests.data.fixtures import cell_gt, write_folder_source, write_frames, write_mat_dataset, write_shanghai, write_video_file


def expected_frame(path, size):
    """What the reference reads: cv2 BGR, resized to (W, H), /127.5 - 1, CHW."""
    image = cv2.resize(cv2.imread(str(path)), (size[1], size[0]))
    return (image.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)


def interval_labels(num_frames, intervals):
    labels = np.zeros(num_frames, np.uint8)
    for start, end in intervals:
        labels[start - 1 : end] = 1
    return labels


# ---------------------------------------------------------------------------------------
# Real UCSD Ped2
# ---------------------------------------------------------------------------------------
def test_ped2_training_split(ped2_root):
    videos = make_samples("ped2", ped2_root, "training")
    assert len(videos) == 16
    assert sum(v.num_frames for v in videos) == 2550
    assert all(v.labels is not None and v.labels.dtype == np.uint8 and not v.labels.any() for v in videos)


def test_ped2_testing_labels(ped2_root):
    videos = make_samples("ped2", ped2_root, "testing")
    assert [v.name for v in videos] == ["01", "02", "03", "04", "05", "06"]
    for video in videos:
        on_disk = len(os.listdir(ped2_root / "ped2" / "testing" / "frames" / video.name))
        assert video.num_frames == len(video.frames) == len(video.labels) == on_disk
        assert [p.name for p in video.frames] == sorted(p.name for p in video.frames)  # zero-padded names
    first = videos[0].labels
    assert first[60:180].all() and not first[:60].any() and len(first) == 180
    assert label_intervals(first) == [(61, 180)]


def test_ped2_frame_reads_as_reference(ped2_root):
    rng = np.random.default_rng(11)
    video = make_samples("ped2", ped2_root, "testing")[int(rng.integers(6))]
    path = video.frames[int(rng.integers(video.num_frames))]
    frame = read_frame(path)
    assert frame.shape == (3, 256, 256) and frame.dtype == np.float32
    assert frame.min() >= -1.0 and frame.max() <= 1.0
    np.testing.assert_array_equal(frame, expected_frame(path, (256, 256)))
    # BGR order: channel 0 is OpenCV's blue plane, not RGB's red.
    blue = cv2.resize(cv2.imread(str(path))[:, :, 0], (256, 256)).astype(np.float32) / 127.5 - 1.0
    np.testing.assert_array_equal(frame[0], blue)
    # (H, W) order for a non-square size.
    assert read_frame(path, (64, 96)).shape == (3, 64, 96)


# ---------------------------------------------------------------------------------------
# Ground-truth formats and layouts (tiny fixtures)
# ---------------------------------------------------------------------------------------
def test_cell_mat_with_several_intervals(tmp_path):
    intervals = [[(2, 4), (7, 12)], [], [(1, 9)]]
    write_mat_dataset(tmp_path, "ped1", [12, 9, 9], cell_gt(intervals))
    videos = make_samples("ped1", tmp_path, "testing")
    assert [v.num_frames for v in videos] == [12, 9, 9]
    for video, expected in zip(videos, intervals):
        np.testing.assert_array_equal(video.labels, interval_labels(video.num_frames, expected))
        assert label_intervals(video.labels) == expected
    train = make_samples("ped1", tmp_path, "training")
    assert [v.num_frames for v in train] == [6, 7] and not any(v.labels.any() for v in train)


@pytest.mark.parametrize("orientation", ["columns", "rows"])  # (2, n) [start; end] columns / (n, 2) rows
def test_plain_numeric_mat(tmp_path, orientation):
    intervals = np.array([[3, 8], [5, 5], [1, 10]])
    gt = intervals.T if orientation == "columns" else intervals
    write_mat_dataset(tmp_path, "avenue", [8, 6, 10], gt.astype(np.float64))
    videos = make_mat_samples(tmp_path, "avenue", "testing")
    for video, (start, end) in zip(videos, intervals):
        np.testing.assert_array_equal(video.labels, interval_labels(video.num_frames, [(start, end)]))


def test_frames_sorted_naturally(tmp_path):
    rng = np.random.default_rng(3)
    written = write_frames(tmp_path / "clip", 12, rng)  # 0.png ... 11.png, no zero padding
    (video,) = make_folder_samples(tmp_path / "clip")
    assert list(video.frames) == written
    assert video.labels is None and video.video_file is None


@pytest.mark.parametrize("layout", ["community", "paper"])
def test_shanghai_layouts(tmp_path, layout):
    rng = np.random.default_rng(5)
    masks = {"01_0014": (rng.random(8) < 0.5).astype(np.uint8), "01_0015": (rng.random(6) < 0.5).astype(np.uint8)}
    write_shanghai(tmp_path, layout, masks, train_frames=(6, 7))
    videos = make_shanghai_samples(tmp_path, "testing")
    assert [v.name for v in videos] == list(masks)
    for video in videos:
        np.testing.assert_array_equal(video.labels, masks[video.name])
    train = make_samples("shanghai", tmp_path, "training")
    assert [v.num_frames for v in train] == [6, 7] and not any(v.labels.any() for v in train)


def test_shanghai_paper_layout_reads_masks_beside_training_and_testing(tmp_path):
    # The paper repo reads <data_root>/shanghai/testframemask/*.npy, not under testing/.
    masks = {"01_0014": np.r_[np.zeros(3), np.ones(4)].astype(np.uint8)}
    dataset = write_shanghai(tmp_path, "paper", masks)
    assert (dataset / "testframemask" / "01_0014.npy").is_file() and not (dataset / "testing" / "testframemask").exists()
    (video,) = make_shanghai_samples(tmp_path, "testing")
    np.testing.assert_array_equal(video.labels, masks["01_0014"])
    shutil.rmtree(dataset / "testframemask")
    with pytest.raises(MamaError, match=r"shanghai: no frame masks; put <video>\.npy .* in .*testing/test_frame_mask \(or .*shanghai/testframemask\)"):
        make_shanghai_samples(tmp_path, "testing")


def test_shanghai_training_as_video_files(tmp_path):
    rng = np.random.default_rng(6)
    write_shanghai(tmp_path, "community", {"01_0014": np.zeros(6, np.uint8)})
    shutil.rmtree(tmp_path / "shanghai" / "training" / "frames")
    write_video_file(tmp_path / "shanghai" / "training" / "videos" / "01_001.mp4", 7, rng)
    (video,) = make_shanghai_samples(tmp_path, "training")
    assert video.name == "01_001" and video.num_frames == 7 and video.frames == ()
    assert not video.labels.any()


def test_folder_source_with_labels_and_video_file(tmp_path):
    folder, labels = write_folder_source(tmp_path)
    videos = {v.name: v for v in make_samples("folder", folder, "testing")}
    assert sorted(videos) == ["cam1", "cam2", "cam3"]
    np.testing.assert_array_equal(videos["cam1"].labels, labels["cam1"])  # .npy beside the video
    np.testing.assert_array_equal(videos["cam2"].labels, labels["cam2"])  # .txt in labels/
    assert videos["cam3"].labels is None and videos["cam3"].num_frames == 6
    # A single video file and a single image folder are one video each.
    (single,) = make_folder_samples(folder / "cam3.mp4")
    assert single.video_file == folder / "cam3.mp4" and single.num_frames == 6
    (cam1,) = make_folder_samples(folder / "cam1")
    np.testing.assert_array_equal(cam1.labels, labels["cam1"])


def test_load_video_frames_from_file_and_folder(tmp_path):
    folder, _ = write_folder_source(tmp_path, seed=2)
    videos = {v.name: v for v in make_folder_samples(folder)}
    size = (16, 20)
    from_file = load_video_frames(videos["cam3"], size)
    capture = cv2.VideoCapture(str(folder / "cam3.mp4"))
    decoded = []
    while (result := capture.read())[0]:
        decoded.append(cv2.resize(result[1], (size[1], size[0])).astype(np.float32) / 127.5 - 1.0)
    np.testing.assert_array_equal(from_file, np.stack(decoded).transpose(0, 3, 1, 2))
    from_folder = load_video_frames(videos["cam1"], size)
    assert from_folder.shape == (7, 3, *size)
    np.testing.assert_array_equal(from_folder, np.stack([expected_frame(p, size) for p in videos["cam1"].frames]))


def test_video_background_recovers_static_scene():
    rng = np.random.default_rng(8)
    background = rng.uniform(-1, 1, size=(3, 12, 40)).astype(np.float32)
    frames = np.repeat(background[None], 100, axis=0)  # more frames than the 64 sampled
    for t in range(100):  # a bright 4-pixel-wide object walks across; each pixel covered in < 1/2 the frames
        x = (t * 36) // 100
        frames[t, :, :, x : x + 4] = 1.0
    np.testing.assert_array_equal(video_background(frames), background)


# ---------------------------------------------------------------------------------------
# Bad input: one MamaError line naming the path and the fix
# ---------------------------------------------------------------------------------------
def test_missing_root(tmp_path):
    with pytest.raises(MamaError, match=r"nowhere: data root not found; pass the folder"):
        make_samples("ped2", tmp_path / "nowhere", "testing")
    with pytest.raises(MamaError, match=r"ped2: dataset folder not found"):
        make_samples("ped2", tmp_path, "testing")


def test_missing_split_and_unknown_split(tmp_path):
    write_mat_dataset(tmp_path, "ped2", [6], cell_gt([[(1, 2)]]))
    shutil.rmtree(tmp_path / "ped2" / "training")
    with pytest.raises(MamaError, match=r"ped2/training: no training split"):
        make_samples("ped2", tmp_path, "training")
    with pytest.raises(MamaError, match=r"unknown split 'validation'; use one of training, testing"):
        make_samples("ped2", tmp_path, "validation")


def test_too_few_frames(tmp_path):
    write_mat_dataset(tmp_path, "ped2", [6, 4], cell_gt([[(1, 2)], [(1, 2)]]))
    with pytest.raises(MamaError, match=r"frames/02: 4 frames, a video needs at least 5"):
        make_samples("ped2", tmp_path, "testing")


def test_unreadable_and_truncated_frames(tmp_path):
    rng = np.random.default_rng(9)
    ok, encoded = cv2.imencode(".jpg", rng.integers(0, 256, size=(96, 128, 3), dtype=np.uint8))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(encoded.tobytes()[:-300])  # the tail lost, as from an interrupted copy
    assert ok and cv2.imread(str(truncated)) is not None  # OpenCV alone only warns about it
    with pytest.raises(MamaError, match=r"truncated\.jpg: cannot decode this frame \(truncated or not an image\); replace it"):
        read_frame(truncated)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(rng.bytes(300))
    with pytest.raises(MamaError, match=r"garbage\.png: cannot decode this frame"):
        read_frame(garbage)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(MamaError, match=r"empty\.jpg: cannot decode this frame"):
        read_frame(empty)


@pytest.mark.parametrize(
    "gt",
    [
        cell_gt([[(1, 2)], [(1, 2)], [(3, 4)]]),  # a cell with one video too many
        np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]).T,  # numeric, three columns for two videos
    ],
)
def test_gt_lists_other_number_of_videos(tmp_path, gt):
    write_mat_dataset(tmp_path, "ped2", [6, 6], gt)
    with pytest.raises(MamaError, match=r"ped2\.mat: 'gt' (lists 3 videos|of shape \(2, 3\) does not list the 2 videos)"):
        make_samples("ped2", tmp_path, "testing")


@pytest.mark.parametrize("interval", [(5, 7), (4, 3), (0, 2)])  # beyond 6 frames; start > end; 0 is not 1-based
def test_gt_interval_out_of_range(tmp_path, interval):
    write_mat_dataset(tmp_path, "ped2", [6], cell_gt([[interval]]))
    with pytest.raises(MamaError, match=rf"ped2\.mat: interval \[{interval[0]}, {interval[1]}\] of video 01 does not fit its 6 frames"):
        make_samples("ped2", tmp_path, "testing")


def test_missing_or_bad_mat(tmp_path):
    write_mat_dataset(tmp_path, "ped2", [6], None)
    with pytest.raises(MamaError, match=r"ped2\.mat: ground truth not found; put ped2\.mat"):
        make_samples("ped2", tmp_path, "testing")
    scipy.io.savemat(tmp_path / "ped2" / "ped2.mat", {"labels": np.zeros(3)})
    with pytest.raises(MamaError, match=r"ped2\.mat: no 'gt' variable"):
        make_samples("ped2", tmp_path, "testing")
    (tmp_path / "ped2" / "ped2.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(MamaError, match=r"ped2\.mat: cannot read this \.mat file"):
        make_samples("ped2", tmp_path, "testing")


def test_empty_dataset(tmp_path):
    (tmp_path / "ped2" / "testing" / "frames").mkdir(parents=True)
    with pytest.raises(MamaError, match=r"frames: no videos found; expected one folder of frames"):
        make_samples("ped2", tmp_path, "testing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MamaError, match=r"empty: no videos found"):
        make_samples("folder", tmp_path / "empty", "testing")


def test_unknown_dataset(tmp_path):
    with pytest.raises(MamaError, match=r"unknown dataset 'ped3'; use one of ped1, ped2, avenue, synth, shanghai, folder"):
        make_samples("ped3", tmp_path, "testing")


def test_unreadable_video_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(np.random.default_rng(1).bytes(2000))
    with pytest.raises(MamaError, match=r"broken\.mp4: cannot read this video file; re-encode it"):
        make_folder_samples(bad)
    with pytest.raises(MamaError, match=r"notes\.pdf: not a video file"):
        (tmp_path / "notes.pdf").write_bytes(b"%PDF")
        make_folder_samples(tmp_path / "notes.pdf")


def test_bad_label_files(tmp_path):
    rng = np.random.default_rng(4)
    masks = {"01_0014": np.zeros(6, np.uint8)}
    write_shanghai(tmp_path, "community", masks)
    mask = tmp_path / "shanghai" / "testing" / "test_frame_mask" / "01_0014.npy"
    np.save(mask, np.zeros(9, np.uint8))
    with pytest.raises(MamaError, match=r"01_0014\.npy: 9 labels for a video of 6 frames"):
        make_shanghai_samples(tmp_path, "testing")
    np.save(mask, np.full(6, 2, np.uint8))
    with pytest.raises(MamaError, match=r"01_0014\.npy: labels must be 0 \(normal\) or 1"):
        make_shanghai_samples(tmp_path, "testing")
    mask.unlink()
    with pytest.raises(MamaError, match=r"01_0014\.npy: frame mask not found"):
        make_shanghai_samples(tmp_path, "testing")
    folder, _ = write_folder_source(tmp_path / "own")
    np.savetxt(folder / "labels" / "cam2.txt", rng.integers(0, 2, 4), fmt="%d")
    with pytest.raises(MamaError, match=r"cam2\.txt: 4 labels for a video of 9 frames"):
        make_folder_samples(folder)


# ---------------------------------------------------------------------------------------
# Clips and labels
# ---------------------------------------------------------------------------------------
@pytest.fixture
def labelled_videos(tmp_path):
    """Three labelled test videos (7, 5, 9 frames) with random intervals."""
    rng = np.random.default_rng(12)
    counts = [7, 5, 9]
    intervals = [[(int(s), int(s) + int(rng.integers(0, n - s + 1)))] for n in counts for s in [rng.integers(1, n + 1)]]
    write_mat_dataset(tmp_path, "ped2", counts, cell_gt(intervals))
    return make_samples("ped2", tmp_path, "testing")


def test_clip_dataset_alignment_with_frame_labels(labelled_videos):
    size = (16, 24)
    dataset = ClipDataset(labelled_videos, size=size)
    labels = np.concatenate([v.labels[4:] for v in labelled_videos])  # what evaluation scores
    assert len(dataset) == len(labels) == (7 - 4) + (5 - 4) + (9 - 4)
    rng = np.random.default_rng(13)
    for i in range(len(dataset)):
        video, target = dataset.locate(i)
        assert labels[i] == labelled_videos[video].labels[target]
    for i in rng.choice(len(dataset), size=4, replace=False):
        item = dataset[int(i)]
        frames = labelled_videos[item["video"]].frames
        expected = np.stack([expected_frame(frames[t], size) for t in range(item["target"] - 4, item["target"] + 1)])
        assert item["clip"].dtype == torch.float32 and item["clip"].shape == (5, 3, *size)
        np.testing.assert_array_equal(item["clip"].numpy(), expected)
    assert [dataset[k]["target"] for k in (0, 2, 3, 4, -1)] == [4, 6, 4, 4, 8]
    assert [dataset[k]["video"] for k in (0, 2, 3, 4, -1)] == [0, 0, 1, 2, 2]
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_clip_dataset_background(labelled_videos):
    size = (16, 24)
    dataset = ClipDataset(labelled_videos, size=size)
    frames = np.stack([expected_frame(p, size) for p in labelled_videos[2].frames])
    np.testing.assert_allclose(dataset.background(2), np.median(frames, axis=0), atol=1e-6)
    assert set(dataset[0]) == {"clip", "video", "target"}


def test_a_video_file_is_prepared_once_and_read_by_offset(tmp_path, monkeypatch):
    rng = np.random.default_rng(14)
    write_video_file(tmp_path / "walk.mp4", 8, rng)
    videos = make_folder_samples(tmp_path / "walk.mp4")
    whole = load_video_frames(videos[0], (16, 16))
    opened = []
    real = ds.cv2.VideoCapture
    monkeypatch.setattr(ds.cv2, "VideoCapture", lambda *a: opened.append(a) or real(*a))
    dataset = ClipDataset(videos, size=(16, 16))
    items = [dataset[i] for i in range(len(dataset))]
    dataset.background(0)
    again = [ClipDataset(videos, size=(16, 16))[i] for i in range(len(dataset))]
    assert len(opened) == 1 and len(items) == 4  # decoded once, into the prepared frames
    prepared = ds.prepared_path(videos[0], (16, 16))
    assert prepared.is_file() and np.load(prepared).shape == (8, 16, 16, 3)
    for item, other in zip(items, again):
        np.testing.assert_array_equal(item["clip"].numpy(), whole[item["target"] - 4 : item["target"] + 1])
        np.testing.assert_array_equal(item["clip"].numpy(), other["clip"].numpy())
    streamed = np.stack(list(ds.iter_video_frames(videos[0], (16, 16))))
    np.testing.assert_array_equal(streamed, whole)


def test_clip_dataset_rejects_short_videos(tmp_path):
    rng = np.random.default_rng(15)
    write_frames(tmp_path / "clip", 6, rng)
    videos = make_folder_samples(tmp_path / "clip")
    with pytest.raises(MamaError, match=r"clip: 6 frames, clips of 8 need at least 8"):
        ClipDataset(videos, clip_len=8)


# ---------------------------------------------------------------------------------------
# VideoBalancedSampler
# ---------------------------------------------------------------------------------------
class Clips:
    """Stands in for a ClipDataset: only the per-video clip counts matter to the sampler."""

    def __init__(self, counts):
        self.clips_per_video = np.array(counts)
        self.first_clips = np.concatenate([[0], np.cumsum(counts)[:-1]])

    def video_of(self, index):
        return int(np.searchsorted(self.first_clips, index, side="right")) - 1


def take(sampler, count):
    iterator = iter(sampler)
    return [next(iterator) for _ in range(count)]


COUNTS = [7, 3, 12, 5, 9, 4, 6, 8, 5]  # 9 videos of uneven length


def test_sampler_batches_hold_distinct_videos_and_drop_a_rounds_rest():
    data = Clips(COUNTS)
    stream = take(VideoBalancedSampler(data, batch_size=4, seed=3), 4 * 2 * 30)  # 30 rounds of 2 batches
    videos = [data.video_of(i) for i in stream]
    batches = [videos[k : k + 4] for k in range(0, len(videos), 4)]
    assert all(len(set(b)) == 4 for b in batches)  # 4 different videos per batch
    for r in range(30):  # a round = 8 of the 9 videos (the 9th is the dropped rest), each once
        used = batches[2 * r] + batches[2 * r + 1]
        assert len(set(used)) == 8
    # Balanced per video, not per clip: a video's share does not depend on its length.
    share = np.bincount(videos, minlength=9) / len(videos)
    assert share.max() - share.min() < 0.05


def test_sampler_draws_each_videos_clips_without_replacement():
    data = Clips(COUNTS)
    stream = take(VideoBalancedSampler(data, batch_size=3, seed=5), 3 * 400)
    for v, n in enumerate(COUNTS):
        mine = [i - data.first_clips[v] for i in stream if data.video_of(i) == v]
        full = len(mine) // n
        assert full >= 2
        for p in range(full):  # every pass over the video's clips is a permutation of them
            assert sorted(mine[p * n : (p + 1) * n]) == list(range(n))
        assert mine[:n] != mine[n : 2 * n]  # reshuffled when refilled


def test_sampler_is_deterministic_per_seed_and_copes_with_few_videos():
    data = Clips(COUNTS)
    a = take(VideoBalancedSampler(data, batch_size=4, seed=1), 100)
    assert a == take(VideoBalancedSampler(data, batch_size=4, seed=1), 100)
    assert a != take(VideoBalancedSampler(data, batch_size=4, seed=2), 100)
    # Two videos, batches of 4: the rounds are concatenated, each video still half the draws.
    few = Clips([10, 30])
    stream = take(VideoBalancedSampler(few, batch_size=4, seed=0), 400)
    assert np.bincount([few.video_of(i) for i in stream]).tolist() == [200, 200]
    with pytest.raises(MamaError, match="no clips to sample"):
        VideoBalancedSampler(Clips([]), batch_size=4)


@pytest.mark.parametrize("stop", [8, 24, 36, 100])  # before, at, after a round boundary (8 per round), later
def test_sampler_resumes_exactly(stop):
    data = Clips(COUNTS)
    reference = take(VideoBalancedSampler(data, batch_size=4, seed=7), 300)
    resumed = VideoBalancedSampler(data, batch_size=4, seed=7)
    resumed.load_state_dict(VideoBalancedSampler(data, batch_size=4, seed=7).state_dict(consumed=stop))
    assert take(resumed, 300 - stop) == reference[stop:]
    with pytest.raises(MamaError, match="another set of training videos"):
        VideoBalancedSampler(Clips(COUNTS[:-1]), batch_size=4, seed=7).load_state_dict(resumed.state_dict(stop))
    with pytest.raises(MamaError, match="batch size 4, this run has 2"):
        VideoBalancedSampler(data, batch_size=2, seed=7).load_state_dict(resumed.state_dict(stop))


def test_sampler_with_dataloader_workers(labelled_videos):
    dataset = ClipDataset(labelled_videos, size=(8, 8))
    sampler = VideoBalancedSampler(dataset, batch_size=2, seed=1)
    loader = DataLoader(dataset, batch_size=2, sampler=sampler, num_workers=2)
    expected = take(VideoBalancedSampler(dataset, batch_size=2, seed=1), 8)
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == 4:
            break
    order = [dataset.locate(i) for i in expected]
    got = [(int(v), int(t)) for b in batches for v, t in zip(b["video"], b["target"])]
    assert got == order
    assert batches[0]["clip"].shape == (2, 5, 3, 8, 8)


def test_video_record_is_frozen():
    record = VideoRecord("a", (), None, 5, None)
    with pytest.raises(AttributeError):
        record.name = "b"


def test_reading_frames_of_a_video_file_leaves_no_descriptor_open(tmp_path):
    # read_video_frames opens the prepared frames for each call; a long run calls it for every
    # batch, so each call must close what it opened (and let go of its cache entry).
    rng = np.random.default_rng()
    video = ds.make_folder_samples(write_video_file(tmp_path / "cam.mp4", 12, rng))[0]
    ds.read_video_frames(video, [0], (32, 32))  # prepared once
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(200):
        got = ds.read_video_frames(video, rng.integers(0, 12, 3), (32, 32))
        assert got.shape == (3, 3, 32, 32) and np.isfinite(got).all()
    assert len(os.listdir("/proc/self/fd")) == before
