"""What `mama score` reads: files and frame folders (decoded as the scorer asks, never dropped
from) and live sources (a URL or a camera, read by a thread of their own as fast as they send,
so a frame's arrival is when the source had it, reopened with backoff when they drop).

Every frame keeps its native resolution (uint8 BGR) for drawing and snapshots; the scorer
resizes its own copy. A source is opened (and its first frame read) before any output is
written, so a bad input leaves nothing behind.
"""
from __future__ import annotations

import collections
import os
import stat
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mama.data.datasets import IMAGE_SUFFIXES, decode_image, make_folder_samples
from mama.data.video import VideoFile, capture_fps, unreadable_video
from mama.errors import MamaError

# FFmpeg's and OpenCV's own log lines ("[tcp @ 0x...] Connection refused", "[ WARN:0@...]") would
# interleave with mama's: a failure is said once, by mama, in one line.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
DEFAULT_FPS = 25.0  # media time of a source that states no frame rate (a folder of frames)
PROGRESSIVE_SUFFIXES = (".mp4", ".m4v", ".mov")  # containers whose index may sit at the end
IMAGE_MAGIC = (b"\xff\xd8", b"\x89PNG", b"BM", b"II*\x00", b"MM\x00*")


@dataclass
class Frame:
    index: int  # 0-based in the source; dropped frames keep their numbers
    image: np.ndarray  # uint8 BGR (H, W, 3) at the source's own resolution
    arrived: float  # time.monotonic() when the source had it
    wall: float  # time.time() at the same moment
    media_time: float  # seconds from the stream's start


@dataclass
class Gap:
    """A live source that stopped sending, and whether it came back."""

    after_frame: int  # the last frame before it
    wall: float  # when it was lost
    seconds: float  # until it came back (or was given up)
    attempts: int
    recovered: bool


class Source:
    """One input: `name` (its outputs' name), `uri` (for messages), `live` (a URL or camera)."""

    def __init__(self, name: str, uri: str, live: bool, fps: float | None):
        self.name, self.uri, self.live, self.fps = name, uri, live, fps
        self.native: tuple[int, int] | None = None  # (H, W) of its frames, once the first is read

    def frames(self) -> Iterator[Frame | Gap]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class FileSource(Source):
    """A video file or a folder of frames, decoded one frame at a time as asked."""

    def __init__(self, record, fps: float | None):
        self.record = record
        super().__init__(record.name, str(record.source), live=False, fps=fps)
        if record.video_file is not None:
            with VideoFile(record.video_file) as decoder:
                self.fps = fps or decoder.fps
                first = decoder.read()
            if first is None:
                raise unreadable_video(record.video_file)
        else:
            for path in record.frames:  # every file an image, before anything is written
                with open(path, "rb") as f:
                    head = f.read(4)
                if not head.startswith(IMAGE_MAGIC):
                    raise MamaError(f"{path}: not an image (JPEG, PNG, BMP or TIFF); remove it from the folder or replace it")
            first = decode_image(record.frames[0])
        self.native = first.shape[:2]

    def _images(self) -> Iterator[tuple[np.ndarray, float | None]]:
        if self.record.video_file is None:
            for path in self.record.frames:
                image = decode_image(path)
                if image.shape[:2] != self.native:
                    raise MamaError(f"{path}: {image.shape[1]}x{image.shape[0]} pixels, the folder's first frame is "
                                    f"{self.native[1]}x{self.native[0]}; every frame of a video must have one size")
                yield image, None
            return
        with VideoFile(self.record.video_file) as decoder:  # a scorer that stops early closes the file now
            for frame in decoder.frames():
                yield frame.image, frame.seconds

    def frames(self) -> Iterator[Frame]:
        fps = self.fps or DEFAULT_FPS
        for i, (image, media) in enumerate(self._images()):
            yield Frame(i, image, time.monotonic(), time.time(), media if media is not None else i / fps)


class LiveSource(Source):
    """A URL or a camera read by a thread of its own (module docstring): `start()`, then
    `drain()` whatever has arrived; a source that stops sending is reopened with backoff up to
    `reconnect` times in a row, each outage reported as a Gap."""

    def __init__(self, name: str, uri: str, opener, reconnect: int, fps: float | None = None):
        super().__init__(name, uri, live=True, fps=fps)
        self.opener, self.reconnect = opener, reconnect
        self.capture = opener()  # raises MamaError when it cannot be opened
        self.fps = fps or capture_fps(self.capture)
        ok, image = self.capture.read()
        if not ok:
            self.capture.release()
            raise MamaError(f"{uri}: opened, but no frame could be read from it; check that it sends video")
        self.native = image.shape[:2]
        self.first = Frame(0, image, time.monotonic(), time.time(), 0.0)
        self.queue: collections.deque = collections.deque()
        self.ready = threading.Condition()
        self.finished = False
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name=f"read {name}", daemon=True)

    def start(self) -> None:
        with self.ready:
            self.queue.append(self.first)
        self.thread.start()

    def _put(self, item) -> None:
        with self.ready:
            self.queue.append(item)
            self.ready.notify()

    def _run(self) -> None:
        # Media time of a live source: seconds since its first frame arrived, on this clock. A
        # stream's own timestamps are not trusted here: FFmpeg numbers an MJPEG camera's frames
        # at 25 frames/s whatever it sends, and a reopened stream starts them again.
        index, t0 = 1, self.first.arrived
        try:
            while not self.stopping:
                ok, image = self.capture.read()
                if ok:
                    now = time.monotonic()
                    self._put(Frame(index, image, now, time.time(), now - t0))
                    index += 1
                    continue
                if self.stopping or not self._reopen(index - 1):
                    return
        finally:
            self.capture.release()
            with self.ready:
                self.finished = True
                self.ready.notify()

    def _reopen(self, last: int) -> bool:
        """The source stopped sending: reopen it, waiting 0.5 s, 1 s, 2 s ... (at most 30 s) between tries."""
        lost, wall, delay = time.monotonic(), time.time(), 0.5
        self.capture.release()
        for attempt in range(1, self.reconnect + 1):
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and not self.stopping:
                time.sleep(0.05)
            if self.stopping:
                return False
            try:
                capture = self.opener()
            except MamaError:
                capture = None
            if capture is not None:
                self.capture = capture
                self._put(Gap(last, wall, time.monotonic() - lost, attempt, True))
                return True
            delay = min(delay * 2, 30.0)
        self._put(Gap(last, wall, time.monotonic() - lost, self.reconnect, False))
        return False

    def drain(self, timeout: float) -> list:
        """Everything that arrived since the last call, waiting up to `timeout` s for something."""
        with self.ready:
            if not self.queue and not self.finished and timeout > 0:
                self.ready.wait(timeout)
            items = list(self.queue)
            self.queue.clear()
            return items

    def close(self) -> None:
        self.stopping = True
        if self.thread.is_alive():
            self.thread.join(timeout=5)
        else:
            self.capture.release()


