"""Alarms over a whole sequence of scores: the events a tracker (mama.live.events) would
raise, and the threshold that keeps normal footage to a false-alarm rate. Used by `mama
score` and by `mama eval`'s report (the alarms it would raise on the test videos)."""
from __future__ import annotations

import numpy as np

from mama.data.datasets import label_intervals


def offline_events(scores: np.ndarray, threshold: float, min_duration: int, merge_gap: int) -> list[tuple[int, int]]:
    """The (first, last) indices of the events a tracker would report over a whole score
    sequence: runs above `threshold` at least `min_duration` long, a run ending once
    `merge_gap` frames are at or below it (so closer runs merge into the event)."""
    events: list[tuple[int, int]] = []
    for s, e in label_intervals(np.asarray(scores) > threshold):  # 1-based, inclusive
        s, e = s - 1, e - 1
        if events and s - events[-1][1] - 1 < merge_gap:
            events[-1] = (events[-1][0], e)  # within the open event's gap: it goes on
        elif e - s + 1 >= min_duration:
            events.append((s, e))
    return events


def threshold_for_rate(sequences: list[np.ndarray], fps: list[float], per_hour: float, min_duration: int,
                       merge_gap: int) -> tuple[float, float]:
    """The lowest threshold at which normal footage (score `sequences` at frame rates `fps`)
    raises at most `per_hour` events per hour, and at no higher threshold more; returns
    (threshold, hours of footage). With too little footage for the rate asked, this is the
    highest normal score: no normal frame alarms."""
    hours = sum(len(s) / f for s, f in zip(sequences, fps)) / 3600
    allowed = per_hour * hours
    values = np.unique(np.concatenate([np.asarray(s, dtype=np.float64) for s in sequences]))[::-1]  # high to low
    if values.size > 4000:  # candidates: the 2000 highest scores exactly (they decide the rare events), then quantiles
        rest = np.unique(np.quantile(values[2000:], np.linspace(0, 1, 2000)))[::-1]
        values = np.concatenate([values[:2000], rest])
    best = float(values[0])
    for t in values:
        if sum(len(offline_events(s, t, min_duration, merge_gap)) for s in sequences) > allowed:
            break
        best = float(t)
    return best, hours



def default_threshold(calib: dict) -> tuple[float, str]:
    """The alarm threshold of a calibration (mama.evaluate.calibrate) when none is given, and
    where it comes from in words: a high quantile of the online score over normal frames."""
    return float(calib["threshold"]), f"calibration quantile {calib.get('quantile')}"
