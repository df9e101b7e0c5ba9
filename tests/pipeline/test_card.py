"""The model card (mama.evaluate.card): a destroyer made inverted on purpose is flagged, and
`mama score` and the clean protocol of `mama eval` leave it out and say so; the paper protocol
keeps the paper's fusion."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mama.cli.app import main
from mama.data.datasets import make_samples
from mama.evaluate import card as card_mod
from mama.evaluate import validation
from mama.evaluate.calibrate import calibrate
from mama.evaluate.engine import Scorer
from mama.evaluate.fusion import PAPER_WEIGHTS, FusionWeights
from mama.features.registry import build_extractor
from mama.models.build import models_from_run
from mama.models.checkpoint import read_file, save_checkpoint


class InvertedDestroyer:
    """The tiny run's scorer with its destroyer turned upside down: the destroyer stream is the
    NEGATED frame-to-frame change (normal clips score higher than fast or pasted ones), the
    prediction error the change itself (a healthy stream)."""

    def __init__(self, scorer: Scorer):
        self.scorer = scorer

    def stored_streams(self, store, video, frames):
        out = self.scorer.stored_streams(store, video, frames)
        energy = (frames[1:] - frames[:-1]).abs().mean(dim=(1, 2, 3))
        change = torch.stack([energy[t - 4: t].mean() for t in range(4, frames.shape[0])]).numpy().astype(np.float64)
        return {**out, "sse": change, "destroyer_sse": -change}


@pytest.fixture(scope="module")
def inverted(tiny_run, tmp_path_factory):
    """The tiny destroyer checkpoint with the card (and calibration) the trainer would write for
    an inverted destroyer."""
    payload = read_file(tiny_run["destroyer"], "run")
    net_g, net_a, meta = models_from_run(payload, tiny_run["destroyer"], need_destroyer=True)
    scorer = Scorer(net_g.eval(), build_extractor(meta["motion"], meta["labels"], "cpu"), net_a.eval(), "cpu",
                    optimize=False)
    videos = make_samples("synth", tiny_run["root"], "training")
    pseudo = validation.PseudoAnomalyValidator(scorer.extractor, videos, meta["size"], 8, validation.PSEUDO_KINDS, seed=0)
    card = card_mod.model_card(pseudo, InvertedDestroyer(scorer), FusionWeights(0, 0, 3, 1), "fixed in advance",
                               {"step": payload["step"], "why": "the last step"})
    payload["card"] = card
    payload["calibration"] = calibrate(scorer, videos[:2], meta["size"], FusionWeights.parse(card["fusion"]["weights"]))
    path = tmp_path_factory.mktemp("inverted") / "final.pt"
    save_checkpoint(path, payload)
    return path, card


def test_an_inverted_destroyer_is_flagged_and_left_out(inverted):
    _, card = inverted
    streams = {s["name"]: s for s in card["streams"]}
    assert streams["destroyer_sse"]["flagged"] and streams["destroyer_sse"]["auc"] < 0.5
    assert not streams["sse"]["flagged"] and streams["sse"]["auc"] > 0.5
    assert streams["destroyer_sse"]["auc"] == pytest.approx(1 - streams["sse"]["auc"])  # the same stream, negated
    assert card["flags"] == [f"the destroyer stream separates pseudo-anomalies worse than chance "
                             f"({streams['destroyer_sse']['auc']:.2f}): train it longer or leave it out"]
    assert card["fusion"]["weights"] == "0,0,3,0" and "less the flagged streams" in card["fusion"]["from"]
    lines = card_mod.card_lines(card)
    assert lines[-1] == f"  WARNING: {card['flags'][0]}" and "destroyer" in lines[1] and "(flagged)" in lines[1]


def test_a_destroyer_that_lowers_the_proxy_is_flagged(tiny_run):
    """Above chance alone, but the fusion separates pseudo-anomalies worse with it than without."""

    class Weak(InvertedDestroyer):
        rng = np.random.default_rng(0)

        def stored_streams(self, store, video, frames):
            out = super().stored_streams(store, video, frames)
            rng = self.rng
            # Some signal under a lot of noise: above chance alone, a drag on the clean sse.
            return {**out, "destroyer_sse": out["sse"] + rng.normal(0, out["sse"].mean() * 3, len(out["sse"]))}

    payload = read_file(tiny_run["destroyer"], "run")
    net_g, net_a, meta = models_from_run(payload, tiny_run["destroyer"], need_destroyer=True)
    scorer = Scorer(net_g.eval(), build_extractor(meta["motion"], meta["labels"], "cpu"), net_a.eval(), "cpu",
                    optimize=False)
    pseudo = validation.PseudoAnomalyValidator(scorer.extractor, make_samples("synth", tiny_run["root"], "training"),
                                               meta["size"], 8, validation.PSEUDO_KINDS, seed=0)
    card = card_mod.model_card(pseudo, Weak(scorer), FusionWeights(0, 0, 1, 3), "fixed", {"step": 1, "why": "-"})
    d = {s["name"]: s for s in card["streams"]}["destroyer_sse"]
    assert d["auc"] > 0.5 and d["flagged"], card
    assert len(card["flags"]) == 1 and card["flags"][0].startswith("adding the destroyer stream lowers the pseudo-anomaly AUC")
    assert card["fusion"]["weights"] == "0,0,1,0"


def test_eval_and_score_leave_the_flagged_stream_out(inverted, tiny_run, tmp_path, capsys):
    path, card = inverted
    rc = main(["eval", "--checkpoint", str(path), "--dataset", "synth", "--data-root", str(tiny_run["root"]),
               "--out", str(tmp_path / "eval"), "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"WARNING: {card['flags'][0]}" in out
    assert "(G+D), with its destroyer stream left out by the model card, scores" in " ".join(out.split())  # the headline
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    full = {(r["protocol"], r["smoothing"]): r for r in result["rows"] if r["model"] == "generator+destroyer"}
    # clean and online: the card's fusion, the destroyer left out; paper: the paper's, kept as it is
    for protocol in ("clean", "online"):
        row = full[(protocol, 0.0)] if protocol == "clean" else next(r for k, r in full.items() if k[0] == "online")
        assert row["weights"] == "0,0,3,0" and row["weights_from"] == "model card (flagged streams left out)"
    assert full[("paper", 0.0)]["weights"] == str(PAPER_WEIGHTS)
    assert result["model_card"]["flags"] == card["flags"]

    video = make_samples("synth", tiny_run["root"], "testing")[0]
    rc = main(["score", str(video.frames[0].parent), "--checkpoint", str(path), "--out", str(tmp_path / "score"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert f"warning: model card: {card['flags'][0]}" in err
    summary = json.loads((tmp_path / "score" / "scores.json").read_text())
    assert FusionWeights.from_dict(summary["weights"]) == FusionWeights(0, 0, 3, 0)
