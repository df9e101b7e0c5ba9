"""Alarms as camera systems report them: an event's life is `new`, `update`..., `end`.

Per source, frames come in order with their score. A run of frames above the threshold that
lasts `min_duration` frames opens an event (`new`, at that frame: the alarm is raised while
the anomaly goes on, not when it is over); while it lasts an `update` goes out at most every
`update_interval` seconds with the peak so far; once the score has stayed at or below the
threshold for `merge_gap` frames the event ends (`end`), so runs closer than that are one
event. A live source that drops and comes back is reported as a `gap` event of its own.

The names and the lifecycle are those of Frigate's MQTT events, so its consumers need no
translation. Frame numbers are 0-based (frame 0 is the first the source gave).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone


def iso_time(wall: float) -> str:
    """Wall-clock seconds -> ISO 8601 in UTC, to the millisecond."""
    return datetime.fromtimestamp(wall, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class FrameScore:
    """One scored frame, as the event tracker needs it."""

    frame: int  # 0-based index in the source
    wall: float  # wall-clock time it was available at the source
    media_time: float  # seconds from the stream's start
    score: float
    alarm: bool  # above the threshold (and, with an ignore mask, a region outside it)
    boxes: list = field(default_factory=list)  # [[x0, y0, x1, y1], ...] in source pixels


@dataclass
class _Open:
    id: str
    start: FrameScore
    peak: FrameScore
    last_above: FrameScore
    below: int = 0  # frames at or below the threshold since the last one above
    last_update: float = 0.0  # wall time of the last new/update line


class EventTracker:
    """Frames in, event dicts out (module docstring). `snapshot(kind, event_id, frame)` is
    called for `new` (that frame) and for `update` / `end` (the peak frame) and returns the
    path of the picture it wrote (or None)."""

    def __init__(self, source: str, threshold: float, min_duration: int, merge_gap: int,
                 update_interval: float, run_id: str, snapshot=None):
        self.source, self.threshold = source, float(threshold)
        self.min_duration, self.merge_gap, self.update_interval = min_duration, merge_gap, update_interval
        self.run_id, self.snapshot = run_id, snapshot
        self.pending: list[FrameScore] = []  # the run above the threshold not yet min_duration long
        self.open: _Open | None = None
        self.count = 0

    def _line(self, kind: str, o: _Open, at: FrameScore, shown: FrameScore) -> dict:
        picture = self.snapshot(kind, o.id, shown) if self.snapshot is not None else None
        line = {"type": kind, "id": o.id, "source": self.source, "frame": at.frame, "time": iso_time(at.wall),
                "media_time": round(at.media_time, 3), "score": round(at.score, 4), "peak": round(o.peak.score, 4),
                "peak_frame": o.peak.frame, "threshold": round(self.threshold, 4), "boxes": shown.boxes,
                "snapshot": picture, "start_frame": o.start.frame, "start_time": iso_time(o.start.wall),
                "start_media_time": round(o.start.media_time, 3)}
        if kind == "end":
            line.update(end_frame=o.last_above.frame, end_time=iso_time(o.last_above.wall),
                        duration=round(o.last_above.media_time - o.start.media_time, 3))
        return line

    def push(self, f: FrameScore) -> list[dict]:
        """The next frame's score; the event lines it causes (none, usually)."""
        out = []
        if self.open is not None:
            o = self.open
            if f.alarm:
                o.below, o.last_above = 0, f
                if f.score > o.peak.score:
                    o.peak = f
                if f.wall - o.last_update >= self.update_interval:
                    o.last_update = f.wall
                    out.append(self._line("update", o, f, o.peak))
            else:
                o.below += 1
                if o.below >= self.merge_gap:
                    out.append(self._line("end", o, f, o.peak))
                    self.open = None
            return out
        if not f.alarm:
            self.pending = []
            return out
        self.pending.append(f)
        if len(self.pending) >= self.min_duration:
            self.count += 1
            start = self.pending[0]
            peak = max(self.pending, key=lambda p: p.score)
            self.open = _Open(f"{self.run_id}-{self.source}-{self.count:04d}", start, peak, f, last_update=f.wall)
            self.pending = []
            out.append(self._line("new", self.open, f, f))
        return out

    def close(self, last: FrameScore | None) -> list[dict]:
        """The stream ended (or stopped, or dropped frames): end what is open."""
        self.pending = []
        if self.open is None:
            return []
        o, self.open = self.open, None
        return [self._line("end", o, last or o.last_above, o.peak)]
