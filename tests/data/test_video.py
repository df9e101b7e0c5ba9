"""The one video-file decoder (mama.data.video): frames in order with their metadata, and its errors."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from mama.data.video import VideoFile, changed_video, unreadable_video
from tests.data.fixtures import FRAME_HW, write_video_file


def test_frames_come_in_order_with_fps_timestamps_and_native_size(tmp_path):
    path = write_video_file(tmp_path / "walk.mp4", 6, np.random.default_rng(3), fps=10.0)
    capture = cv2.VideoCapture(str(path))
    expected = [capture.read()[1] for _ in range(6)]
    capture.release()
    with VideoFile(path) as video:
        assert video.fps == pytest.approx(10.0) and video.native is None
        frames = list(video.frames())
        assert video.native == FRAME_HW
    assert [f.index for f in frames] == list(range(6))
    for frame, image in zip(frames, expected):
        np.testing.assert_array_equal(frame.image, image)
    seconds = [f.seconds for f in frames]
    assert all(s is None or s >= 0 for s in seconds)
    known = [s for s in seconds if s is not None]
    assert known == sorted(known)
    with VideoFile(path) as video:
        assert video.count() == 6
    with VideoFile(path) as video:
        np.testing.assert_array_equal(video.frame(0), expected[0])


def test_a_file_that_is_no_video_decodes_to_nothing_and_the_errors_say_what_to_do(tmp_path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"not a video at all")
    with VideoFile(path) as video:
        assert video.fps is None and list(video.frames()) == [] and video.read() is None
    with VideoFile(path) as video:
        assert video.count() == 0
    assert "cannot read this video file; re-encode it" in str(unreadable_video(path))
    assert str(changed_video(path, 5, 6)).endswith("decoded 5 frames, listed 6; the file changed, list the dataset again")
