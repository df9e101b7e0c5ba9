"""`mama serve` as a person and a program meet it: a real server on a free 127.0.0.1 port
scoring a local MJPEG camera that shows a known anomaly, beside a camera that cannot be
opened; the API's answers, its filters and its refusals; the token; and the page in a real
browser (Debian's chromium driven by Playwright), screenshot saved."""
from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from mama.cli.app import main
from mama.errors import MamaError
from mama.live.serve import cameras_from_flags, parse_sources, read_config, serve

from tests.support import MjpegServer, free_port

REPO = Path(__file__).resolve().parents[2]
ONSET, LAST = 18, 27
PATCH = (slice(36, 56), slice(8, 28))



def _get(url: str, token: str | None = None, timeout: float = 10):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=timeout) as r:
        return r.status, r.headers.get("Content-Type"), r.read()


def _json(url: str, token: str | None = None):
    return json.loads(_get(url, token)[2])


def _status(url: str, token: str | None = None) -> int:
    try:
        return _get(url, token)[0]
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError):  # not listening (yet)
        return 0


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def camera(tiny_run):
    """A 20 frames/s MJPEG camera looping a normal synthetic video over which a patch flickers
    black and white for frames ONSET..LAST of each loop."""
    from mama.data.datasets import make_samples

    video = make_samples("synth", tiny_run["root"], "training")[0]
    images = []
    for i, path in enumerate(video.frames):
        image = cv2.imread(str(path))
        if ONSET <= i <= LAST:
            image[PATCH] = 255 * (i % 2)
        images.append(image)
    with MjpegServer(images, fps=20, loops=10 ** 4) as server:
        yield server


