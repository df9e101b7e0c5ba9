"""`mama serve`: several cameras scored at once, a page to watch them and an API for the rest.

Each camera is a `mama score` run (mama.live.score.ScoreRun: events, snapshots, drop policy,
reconnect, files under OUT/NAME/) in a thread of its own, so a camera that fails stops nothing
else: it shows as failed and is tried again with backoff (a live source also when its
reconnects run out; a file is scored once). The runs report here through their listeners:
each scored batch (scores for the chart, the latest frame for the views) and each event line.

The HTTP side (FastAPI under uvicorn, 127.0.0.1 by default) reads this state only: no endpoint
changes what is scored. Event snapshots are served from the paths the runs recorded, found
by event id in memory, never by a path built from the request. With `token`, every route but
/healthz needs `Authorization: Bearer TOKEN` (or `?token=TOKEN`, for the page's images).
"""
from __future__ import annotations

import asyncio
import collections
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
from fastapi import Depends, FastAPI, HTTPException, Request  # at module level: FastAPI resolves annotations here
from fastapi.responses import FileResponse, HTMLResponse, Response, StreamingResponse

from mama.config import ScoreOptions
from mama.errors import MamaError
from mama.live.score import ScoreRun, SharedScorers

RETRY_FIRST, RETRY_MAX = 2.0, 60.0  # seconds before a failed camera is tried again, doubling
EVENTS_KEPT = 2000  # event lines kept in memory for the API
SCORES_KEPT = 600  # recent (frame, score) pairs per camera for the chart
MJPEG_FPS = 10.0  # the live view's frame rate at most


