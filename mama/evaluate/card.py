"""The model card written into final.pt at the end of training: how well each score stream
separates the label-free pseudo-anomalies (mama.evaluate.validation), which streams are
unhealthy, and the fusion weights `mama score` and the clean protocol use because of it.

A stream is flagged when, on its own, it separates pseudo-anomalies no better than chance
(a destroyer trained too briefly can come out inverted: it scores normal frames as MORE
anomalous), or when adding it to the other weighted streams lowers their pseudo-anomaly AUC
by more than LOWERS_BY. A flagged stream's weight is set to 0 in the card's fusion; the paper
protocol keeps the paper's fusion whatever the card says.
"""
from __future__ import annotations

import numpy as np

from mama.evaluate.calibrate import effective_weights
from mama.evaluate.engine import Scorer
from mama.evaluate.fusion import STREAMS, FusionWeights
from mama.evaluate.validation import PseudoAnomalyValidator

CHANCE = 0.5
LOWERS_BY = 0.02  # of the proxy AUC; about its spread between two validations of one checkpoint
STREAM_NAMES = {"sim_motion": "motion term (sim_motion)", "sim_label": "label term (sim_label)",
                "sse": "prediction error (sse)", "destroyer_sse": "destroyer"}


def alone(stream: str) -> FusionWeights:
    """Weights that score with `stream` only."""
    return FusionWeights(**{stream: 1.0})


def stream_aucs(validator: PseudoAnomalyValidator, streams: list[dict]) -> dict[str, tuple[float, dict[str, float]]]:
    """{stream: (its pseudo-anomaly AUC alone, {kind: AUC})} for each stream the model produces,
    every stream's weighting scored in one pass."""
    present = [n for n in STREAMS if n in streams[0]]
    per_kind = validator.kind_aucs(streams, [alone(n) for n in present])
    out = {}
    for i, name in enumerate(present):
        kinds = {k: float(v[i]) for k, v in per_kind.items()}
        out[name] = (float(np.mean(list(kinds.values()))), kinds)
    return out


def model_card(validator: PseudoAnomalyValidator, scorer: Scorer, weights: FusionWeights, weights_from: str,
               checkpoint: dict) -> dict:
    """The card of the model `scorer` runs: each stream's pseudo-anomaly AUC (overall and per
    kind), the flags, and `weights` with the flagged streams left out. `checkpoint`: {"step",
    "why"} of the checkpoint the card describes."""
    streams = validator.streams(scorer)
    chosen = effective_weights(weights, streams[0])
    rows, flags, flagged = [], [], []
    for name, (auc, per_kind) in stream_aucs(validator, streams).items():
        rows.append({"name": name, "auc": auc, "per_kind": per_kind, "flagged": False})
        if chosen[name] == 0:
            continue
        rest = chosen.without(name)
        if auc <= CHANCE:
            flags.append(f"the {STREAM_NAMES[name]} stream separates pseudo-anomalies worse than chance ({auc:.2f}): "
                         "train it longer or leave it out")
        elif any(rest.values()):
            with_it, without_it = validator.proxy(streams, [chosen, rest])
            if without_it - with_it > LOWERS_BY:
                flags.append(f"adding the {STREAM_NAMES[name]} stream lowers the pseudo-anomaly AUC from "
                             f"{without_it:.2f} to {with_it:.2f}: it is left out of the fusion")
            else:
                continue
        else:
            continue
        flagged.append(name)
        rows[-1]["flagged"] = True
    used = chosen
    for name in flagged:
        used = used.without(name)
    if not any(used.values()):  # every weighted stream is unhealthy: nothing better to fall back on
        used = chosen
        flags.append("every weighted stream is flagged; the fusion keeps them all: this model is not usable as trained")
    return {
        "checkpoint": checkpoint,
        "kinds": list(validator.kinds),
        "clips": validator.clips,
        "streams": rows,
        "fusion": {"weights": str(used), "from": weights_from + (" less the flagged streams" if used != chosen else ""),
                   "auc": float(validator.proxy(streams, [used])[0])},
        "flags": flags,
    }


def card_lines(card: dict) -> list[str]:
    """The card as a few plain lines (end of training, `mama eval`, `mama score`)."""
    streams = ", ".join(f"{STREAM_NAMES[s['name']]} {s['auc']:.2f}" + (" (flagged)" if s["flagged"] else "")
                        for s in card["streams"])
    f = card["fusion"]
    return [f"model card: {card['checkpoint']['why']}",
            f"  pseudo-anomaly AUC on training video, each stream alone: {streams}",
            f"  fusion {f['weights']} ({f['from']}): pseudo-anomaly AUC {f['auc']:.2f}",
            *[f"  WARNING: {flag}" for flag in card["flags"]]]