def _mp4_index_at_end(url: str) -> bool:
    """Whether an http(s) mp4's top-level boxes put the media data before the index (moov),
    which a player can only read by seeking to the end."""
    try:
        request = urllib.request.Request(url, headers={"Range": "bytes=0-65535"})
        with urllib.request.urlopen(request, timeout=5) as response:
            head = response.read(65536)
    except OSError:
        return False
    pos = 0
    while pos + 8 <= len(head):
        size, kind = int.from_bytes(head[pos:pos + 4], "big"), head[pos + 4:pos + 8]
        if kind == b"moov":
            return False
        if kind == b"mdat":
            return True
        if size == 1 and pos + 16 <= len(head):
            size = int.from_bytes(head[pos + 8:pos + 16], "big")
        if size < 8:
            return False
        pos += size
    return False


def _url_opener(url: str):
    def open_url() -> cv2.VideoCapture:
        capture = cv2.VideoCapture(url)
        if capture.isOpened():
            return capture
        capture.release()
        raise MamaError(f"{url}: cannot open this stream; check the URL, that the server is up and that OpenCV's "
                        "FFmpeg reads its format")
    return open_url


class RecordedUrlSource(Source):
    """A URL that serves a recording (its container states a frame count): read as a file is,
    as the scorer asks, never dropped from, ended by its last frame."""

    def __init__(self, name: str, url: str, capture: cv2.VideoCapture, fps: float | None):
        super().__init__(name, url, live=False, fps=fps or capture_fps(capture))
        self.capture = capture
        ok, self.first = capture.read()
        if not ok:
            capture.release()
            raise MamaError(f"{url}: opened, but no frame could be read from it; check that it serves video")
        self.native = self.first.shape[:2]

    def frames(self) -> Iterator[Frame]:
        fps, image, i = self.fps or DEFAULT_FPS, self.first, 0
        try:
            while image is not None:
                yield Frame(i, image, time.monotonic(), time.time(), i / fps)
                ok, image = self.capture.read()
                image, i = (image if ok else None), i + 1
        finally:
            self.capture.release()

    def close(self) -> None:
        self.capture.release()


def open_url(url: str, reconnect: int, fps: float | None = None) -> Source:
    name = Path(url.split("?")[0].rstrip("/")).stem or "stream"
    is_mp4 = url.lower().startswith(("http://", "https://")) and Path(url.split("?")[0]).suffix.lower() in PROGRESSIVE_SUFFIXES
    try:
        capture = _url_opener(url)()
        if capture.get(cv2.CAP_PROP_FRAME_COUNT) > 0:  # a recording, not a live stream
            return RecordedUrlSource(name, url, capture, fps)
        capture.release()
        return LiveSource(name, url, _url_opener(url), reconnect, fps)
    except MamaError:
        if is_mp4 and _mp4_index_at_end(url):
            raise MamaError(f"{url}: this mp4 keeps its index (moov) at its end, so it cannot be read as it downloads; "
                            "remux it with the index first (ffmpeg -i in.mp4 -c copy -movflags +faststart out.mp4) "
                            "or score the file from disk") from None
        raise


def open_camera(index: int, reconnect: int, fps: float | None = None) -> LiveSource:
    if index < 0:
        raise MamaError(f"--camera {index}: a camera index is 0 or more (ls /dev/video*)")

    def open_device() -> cv2.VideoCapture:
        capture = cv2.VideoCapture(index)
        if capture.isOpened():
            return capture
        capture.release()
        raise MamaError(f"--camera {index}: no camera with that index can be opened; check it is connected "
                        "(ls /dev/video*) and not in use")
    return LiveSource(f"camera{index}", f"camera {index}", open_device, reconnect, fps)


def open_sources(input: str | None, camera: int | None, reconnect: int, fps: float | None = None) -> list[Source]:
    """The sources to score, each opened and its first frame read: a camera, a URL, or a video
    file / frame folder / folder of videos."""
    if camera is not None:
        return [open_camera(camera, reconnect, fps)]
    text = str(input)
    if text.lower().startswith(URL_SCHEMES):
        return [open_url(text, reconnect, fps)]
    path = Path(text)
    if path.exists() and not (path.is_dir() or path.is_file()):
        kind = "a named pipe" if stat.S_ISFIFO(path.stat().st_mode) else "not a regular file"
        raise MamaError(f"{path}: {kind}; give a video file, a folder of frames or videos, or a URL")
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        raise MamaError(f"{path}: one image; give the folder of frames it belongs to")
    return [FileSource(record, fps) for record in make_folder_samples(path)]
