"""`mama eval` and `mama score` end to end on the tiny trained run: metrics, files, errors."""
from __future__ import annotations

import csv
import html
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from mama import metrics
from mama.cli.app import main
from mama.data.datasets import make_samples
from mama.evaluate.fusion import FusionWeights, fuse_offline
from mama.models.checkpoint import read_file, save_checkpoint


REPO = Path(__file__).resolve().parents[2]
# A model card as training writes it (payload["card"]): the report shows it, flags first.
CARD = {"checkpoint": {"step": 2, "why": "the last step: no validation ran"},
        "streams": [{"name": "sse", "auc": 0.91, "per_kind": {"patch": 0.95, "shuffle": 0.87}, "flagged": False},
                    {"name": "destroyer_sse", "auc": 0.31, "per_kind": {"patch": 0.2}, "flagged": True}],
        "fusion": {"weights": "0,0,3,0", "from": "fixed in advance less the flagged streams", "auc": 0.88},
        "flags": ["the destroyer stream separates pseudo-anomalies worse than chance (0.31): train it longer or leave it out"]}


@pytest.fixture(scope="module")
def evaluated(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    payload = read_file(tiny_run["destroyer"], "run")
    carded = save_checkpoint(out.parent / f"{out.name}_carded.pt", {**payload, "card": CARD})
    rc = main(["eval", "--checkpoint", str(carded), "--dataset", "synth",
               "--data-root", str(tiny_run["root"]), "--out", str(out), "--oracle", "--device", "cpu"])
    assert rc == 0
    return out


def test_eval_table_rows_and_label_use(evaluated):
    result = json.loads((evaluated / "metrics.json").read_text())
    rows = result["rows"]
    combos = {(r["protocol"], r["model"]) for r in rows}
    for p in ("paper", "clean", "online"):
        for m in ("generator", "generator+destroyer"):
            assert (p, m) in combos
    oracle = [r for r in rows if "oracle" in r["weights_from"]]
    assert oracle and all(r["test_labels_used"] for r in oracle)
    assert all(not r["test_labels_used"] for r in rows if r["protocol"] == "clean")
    assert not result["headline"]["test_labels_used"]
    for r in rows:
        assert 0.0 <= r["micro_auc"] <= 1.0 and 0.0 <= r["eer"] <= 1.0
    assert {r["smoothing"] for r in rows if r["protocol"] == "paper"} == {0.0, 10.0}


def test_the_headline_is_the_unsmoothed_clean_row_of_the_full_model():
    from mama.evaluate.report import headline

    rows = [{"protocol": p, "model": m, "smoothing": s, "test_labels_used": used, "weights_from": w, "_scores": []}
            for m in ("generator", "generator+destroyer")
            for p, used, w in (("paper", False, "fixed defaults"), ("paper", True, "oracle (tuned on test labels)"),
                               ("clean", False, "fixed defaults"), ("online", False, "fixed defaults"))
            for s in (0.0, 10.0)]
    h = headline(rows)
    assert (h["protocol"], h["model"], h["smoothing"], h["test_labels_used"]) == ("clean", "generator+destroyer", 0.0, False)
    # Only the online protocol run: its unsmoothed full-model row.
    h = headline([r for r in rows if r["protocol"] == "online"])
    assert (h["model"], h["smoothing"]) == ("generator+destroyer", 0.0)


def test_scores_csv_matches_metrics(evaluated, tiny_run):
    result = json.loads((evaluated / "metrics.json").read_text())
    with open(evaluated / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    videos = make_samples("synth", tiny_run["root"], "testing")
    assert len(rows) == sum(v.num_frames - 4 for v in videos)
    assert list(rows[0]) == ["video", "frame", "sim_motion", "sim_label", "sse", "destroyer_sse", "score", "label"]
    assert rows[0]["frame"] == "4" and rows[0]["video"] == videos[0].name
    labels = np.array([int(r["label"]) for r in rows])
    np.testing.assert_array_equal(labels, np.concatenate([v.labels[4:] for v in videos]))
    # The headline's AUC is recomputed from the written scores, and the streams fuse back to them.
    scores = np.array([float(r["score"]) for r in rows])
    assert metrics.micro_auc(scores, labels) == pytest.approx(result["headline"]["micro_auc"], abs=1e-4)
    first = [r for r in rows if r["video"] == videos[0].name]
    streams = {k: np.array([float(r[k]) for r in first]) for k in ("sim_motion", "sim_label", "sse", "destroyer_sse")}
    assert (result["headline"]["protocol"], result["headline"]["smoothing"]) == ("clean", 0.0)
    # The tiny model's bottleneck streams are constant to the file's 6 digits: their z-scores
    # would be rounding noise, so the fusion is checked where the file resolves the streams.
    if all(a.std() > 1e-4 * np.abs(a).mean() for a in streams.values()):
        w = FusionWeights.parse(result["headline"]["weights"])
        np.testing.assert_allclose(fuse_offline(streams, w), [float(r["score"]) for r in first], atol=1e-4)


def _visible_text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<style>.*?</style>", "", page, flags=re.S)))


def test_the_report_reads_as_sentences_with_every_term_defined(evaluated, tiny_run):
    result = json.loads((evaluated / "metrics.json").read_text())
    page = (evaluated / "report.html").read_text()
    text = _visible_text(page)
    clean = next(r for r in result["rows"]
                 if (r["protocol"], r["model"], r["smoothing"]) == ("clean", "generator+destroyer", 0.0))
    assert result["headline"]["micro_auc"] == clean["micro_auc"]
    sentence = _visible_text(re.search(r'id=headline>(.*?)</p>', page, re.S).group(1))
    assert f"micro AUC of {clean['micro_auc']:.3f} under the clean protocol, unsmoothed" in sentence
    assert "generator + destroyer" in sentence and "no test label was used" in sentence
    # Terms defined where they appear, the base rate beside AP, identical rows once with both names.
    base = f"{clean['abnormal_frames'] / clean['frames']:.3f}"
    for needle in ("equal error rate", "average precision", f"AP (base rate {base})", "uses later frames",
                   "oracle (tuned on test labels)"):
        assert needle in text, needle
    figures = lambda r: (r["micro_auc"], r["macro_auc"], r["eer"], r["ap"], r["weights"], r["weights_from"])  # noqa: E731
    same = sum(figures(r) == figures(c) for r in result["rows"] for c in result["rows"]
               if r["protocol"] == "paper" and "oracle" not in r["weights_from"] and c["protocol"] == "clean"
               and (r["model"], r["smoothing"]) == (c["model"], c["smoothing"]))
    # The note once, and one row per model and smoothing where paper and clean are the same computation (not two).
    assert text.count("paper = clean") == (1 + same if same else 0)
    # No raw keys, Python booleans or 4-decimal floats.
    for raw in ("damage_share_of_pixels", "generator_error_", "micro_auc", "test_labels_used", "weights_from",
                "abnormal_frames", "generator+destroyer"):
        assert raw not in text, raw
    assert not re.search(r"\b(True|False|nan|None)\b", text) and not re.search(r"\d\.\d{4}", text)
    # The model card, its flags right under the headline.
    assert text.index(sentence.strip()) < text.index(CARD["flags"][0]) < text.index("Every protocol")
    assert "pseudo-anomaly AUC" in text and "0.310" in text
    # The alarms: mama score's own threshold (the calibration's), three example frames at the video's size.
    alarms = result["alarms"]
    assert alarms["threshold"] == pytest.approx(read_file(tiny_run["destroyer"], "run")["calibration"]["threshold"])
    assert [x["what"] for x in alarms["examples"]] == [
        "most anomalous normal frame", "most anomalous abnormal frame", "least anomalous abnormal frame"]
    assert [x["abnormal"] for x in alarms["examples"]] == [False, True, True]
    native = cv2.imread(str(make_samples("synth", tiny_run["root"], "testing")[0].frames[0])).shape
    for k in (1, 2, 3):
        img = cv2.imread(str(evaluated / f"example_{k}.png"))
        assert img is not None and img.shape == native
    for png in ("roc.png", "curves.png"):
        img = cv2.imread(str(evaluated / png))
        assert img is not None and img.shape[0] > 100
    # Self-contained: every picture and link is a file beside it.
    for ref in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert (evaluated / ref).is_file(), ref


def test_a_partial_or_missing_model_card_still_renders():
    from mama.evaluate.report import _flags, _model_card

    assert _model_card(None) == "" and _model_card({}) == "" and _flags(None) == "" and _flags({}) == ""
    assert "train longer" in _flags({"flags": ["train longer"]})
    assert "sse" in _model_card({"streams": [{"name": "sse"}], "checkpoint": {"step": 3}, "fusion": {}})


def test_the_report_in_a_browser_shows_the_headline_and_every_picture(evaluated):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium package is needed (apt-get install chromium; .ci/run installs it)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto((evaluated / "report.html").as_uri())
            assert page.is_visible("#headline") and "micro AUC" in page.inner_text("#headline")
            page.wait_for_function("[...document.images].every(i => i.complete)", timeout=10_000)
            widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.naturalWidth)")
            assert len(widths) == 5 and all(w > 0 for w in widths), widths  # curves, 3 examples, ROC
            shot = REPO / "benchmarks" / "results" / "report_page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()


def test_eval_errors(tiny_run, tmp_path, capsys):
    rc = main(["eval", "--checkpoint", str(tmp_path / "missing.pt"), "--dataset", "synth",
               "--data-root", str(tiny_run["root"])])
    err = capsys.readouterr().err
    assert rc == 2 and "missing.pt does not exist" in err and "Traceback" not in err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    rc = main(["eval", "--checkpoint", str(tmp_path / "junk.pt"), "--dataset", "synth", "--data-root", str(tiny_run["root"])])
    err = capsys.readouterr().err
    assert rc == 2 and "junk.pt: corrupt or not a torch checkpoint" in err and "weights_only" not in err
    # A dataset without test labels: copy the frames, drop the .mat.
    root = tmp_path / "nolabels"
    shutil.copytree(tiny_run["root"] / "synth", root / "synth")
    (root / "synth" / "synth.mat").unlink()
    rc = main(["eval", "--checkpoint", str(tiny_run["generator"]), "--dataset", "synth", "--data-root", str(root),
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "synth.mat" in err
    rc = main(["eval", "--checkpoint", str(tiny_run["generator"]), "--dataset", "synth",
               "--data-root", str(tiny_run["root"]), "--weights", "1,2"])
    assert rc == 2 and "3 or 4 comma-separated" in capsys.readouterr().err


def _write_video(path, frames):
    h, w = frames.shape[-2:]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
    for f in frames:
        vw.write(((f.transpose(1, 2, 0) + 1) * 127.5).clip(0, 255).astype(np.uint8))
    vw.release()


def test_score_a_video_file_with_overlay(tiny_run, tmp_path, capsys):
    from mama.data.datasets import load_video_frames

    video = make_samples("synth", tiny_run["root"], "testing")[0]
    frames = load_video_frames(video, (64, 64))
    _write_video(tmp_path / "cam.mp4", frames)
    out = tmp_path / "scores"
    rc = main(["score", str(tmp_path / "cam.mp4"), "--checkpoint", str(tiny_run["destroyer"]),
               "--out", str(out), "--overlay", str(tmp_path / "overlay.mp4"), "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "scores.json").read_text())
    v = summary["videos"][0]
    assert summary["protocol"] == "online" and v["frames"] == len(frames) and len(v["scores"]) == len(frames) - 4
    for e in v["events"]:
        assert e["type"] == "end" and 4 <= e["start_frame"] <= e["end_frame"] < len(frames) and e["peak"] > summary["threshold"]
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(frames) - 4 and {"score", "alarm", "destroyer_sse"} <= set(rows[0])
    assert all(int(r["alarm"]) == (float(r["score"]) > summary["threshold"]) for r in rows)
    assert (out / "scores_cam.png").is_file()
    cap = cv2.VideoCapture(str(tmp_path / "overlay.mp4"))
    # Every frame, at the source's resolution (the first 4 drawn as warming up).
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == len(frames)
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (frames.shape[-1], frames.shape[-2])
    cap.release()


def test_score_is_causal(tiny_run, tmp_path):
    """Scores of the first frames do not change when later frames change (online protocol)."""
    from mama.data.datasets import load_video_frames
    from mama.config import ScoreOptions
    from mama.live.score import score_videos

    video = make_samples("synth", tiny_run["root"], "testing")[0]
    frames = load_video_frames(video, (64, 64))
    for name, fr in (("a", frames), ("b", np.concatenate([frames[:14], -frames[14:]]))):
        d = tmp_path / name / "frames"
        d.mkdir(parents=True)
        for i, f in enumerate(fr):
            cv2.imwrite(str(d / f"{i:03d}.png"), ((f.transpose(1, 2, 0) + 1) * 127.5).round().clip(0, 255).astype(np.uint8))
    a = score_videos(ScoreOptions(tmp_path / "a" / "frames", tiny_run["generator"], tmp_path / "sa"))["videos"][0]["scores"]
    b = score_videos(ScoreOptions(tmp_path / "b" / "frames", tiny_run["generator"], tmp_path / "sb"))["videos"][0]["scores"]
    assert a[:10] == b[:10] and a[12:] != b[12:]


def test_score_errors(tiny_run, tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 100)
    rc = main(["score", str(bad), "--checkpoint", str(tiny_run["generator"]), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "broken.mp4" in err and "Traceback" not in err
    rc = main(["score", str(tmp_path / "nothing"), "--checkpoint", str(tiny_run["generator"])])
    assert rc == 2 and "nothing" in capsys.readouterr().err


def test_fit_weights_uses_training_video_only(tiny_run, tmp_path, monkeypatch):
    from mama.config import EvalOptions
    from mama.evaluate import validation
    from mama.evaluate.evaluate import evaluate

    seen = []
    real = validation.PseudoAnomalyValidator.__init__

    def spy(self, extractor, videos, *args, **kw):
        seen.extend(str(v.source) for v in videos)
        real(self, extractor, videos, *args, **kw)

    monkeypatch.setattr(validation.PseudoAnomalyValidator, "__init__", spy)
    result = evaluate(EvalOptions(dataset="synth", data_root=tiny_run["root"], checkpoint=tiny_run["destroyer"],
                                  out=tmp_path, protocols=("clean",), fit_weights=True, sigma=0, device="cpu"))
    rows = result["rows"]
    assert {r["model"] for r in rows} == {"generator", "generator+destroyer"}
    for r in rows:
        assert r["weights_from"] == "fitted on training video (--fit-weights)" and not r["test_labels_used"]
        a, b, c, d = (float(x) for x in r["weights"].split(","))
        assert min(a, b, c) > 0 and abs(a + b + c - 5) < 1e-6  # a point of the reference grid
        assert (d > 0) == (r["model"] == "generator+destroyer")
    assert seen and all("/training/" in src for src in seen)  # fitted on training video only


def test_stream_ablation_re_fuses_the_same_streams(evaluated):
    result = json.loads((evaluated / "metrics.json").read_text())
    ablation = {r["streams"]: r for r in result["ablation"]}
    assert list(ablation) == ["sse", "sse + sim terms", "sse + sim terms + destroyer", "sse + destroyer", "destroyer alone"]
    # The ablation takes the paper's fusion apart: its rows are the paper protocol's.
    paper = {(r["model"], r["smoothing"]): r["micro_auc"] for r in result["rows"]
             if r["protocol"] == "paper" and "oracle" not in r["weights_from"]}
    assert ablation["sse + sim terms"]["micro_auc"] == pytest.approx(paper[("generator", 0.0)])
    assert ablation["sse + sim terms + destroyer"]["micro_auc"] == pytest.approx(paper[("generator+destroyer", 0.0)])
    assert ablation["sse + sim terms"]["micro_auc_sigma10"] == pytest.approx(paper[("generator", 10.0)])
    scores = {}
    with open(evaluated / "scores.csv") as f:
        for r in csv.DictReader(f):
            scores.setdefault(r["video"], []).append((float(r["sse"]), int(r["label"])))
    from mama.evaluate.fusion import minmax

    # sse alone: per-video min-max of the raw stream, AUC over all frames.
    flat = np.concatenate([minmax([s for s, _ in v]) for v in scores.values()])
    lab = np.concatenate([[l for _, l in v] for v in scores.values()])
    assert ablation["sse"]["micro_auc"] == pytest.approx(metrics.micro_auc(flat, lab), abs=1e-6)


def test_destroyer_localisation_on_the_synthetic_masks(evaluated):
    loc = json.loads((evaluated / "metrics.json").read_text())["localisation"]
    assert loc["anomalous_pixels"] > 0 and loc["normal_pixels"] > loc["anomalous_pixels"]
    for k in ("damage_pixel_auroc", "generator_error_pixel_auroc", "damage_above_0.5_inside", "damage_above_0.5_outside"):
        assert 0.0 <= loc[k] <= 1.0, k


def test_binned_auroc_equals_sklearn_and_masks_resize_by_area(tmp_path):
    from sklearn.metrics import roc_auc_score

    from mama.data.datasets import VideoRecord
    from mama.evaluate import localisation as L

    rng = np.random.default_rng(8)
    pos, neg = rng.uniform(0.2, 2.0, 5000), rng.uniform(0.0, 1.5, 20000)
    edges = np.linspace(0, 2, L.BINS + 1)
    got = L.binned_auroc(np.histogram(pos, edges)[0], np.histogram(neg, edges)[0])
    want = roc_auc_score(np.r_[np.ones(pos.size), np.zeros(neg.size)], np.r_[pos, neg])
    assert got == pytest.approx(want, abs=2e-4)  # bin width 5e-4
    masks = np.zeros((6, 8, 8), np.uint8)
    masks[4:, :4, :4] = 1  # a quarter of frames 4 and 5
    masks[5, 4, 4] = 1  # one lone pixel: a quarter of a 2x2 cell, below half
    np.save(tmp_path / "v.npy", masks)
    got = L.load_masks(tmp_path, VideoRecord("v", (), None, 6, None), 4)
    assert got.shape == (2, 4, 4) and got.dtype == bool
    assert got[0, :2, :2].all() and got[0].sum() == 4 and got[1].sum() == 4


def test_eval_under_torchrun_shares_the_videos_and_reports_the_same(tiny_run, evaluated, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "ddp"
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531", "-m",
         "mama.cli.app", "eval", "--checkpoint", str(evaluated.parent / f"{evaluated.name}_carded.pt"), "--dataset", "synth", "--data-root",
         str(tiny_run["root"]), "--out", str(out), "--oracle", "--device", "cpu"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600, cwd=repo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = (json.loads((d / "metrics.json").read_text()) for d in (evaluated, out))
    assert [{k: r[k] for k in ("protocol", "model", "smoothing", "weights")} for r in two["rows"]] == \
        [{k: r[k] for k in ("protocol", "model", "smoothing", "weights")} for r in one["rows"]]
    for a, b in zip(one["rows"], two["rows"]):
        for k in ("micro_auc", "macro_auc", "eer", "ap"):
            assert a[k] == pytest.approx(b[k], abs=1e-12) or (a[k] != a[k] and b[k] != b[k]), (a, k)
    assert proc.stdout.count("report:") == 1  # one report, from rank 0
