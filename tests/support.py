"""Helpers shared by tests (importable as tests.support; pytest puts the repo root on sys.path)."""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

# Where the Triton launchers run in tests: CUDA when present, else the CPU interpreter.
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def poisoned_empty():
    """Make every torch.empty / at::empty fill float memory with NaN, so an output element a
    kernel forgets to write shows up as NaN."""
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.utils.deterministic.fill_uninitialized_memory = was_fill


def assert_close(got: torch.Tensor, want: torch.Tensor, tol: dict) -> None:
    """`got` is finite (an output element a kernel forgot to write is not) and equals `want`
    within tol = dict(rtol=..., atol=...)."""
    assert torch.isfinite(got).all(), "kernel left non-finite values (unwritten output?)"
    torch.testing.assert_close(got, want, **tol)


def tiny_train_config(root: Path, out: Path, **kw):
    """The smallest real training configuration: 32x32 frames, width 8, weight-free providers."""
    from mama.config import TrainConfig

    base = dict(dataset="synth", data_root=str(root), out=str(out), preset="fast", size=32, base=8,
                batch_size=2, iters=4, save_interval=2, val_interval=2, val_clips=4, num_workers=0,
                device="cpu", seed=0, calibrate_videos=2)
    base.update(kw)
    return TrainConfig(**base)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server a test or benchmark starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MjpegServer:
    """A camera on 127.0.0.1: `frames` (uint8 BGR images) served as an MJPEG stream
    (multipart/x-mixed-replace, as IP cameras send it) at `fps`, looped `loops` times, to every
    client from the frame of its own start. `served[i]` is the time.monotonic() at which frame i
    was first sent. `stop()` takes it away (connections close, the port refuses);
    `start()` brings it back on the same port."""

    BOUNDARY = "frame"

    def __init__(self, frames, fps: float, loops: int = 1, port: int = 0):
        import cv2

        self.jpegs = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes() for f in frames]
        self.fps, self.loops, self.port = fps, loops, port
        self.served: dict[int, float] = {}
        self.server = None

    def _handler(self):
        import http.server
        import time

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={outer.BOUNDARY}")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                t0 = time.monotonic()
                for i in range(len(outer.jpegs) * outer.loops):
                    wait = t0 + i / outer.fps - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    if outer.server is not self.server:  # stopped
                        return
                    jpeg = outer.jpegs[i % len(outer.jpegs)]
                    try:
                        self.wfile.write(f"--{outer.BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                         f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                        self.wfile.flush()
                    except OSError:
                        return
                    outer.served.setdefault(i, time.monotonic())

        return Handler

    def start(self) -> "MjpegServer":
        import http.server
        import threading

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
