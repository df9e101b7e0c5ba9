"""Alarms a person can act on (mama.live): the event lifecycle and its schema, thresholds in
false alarms per hour, the ignore mask, the webhook's retries, append-not-overwrite, a known
anomaly raised while it goes on with boxes on it, a slow scorer dropping a live backlog, a
camera that goes away and comes back, and an mp4 that cannot be read as it downloads."""
from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from mama.cli.app import main
from mama.data.datasets import make_samples
from mama.evaluate.maps import peak_region, regions
from mama.evaluate.alarms import offline_events, threshold_for_rate
from mama.evaluate.picture import _fit_text, draw_frame
from mama.live.events import EventTracker, FrameScore
from mama.live.sinks import Webhook
from mama.live.sources import LiveSource

from tests.support import MjpegServer

EVENT_KEYS = {"type", "id", "source", "frame", "time", "media_time", "score", "peak", "peak_frame", "threshold", "boxes",
              "snapshot", "start_frame", "start_time", "start_media_time"}
END_KEYS = EVENT_KEYS | {"end_frame", "end_time", "duration"}


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# ---------------------------------------------------------------------------- events, unit
def _track(scores, min_duration=3, merge_gap=5, update_interval=1.0, fps=10.0):
    tracker = EventTracker("cam", 1.0, min_duration, merge_gap, update_interval, "run")
    out = []
    for i, s in enumerate(scores):
        out += tracker.push(FrameScore(i, 1000.0 + i / fps, i / fps, float(s), s > 1.0, [[0, 0, 4, 4]] if s > 1.0 else []))
    out += tracker.close(None)
    return out


def test_an_event_opens_after_min_duration_frames_updates_and_ends_after_the_merge_gap():
    rng = np.random.default_rng()
    onset, last = int(rng.integers(10, 30)), int(rng.integers(60, 80))
    scores = rng.uniform(0, 0.9, 120)
    scores[onset:last + 1] = rng.uniform(1.5, 3.0, last + 1 - onset)
    scores[onset + 20:onset + 23] = 0.5  # a dip shorter than the merge gap: still one event
    lines = _track(scores, min_duration=3, merge_gap=5, update_interval=1.0)
    kinds = [line["type"] for line in lines]
    assert kinds[0] == "new" and kinds[-1] == "end" and set(kinds[1:-1]) == {"update"}
    new, end = lines[0], lines[-1]
    assert new["frame"] == onset + 2 and new["start_frame"] == onset  # the third frame above raises it
    assert end["frame"] == last + 5 and end["end_frame"] == last  # ended once 5 frames stayed below
    assert set(new) == EVENT_KEYS and set(end) == END_KEYS and len({line["id"] for line in lines}) == 1
    assert end["peak"] == round(float(scores.max()), 4) and end["peak_frame"] == int(scores.argmax())
    assert end["duration"] == pytest.approx((last - onset) / 10, abs=1e-3)
    assert new["time"].endswith("Z") and new["media_time"] == pytest.approx((onset + 2) / 10)
    # Updates at most every update_interval (10 frames at 10 frames/s), only while it lasts.
    updates = [line["frame"] for line in lines if line["type"] == "update"]
    assert np.all(np.diff([new["frame"], *updates]) >= 10) and all(onset < f <= last for f in updates)
    # The same events as the whole-sequence rule.
    assert offline_events(scores, 1.0, 3, 5) == [(onset, last)]


def test_runs_shorter_than_min_duration_raise_nothing_and_far_runs_are_two_events():
    scores = np.zeros(100)
    scores[10:12] = 2.0  # 2 frames: under min_duration 3
    scores[30:40] = 2.0
    scores[60:70] = 2.0  # 20 frames after the previous: beyond the merge gap
    lines = _track(scores, min_duration=3, merge_gap=5)
    assert [(line["type"], line["start_frame"]) for line in lines if line["type"] != "update"] == \
        [("new", 30), ("end", 30), ("new", 60), ("end", 60)]
    assert lines[0]["id"] != lines[-1]["id"]


