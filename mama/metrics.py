"""Frame-level metrics of video anomaly detection, on top of scikit-learn.

Scores are per frame, higher = more anomalous; labels are 1 for abnormal frames. The field's
headline is the micro AUC: all test frames of all videos concatenated into one ROC.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(np.int64).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf")
    return scores, labels


def _has_both_classes(labels: np.ndarray) -> bool:
    return 0 < int(labels.sum()) < labels.size


def micro_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC over all frames; NaN when only one class is present."""
    scores, labels = _check(scores, labels)
    return float(roc_auc_score(labels, scores)) if _has_both_classes(labels) else math.nan


def macro_auc(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> float:
    """Mean of per-video AUCs over the videos that contain both classes (NaN if none does)."""
    aucs = [micro_auc(s, l) for s, l in zip(scores, labels) if _has_both_classes(np.asarray(l))]
    return float(np.mean(aucs)) if aucs else math.nan


def equal_error_rate(scores: np.ndarray, labels: np.ndarray) -> float:
    """The error rate at the threshold where false-positive and false-negative rates meet."""
    scores, labels = _check(scores, labels)
    if not _has_both_classes(labels):
        return math.nan
    fpr, tpr, _ = roc_curve(labels, scores)
    fnr = 1.0 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    # Interpolate between the two ROC points around the crossing for a stable figure.
    if i + 1 < fpr.size and (fnr[i] - fpr[i]) * (fnr[i + 1] - fpr[i + 1]) < 0:
        d0, d1 = fnr[i] - fpr[i], fnr[i + 1] - fpr[i + 1]
        t = d0 / (d0 - d1)
        return float(fpr[i] + t * (fpr[i + 1] - fpr[i]))
    return float((fpr[i] + fnr[i]) / 2)


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    scores, labels = _check(scores, labels)
    return float(average_precision_score(labels, scores)) if _has_both_classes(labels) else math.nan


def summarize(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> dict[str, float]:
    """All frame-level figures for per-video scores and labels (same order, same lengths)."""
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} score arrays but {len(labels)} label arrays")
    for i, (s, l) in enumerate(zip(scores, labels)):
        if len(s) != len(l):
            raise ValueError(f"video {i}: {len(s)} scores but {len(l)} labels")
    flat_s = np.concatenate([np.asarray(s, dtype=np.float64) for s in scores])
    flat_l = np.concatenate([np.asarray(l) for l in labels])
    return {
        "micro_auc": micro_auc(flat_s, flat_l),
        "macro_auc": macro_auc(scores, labels),
        "eer": equal_error_rate(flat_s, flat_l),
        "ap": average_precision(flat_s, flat_l),
        "frames": int(flat_l.size),
        "abnormal_frames": int(flat_l.sum()),
        "videos": len(scores),
    }