@pytest.fixture(scope="module")
def served(camera, tiny_run, tmp_path_factory):
    """`mama serve` in this process (its own thread), stopped at the end of the module."""
    out = tmp_path_factory.mktemp("serve")
    port = free_port()
    holder = {}
    # The cameras come from a config file, as a person setting up several would write it.
    config = out / "cameras.toml"
    config.write_text(f"""
[defaults]
checkpoint = "{tiny_run['destroyer']}"
device = "cpu"
batch_size = 4
min_duration = 2
merge_gap = 3
update_interval = 1.0

[cameras.walkway]
source = "{camera.url}"

[cameras.dead]
source = "http://127.0.0.1:9/none.mjpg"
reconnect = 1
""")
    thread = threading.Thread(target=serve, args=(read_config(config), out, "127.0.0.1", port, None),
                              kwargs={"ready": lambda hub, server: holder.update(hub=hub, server=server)}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    _wait(lambda: _status(base + "/healthz") == 200 if "server" in holder else False, 60, "the server")
    yield {"base": base, "out": out, **holder}
    holder["server"].should_exit = True
    thread.join(timeout=60)
    assert not thread.is_alive()


def test_the_api_reports_sources_events_and_pictures(served):
    base = served["base"]
    health = _json(base + "/healthz")
    assert health["ok"] is True and health["sources"] == 2
    names = {s["name"]: s for s in _json(base + "/api/sources")}
    assert set(names) == {"walkway", "dead"}
    # The camera that cannot be opened is failed with the reason, and retried; the other scores on.
    dead = _wait(lambda: (lambda s: s if s["state"] == "failed" and s["attempts"] >= 2 else None)(
        _json(base + "/api/sources/dead")), 60, "the dead camera to fail twice")
    assert "cannot open" in dead["error"]
    walkway = _wait(lambda: (lambda s: s if s["frames_scored"] > 20 else None)(_json(base + "/api/sources/walkway")),
                    120, "scores")
    assert walkway["state"] == "running" and walkway["frames_per_second"] > 0 and walkway["threshold"] is not None
    # Both cameras use one checkpoint: one copy of the networks, loaded once, shared.
    hub = served["hub"]
    assert len(hub.scorers._made) == 1 and hub.cameras["walkway"].run.scorer is next(iter(hub.scorers._made.values()))[0]
    networks = _json(base + "/healthz")["networks"]
    assert len(networks) == 1 and networks[0]["clips"] >= walkway["frames_scored"] and networks[0]["passes"] > 0
    assert len(walkway["recent"]) == walkway["frames_scored"] and walkway["lag_seconds"] < 2.0
    # The flicker raises an event; its snapshot and the live frame are JPEGs at the camera's size.
    new = _wait(lambda: [e for e in _json(base + "/api/events?source=walkway") if e["type"] == "new"], 120, "an event")[0]
    assert _json(base + "/api/events?source=dead") == []
    assert _json(f"{base}/api/events?since={new['time']}") == [e for e in _json(base + "/api/events") if e["time"] > new["time"]]
    one = _json(f"{base}/api/events/{new['id']}")
    assert one["id"] == new["id"] and one["source"] == "walkway"
    status, kind, body = _get(f"{base}/api/events/{new['id']}/snapshot.jpg")
    assert status == 200 and kind == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape == (64, 64, 3)
    status, kind, body = _get(f"{base}/api/sources/walkway/frame.jpg")
    assert kind == "image/jpeg" and cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape == (64, 64, 3)
    # The live view as MJPEG: a multipart stream of JPEG parts at the camera's size.
    with urllib.request.urlopen(f"{base}/api/sources/walkway/mjpeg", timeout=10) as r:
        assert r.headers.get("Content-Type") == "multipart/x-mixed-replace; boundary=frame"
        assert r.readline() == b"--frame\r\n" and r.readline() == b"Content-Type: image/jpeg\r\n"
        length = int(r.readline().split(b":")[1])
        r.readline()
        part = r.read(length)
        assert cv2.imdecode(np.frombuffer(part, np.uint8), cv2.IMREAD_COLOR).shape == (64, 64, 3)
    # Unknown names and ids, and ids that try to reach a file: 404, nothing read.
    for path in ("/api/sources/nope", "/api/events/nope", "/api/events/nope/snapshot.jpg",
                 "/api/events/..%2F..%2F..%2Fetc%2Fpasswd/snapshot.jpg", "/api/events?source=nope"):
        assert _status(base + path) == 404, path
    # The events are the run's own lines, as in OUT/NAME/events.jsonl.
    written = [json.loads(line) for line in (served["out"] / "walkway" / "events.jsonl").read_text().splitlines()]
    assert any(w.get("id") == new["id"] and w["type"] == "new" for w in written)
    assert json.loads(_get(base + "/openapi.json")[2])["paths"].keys() >= {"/api/sources", "/api/events", "/api/live"}


def test_live_server_sent_events_carry_scores_and_events(served):
    request = urllib.request.Request(served["base"] + "/api/live")
    kinds = set()
    with urllib.request.urlopen(request, timeout=30) as r:
        assert r.headers.get("Content-Type").startswith("text/event-stream")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not {"source", "scores", "event"} <= kinds:
            line = r.readline().decode()
            if line.startswith("data: "):
                item = json.loads(line[6:])
                kinds.add(item["kind"])
                if item["kind"] == "scores":
                    assert item["source"] == "walkway" and len(item["frames"]) == len(item["scores"]) > 0
    assert {"source", "scores", "event"} <= kinds


def test_a_token_is_required_beyond_loopback_and_checked(tiny_run, camera, tmp_path):
    with pytest.raises(MamaError, match="--token"):
        serve(cameras_from_flags([f"a={camera.url}"], dict(checkpoint=tiny_run["destroyer"])), tmp_path, "0.0.0.0", 0, None)
    with pytest.raises(MamaError, match="NAME="):
        parse_sources(["bad name=x"])
    port, holder = free_port(), {}
    thread = threading.Thread(target=serve, args=(cameras_from_flags([f"a={camera.url}"],
                                                                     dict(checkpoint=tiny_run["destroyer"], device="cpu")),
                                                  tmp_path, "127.0.0.1", port, "s3cret"),
                              kwargs={"ready": lambda hub, server: holder.update(server=server)}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _status(base + "/healthz") == 200, 60, "the server")
        assert _status(base + "/api/sources") == 401 and _status(base + "/") == 401
        assert _status(base + "/api/sources", token="wrong") == 401
        assert _status(base + "/api/sources", token="s3cret") == 200
        assert _status(base + "/api/sources?token=s3cret") == 200
    finally:
        holder["server"].should_exit = True
        thread.join(timeout=60)


def test_the_page_in_a_real_browser(served):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium package is needed (apt-get install chromium; .ci/run installs it)"
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(served["base"] + "/")
            page.wait_for_selector("#tile-walkway", timeout=30_000)
            page.wait_for_selector("#tile-dead .state.failed", timeout=60_000)
            # The chart advances, the live view shows a frame, an alarm appears with its snapshot.
            first = int(page.get_attribute("#tile-walkway", "data-points"))
            page.wait_for_function(f"Number(document.querySelector('#tile-walkway').dataset.points) > {first + 10}",
                                   timeout=60_000)
            page.wait_for_function("document.querySelector('#tile-walkway img.view').naturalWidth > 0", timeout=30_000)
            page.wait_for_selector(".event", timeout=120_000)
            page.wait_for_function("[...document.querySelectorAll('.event img')].some(i => i.complete && i.naturalWidth > 0)",
                                   timeout=30_000)
            assert "walkway" in page.inner_text("#events")
            page.wait_for_timeout(1500)
            shot = REPO / "benchmarks" / "results" / "serve_page.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            # An alarm opens its snapshot and times.
            page.click(".event")
            page.wait_for_selector("#detail[open]", timeout=10_000)
            assert "walkway" in page.inner_text("#detail-text")
        finally:
            browser.close()
    # 404s of images not yet there are the browser's to report, not the page's: only script errors count.
    assert not [e for e in errors if "Failed to load resource" not in e], errors


@pytest.mark.parametrize("text, message", [
    ("[cameras.a]\nsource = 'x'\ncheckpoint = 'c.pt'\nthreshhold = 3\n", "unknown key(s) ['threshhold']"),
    ("[cameras.a]\ncheckpoint = 'c.pt'\n", "needs `source` and `checkpoint`"),
    ("[cameras.a\nsource = 'x'\n", "cannot read it as TOML"),
    ("[camera.a]\nsource = 'x'\n", "expected [defaults] and [cameras.NAME] tables"),
    ("[cameras.'a b']\nsource = 'x'\ncheckpoint = 'c.pt'\n", "NAME of letters"),
    ("[cameras.a]\nsource = 'x'\ncheckpoint = 'CK'\nmerge_gap = 0\n", "camera a: --merge-gap 0 must be a positive"),
    (None, "not found"),
])
def test_a_bad_config_is_one_line_naming_it(text, message, tiny_run, tmp_path, capsys):
    config = tmp_path / "cameras.toml"
    if text is not None:
        config.write_text(text.replace("CK", str(tiny_run["destroyer"])))
    assert main(["serve", "--config", str(config), "--out", str(tmp_path / "o"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: --config {config}") and message in err, err
    assert not (tmp_path / "o").exists()


def test_serve_needs_sources_one_way(tmp_path, capsys):
    assert main(["serve", "--out", str(tmp_path / "o")]) == 2
    assert "--source" in capsys.readouterr().err
    assert main(["serve", "--source", "a=x.mp4", "--out", str(tmp_path / "o")]) == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_cameras_waiting_for_the_networks_share_one_pass_and_each_gets_its_rows():
    import torch

    from mama.live.score import BatchedNetworks

    class SlowNetworks:  # stands in for Scorer.clip_outputs: per-clip results, a slow pass
        calls: list = []

        def clip_outputs(self, x, flows, labels, target, maps=True):
            self.calls.append(len(x))
            time.sleep(0.3)
            return {"sse": x.flatten(1).sum(1), "error": target[:, 0] * 2}

    networks = BatchedNetworks(SlowNetworks())
    rng = np.random.default_rng()
    batches = [tuple(torch.from_numpy(rng.normal(size=(n, 2, 4, 4)).astype(np.float32)) if i != 2 else None
                     for i in range(4)) for n in (3, 1, 2, 4, 2)]
    results: dict = {}

    def camera(i):
        results[i] = networks(batches[i])

    threads = [threading.Thread(target=camera, args=(i,)) for i in range(len(batches))]
    threads[0].start()
    time.sleep(0.1)  # the first pass is running: the others queue and go together in the next
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert SlowNetworks.calls == [3, 1 + 2 + 4 + 2]
    assert networks.batches == 2 and networks.clips == 12
    for i, (x, _, _, target) in enumerate(batches):
        torch.testing.assert_close(results[i]["sse"], x.flatten(1).sum(1), rtol=0, atol=0)
        torch.testing.assert_close(results[i]["error"], target[:, 0] * 2, rtol=0, atol=0)
