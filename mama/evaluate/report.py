"""What `mama eval` writes into its run folder: metrics.json, scores.csv, a ROC plot,
per-video score curves with the abnormal ranges shaded, and report.html showing them."""
from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from mama.data.datasets import label_intervals  # noqa: E402
from mama.features.clips import INPUT_FRAMES  # noqa: E402
from mama.io import atomic_path  # noqa: E402


def headline(rows: list[dict]) -> dict:
    """The figure to quote: the full model (the last model evaluated), clean protocol, unsmoothed
    (a smoothed score uses later frames), no test label used; the nearest row to that when some
    is missing (another protocol, smoothing, or a model selected on test labels)."""
    scored = [r for r in rows if "_scores" in r]
    full = scored[-1]["model"]
    return max(scored, key=lambda r: (not r["test_labels_used"], r["model"] == full, r["protocol"] == "clean",
                                      r["smoothing"] == 0, r["protocol"] == "paper"))


def _fmt(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}" if isinstance(x, float) else str(x)


def table_lines(rows: list[dict]) -> list[str]:
    cols = ("protocol", "model", "smoothing", "micro_auc", "macro_auc", "eer", "ap", "test_labels_used", "weights_from")
    return ["\t".join(cols)] + ["\t".join(_fmt(r.get(c)) for c in cols) for r in rows]


def write_report(out: Path, result: dict, rows: list[dict], videos, streams, labels) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    head = headline(rows)
    result["headline"] = {k: v for k, v in head.items() if not k.startswith("_")}
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2, default=float))

    # Per-frame scores: every stream, the headline's fused score, the label.
    names = [k for k in ("sim_motion", "sim_label", "sse", "destroyer_sse") if k in streams[0]]
    with atomic_path(out / "scores.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "frame", *names, "score", "label"])
        for v, s, fused, lab in zip(videos, streams, head["_scores"], labels):
            for i in range(len(lab)):
                w.writerow([v.name, i + INPUT_FRAMES, *(f"{s[n][i]:.6g}" for n in names), f"{fused[i]:.6g}", int(lab[i])])

    flat_l = np.concatenate(labels)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for r in rows:
        if "_scores" in r and r["smoothing"] == head["smoothing"] and not math.isnan(r["micro_auc"]):
            fpr, tpr, _ = roc_curve(flat_l, np.concatenate(r["_scores"]))
            ax.plot(fpr, tpr, label=f"{r['protocol']} {r['model']} ({r['micro_auc']:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("frame-level ROC (micro)")
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    with atomic_path(out / "roc.png", suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)

    n = len(videos)
    cols = min(3, n)
    rows_n = math.ceil(n / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4 * cols, 2.2 * rows_n), squeeze=False)
    for ax, v, fused, lab in zip(axes.ravel(), videos, head["_scores"], labels):
        x = np.arange(len(lab)) + INPUT_FRAMES
        ax.plot(x, fused, lw=1)
        for start, end in label_intervals(lab):  # 1-based inclusive runs of scored frames
            ax.axvspan(start - 1 + INPUT_FRAMES, end - 1 + INPUT_FRAMES, color="red", alpha=0.2, lw=0)
        ax.set_title(f"video {v.name}", fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.suptitle(f"{head['protocol']} {head['model']} score (abnormal frames shaded)", fontsize=9)
    fig.tight_layout()
    with atomic_path(out / "curves.png", suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)

    cols = ("protocol", "model", "weights", "weights_from", "smoothing", "micro_auc", "macro_auc", "eer", "ap", "test_labels_used")
    trs = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>" for r in result["rows"]
    )
    extra = ""
    if result.get("ablation"):
        keys = [k for k in result["ablation"][0] if k.startswith("micro_auc")]
        extra += ("<h2>Stream ablation</h2><p>The same streams re-fused (clean protocol, no test label used).</p><table><tr>"
                  + "".join(f"<th>{c}</th>" for c in ("streams", "weights", *keys)) + "</tr>"
                  + "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r[c]))}</td>" for c in ("streams", "weights", *keys))
                            + "</tr>" for r in result["ablation"]) + "</table>")
    if result.get("localisation"):
        extra += ("<h2>Destroyer localisation (pixel masks)</h2><table>"
                  + "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in result["localisation"].items())
                  + "</table>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>mama eval: {html.escape(result['dataset'])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 8px}}th{{background:#eee}}</style></head><body>
<h1>mama evaluation: {html.escape(result['dataset'])}</h1>
<p>Checkpoint <code>{html.escape(result['checkpoint'])}</code>; frames {result['size']}x{result['size']};
motion <b>{html.escape(result['motion'])}</b>, labels <b>{html.escape(result['labels'])}</b>;
{len(result['videos'])} test videos, {result['headline']['frames']} scored frames.</p>
<p><b>Headline</b> (no test label used): {html.escape(result['headline']['protocol'])} protocol,
{html.escape(result['headline']['model'])}, micro AUC <b>{_fmt(result['headline']['micro_auc'])}</b>.</p>
<table><tr>{''.join(f'<th>{c}</th>' for c in cols)}</tr>
{trs}</table>
{extra}
<h2>ROC</h2><img src="roc.png" alt="ROC curves">
<h2>Scores per video</h2><img src="curves.png" alt="per-video score curves" style="max-width:100%">
<p>Per-frame streams and scores: <a href="scores.csv">scores.csv</a>; all figures: <a href="metrics.json">metrics.json</a>.</p>
</body></html>
"""
    with atomic_path(out / "report.html") as tmp:
        tmp.write_text(page)
