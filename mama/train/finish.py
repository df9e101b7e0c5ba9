"""The end of a run: the model card (each stream's health on the held-out pseudo-anomalies) and
the calibration of the card's fusion on normal videos, which the final checkpoints carry for
`mama score`."""
from __future__ import annotations

import torch

from mama.config import TrainConfig
from mama.evaluate.calibrate import calibrate
from mama.evaluate.card import card_lines, model_card
from mama.evaluate.engine import Scorer
from mama.evaluate.fusion import FusionWeights
from mama.evaluate.validation import PseudoAnomalyValidator
from mama.train.session import RunLog


def run_card(c: TrainConfig, validator: PseudoAnomalyValidator, scorer: Scorer, weights: FusionWeights,
             step: int, best: float | None, log: RunLog) -> dict:
    """The model card of the run's last step, printed and logged."""
    why = f"final.pt is the last step ({step})"
    if best is not None:
        figure = "test AUC (--select-on-test)" if c.select_on_test else "pseudo-anomaly AUC"
        why += f"; best.pt is the best {figure} of the validations ({best:.3f})"
    with torch.no_grad():
        card = model_card(validator, scorer, weights, "fixed in advance for the clean protocol", {"step": step, "why": why})
    for line in card_lines(card):
        print(line)
    log.scalars(step, {f"card/auc_{s['name']}": s["auc"] for s in card["streams"]})
    log.text(step, "card/flags", card["flags"])
    return card


def run_calibration(c: TrainConfig, scorer: Scorer, card: dict, val_videos: list, train_videos: list) -> dict:
    """The card's fusion calibrated on normal videos: held-out ones first (unseen normal video
    sets an honest threshold), then training ones."""
    videos = list(dict.fromkeys(val_videos + train_videos))[: max(c.calibrate_videos, 1)]
    return calibrate(scorer, videos, size=c.size, weights=FusionWeights.parse(card["fusion"]["weights"]),
                     max_frames=c.calibrate_frames)