def test_the_threshold_for_a_false_alarm_rate_on_sequences_whose_answer_is_known():
    rng = np.random.default_rng()
    fps, hour = 10.0, 36000

    def footage():
        s = rng.uniform(0, 0.5, hour)
        starts = rng.permutation(np.arange(1, 35) * 1000)[:12]
        for height, at in zip(range(1, 11), starts):  # bursts of 5 frames at heights 1..10
            s[at:at + 5] = height
        s[starts[10]:starts[10] + 2] = 100.0  # 2 frames: shorter than min_duration, never an event
        s[starts[11]:starts[11] + 4] = 9.5  # 4 frames, then 3 below, then 4 more: one event, not two
        s[starts[11] + 7:starts[11] + 11] = 9.5
        return s

    one = footage()
    # 3 an hour: above 8 come the bursts of 9 and 10 and the merged 9.5 (the 100 is too short).
    t, hours = threshold_for_rate([one], [fps], 3, min_duration=3, merge_gap=5)
    assert hours == pytest.approx(1.0) and t == 8.0 and len(offline_events(one, t, 3, 5)) == 3
    t4, _ = threshold_for_rate([one], [fps], 4, min_duration=3, merge_gap=5)
    assert t4 == 7.0 and len(offline_events(one, t4, 3, 5)) == 4
    # Two hours allow twice the events.
    t8, hours = threshold_for_rate([one, footage()], [fps, fps], 4, min_duration=3, merge_gap=5)
    assert hours == pytest.approx(2.0) and t8 == 7.0
    # None allowed: the lowest threshold at which no burst is an event.
    t0, _ = threshold_for_rate([one], [fps], 0, min_duration=3, merge_gap=5)
    assert t0 == 10.0 and offline_events(one, t0, 3, 5) == []


def test_boxes_are_in_source_pixels_and_the_ignore_mask_removes_its_regions():
    amap = np.zeros((32, 32), np.float32)
    amap[4:10, 4:12] = 5.0  # x 4..11, y 4..9
    amap[20:28, 18:30] = 9.0
    boxes = regions(amap, 1.0, (240, 360))
    # 360/32 = 11.25 and 240/32 = 7.5 source pixels a map pixel; the hotter region first.
    assert boxes == [[202, 150, 338, 210], [45, 30, 135, 75]]
    ignore = np.zeros((32, 32), bool)
    ignore[16:, 16:] = True
    assert regions(amap, 1.0, (240, 360), ignore) == boxes[1:]


def test_an_alarm_without_a_region_is_boxed_where_the_map_peaks():
    rng = np.random.default_rng()
    amap = rng.normal(0, 0.1, (32, 32)).astype(np.float32)
    y, x = int(rng.integers(4, 26)), int(rng.integers(4, 26))
    amap[y:y + 3, x:x + 2] += 2.0
    assert peak_region(amap, (64, 128)) == [4 * x, 2 * y, 4 * (x + 2), 2 * (y + 3)]


