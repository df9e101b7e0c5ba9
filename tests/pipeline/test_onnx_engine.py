"""`mama export` and `mama score --engine onnxruntime`: the exported networks give the PyTorch
scorer's streams (within 1e-4) on the synthetic set and on a real Ped2 video, and bad input gets
one line naming the fix."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mama.cli.app import main
from mama.data.datasets import load_video_frames, make_samples, video_background
from mama.evaluate.engine import Scorer
from mama.evaluate.export import EXPORT_FILE, read_export, scorer_from_export
from mama.features.motion import FlowNetFlow
from mama.features.registry import build_extractor
from mama.models import flownet2
from mama.models.destroyer import Destroyer
from mama.models.generator import F2LMGenerator
from mama.models.onnx import OrtNetwork, export_network

pytest.importorskip("onnxruntime")

SIZE, WIDTH = 64, 16  # the demo's architecture: DIS flow, foreground labels, generator + destroyer
TOL = 1e-4


@pytest.fixture(scope="module")
def random_run(tmp_path_factory) -> dict[str, Path]:
    """A run checkpoint of the demo's architecture with random weights (and a made-up
    calibration: the streams, not the alarms, are compared), and its export."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("random_run")
    net_g = F2LMGenerator(flow_channels=6, label_channels=4, base=WIDTH)
    net_a = Destroyer(base=WIDTH)
    streams = ("sim_motion", "sim_label", "sse", "destroyer_sse")
    calibration = {"stats": {"mean": dict.fromkeys(streams, 0.0), "std": dict.fromkeys(streams, 1.0)},
                   "weights": {"a": 1.0, "b": 1.0, "c": 3.0, "d": 1.0}, "threshold": 1.0, "quantile": 0.995,
                   "sigma": 0.0}
    torch.save({"net_g": net_g.state_dict(), "net_a": net_a.state_dict(), "calibration": calibration,
                "model": {"base": WIDTH, "label_channels": 4, "motion": "dis", "labels": "foreground", "size": SIZE}},
               folder / "final.pt")
    assert main(["export", str(folder), "--out", str(folder / "export")]) == 0
    return {"checkpoint": folder / "final.pt", "export": folder / "export"}


def _streams(path: Path) -> dict[str, np.ndarray]:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) for r in rows]) for k in ("sim_motion", "sim_label", "sse", "destroyer_sse")} | {
        "frame": np.array([f"{r['video']}/{r['frame']}" for r in rows])}


def test_the_synthetic_set_scores_the_same_with_either_engine(random_run, tiny_synth, tmp_path):
    test_videos = tiny_synth / "synth" / "testing" / "frames"
    for engine, checkpoint in (("torch", random_run["checkpoint"]), ("onnxruntime", random_run["export"])):
        assert main(["score", str(test_videos), "--checkpoint", str(checkpoint), "--out", str(tmp_path / engine),
                     "--engine", engine]) == 0
    want, got = _streams(tmp_path / "torch" / "scores.csv"), _streams(tmp_path / "onnxruntime" / "scores.csv")
    assert len(want["frame"]) == 2 * (40 - 4) and list(got["frame"]) == list(want["frame"])
    for k in ("sim_motion", "sim_label", "sse", "destroyer_sse"):
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=TOL, err_msg=k)


def test_a_ped2_video_scores_the_same_with_either_engine(random_run, ped2_root):
    video = make_samples("ped2", ped2_root, "testing")[0]
    frames = load_video_frames(video, (SIZE, SIZE))
    background = video_background(frames)
    payload = torch.load(random_run["checkpoint"], weights_only=True)
    net_g = F2LMGenerator(flow_channels=6, label_channels=4, base=WIDTH)
    net_g.load_state_dict(payload["net_g"])
    net_a = Destroyer(base=WIDTH)
    net_a.load_state_dict(payload["net_a"])
    want = Scorer(net_g.eval(), build_extractor("dis", "foreground"), net_a.eval()).video_streams(frames, background)
    got = scorer_from_export(read_export(random_run["export"]), batch_size=32).video_streams(frames, background)
    assert set(got) == set(want) and len(want["sse"]) == len(frames) - 4
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=TOL, err_msg=k)


def test_flownet2sd_exports_to_standard_operators_with_the_same_flow(tmp_path):
    torch.manual_seed(0)
    provider = FlowNetFlow("flownet2sd", flownet2.FlowNet2SD().eval())
    (attr, (method, example)), = provider.network_calls(SIZE).items()
    export_network(provider.networks[attr], (example,), tmp_path / "motion.onnx", ["input"], ["output"], method)
    exported = provider.with_networks({attr: OrtNetwork(tmp_path / "motion.onnx", method)})
    a = torch.rand(3, 3, SIZE, SIZE) * 2 - 1
    b = (a + 0.1 * torch.randn_like(a)).clamp(-1, 1)
    want = provider.coarse(a, b)
    torch.testing.assert_close(exported.coarse(a, b), want, rtol=0, atol=TOL * want.abs().max().item())


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_export_refuses_bad_paths_and_writes_nothing(random_run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert main(["export", str(tmp_path / "missing.pt"), "--out", str(out)]) == 2
    assert "missing.pt does not exist" in _error(capsys) and not out.exists()
    assert main(["export", str(tmp_path), "--out", str(out)]) == 2
    assert "without final.pt" in _error(capsys) and not out.exists()
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["export", str(random_run["checkpoint"]), "--out", str(tmp_path)]) == 2
    assert "holds other files" in _error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "onnx", None)  # as if the extra were not installed
        assert main(["export", str(random_run["checkpoint"]), "--out", str(out)]) == 2
    assert 'pip install "mama[onnx]"' in _error(capsys) and not out.exists()


def test_the_onnxruntime_engine_refuses_what_it_cannot_use(random_run, tiny_synth, tmp_path, capsys, monkeypatch):
    video = str(tiny_synth / "synth" / "testing" / "frames" / "01")
    score = ["score", video, "--out", str(tmp_path / "s")]
    assert main([*score, "--checkpoint", str(random_run["checkpoint"]), "--engine", "onnxruntime"]) == 2
    assert "scores an ONNX export" in (line := _error(capsys)) and "mama export" in line
    assert main([*score, "--checkpoint", str(random_run["export"])]) == 2
    assert "add --engine onnxruntime" in _error(capsys)
    assert main([*score, "--checkpoint", str(random_run["export"]), "--engine", "onnxruntime", "--amp"]) == 2
    assert "--amp does not apply to --engine onnxruntime" in _error(capsys)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the extra were not installed
    assert main([*score, "--checkpoint", str(random_run["export"]), "--engine", "onnxruntime"]) == 2
    assert 'pip install "mama[onnx]"' in _error(capsys)
    assert not (tmp_path / "s").exists()
    assert (random_run["export"] / EXPORT_FILE).is_file()
