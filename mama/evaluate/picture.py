"""A frame a person can read: at the source's own resolution, the anomaly map as a heatmap
(only where it is unusual), the boxes, a score bar against the threshold and a label that
fits. Drawn for `mama score`'s overlay video and snapshots, `mama serve`'s views and the
example frames of `mama eval`'s report."""
from __future__ import annotations

import cv2
import numpy as np

RED, GREEN, WHITE, GREY = (0, 0, 255), (0, 190, 0), (255, 255, 255), (160, 160, 160)
LEAST_SCALE = 0.3  # the smallest text still legible (OpenCV's Hershey font)


def _scale(img: np.ndarray, text: str, max_width: int) -> tuple[float, bool]:
    """The largest text scale (up to one that suits the frame, down to a legible least) at which
    `text` fits `max_width`, and whether it fits at all (else the least)."""
    scale = max(0.35, min(1.0, img.shape[0] / 400))
    while cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > max_width:
        if scale <= LEAST_SCALE:
            return LEAST_SCALE, False
        scale = max(LEAST_SCALE, scale - 0.05)
    return scale, True


def _fit_text(img: np.ndarray, text: str, origin: tuple[int, int], color, max_width: int) -> int:
    """Draw `text` at `_scale`, cut short with '..' if even the least scale is too wide; the width drawn."""
    scale, fits = _scale(img, text, max_width)
    while not fits and len(text) > 3 and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > max_width:
        text = text[:-3] + ".."
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x, y = origin
    cv2.rectangle(img, (x - 2, y - h - 3), (x + w + 2, y + base), (0, 0, 0), -1)
    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)
    return w


def draw_frame(image: np.ndarray, amap: np.ndarray | None, map_threshold: float, boxes: list,
               score: float | None, threshold: float, label: str, alarm: bool | None = None,
               ignore: np.ndarray | None = None) -> np.ndarray:
    """A copy of `image` (uint8 BGR, native size) with the anomaly drawn. `amap` (h, w) at the
    model's size is upsampled; pixels glow from half the map threshold up, fully at twice it.
    `score` None: a frame not scored (warming up). `alarm`: whether the frame alarmed (default:
    score above threshold); `ignore`: the (H, W) mask that never alarms, drawn dimmed."""
    img = image.copy()
    H, W = img.shape[:2]
    if ignore is not None and ignore.shape == (H, W):
        img[ignore] = (img[ignore] * 0.45).astype(np.uint8)
    if amap is not None and np.isfinite(map_threshold) and map_threshold > 0:
        up = cv2.resize(amap.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
        strength = np.clip((up - 0.5 * map_threshold) / (1.5 * map_threshold), 0, 1)
        if strength.any():
            heat = cv2.applyColorMap((strength * 255).astype(np.uint8), cv2.COLORMAP_JET)
            alpha = (0.6 * strength)[..., None]
            img = (img * (1 - alpha) + heat * alpha).astype(np.uint8)
    thick = max(1, round(min(H, W) / 200))
    for x0, y0, x1, y1 in boxes:
        cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), RED, thick)
    if alarm is None:
        alarm = score is not None and score > threshold
    bar_h = max(4, H // 40)
    cv2.rectangle(img, (0, H - bar_h), (W - 1, H - 1), (40, 40, 40), -1)
    if score is not None:
        # The bar is full at twice the threshold; the white tick is the threshold.
        frac = float(np.clip(score / (2 * threshold), 0, 1)) if threshold > 0 else float(alarm)
        cv2.rectangle(img, (0, H - bar_h), (int(frac * (W - 1)), H - 1), RED if alarm else GREEN, -1)
        cv2.line(img, (W // 2, H - bar_h - 2), (W // 2, H - 1), WHITE, 1)
    color = RED if alarm else (WHITE if score is not None else GREY)
    lines = [label] if score is None else [label, f"score {score:.2f} / {threshold:.2f}{'  ALARM' if alarm else ''}"]
    if _scale(img, "  ".join(lines), W - 8)[1]:  # one line when it fits legibly, else one line each
        lines = ["  ".join(lines)]
    step = max(14, H // 20)
    for i, line in enumerate(lines):
        _fit_text(img, line, (4, step * (i + 1) - (2 * i if i else 0)), color, W - 8)
    return img