@pytest.mark.parametrize("width", [96, 128, 360, 1280])
def test_the_label_fits_the_frame_at_any_size(width):
    image = np.full((width * 2 // 3, width, 3), 90, np.uint8)
    label = "entrance-camera-north  123456  12:34:56"
    drawn = draw_frame(image, np.zeros((32, 32), np.float32), 1.0, [[0, 0, 10, 10]], 123.45, 7.5, label)
    assert drawn.shape == image.shape and (image == 90).all()  # drawn on a copy
    scratch = image.copy()
    assert _fit_text(scratch, f"{label}  score 123.45 / 7.50  ALARM", (4, 20), (0, 0, 255), width - 8) <= width - 8
    # Nothing drawn in the right margin: the label ends inside the frame.
    assert (drawn[:40, -1] == 90).all()


# ---------------------------------------------------------------------------- webhook
class _Hook(http.server.BaseHTTPRequestHandler):
    fail_first = 2
    bodies: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        status = 500 if len(type(self).bodies) <= type(self).fail_first else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def hook_server():
    handler = type("Hook", (_Hook,), {"bodies": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}/events"
    server.shutdown()
    server.server_close()
    thread.join()


def test_the_webhook_retries_a_failing_server_and_counts_what_never_arrived(hook_server):
    handler, url = hook_server
    hook = Webhook(url, retries=3, backoff=0.05)
    event = {"type": "new", "id": f"x-{np.random.default_rng().integers(1 << 30)}"}
    t0 = time.monotonic()
    hook.post(event)
    assert time.monotonic() - t0 < 0.05  # posting never waits on the server
    hook.close()
    assert handler.bodies == [event] * 3 and hook.summary()["sent"] == 1
    assert hook.summary()["retries"] == 2 and hook.summary()["failed"] == 0
    # A server that always fails: counted, never raised.
    handler.fail_first, handler.bodies[:] = 10 ** 6, []
    hook = Webhook(url, retries=1, backoff=0.01)
    hook.post(event)
    hook.close()
    assert hook.summary()["sent"] == 0 and hook.summary()["failed"] == 1 and len(handler.bodies) == 2
    # Nobody listening at all.
    hook = Webhook("http://127.0.0.1:9/none", retries=0)
    hook.post(event)
    hook.close()
    assert hook.summary()["failed"] == 1


# ---------------------------------------------------------------------------- mama score, a known anomaly
ONSET, LAST = 18, 27  # frames of the synthetic stream holding the anomaly (0-based, inclusive)
PATCH = (slice(36, 56), slice(8, 28))  # rows, cols of the 64x64 frame


@pytest.fixture(scope="module")
def anomaly_stream(tiny_run, tmp_path_factory) -> dict:
    """A normal synthetic training video (its frames as PNGs) over which a patch flickers black
    and white over frames ONSET..LAST: nothing a generator can predict, in a known place."""
    video = make_samples("synth", tiny_run["root"], "training")[0]
    folder = tmp_path_factory.mktemp("anomaly") / "cam"
    folder.mkdir()
    mask = np.zeros((64, 64), bool)
    mask[PATCH] = True
    for i, path in enumerate(video.frames):
        image = cv2.imread(str(path))
        if ONSET <= i <= LAST:
            image[PATCH] = 255 * (i % 2)
        cv2.imwrite(str(folder / f"{i:03d}.png"), image)
    return {"folder": folder, "mask": mask, "frames": len(video.frames)}


def _box_overlaps(box, mask) -> bool:
    x0, y0, x1, y1 = box
    return bool(mask[y0:y1, x0:x1].any())


def test_a_known_anomaly_raises_new_while_it_goes_on_with_boxes_on_it(anomaly_stream, tiny_run, tmp_path, capsys,
                                                                     hook_server):
    handler, url = hook_server
    out = tmp_path / "s"
    capsys.readouterr()
    assert main(["score", str(anomaly_stream["folder"]), "--checkpoint", str(tiny_run["destroyer"]), "--out", str(out),
                 "--device", "cpu", "--batch-size", "4", "--min-duration", "2", "--merge-gap", "3",
                 "--webhook", url]) == 0
    printed = _lines(capsys.readouterr().out)
    news = [p for p in printed if p["type"] == "new"]
    ends = [p for p in printed if p["type"] == "end"]
    # One event: raised within min-duration frames of the onset (while it goes on), ended after it.
    assert len(news) == 1 and len(ends) == 1, printed
    new, end = news[0], ends[0]
    assert ONSET <= new["start_frame"] <= ONSET + 1 and new["frame"] <= ONSET + 2
    # The online score is causally smoothed: it stays above the threshold a few frames after.
    assert LAST <= end["end_frame"] <= LAST + 6 and end["frame"] > end["end_frame"]
    assert set(new) == EVENT_KEYS and set(end) == END_KEYS
    # Where: the boxes (source pixels) lie on the patch; the snapshots are the source's size.
    assert new["boxes"] and _box_overlaps(new["boxes"][0], anomaly_stream["mask"])
    assert end["boxes"] and _box_overlaps(end["boxes"][0], anomaly_stream["mask"])
    for p in (new, end):
        assert cv2.imread(p["snapshot"]).shape == (64, 64, 3)
    # The webhook got every event despite failing the first two POSTs.
    assert handler.bodies == [printed[0]] * 3 + printed[1:]
    summary = json.loads((out / "scores.json").read_text())
    assert summary["webhook"]["failed"] == 0 and summary["webhook"]["sent"] == len(printed)

    # An ignore mask over the patch: the same scores, no alarm.
    mask = np.zeros((64, 64), np.uint8)
    mask[anomaly_stream["mask"]] = 255
    cv2.imwrite(str(tmp_path / "ignore.png"), cv2.dilate(mask, np.ones((9, 9), np.uint8)))
    assert main(["score", str(anomaly_stream["folder"]), "--checkpoint", str(tiny_run["destroyer"]), "--out",
                 str(tmp_path / "i"), "--device", "cpu", "--batch-size", "4", "--min-duration", "2", "--merge-gap", "3",
                 "--ignore", str(tmp_path / "ignore.png")]) == 0
    assert _lines(capsys.readouterr().out) == []
    ignored = json.loads((tmp_path / "i" / "scores.json").read_text())["videos"][0]
    np.testing.assert_allclose(ignored["scores"], summary["videos"][0]["scores"], atol=1e-6)
    # A mask away from the anomaly changes nothing: the same events as without one.
    far = np.zeros((64, 64), np.uint8)
    far[:12, 40:] = 255
    cv2.imwrite(str(tmp_path / "far.png"), far)
    assert main(["score", str(anomaly_stream["folder"]), "--checkpoint", str(tiny_run["destroyer"]), "--out",
                 str(tmp_path / "f"), "--device", "cpu", "--batch-size", "4", "--min-duration", "2", "--merge-gap", "3",
                 "--ignore", str(tmp_path / "far.png")]) == 0
    far_lines = _lines(capsys.readouterr().out)
    assert [(p["type"], p["frame"], p["boxes"]) for p in far_lines] == [(p["type"], p["frame"], p["boxes"]) for p in printed]
    # A mask of another size, or one that ignores nothing or everything, is refused before anything is written.
    small = np.zeros((10, 10), np.uint8)
    small[:5] = 255
    cv2.imwrite(str(tmp_path / "small.png"), small)
    cv2.imwrite(str(tmp_path / "none.png"), np.zeros((64, 64), np.uint8))
    cv2.imwrite(str(tmp_path / "all.png"), np.full((64, 64), 255, np.uint8))
    for mask, message in (("small.png", "10x10 pixels"), ("none.png", "ignores nothing"), ("all.png", "every alarm"),
                          ("missing.png", "not found")):
        assert main(["score", str(anomaly_stream["folder"]), "--checkpoint", str(tiny_run["destroyer"]), "--out",
                     str(tmp_path / "m"), "--device", "cpu", "--ignore", str(tmp_path / mask)]) == 2
        assert message in capsys.readouterr().err and not (tmp_path / "m").exists()


def test_a_second_run_into_the_same_out_appends_or_is_refused(anomaly_stream, tiny_run, tmp_path, capsys):
    args = ["score", str(anomaly_stream["folder"]), "--checkpoint", str(tiny_run["destroyer"]), "--out", str(tmp_path / "s"),
            "--device", "cpu", "--min-duration", "2", "--merge-gap", "3"]
    assert main(args) == 0
    before = {n: (tmp_path / "s" / n).read_bytes() for n in ("scores.csv", "events.jsonl", "scores.json")}
    capsys.readouterr()
    assert main(args) == 2
    assert "--append" in capsys.readouterr().err
    assert {n: (tmp_path / "s" / n).read_bytes() for n in before} == before  # untouched
    assert main([*args, "--append"]) == 0
    csv_text = (tmp_path / "s" / "scores.csv").read_bytes().decode()
    assert csv_text.startswith(before["scores.csv"].decode())
    rows = csv_text.splitlines()
    assert rows.count(rows[0]) == 1 and len(rows) == 2 * len(before["scores.csv"].decode().splitlines()) - 1
    events = (tmp_path / "s" / "events.jsonl").read_bytes().decode()
    assert events.startswith(before["events.jsonl"].decode())
    markers = [json.loads(line) for line in events.splitlines() if json.loads(line)["type"] == "run"]
    assert len(markers) == 2 and markers[1]["first_row"] == len(before["scores.csv"].decode().splitlines()) + 1
    summary = json.loads((tmp_path / "s" / "scores.json").read_text())
    assert summary["earlier_runs"][0] == json.loads(before["scores.json"])


# ---------------------------------------------------------------------------- live sources
class _FastCamera:
    """A capture that gives `frames` as fast as asked (a camera far faster than the scorer)."""

    def __init__(self, frames, interval: float = 0.002):
        self.frames, self.i, self.interval = frames, 0, interval

    def read(self):
        if self.i >= len(self.frames):
            return False, None
        time.sleep(self.interval)
        self.i += 1
        return True, self.frames[self.i - 1].copy()

    def get(self, prop):
        return 0.0

    def release(self):
        pass

    def isOpened(self):
        return True


def test_a_slow_scorer_drops_a_live_backlog_and_keeps_up(anomaly_stream, tiny_run, tmp_path, monkeypatch):
    images = [cv2.imread(str(p)) for p in sorted(anomaly_stream["folder"].glob("*.png"))] * 15  # 600 frames, ~500/s
    camera = _FastCamera(images)
    source = LiveSource("fast", "fake camera", lambda: camera, reconnect=0, fps=500.0)
    monkeypatch.setattr("mama.live.score.open_sources", lambda *a, **kw: [source])
    out = tmp_path / "d"
    # The camera ends and is not reopened (--reconnect 0): lost, exit 1, everything read scored.
    assert main(["score", "http://127.0.0.1:9/fake", "--checkpoint", str(tiny_run["destroyer"]), "--out", str(out),
                 "--device", "cpu", "--batch-size", "2", "--max-lag", "0.2"]) == 1
    v = json.loads((out / "scores.json").read_text())["videos"][0]
    assert v["live"] and v["frames"] == len(images) and v["lost"]
    assert v["dropped"] > 0 and v["frames_scored"] + v["dropped"] < v["frames"]
    # What is scored is never more than about --max-lag plus one computation behind.
    assert v["lag_seconds"]["p95"] < 0.2 + 1.0, v["lag_seconds"]
    rows = (out / "scores.csv").read_text().splitlines()[1:]
    frames = [int(r.split(",")[1]) for r in rows]
    assert frames == sorted(set(frames)) and len(frames) == v["frames_scored"]


def test_a_scorer_that_keeps_up_drops_nothing(anomaly_stream, tiny_run, tmp_path, monkeypatch):
    # 12 s of a 25 frames/s camera, far longer than --max-lag: a scorer that keeps up drops nothing
    # (a segment's first frames, inputs only, once counted as waiting since the start and forced drops).
    images = [cv2.imread(str(p)) for p in sorted(anomaly_stream["folder"].glob("*.png"))] * 8
    source = LiveSource("steady", "fake camera", lambda: _FastCamera(images, interval=0.04), reconnect=0, fps=25.0)
    monkeypatch.setattr("mama.live.score.open_sources", lambda *a, **kw: [source])
    out = tmp_path / "k"
    assert main(["score", "http://127.0.0.1:9/fake", "--checkpoint", str(tiny_run["destroyer"]), "--out", str(out),
                 "--device", "cpu", "--batch-size", "4", "--max-lag", "3"]) == 1  # 1: the camera ended (lost)
    v = json.loads((out / "scores.json").read_text())["videos"][0]
    assert v["dropped"] == 0 and v["frames_scored"] == len(images) - 4, v
    assert v["lag_seconds"]["p95"] < 3.0


def test_a_camera_that_goes_away_and_comes_back_is_reopened_with_a_gap_event(anomaly_stream, tiny_run, tmp_path, capsys):
    images = [cv2.imread(str(p)) for p in sorted(anomaly_stream["folder"].glob("*.png"))]
    server = MjpegServer(images, fps=20, loops=1000).start()
    out = tmp_path / "r"
    result = {}

    def score():
        result["rc"] = main(["score", server.url, "--checkpoint", str(tiny_run["destroyer"]), "--out", str(out),
                             "--device", "cpu", "--reconnect", "3", "--batch-size", "4"])

    thread = threading.Thread(target=score)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(server.served) < 60:
            time.sleep(0.1)
        server.stop()  # the camera goes away...
        time.sleep(1.0)
        served_before = len(server.served)
        server.served.clear()
        server.start()  # ... and comes back on the same port
        while time.monotonic() < deadline and len(server.served) < 40:
            time.sleep(0.1)
        server.stop()  # and goes for good: 3 tries, then the run ends
        thread.join(timeout=120)
    finally:
        server.stop()
    assert not thread.is_alive() and result["rc"] == 1  # given up at the end: exit 1 for a supervisor
    printed = _lines(capsys.readouterr().out)
    gaps = [p for p in printed if p["type"] == "gap"]
    assert [g["recovered"] for g in gaps] == [True, False], gaps
    assert gaps[0]["seconds"] >= 0.5 and gaps[1]["attempts"] == 3
    v = json.loads((out / "scores.json").read_text())["videos"][0]
    frames = [int(r.split(",")[1]) for r in (out / "scores.csv").read_text().splitlines()[1:]]
    # Frames after the first gap were scored too (a new segment: its first 4 are the clip's inputs).
    assert max(frames) > gaps[0]["frame"] + 4 and gaps[0]["frame"] >= served_before // 2
    assert v["gaps"] == gaps and v["dropped"] == 0 and v["lost"]
    # Media time goes on across the gap; the events after it are the anomaly's, not the break's.
    rows = [r.split(",") for r in (out / "scores.csv").read_text().splitlines()[1:]]
    media = [float(r[2]) for r in rows]
    assert all(np.diff(media) > 0)
    for e in (p for p in printed if p["type"] == "end"):  # the server sends its video from the start each time
        first = 0 if e["start_frame"] <= gaps[0]["frame"] else gaps[0]["frame"] + 1
        assert (e["start_frame"] - first - ONSET) % len(images) <= 1, (e, gaps)


def test_an_mp4_with_its_index_at_the_end_over_http_names_the_cause_and_leaves_nothing(tmp_path, tiny_run, capsys):
    rng = np.random.default_rng()
    path = tmp_path / "srv" / "late_index.mp4"
    path.parent.mkdir()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (360, 240))
    for _ in range(150):
        writer.write(rng.integers(0, 256, (240, 360, 3), dtype=np.uint8))
    writer.release()
    head = path.read_bytes()[:64]
    assert b"mdat" in head and b"moov" not in head  # the index is at the end, as OpenCV writes it
    class Files(http.server.SimpleHTTPRequestHandler):  # python3 -m http.server, quiet: no Range requests
        def log_message(self, *args):
            pass

    handler = lambda *a, **kw: Files(*a, directory=str(path.parent), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.handle_error = lambda *a: None  # the reader hangs up mid-file
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/late_index.mp4"
        assert main(["score", url, "--checkpoint", str(tiny_run["destroyer"]), "--out", str(tmp_path / "o"),
                     "--device", "cpu"]) == 2
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err
    assert "index (moov) at its end" in err and "+faststart" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_footage_unlike_the_calibration_is_flagged_once(anomaly_stream, tiny_run, tmp_path, capsys):
    # A threshold under every score stands for a camera whose scores sit far above the calibration.
    assert main(["score", str(anomaly_stream["folder"]), "--checkpoint", str(tiny_run["destroyer"]), "--out",
                 str(tmp_path / "w"), "--device", "cpu", "--threshold", "-1000"]) == 0
    err = capsys.readouterr().err
    assert err.count("looks unlike the footage the model was trained on") == 1 and "--calibrate-on" in err
    v = json.loads((tmp_path / "w" / "scores.json").read_text())["videos"][0]
    assert len(v["warnings"]) == 1 and len(v["events"]) == 1
    # At the checkpoint's own threshold the same footage raises no such warning.
    assert main(["score", str(anomaly_stream["folder"]), "--checkpoint", str(tiny_run["destroyer"]), "--out",
                 str(tmp_path / "n"), "--device", "cpu"]) == 0
    assert "looks unlike" not in capsys.readouterr().err