@dataclass
class Camera:
    """One source: what it is, how its run goes, and what the views show."""

    name: str
    spec: str  # a URL, a file or folder, or a camera index
    options: dict  # ScoreOptions fields for its run
    state: str = "starting"  # starting | running | failed | ended | stopped
    error: str | None = None
    attempts: int = 0
    run: object = None  # the ScoreRun in progress
    source_run: object = None  # its SourceRun (the latest frame and scores)
    threshold: float | None = None
    scores: collections.deque = field(default_factory=lambda: collections.deque(maxlen=SCORES_KEPT))
    open_event: dict | None = None
    thread: threading.Thread | None = None

    def summary(self) -> dict:
        sr = self.source_run
        r = sr.result if sr is not None else None
        lags = list(r.lags[-50:]) if r is not None and len(r.lags) else []
        return {
            "name": self.name, "source": self.spec, "state": self.state, "error": self.error, "attempts": self.attempts,
            "threshold": self.threshold, "frames_read": r.frames if r else 0, "frames_scored": len(r.scores) if r else 0,
            "dropped": r.dropped if r else 0,
            "frames_per_second": round(len(r.scores) / max(time.monotonic() - self.run.t0, 1e-9), 2)
            if r is not None and getattr(self.run, "t0", None) else 0.0,
            "lag_seconds": round(sorted(lags)[len(lags) // 2], 3) if lags else None,
            "last_score": round(self.scores[-1][1], 4) if self.scores else None,
            "last_frame": self.scores[-1][0] if self.scores else None,
            "open_event": self.open_event,
        }


class Hub:
    """Every camera's run and what they have reported (module docstring)."""

    def __init__(self, cameras: list[Camera], out: Path):
        names = [c.name for c in cameras]
        if len(set(names)) != len(names):
            raise MamaError(f"--source: the names {names} repeat; give each camera its own NAME=")
        self.cameras = {c.name: c for c in cameras}
        self.out = out
        self.events: collections.deque = collections.deque(maxlen=EVENTS_KEPT)  # the lines kept, oldest first
        self.lock = threading.Lock()
        self.subscribers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = []
        self.stopping = threading.Event()
        self.scorers = SharedScorers()  # one copy of the networks per checkpoint, shared by its cameras

    # ---------------------------------------------------------------- runs (threads)
    def start(self) -> None:
        for cam in self.cameras.values():
            cam.thread = threading.Thread(target=self._keep_running, args=(cam,), name=f"camera {cam.name}", daemon=True)
            cam.thread.start()

    def stop(self, wait: float = 30.0) -> None:
        self.stopping.set()
        for cam in self.cameras.values():
            if cam.run is not None and getattr(cam.run, "stop", None) is not None:
                cam.run.stop.request("server stopped")
        for cam in self.cameras.values():
            if cam.thread is not None:
                cam.thread.join(timeout=wait)

    def _keep_running(self, cam: Camera) -> None:
        delay = RETRY_FIRST
        while not self.stopping.is_set():
            cam.attempts += 1
            cam.state, cam.source_run = "starting", None
            try:
                index = int(cam.spec) if cam.spec.isdigit() else None
                opts = ScoreOptions(None if index is not None else cam.spec, camera=index, out=self.out / cam.name,
                                    append=(self.out / cam.name / "scores.csv").exists(), **cam.options)
                run = ScoreRun(opts, echo=False, shared=self.scorers)
                if len(run.sources) == 1:  # its events and rows carry the camera's name
                    run.sources[0].name = cam.name
                run.listeners.append(lambda sr, cam=cam: self._scored(cam, sr))
                run.event_listeners.append(lambda line, cam=cam: self._event(cam, line))
                cam.run, cam.threshold = run, run.alarms.threshold
                if self.stopping.is_set():
                    return
                cam.state, cam.error = "running", None
                summary = run.run()
                delay = RETRY_FIRST
                if self.stopping.is_set() or summary.get("interrupted"):
                    cam.state = "stopped"
                    return
                if not any(s.live for s in run.sources):  # a file is scored once
                    cam.state = "ended"
                    return
                cam.state, cam.error = "failed", "the stream ended and did not come back"
            except MamaError as exc:
                cam.state, cam.error = "failed", str(exc)
            except Exception as exc:  # noqa: BLE001 - one camera's fault must not stop the others
                cam.state, cam.error = "failed", f"{type(exc).__name__}: {exc}"
            self._publish({"kind": "source", **cam.summary()})
            if self.stopping.wait(delay):
                return
            delay = min(delay * 2, RETRY_MAX)

    def _scored(self, cam: Camera, sr) -> None:
        cam.source_run = sr
        r = sr.result
        new = []
        for i in range(max(0, len(r.scores) - 64), len(r.scores)):
            item = (int(r.indices[i]), float(r.scores[i]))
            if not cam.scores or item[0] > cam.scores[-1][0]:
                cam.scores.append(item)
                new.append(item)
        if new:
            self._publish({"kind": "scores", "source": cam.name, "threshold": cam.threshold,
                           "frames": [f for f, _ in new], "scores": [round(s, 4) for _, s in new]})

    def _event(self, cam: Camera, line: dict) -> None:
        with self.lock:
            self.events.append(line)
        if line.get("type") in ("new", "update"):
            cam.open_event = line
        elif line.get("type") == "end":
            cam.open_event = None
        self._publish({"kind": "event", **line})

    # ---------------------------------------------------------------- views
    def _publish(self, item: dict) -> None:
        for loop, queue in list(self.subscribers):
            try:
                loop.call_soon_threadsafe(_put_or_drop, queue, item)
            except RuntimeError:  # its loop is closed: the client is gone
                pass

    def picture(self, name: str) -> bytes | None:
        """The latest scored frame of a camera, drawn, as JPEG bytes (None before the first)."""
        cam = self.cameras[name]
        sr = cam.source_run
        if sr is None or sr.last is None:
            return None
        frame, amap, fs = sr.last
        ok, jpeg = cv2.imencode(".jpg", sr.picture(frame, amap, fs), [cv2.IMWRITE_JPEG_QUALITY, 85])
        return jpeg.tobytes() if ok else None

    def latest(self, event_id: str) -> dict | None:
        """An event's latest line among those kept (an update or end replaces its new)."""
        with self.lock:
            return next((e for e in reversed(self.events) if e.get("id") == event_id), None)

    def event_list(self, source: str | None, since: str | None) -> list[dict]:
        with self.lock:
            lines = list(self.events)
        return [e for e in lines if (source is None or e.get("source") == source)
                and (since is None or e.get("time", "") > since)]


def _put_or_drop(queue: asyncio.Queue, item: dict) -> None:
    if queue.full():  # a slow client loses the oldest, never blocks the runs
        queue.get_nowait()
    queue.put_nowait(item)


def create_app(hub: Hub, token: str | None = None):
    """The ASGI app: the page at /, the API under /api, /healthz (module docstring). Longer than
    a screen on purpose: the routes are small closures over one hub and token, and the whole
    HTTP API reads in one place, in the order the README lists it."""
    from mama.live.page import PAGE

    def authorised(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if given != f"Bearer {token}" and request.query_params.get("token") != token:
            raise HTTPException(401, "give the server's token: Authorization: Bearer TOKEN", {"WWW-Authenticate": "Bearer"})

    app = FastAPI(title="mama serve", version=_version(), docs_url=None, redoc_url=None,
                  description="Cameras scored by mama: their state, their events and their annotated frames.")
    guard = [Depends(authorised)]

    def camera(name: str) -> Camera:
        if name not in hub.cameras:
            raise HTTPException(404, f"no source named {name!r}; GET /api/sources lists them")
        return hub.cameras[name]

    @app.get("/healthz")
    def healthz() -> dict:
        # Per copy of the networks: passes run and clips scored (clips per pass > a camera's batch: batched across cameras).
        networks = [{"passes": n.batches, "clips": n.clips} for *_, n in list(hub.scorers._made.values())]
        return {"ok": True, "sources": len(hub.cameras), "networks": networks}

    @app.get("/", response_class=HTMLResponse, dependencies=guard)
    def page() -> str:
        return PAGE

    @app.get("/api/sources", dependencies=guard)
    def sources() -> list[dict]:
        return [c.summary() for c in hub.cameras.values()]

    @app.get("/api/sources/{name}", dependencies=guard)
    def source(name: str) -> dict:
        return {**camera(name).summary(), "recent": [list(x) for x in camera(name).scores]}

    @app.get("/api/sources/{name}/frame.jpg", dependencies=guard)
    def frame(name: str) -> Response:
        camera(name)
        jpeg = hub.picture(name)
        if jpeg is None:
            raise HTTPException(404, f"{name} has no scored frame yet")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.get("/api/sources/{name}/mjpeg", dependencies=guard)
    async def mjpeg(name: str, request: Request) -> StreamingResponse:
        camera(name)

        async def parts():
            last = None
            while not await request.is_disconnected():
                jpeg = hub.picture(name)
                if jpeg is not None and jpeg is not last:
                    last = jpeg
                    yield b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(jpeg)).encode() \
                        + b"\r\n\r\n" + jpeg + b"\r\n"
                await asyncio.sleep(1 / MJPEG_FPS)

        return StreamingResponse(parts(), media_type="multipart/x-mixed-replace; boundary=frame")

    @app.get("/api/events", dependencies=guard)
    def events(source: str | None = None, since: str | None = None) -> list[dict]:
        if source is not None:
            camera(source)
        return hub.event_list(source, since)

    def event(event_id: str) -> dict:
        line = hub.latest(event_id)
        if line is None:
            raise HTTPException(404, f"no event {event_id!r}; GET /api/events lists them")
        return line

    @app.get("/api/events/{event_id}", dependencies=guard)
    def one_event(event_id: str) -> dict:
        return event(event_id)

    @app.get("/api/events/{event_id}/snapshot.jpg", dependencies=guard)
    def snapshot(event_id: str) -> FileResponse:
        path = event(event_id).get("snapshot")  # recorded by the run, never built from the request
        if not path or not Path(path).is_file():
            raise HTTPException(404, f"event {event_id!r} has no snapshot")
        return FileResponse(path, media_type="image/jpeg")

    @app.get("/api/live", dependencies=guard)
    async def live(request: Request) -> StreamingResponse:
        queue: asyncio.Queue = asyncio.Queue(maxsize=1000)
        entry = (asyncio.get_running_loop(), queue)
        hub.subscribers.append(entry)

        async def stream():
            try:
                for cam in hub.cameras.values():
                    yield f"data: {json.dumps({'kind': 'source', **cam.summary()})}\n\n"
                while not await request.is_disconnected():
                    try:
                        item = await asyncio.wait_for(queue.get(), timeout=5.0)
                    except asyncio.TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    yield f"data: {json.dumps(item)}\n\n"
            finally:
                hub.subscribers.remove(entry)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    return app


def _version() -> str:
    import mama

    return mama.__version__


def parse_sources(specs: list[str]) -> list[tuple[str, str]]:
    """NAME=URL_OR_FILE_OR_CAMERA pairs (a bare spec is named after its file or camera)."""
    out = []
    for spec in specs:
        name, sep, what = spec.partition("=")
        if not sep:
            name, what = (f"camera{spec}" if spec.isdigit() else Path(spec.split("?")[0].rstrip("/")).stem or "stream"), spec
        if not name or not what or not all(ch.isalnum() or ch in "-_" for ch in name):
            raise MamaError(f"--source {spec}: give NAME=URL_OR_FILE_OR_CAMERA with a NAME of letters, digits, - and _")
        out.append((name, what))
    return out


# What a camera of a --config file may set: mama score's options (paths relative to the file).
CAMERA_KEYS = {"source", "checkpoint", "threshold", "false_alarms_per_hour", "calibrate_on", "min_duration", "merge_gap",
               "update_interval", "ignore", "webhook", "max_lag", "reconnect", "batch_size", "device", "fps"}
PATH_KEYS = {"checkpoint", "calibrate_on", "ignore"}


def read_config(path: Path) -> list[Camera]:
    """Cameras from a TOML file: an optional [defaults] table and one [cameras.NAME] table per
    camera, each with `source` and any of mama score's options (CAMERA_KEYS)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        config = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise MamaError(f"--config {path}: not found; give a TOML file with a [cameras.NAME] table per camera") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise MamaError(f"--config {path}: cannot read it as TOML ({exc}); fix the file") from None
    unknown = set(config) - {"defaults", "cameras"}
    if unknown or not isinstance(config.get("cameras"), dict) or not config["cameras"]:
        raise MamaError(f"--config {path}: expected [defaults] and [cameras.NAME] tables"
                        + (f", not {sorted(unknown)}" if unknown else ", and at least one camera"))
    defaults = config.get("defaults", {})
    cameras = []
    for name, table in config["cameras"].items():
        settings = {**defaults, **(table if isinstance(table, dict) else {})}
        bad = set(settings) - CAMERA_KEYS
        if bad:
            raise MamaError(f"--config {path}: camera {name}: unknown key(s) {sorted(bad)}; known: {sorted(CAMERA_KEYS)}")
        if "source" not in settings or "checkpoint" not in settings:
            raise MamaError(f"--config {path}: camera {name} needs `source` and `checkpoint` (here or in [defaults])")
        if not name or not all(ch.isalnum() or ch in "-_" for ch in name):
            raise MamaError(f"--config {path}: camera {name!r}: give it a NAME of letters, digits, - and _")
        what = str(settings.pop("source"))
        for key in PATH_KEYS & set(settings):
            settings[key] = (Path(path).parent / str(settings[key])).resolve()
        cameras.append(Camera(name, what, settings))
    return cameras


def check_cameras(cameras: list[Camera], out: Path, origin: str) -> None:
    """Every camera's options checked as `mama score` checks its flags, before anything starts."""
    for cam in cameras:
        try:
            ScoreOptions(None, out=out / cam.name, **cam.options)
        except MamaError as exc:
            raise MamaError(f"{origin}: camera {cam.name}: {exc}") from None
        except TypeError as exc:  # a value of the wrong type in a config file
            raise MamaError(f"{origin}: camera {cam.name}: {exc}") from None


def serve(cameras: list[Camera], out: Path, host: str, port: int, token: str | None, ready=None) -> None:
    """Score every camera and serve the page and the API until stopped (Ctrl-C / SIGTERM)."""
    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        raise MamaError(f"--host {host}: serving beyond this machine needs --token (every request must carry it)")
    if not 0 <= port < 65536:
        raise MamaError(f"--port {port} must be from 0 to 65535")
    if not cameras:
        raise MamaError("give at least one --source NAME=URL_OR_FILE_OR_CAMERA, or --config FILE")
    hub = Hub(cameras, out)
    server = uvicorn.Server(uvicorn.Config(create_app(hub, token), host=host, port=port, log_level="warning"))
    hub.start()
    try:
        if ready is not None:
            ready(hub, server)
        server.run()  # until a signal (uvicorn handles SIGINT / SIGTERM) or server.should_exit
    finally:
        hub.stop()


def cameras_from_flags(sources: list[str], options: dict) -> list[Camera]:
    return [Camera(name, what, dict(options)) for name, what in parse_sources(sources)]
